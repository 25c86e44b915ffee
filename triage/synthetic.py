"""Synthetic, clearly labelled support chats of a food chain, with their triage answers.

Why this exists: the demo trains a tiny Gemma model (about a million parameters) from scratch,
and there is no real customer data to train it on. This module writes made-up chats in English,
Korean and Japanese together with the answers the pipeline expects from the model: a sentiment
(-1, 0, 1), a one-sentence summary in the chat's language, and, for dissatisfied customers, an
apology draft. Every example says `"synthetic": true` and has an id starting with `syn-`, so it
can never be mistaken for a real conversation.

The text comes from templates, several per (language, topic, sentiment variant), filled with
slots (order numbers, minutes late, menu items, branches, points). The sentiment cues stay
consistent within a variant, and summaries and drafts are templated too, so a model that small
can learn them from the content words. Generation uses only `random.Random(seed)`: the same
(n, seed) always gives the same examples, and an evaluation set is made with another seed.

    python -m triage.synthetic --n 3000 --seed 1 --out data/train.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["LANGUAGES", "TOPICS", "VARIANTS", "generate", "main", "write_jsonl"]

LANGUAGES = ("en", "ko", "ja")
TOPICS = (
    "late_delivery",
    "wrong_order",
    "refund",
    "rude_staff",
    "allergy",
    "app_problem",
    "praise",
    "loyalty_points",
)
SENTIMENTS = (-1, 0, 1)


class Lines(NamedTuple):
    """The text of one variant in one language; `{slot}` fields are filled per example."""

    openings: tuple[str, ...]  # the customer's first message
    replies: tuple[str, ...]  # the agent's answer
    follow_ups: tuple[str, ...]  # the customer's second message
    summary: str


class Variant(NamedTuple):
    topic: str
    sentiment: int
    text: dict[str, Lines]


# --- slot values ----------------------------------------------------------------------------

ITEMS = {
    "en": ("pizza", "burger", "fried chicken", "bulgogi pizza", "fries", "pasta", "salad", "cola"),
    "ko": ("피자", "버거", "후라이드 치킨", "불고기 피자", "감자튀김", "파스타", "샐러드", "콜라"),
    "ja": (
        "ピザ",
        "ハンバーガー",
        "フライドチキン",
        "プルコギピザ",
        "フライドポテト",
        "パスタ",
        "サラダ",
        "コーラ",
    ),
}
STORES = {
    "en": ("Gangnam", "Hongdae", "Downtown", "Riverside", "Airport", "Central Station"),
    "ko": ("강남점", "홍대점", "잠실점", "신촌점", "해운대점", "판교점"),
    "ja": ("渋谷店", "新宿店", "梅田店", "池袋店", "博多店", "横浜店"),
}
ALLERGENS = {
    "en": ("peanuts", "shrimp", "milk", "wheat", "eggs"),
    "ko": ("땅콩", "새우", "우유", "밀", "달걀"),
    "ja": ("ピーナッツ", "えび", "乳", "小麦", "卵"),
}

# --- conversation endings and apology drafts -------------------------------------------------

# The agent's last line in a four-turn chat, by language and sentiment.
CLOSINGS: dict[str, dict[int, tuple[str, ...]]] = {
    "en": {
        -1: (
            "I've passed this to our support team, and they will contact you shortly.",
            "I've escalated this, and a support agent will get back to you today.",
        ),
        0: (
            "Is there anything else I can help you with?",
            "Let me know if you have any other questions.",
        ),
        1: ("Thank you, have a wonderful day!", "We hope to see you again soon!"),
    },
    "ko": {
        -1: (
            "이 건은 고객지원팀에 전달했습니다. 곧 담당자가 연락드리겠습니다.",
            "담당 상담원이 오늘 중으로 다시 연락드리겠습니다.",
        ),
        0: (
            "더 궁금하신 점이 있으시면 말씀해 주세요.",
            "다른 도움이 필요하시면 언제든지 문의해 주세요.",
        ),
        1: ("감사합니다. 좋은 하루 보내세요!", "다음에 또 찾아 주세요!"),
    },
    "ja": {
        -1: (
            "この件はサポートチームに引き継ぎました。担当者からすぐにご連絡いたします。",
            "担当者から本日中に改めてご連絡いたします。",
        ),
        0: (
            "ほかにご不明な点はございますか。",
            "ほかにご質問があればお気軽にお問い合わせください。",
        ),
        1: (
            "ありがとうございます。良い一日をお過ごしください！",
            "またのご利用をお待ちしております！",
        ),
    },
}

# Apology drafts for dissatisfied customers, by topic and language. They acknowledge the problem
# and say a person follows up; they never promise refunds, discounts or compensation.
DRAFTS: dict[str, dict[str, str]] = {
    "late_delivery": {
        "en": "I'm very sorry that order {order} arrived {minutes} minutes late and your {item} "
        "arrived cold. A member of our support team will contact you shortly.",
        "ko": "{order} 주문이 {minutes}분 늦게 도착하고 {item}이/가 식어 있었던 점 진심으로 "
        "사과드립니다. 고객지원 담당자가 곧 연락드리겠습니다.",
        "ja": "注文{order}が{minutes}分遅れて届き、{item}が冷めていたこと、"
        "心よりお詫び申し上げます。サポート担当者から追ってご連絡いたします。",
    },
    "wrong_order": {
        "en": "I'm sorry we sent the {other} instead of the {item} with order {order}. "
        "A support agent will contact you shortly to follow up.",
        "ko": "{order} 주문에 {item} 대신 {other}이/가 잘못 전달되어 정말 죄송합니다. "
        "고객지원 담당자가 곧 연락드리겠습니다.",
        "ja": "注文{order}で{item}ではなく{other}をお届けしてしまい、大変申し訳ございません。"
        "サポート担当者から追ってご連絡いたします。",
    },
    "refund": {
        "en": "I'm sorry that your refund for order {order} is still pending after {days} days. "
        "A support agent will look into it and contact you shortly.",
        "ko": "{order} 주문 환불이 {days}일이 지나도록 처리되지 않아 정말 죄송합니다. "
        "고객지원 담당자가 확인 후 곧 연락드리겠습니다.",
        "ja": "注文{order}の返金が{days}日経っても完了しておらず、大変申し訳ございません。"
        "サポート担当者が確認のうえ、追ってご連絡いたします。",
    },
    "rude_staff": {
        "en": "I'm truly sorry for how you were treated at our {store} branch. "
        "A support agent will follow up with you shortly.",
        "ko": "{store}에서 불쾌한 대우를 받으셨다니 진심으로 사과드립니다. "
        "고객지원 담당자가 곧 연락드리겠습니다.",
        "ja": "{store}で失礼な対応をしてしまい、心よりお詫び申し上げます。"
        "サポート担当者から追ってご連絡いたします。",
    },
    "allergy": {
        "en": "I'm deeply sorry that your {item} contained {allergen} and caused a reaction. "
        "Your safety matters to us, and a support agent will contact you shortly.",
        "ko": "{item}에 {allergen}이/가 들어 있어 알레르기 반응을 겪으신 점 진심으로 사과드립니다. "
        "고객지원 담당자가 곧 연락드리겠습니다.",
        "ja": "{item}に{allergen}が含まれており、アレルギー反応が出てしまったこと、"
        "心よりお詫び申し上げます。サポート担当者から至急ご連絡いたします。",
    },
    "app_problem": {
        "en": "I'm sorry the app keeps failing when you try to order the {item}. "
        "A support agent will contact you shortly to help.",
        "ko": "앱에서 {item} 주문이 계속 실패해 불편을 드려 죄송합니다. "
        "고객지원 담당자가 곧 연락드리겠습니다.",
        "ja": "アプリで{item}のご注文ができず、ご不便をおかけして申し訳ございません。"
        "サポート担当者から追ってご連絡いたします。",
    },
    "loyalty_points": {
        "en": "I'm sorry that the {points} points from order {order} are missing from your "
        "account. A support agent will look into it and contact you shortly.",
        "ko": "{order} 주문의 {points}포인트가 적립되지 않아 죄송합니다. "
        "고객지원 담당자가 확인 후 곧 연락드리겠습니다.",
        "ja": "注文{order}の{points}ポイントが付与されておらず、申し訳ございません。"
        "サポート担当者が確認のうえ、追ってご連絡いたします。",
    },
}

# --- the chats, one entry per (topic, sentiment variant) -----------------------------------
# Every opening of a variant names the slots its summary uses, so the summary always matches.
# Korean particles written as "이/가", "을/를", "은/는", "과/와" after a slot are resolved
# by `_korean_particles` once the slot is filled.

VARIANTS: tuple[Variant, ...] = (
    Variant(
        "late_delivery",
        -1,
        {
            "en": Lines(
                (
                    "My order {order} arrived {minutes} minutes late and my {item} came stone "
                    "cold! This is terrible.",
                    "I waited {minutes} extra minutes for order {order} and my {item} came cold. "
                    "Unacceptable!",
                    "Why did order {order} take {minutes} minutes longer than promised? My {item} "
                    "arrived cold and I'm furious.",
                ),
                ("I'm so sorry to hear that.", "I sincerely apologise for the delay."),
                (
                    "This is the second time this month. I'm really angry.",
                    "I want a refund. This is ridiculous.",
                    "Cold food after that long wait is unacceptable.",
                ),
                "Customer is angry that order {order} arrived {minutes} minutes late and the "
                "{item} came cold.",
            ),
            "ko": Lines(
                (
                    "{order} 주문이 {minutes}분이나 늦게 도착했고 {item}이/가 다 식어 있었어요! "
                    "정말 화가 나요.",
                    "{minutes}분을 더 기다려서 {order} 주문을 받았는데 {item}이/가 차갑게 식어 "
                    "있었어요. 말도 안 돼요!",
                    "{order} 주문이 예정보다 {minutes}분 늦게 왔어요. {item}도 다 식었고요. "
                    "너무 실망스럽고 화가 납니다.",
                ),
                ("불편을 드려 정말 죄송합니다.", "배달이 늦어져서 진심으로 사과드립니다."),
                (
                    "이번 달에만 두 번째예요. 정말 화가 나요.",
                    "환불해 주세요. 이건 너무하잖아요.",
                    "그렇게 오래 기다렸는데 식은 음식이라니 말이 안 돼요.",
                ),
                "고객이 {order} 주문이 {minutes}분 늦게 도착하고 {item}이/가 식어 있었다며 "
                "화를 내고 있습니다.",
            ),
            "ja": Lines(
                (
                    "注文{order}が{minutes}分も遅れて届き、{item}が冷めていました！"
                    "本当に腹が立ちます。",
                    "{minutes}分も余計に待たされたうえに、注文{order}の{item}は冷たくなって"
                    "いました。ありえません！",
                    "注文{order}の配達が予定より{minutes}分遅れました。{item}も冷めていて、"
                    "本当にひどいです。",
                ),
                ("大変申し訳ございません。", "配達が遅れてしまい、心よりお詫び申し上げます。"),
                (
                    "今月もう二回目です。本当に怒っています。",
                    "返金してください。ひどすぎます。",
                    "あれだけ待たされて冷めた料理なんて納得できません。",
                ),
                "お客様は注文{order}が{minutes}分遅れて届き、{item}が冷めていたことに怒っています。",
            ),
        },
    ),
    Variant(
        "late_delivery",
        0,
        {
            "en": Lines(
                (
                    "Hi, I placed order {order} {minutes} minutes ago. Could you tell me where "
                    "it is?",
                    "Could you check the status of order {order}? I ordered it {minutes} minutes "
                    "ago.",
                    "Hello, order {order} was placed {minutes} minutes ago. Is it on its way?",
                ),
                (
                    "Let me check that for you. Your rider is about ten minutes away.",
                    "Your order has left the store and should arrive shortly.",
                ),
                ("OK, I'll wait.", "All right, I'll keep an eye on the app."),
                "Customer asks for the status of order {order}, which was placed {minutes} "
                "minutes ago.",
            ),
            "ko": Lines(
                (
                    "안녕하세요, {minutes}분 전에 {order} 주문을 했는데 지금 어디쯤 오고 있는지 "
                    "알 수 있을까요?",
                    "{order} 주문 상태를 확인해 주실 수 있나요? {minutes}분 전에 주문했어요.",
                    "{minutes}분 전에 한 {order} 주문은 출발했나요?",
                ),
                (
                    "확인해 드리겠습니다. 배달 기사님이 약 10분 후 도착 예정입니다.",
                    "주문하신 음식은 매장에서 출발했으며 곧 도착할 예정입니다.",
                ),
                ("네, 기다릴게요.", "알겠습니다. 앱에서 확인해 볼게요."),
                "고객이 {minutes}분 전에 한 {order} 주문의 배달 상태를 문의하고 있습니다.",
            ),
            "ja": Lines(
                (
                    "こんにちは。{minutes}分前に注文{order}をしたのですが、今どのあたりでしょうか。",
                    "注文{order}の状況を確認していただけますか。{minutes}分前に注文しました。",
                    "{minutes}分前に頼んだ注文{order}は、もう出発していますか。",
                ),
                (
                    "確認いたします。配達員はあと10分ほどで到着する予定です。",
                    "ご注文の品はすでに店舗を出発しており、まもなくお届けします。",
                ),
                ("わかりました、待ちます。", "了解です。アプリで確認してみます。"),
                "お客様は{minutes}分前に頼んだ注文{order}の配達状況を問い合わせています。",
            ),
        },
    ),
    Variant(
        "late_delivery",
        1,
        {
            "en": Lines(
                (
                    "I was worried order {order} would be late because of the rain, but my "
                    "{item} arrived early and hot. Thank you!",
                    "Thanks so much! I thought order {order} would take ages, but my {item} came "
                    "quickly and still hot.",
                    "I was nervous about ordering {item} during rush hour, but order {order} came "
                    "super fast. Great job!",
                ),
                (
                    "Thank you for letting us know, we're glad it arrived on time!",
                    "That's wonderful to hear, thank you!",
                ),
                (
                    "Please thank the rider for me!",
                    "Really happy with the service, I'll order again.",
                ),
                "Customer is happy that order {order} with {item} arrived quickly despite "
                "worrying it would be late.",
            ),
            "ko": Lines(
                (
                    "비 때문에 {order} 주문이 늦을까 봐 걱정했는데 {item}이/가 일찍 따뜻하게 "
                    "도착했어요. 감사합니다!",
                    "{order} 주문이 오래 걸릴 줄 알았는데 {item}이/가 금방 따끈하게 왔어요. "
                    "정말 고마워요!",
                    "바쁜 시간이라 {item}을/를 시키면서 걱정했는데 {order} 주문이 엄청 빨리 "
                    "왔어요. 최고예요!",
                ),
                (
                    "알려 주셔서 감사합니다. 제시간에 도착해서 다행입니다!",
                    "좋은 말씀 감사합니다!",
                ),
                (
                    "배달 기사님께도 감사하다고 전해 주세요!",
                    "서비스가 정말 만족스러워요. 또 주문할게요.",
                ),
                "고객이 늦을까 봐 걱정했던 {order} 주문의 {item}이/가 빨리 도착해서 만족하고 "
                "있습니다.",
            ),
            "ja": Lines(
                (
                    "雨で注文{order}が遅れるか心配していましたが、{item}が早く温かいまま"
                    "届きました。ありがとうございます！",
                    "注文{order}は時間がかかると思っていたのに、{item}がすぐに熱々で届きました。"
                    "本当に感謝しています！",
                    "混雑する時間に{item}を頼んで心配でしたが、注文{order}がとても早く"
                    "届きました。最高です！",
                ),
                (
                    "ご連絡ありがとうございます。時間どおりにお届けできてうれしいです！",
                    "うれしいお言葉をありがとうございます！",
                ),
                (
                    "配達員の方にもよろしくお伝えください！",
                    "サービスに大満足です。また注文します。",
                ),
                "お客様は遅れを心配していた注文{order}の{item}が早く届いたことに満足しています。",
            ),
        },
    ),
    Variant(
        "wrong_order",
        -1,
        {
            "en": Lines(
                (
                    "I ordered the {item} with order {order} but got the {other} instead. This is "
                    "so annoying!",
                    "Wrong food again! Order {order} was supposed to be the {item}, and you sent "
                    "the {other}.",
                    "You messed up order {order}. I paid for the {item} and received the {other}. "
                    "Terrible!",
                ),
                ("I'm very sorry about the mix-up.", "I apologise, that should not have happened."),
                (
                    "I'm hungry and now I have to wait again. Unbelievable.",
                    "This keeps happening. I'm really disappointed.",
                ),
                "Customer is upset that order {order} contained the {other} instead of the "
                "{item} they ordered.",
            ),
            "ko": Lines(
                (
                    "{order} 주문으로 {item}을/를 시켰는데 {other}이/가 왔어요. 정말 짜증 나요!",
                    "또 음식이 잘못 왔어요! {order} 주문은 {item}인데 {other}을/를 보내셨네요.",
                    "{order} 주문이 엉망이에요. {item} 값을 냈는데 {other}이/가 왔어요. "
                    "최악이에요!",
                ),
                (
                    "주문이 잘못 전달되어 정말 죄송합니다.",
                    "불편을 드려 죄송합니다. 있어서는 안 될 일입니다.",
                ),
                (
                    "배고픈데 또 기다려야 하잖아요. 어이가 없네요.",
                    "이런 일이 계속 생겨요. 정말 실망이에요.",
                ),
                "고객이 {order} 주문에 {item} 대신 {other}이/가 와서 화가 났습니다.",
            ),
            "ja": Lines(
                (
                    "注文{order}で{item}を頼んだのに、{other}が届きました。本当に困ります！",
                    "また間違いです！注文{order}は{item}のはずなのに、{other}が送られてきました。",
                    "注文{order}を間違えられました。{item}の代金を払ったのに、届いたのは{other}"
                    "です。ひどいです！",
                ),
                (
                    "ご注文を間違えてしまい、大変申し訳ございません。",
                    "申し訳ございません。あってはならないことです。",
                ),
                (
                    "お腹が空いているのに、また待たないといけないなんて信じられません。",
                    "こういうことが何度も続いていて、本当にがっかりです。",
                ),
                "お客様は注文{order}で{item}ではなく{other}が届いたことに怒っています。",
            ),
        },
    ),
    Variant(
        "wrong_order",
        0,
        {
            "en": Lines(
                (
                    "Hi, I think order {order} came with the {other} instead of the {item}. Could "
                    "you swap it, please?",
                    "Hello, my order {order} has the {other} but I ordered the {item}. Is it "
                    "possible to exchange it?",
                    "Excuse me, order {order} included the {other} rather than the {item}. Could "
                    "you send the right one?",
                ),
                (
                    "Of course. We will send the {item} out to you.",
                    "Let me arrange an exchange for you right away.",
                ),
                ("OK, I'll keep an eye out for the driver.", "All right, I'll wait for it."),
                "Customer politely asks to exchange the {other} in order {order} for the {item} "
                "they ordered.",
            ),
            "ko": Lines(
                (
                    "안녕하세요, {order} 주문에 {item} 대신 {other}이/가 온 것 같아요. 바꿔 "
                    "주실 수 있을까요?",
                    "{order} 주문에서 {item}을/를 시켰는데 {other}이/가 왔어요. 교환이 가능할까요?",
                    "실례합니다. {order} 주문에 {item} 대신 {other}이/가 들어 있었어요. 맞는 "
                    "메뉴로 보내 주실 수 있나요?",
                ),
                ("네, {item}을/를 다시 보내 드리겠습니다.", "바로 교환해 드리겠습니다."),
                ("네, 기다리겠습니다.", "알겠습니다. 배달 오면 확인할게요."),
                "고객이 {order} 주문에 잘못 온 {other}을/를 {item}과/와 교환해 달라고 정중하게 "
                "요청합니다.",
            ),
            "ja": Lines(
                (
                    "こんにちは。注文{order}に{item}ではなく{other}が入っていたようです。"
                    "交換していただけますか。",
                    "注文{order}で{item}を頼んだのですが、{other}が届きました。交換は可能"
                    "でしょうか。",
                    "すみません、注文{order}に{item}の代わりに{other}が入っていました。正しい"
                    "商品を送っていただけますか。",
                ),
                ("かしこまりました。{item}をお届けいたします。", "すぐに交換の手配をいたします。"),
                ("わかりました、待っています。", "了解です。届いたら確認します。"),
                "お客様は注文{order}に届いた{other}を、注文した{item}に交換してほしいと丁寧に"
                "依頼しています。",
            ),
        },
    ),
    Variant(
        "refund",
        -1,
        {
            "en": Lines(
                (
                    "I asked for a refund for order {order} {days} days ago and still nothing. "
                    "This is outrageous!",
                    "Where is my refund for order {order}? It's been {days} days. I'm fed up!",
                    "{days} days and no refund for order {order}. Terrible service, give me my "
                    "money back now!",
                ),
                (
                    "I'm sorry for the delay with your refund.",
                    "I apologise for the wait, let me look into it.",
                ),
                (
                    "I've heard that before. I want my money today.",
                    "Stop making excuses. This is unacceptable.",
                ),
                "Customer angrily demands the refund for order {order}, which has been pending "
                "for {days} days.",
            ),
            "ko": Lines(
                (
                    "{days}일 전에 {order} 주문 환불을 요청했는데 아직도 소식이 없어요. 정말 "
                    "어이없네요!",
                    "{order} 주문 환불은 도대체 언제 되나요? 벌써 {days}일이나 지났어요. "
                    "지긋지긋해요!",
                    "{days}일째 {order} 주문 환불이 안 되고 있어요. 서비스가 최악이네요. 당장 "
                    "환불해 주세요!",
                ),
                (
                    "환불이 지연되어 죄송합니다.",
                    "기다리게 해 드려 죄송합니다. 바로 확인해 보겠습니다.",
                ),
                (
                    "그 말 전에도 들었어요. 오늘 안에 돈 돌려주세요.",
                    "변명은 그만하세요. 정말 용납할 수 없어요.",
                ),
                "고객이 {days}일째 처리되지 않은 {order} 주문의 환불을 화를 내며 요구하고 "
                "있습니다.",
            ),
            "ja": Lines(
                (
                    "{days}日前に注文{order}の返金をお願いしたのに、まだ何の連絡もありません。"
                    "ひどすぎます！",
                    "注文{order}の返金はいつになるんですか。もう{days}日も経っています。"
                    "うんざりです！",
                    "注文{order}の返金が{days}日経ってもされていません。最悪の対応です。今すぐ"
                    "返金してください！",
                ),
                (
                    "返金が遅れており、申し訳ございません。",
                    "お待たせしてしまい申し訳ございません。すぐに確認いたします。",
                ),
                (
                    "前にも同じことを言われました。今日中に返金してください。",
                    "言い訳はもう結構です。本当に納得できません。",
                ),
                "お客様は{days}日経っても処理されていない注文{order}の返金を強く求めています。",
            ),
        },
    ),
    Variant(
        "refund",
        0,
        {
            "en": Lines(
                (
                    "Hi, could you tell me the status of the refund for order {order}?",
                    "Hello, I requested a refund for order {order}. When should I expect it?",
                    "Could you check whether the refund for order {order} has been processed?",
                ),
                (
                    "Let me check. The refund was approved and usually takes 3-5 business days.",
                    "It's being processed and should reach your card within a few days.",
                ),
                ("OK, I'll check my card statement then.", "Got it, I'll wait a few days."),
                "Customer asks about the status of the refund for order {order}.",
            ),
            "ko": Lines(
                (
                    "안녕하세요, {order} 주문 환불이 어떻게 진행되고 있는지 알 수 있을까요?",
                    "{order} 주문 환불을 신청했는데 언제쯤 입금되나요?",
                    "{order} 주문 환불이 처리되었는지 확인해 주실 수 있나요?",
                ),
                (
                    "확인해 보겠습니다. 환불은 승인되었고 보통 영업일 기준 3~5일 정도 걸립니다.",
                    "현재 처리 중이며 며칠 안에 카드로 환불될 예정입니다.",
                ),
                ("네, 카드 내역을 확인해 볼게요.", "알겠습니다. 며칠 기다려 볼게요."),
                "고객이 {order} 주문의 환불 진행 상황을 문의하고 있습니다.",
            ),
            "ja": Lines(
                (
                    "こんにちは。注文{order}の返金の状況を教えていただけますか。",
                    "注文{order}の返金を申請したのですが、いつ頃になりますか。",
                    "注文{order}の返金が処理されたか確認していただけますか。",
                ),
                (
                    "確認いたします。返金は承認済みで、通常3〜5営業日ほどかかります。",
                    "現在処理中で、数日以内にカードへ返金される予定です。",
                ),
                ("わかりました。カードの明細を確認します。", "了解です。数日待ってみます。"),
                "お客様は注文{order}の返金の処理状況を問い合わせています。",
            ),
        },
    ),
    Variant(
        "refund",
        1,
        {
            "en": Lines(
                (
                    "Just got the refund for order {order}. Thank you for sorting it out so "
                    "quickly!",
                    "The refund for order {order} arrived today. Thanks, I really appreciate it!",
                    "Thank you! My refund for order {order} came through faster than I expected.",
                ),
                ("You're welcome, we're glad it's resolved!", "Thank you for your patience!"),
                ("Great service, I'll definitely order again.", "You made my day, thanks again!"),
                "Customer thanks the team for the refund they received for order {order}.",
            ),
            "ko": Lines(
                (
                    "{order} 주문 환불 방금 받았어요. 빨리 처리해 주셔서 감사합니다!",
                    "오늘 {order} 주문 환불금이 들어왔어요. 정말 고마워요!",
                    "감사합니다! {order} 주문 환불이 생각보다 훨씬 빨리 됐어요.",
                ),
                ("천만에요. 해결되어 다행입니다!", "기다려 주셔서 감사합니다!"),
                (
                    "서비스가 정말 좋네요. 또 주문할게요.",
                    "덕분에 기분이 좋아졌어요. 다시 한번 감사합니다!",
                ),
                "고객이 {order} 주문의 환불을 받아서 감사 인사를 전하고 있습니다.",
            ),
            "ja": Lines(
                (
                    "注文{order}の返金を受け取りました。すぐに対応していただきありがとう"
                    "ございます！",
                    "今日、注文{order}の返金が届きました。本当にありがとうございます！",
                    "ありがとうございます！注文{order}の返金が思ったより早く届きました。",
                ),
                (
                    "どういたしまして。解決してよかったです！",
                    "お待ちいただきありがとうございました！",
                ),
                (
                    "素晴らしい対応でした。また注文します。",
                    "おかげでうれしい気持ちになりました。ありがとうございました！",
                ),
                "お客様は注文{order}の返金を受け取り、感謝を伝えています。",
            ),
        },
    ),
    Variant(
        "rude_staff",
        -1,
        {
            "en": Lines(
                (
                    "The cashier at the {store} branch was incredibly rude to me today. I'm "
                    "disgusted.",
                    "A staff member at your {store} store yelled at me when I asked about my "
                    "order. Unacceptable!",
                    "I've never been treated so rudely. The manager at the {store} branch rolled "
                    "his eyes and ignored me.",
                ),
                (
                    "I'm truly sorry you were treated that way.",
                    "I apologise, that is not how our staff should behave.",
                ),
                (
                    "I'm never going back there. Terrible attitude.",
                    "I want someone to take this seriously.",
                ),
                "Customer complains that staff at the {store} branch were rude to them.",
            ),
            "ko": Lines(
                (
                    "오늘 {store} 계산대 직원이 너무 무례했어요. 정말 불쾌합니다.",
                    "{store}에서 주문에 대해 물어봤더니 직원이 소리를 질렀어요. 이건 말이 안 돼요!",
                    "이렇게 무례한 대접은 처음이에요. {store} 매니저가 눈을 굴리면서 저를 "
                    "무시했어요.",
                ),
                (
                    "그런 대우를 받으셨다니 정말 죄송합니다.",
                    "죄송합니다. 저희 직원이 그렇게 행동해서는 안 됩니다.",
                ),
                (
                    "다시는 거기 안 갈 거예요. 태도가 최악이에요.",
                    "이 문제를 제대로 처리해 주셨으면 좋겠어요.",
                ),
                "고객이 {store} 직원이 무례하게 대했다고 불만을 제기하고 있습니다.",
            ),
            "ja": Lines(
                (
                    "今日、{store}のレジの店員がとても失礼でした。本当に不愉快です。",
                    "{store}で注文について聞いたら、店員に怒鳴られました。ありえません！",
                    "こんなに失礼な対応をされたのは初めてです。{store}の店長にあきれた顔を"
                    "されて無視されました。",
                ),
                (
                    "そのような対応をしてしまい、誠に申し訳ございません。",
                    "申し訳ございません。スタッフとしてあってはならない態度です。",
                ),
                ("もう二度と行きません。態度が最悪です。", "きちんと対応していただきたいです。"),
                "お客様は{store}の店員の態度が失礼だったと苦情を述べています。",
            ),
        },
    ),
    Variant(
        "allergy",
        0,
        {
            "en": Lines(
                (
                    "Hi, is there any {allergen} in the {item}? I have an allergy.",
                    "Could you tell me if the {item} contains {allergen}? I'm allergic.",
                    "Hello, I'm allergic to {allergen}. Is the {item} safe for me?",
                ),
                (
                    "Let me check the ingredient list for you. Full allergen information is also "
                    "on our menu page.",
                    "I'll confirm with the kitchen and let you know.",
                ),
                ("OK, I'll check the menu page as well.", "All right, I'll wait for your answer."),
                "Customer with a {allergen} allergy asks whether the {item} contains {allergen}.",
            ),
            "ko": Lines(
                (
                    "안녕하세요, {item}에 {allergen}이/가 들어가나요? 알레르기가 있어서요.",
                    "{item}에 {allergen}이/가 들어 있는지 알려 주실 수 있나요? 알레르기가 있어요.",
                    "제가 {allergen} 알레르기가 있는데 {item}을/를 먹어도 괜찮을까요?",
                ),
                (
                    "성분표를 확인해 드리겠습니다. 알레르기 정보는 메뉴 페이지에서도 보실 수 "
                    "있습니다.",
                    "주방에 확인한 후 알려 드리겠습니다.",
                ),
                ("네, 메뉴 페이지도 확인해 볼게요.", "알겠습니다. 답변 기다릴게요."),
                "{allergen} 알레르기가 있는 고객이 {item}에 {allergen}이/가 들어 있는지 "
                "문의하고 있습니다.",
            ),
            "ja": Lines(
                (
                    "こんにちは。{item}に{allergen}は入っていますか。アレルギーがあるんです。",
                    "{item}に{allergen}が含まれているか教えていただけますか。アレルギーが"
                    "あります。",
                    "{allergen}アレルギーがあるのですが、{item}は食べても大丈夫でしょうか。",
                ),
                (
                    "原材料を確認いたします。アレルギー情報はメニューページでもご覧いただけます。",
                    "キッチンに確認してからお知らせいたします。",
                ),
                (
                    "わかりました。メニューページも確認してみます。",
                    "了解です。お返事をお待ちしています。",
                ),
                "{allergen}アレルギーのお客様が、{item}に{allergen}が含まれているか問い合わせて"
                "います。",
            ),
        },
    ),
    Variant(
        "allergy",
        -1,
        {
            "en": Lines(
                (
                    "I told you I'm allergic to {allergen}, and the {item} had {allergen} in it! "
                    "I had a reaction.",
                    "My {item} contained {allergen} even though I wrote about my allergy. I had "
                    "to take medicine. This is dangerous!",
                    "I got hives after eating your {item}. It had {allergen} in it and I'm "
                    "allergic. How could you?",
                ),
                (
                    "I'm so sorry, this is very serious. I'm escalating it right now.",
                    "I sincerely apologise. Are you feeling all right now?",
                ),
                (
                    "I could have ended up in hospital. I'm furious.",
                    "This is completely unacceptable. Someone has to answer for this.",
                ),
                "Customer had an allergic reaction because the {item} contained {allergen} "
                "despite their allergy.",
            ),
            "ko": Lines(
                (
                    "{allergen} 알레르기가 있다고 말했는데 {item}에 {allergen}이/가 들어 "
                    "있었어요! 알레르기 반응이 왔어요.",
                    "알레르기가 있다고 적었는데도 {item}에 {allergen}이/가 들어 있었어요. "
                    "약까지 먹어야 했어요. 정말 위험해요!",
                    "{item}을/를 먹고 두드러기가 났어요. {allergen}이/가 들어 있었는데 저는 "
                    "알레르기가 있다고요. 어떻게 이럴 수 있어요?",
                ),
                (
                    "정말 죄송합니다. 매우 심각한 일이라 바로 상부에 보고하겠습니다.",
                    "진심으로 사과드립니다. 지금은 괜찮으신가요?",
                ),
                (
                    "병원에 갈 뻔했어요. 너무 화가 나요.",
                    "이건 절대 용납할 수 없어요. 누군가 책임져야 해요.",
                ),
                "고객이 알레르기를 알렸는데도 {item}에 {allergen}이/가 들어 있어 알레르기 "
                "반응을 겪었습니다.",
            ),
            "ja": Lines(
                (
                    "{allergen}アレルギーだと伝えたのに、{item}に{allergen}が入っていました！"
                    "アレルギー反応が出ました。",
                    "アレルギーのことを書いたのに、{item}に{allergen}が入っていました。薬を"
                    "飲むことになりました。危険すぎます！",
                    "{item}を食べたらじんましんが出ました。{allergen}が入っていたんです。"
                    "アレルギーがあるのに、どういうことですか。",
                ),
                (
                    "大変申し訳ございません。重大な問題ですので、すぐに上の者に報告いたします。",
                    "心よりお詫び申し上げます。お体は大丈夫でしょうか。",
                ),
                (
                    "病院に行くところでした。本当に怒っています。",
                    "絶対に許せません。責任を取ってください。",
                ),
                "お客様はアレルギーを伝えていたのに{item}に{allergen}が入っていて、アレルギー"
                "反応が出ました。",
            ),
        },
    ),
    Variant(
        "app_problem",
        -1,
        {
            "en": Lines(
                (
                    "Your app keeps crashing when I try to order the {item}. So frustrating!",
                    "I've tried five times to pay for the {item} in the app and it fails every "
                    "time. Useless app!",
                    "The app won't let me check out my {item} order. I'm really annoyed, fix it!",
                ),
                (
                    "I'm sorry for the trouble with the app.",
                    "I apologise for the inconvenience. Our app team is looking into it.",
                ),
                (
                    "It has been broken for days. Terrible.",
                    "I've given up and ordered somewhere else. Very disappointed.",
                ),
                "Customer is frustrated because the app fails when they try to order the {item}.",
            ),
            "ko": Lines(
                (
                    "{item}을/를 주문하려고 하면 앱이 계속 꺼져요. 너무 답답해요!",
                    "앱에서 {item} 결제를 다섯 번이나 시도했는데 매번 실패해요. 앱이 엉망이에요!",
                    "앱에서 {item} 주문 결제가 안 돼요. 정말 짜증 나요. 빨리 고쳐 주세요!",
                ),
                (
                    "앱 이용에 불편을 드려 죄송합니다.",
                    "불편을 드려 죄송합니다. 앱 담당 팀이 확인하고 있습니다.",
                ),
                (
                    "며칠째 이래요. 최악이에요.",
                    "포기하고 다른 데서 시켰어요. 정말 실망스러워요.",
                ),
                "고객이 앱에서 {item}을/를 주문하려고 할 때마다 오류가 나서 화가 났습니다.",
            ),
            "ja": Lines(
                (
                    "{item}を注文しようとすると、アプリが何度も落ちます。本当にイライラします！",
                    "アプリで{item}の支払いを5回も試しましたが、毎回失敗します。使えない"
                    "アプリです！",
                    "アプリで{item}の注文が確定できません。本当に困っています。早く直して"
                    "ください！",
                ),
                (
                    "アプリでご不便をおかけして申し訳ございません。",
                    "ご不便をおかけして申し訳ございません。アプリの担当チームが確認しております。",
                ),
                (
                    "何日もこの状態です。最悪です。",
                    "あきらめてほかの店で注文しました。本当にがっかりです。",
                ),
                "お客様はアプリで{item}を注文しようとするたびにエラーになり、怒っています。",
            ),
        },
    ),
    Variant(
        "app_problem",
        0,
        {
            "en": Lines(
                (
                    "How do I change the delivery address for order {order} in the app?",
                    "Hi, can I update the delivery address on order {order} through the app?",
                    "Hello, where in the app can I edit the address for order {order}?",
                ),
                (
                    "Open Orders, tap the order and choose Edit address.",
                    "You can change it under Orders, then Edit address, until the store accepts "
                    "the order.",
                ),
                ("OK, I found it.", "Got it, I'll try that now."),
                "Customer asks how to change the delivery address for order {order} in the app.",
            ),
            "ko": Lines(
                (
                    "앱에서 {order} 주문의 배달 주소를 어떻게 바꾸나요?",
                    "안녕하세요, 앱으로 {order} 주문 배달 주소를 변경할 수 있나요?",
                    "{order} 주문 주소를 앱 어디에서 수정할 수 있나요?",
                ),
                (
                    "주문 내역에서 해당 주문을 누르고 '주소 변경'을 선택하시면 됩니다.",
                    "매장에서 주문을 접수하기 전까지 주문 내역의 '주소 변경'에서 바꾸실 수 "
                    "있습니다.",
                ),
                ("네, 찾았어요.", "알겠습니다. 지금 해 볼게요."),
                "고객이 앱에서 {order} 주문의 배달 주소를 변경하는 방법을 문의하고 있습니다.",
            ),
            "ja": Lines(
                (
                    "アプリで注文{order}の配達先住所を変更するにはどうすればいいですか。",
                    "こんにちは。注文{order}の配達先住所はアプリから変更できますか。",
                    "注文{order}の住所は、アプリのどこで修正できますか。",
                ),
                (
                    "注文履歴から該当の注文を選び、「住所を変更」をタップしてください。",
                    "店舗が注文を受け付けるまでは、注文履歴の「住所を変更」から変更できます。",
                ),
                ("わかりました、見つかりました。", "了解です。今やってみます。"),
                "お客様はアプリで注文{order}の配達先住所を変更する方法を問い合わせています。",
            ),
        },
    ),
    Variant(
        "praise",
        1,
        {
            "en": Lines(
                (
                    "Just wanted to say the staff at the {store} branch were lovely today and I "
                    "loved the {item}.",
                    "Amazing {item} at your {store} store! Thank you for the great service.",
                    "The team at the {store} branch made my evening. Friendly staff and delicious "
                    "{item}. Thanks!",
                ),
                (
                    "Thank you so much for the kind words!",
                    "That's lovely to hear, we'll pass it on to the team!",
                ),
                ("Keep up the great work!", "I'll be back next week for sure."),
                "Customer praises the staff and the {item} at the {store} branch.",
            ),
            "ko": Lines(
                (
                    "오늘 {store} 직원분들이 정말 친절했고 {item}도 최고였어요.",
                    "{store} {item} 진짜 맛있어요! 좋은 서비스 감사합니다.",
                    "{store} 직원분들 덕분에 즐거운 저녁이었어요. 친절하고 {item}도 "
                    "맛있었어요. 감사합니다!",
                ),
                (
                    "따뜻한 말씀 정말 감사합니다!",
                    "좋은 말씀 감사합니다. 직원들에게 꼭 전하겠습니다!",
                ),
                ("앞으로도 계속 잘해 주세요!", "다음 주에 또 갈게요."),
                "고객이 {store}의 직원과 {item}을/를 칭찬하고 있습니다.",
            ),
            "ja": Lines(
                (
                    "今日、{store}のスタッフの皆さんがとても親切で、{item}も最高でした。",
                    "{store}の{item}、本当においしかったです！素晴らしいサービスをありがとう"
                    "ございます。",
                    "{store}のスタッフのおかげで楽しい夜になりました。親切で、{item}も"
                    "おいしかったです。ありがとうございます！",
                ),
                (
                    "温かいお言葉をありがとうございます！",
                    "うれしいお言葉をありがとうございます。スタッフにも必ず伝えます！",
                ),
                ("これからも頑張ってください！", "来週もまた行きます。"),
                "お客様は{store}のスタッフと{item}を褒めています。",
            ),
        },
    ),
    Variant(
        "loyalty_points",
        0,
        {
            "en": Lines(
                (
                    "Hi, I have {points} points. How can I use them?",
                    "Can I pay for part of my order with my {points} loyalty points?",
                    "Hello, what can I get with {points} points?",
                ),
                (
                    "You can choose Use points at checkout in the app.",
                    "Points can be redeemed at checkout for any menu item.",
                ),
                ("OK, I'll try that next time.", "Got it."),
                "Customer asks how to use their {points} loyalty points.",
            ),
            "ko": Lines(
                (
                    "안녕하세요, {points}포인트가 있는데 어떻게 사용하나요?",
                    "적립된 {points}포인트로 주문 금액 일부를 결제할 수 있나요?",
                    "{points}포인트로 무엇을 주문할 수 있나요?",
                ),
                (
                    "앱 결제 화면에서 '포인트 사용'을 선택하시면 됩니다.",
                    "포인트는 결제할 때 모든 메뉴에 사용하실 수 있습니다.",
                ),
                ("네, 다음에 써 볼게요.", "알겠습니다."),
                "고객이 {points}포인트를 사용하는 방법을 문의하고 있습니다.",
            ),
            "ja": Lines(
                (
                    "こんにちは。{points}ポイントあるのですが、どうやって使えますか。",
                    "貯まった{points}ポイントで注文の一部を支払えますか。",
                    "{points}ポイントで何が注文できますか。",
                ),
                (
                    "アプリのお支払い画面で「ポイントを使う」を選択してください。",
                    "ポイントはお会計の際、すべてのメニューにご利用いただけます。",
                ),
                ("わかりました。次回使ってみます。", "了解です。"),
                "お客様は{points}ポイントの使い方を問い合わせています。",
            ),
        },
    ),
    Variant(
        "loyalty_points",
        -1,
        {
            "en": Lines(
                (
                    "My {points} points from order {order} never showed up in my account. This "
                    "is ridiculous!",
                    "Where are my points? Order {order} should have given me {points} points and "
                    "I got nothing. I'm annoyed.",
                    "You keep losing my points! {points} points from order {order} are missing "
                    "again.",
                ),
                (
                    "I'm sorry your points haven't appeared.",
                    "I apologise for the missing points, let me look into it.",
                ),
                (
                    "This is the third time. I'm sick of it.",
                    "I want my points back today. Terrible system.",
                ),
                "Customer is angry that {points} loyalty points from order {order} are missing "
                "from their account.",
            ),
            "ko": Lines(
                (
                    "{order} 주문으로 적립될 {points}포인트가 계정에 안 들어왔어요. 말도 안 돼요!",
                    "제 포인트 어디 갔어요? {order} 주문으로 {points}포인트가 쌓여야 하는데 하나도 "
                    "없어요. 짜증 나요.",
                    "왜 자꾸 포인트가 사라져요! {order} 주문 {points}포인트가 또 누락됐어요.",
                ),
                (
                    "포인트가 적립되지 않아 죄송합니다.",
                    "포인트 누락으로 불편을 드려 죄송합니다. 확인해 보겠습니다.",
                ),
                (
                    "벌써 세 번째예요. 지긋지긋해요.",
                    "오늘 안에 포인트 돌려주세요. 시스템이 엉망이네요.",
                ),
                "고객이 {order} 주문의 {points}포인트가 계정에 적립되지 않아 화를 내고 있습니다.",
            ),
            "ja": Lines(
                (
                    "注文{order}で貯まるはずの{points}ポイントが、アカウントに反映されていません。"
                    "ありえません！",
                    "ポイントはどこですか？注文{order}で{points}ポイントもらえるはずなのに、何も"
                    "ありません。腹が立ちます。",
                    "どうしていつもポイントが消えるんですか！注文{order}の{points}ポイントが"
                    "また付いていません。",
                ),
                (
                    "ポイントが反映されておらず、申し訳ございません。",
                    "ポイントの件でご迷惑をおかけして申し訳ございません。確認いたします。",
                ),
                (
                    "もう三回目です。うんざりです。",
                    "今日中にポイントを戻してください。ひどいシステムです。",
                ),
                "お客様は注文{order}の{points}ポイントがアカウントに付与されていないことに"
                "怒っています。",
            ),
        },
    ),
    Variant(
        "loyalty_points",
        1,
        {
            "en": Lines(
                (
                    "Thanks! I used {points} points to get my {item} for free. Love this program!",
                    "I just redeemed {points} points for my {item}. Thank you, what a great "
                    "reward!",
                    "Your loyalty program is awesome. My {points} points covered my whole {item} "
                    "order. Thanks!",
                ),
                (
                    "We're so glad you enjoyed it, thank you!",
                    "Thank you for being a loyal customer!",
                ),
                (
                    "I'll keep collecting points for sure!",
                    "Best loyalty program ever, thanks again!",
                ),
                "Customer thanks the team after using {points} loyalty points to get their {item}.",
            ),
            "ko": Lines(
                (
                    "감사합니다! {points}포인트로 {item}을/를 무료로 받았어요. 이 적립 제도 정말 "
                    "좋아요!",
                    "방금 {points}포인트로 {item}을/를 주문했어요. 정말 좋은 혜택이네요, 고마워요!",
                    "포인트 제도 최고예요. {points}포인트로 {item} 주문을 전부 결제했어요. "
                    "감사합니다!",
                ),
                ("즐겁게 이용해 주셔서 감사합니다!", "늘 이용해 주셔서 감사합니다!"),
                (
                    "앞으로도 포인트 열심히 모을게요!",
                    "최고의 적립 혜택이에요. 다시 한번 감사합니다!",
                ),
                "고객이 {points}포인트로 {item}을/를 받은 것에 대해 감사 인사를 전하고 있습니다.",
            ),
            "ja": Lines(
                (
                    "ありがとうございます！{points}ポイントで{item}が無料になりました。この"
                    "ポイント制度、最高です！",
                    "{points}ポイントを使って{item}を注文しました。うれしい特典ですね、"
                    "ありがとうございます！",
                    "ポイント制度が素晴らしいです。{points}ポイントで{item}の注文を全額"
                    "支払えました。感謝しています！",
                ),
                (
                    "お楽しみいただけてうれしいです。ありがとうございます！",
                    "いつもご利用いただきありがとうございます！",
                ),
                ("これからもポイントを貯めます！", "最高の特典です。本当にありがとうございます！"),
                "お客様は{points}ポイントで{item}を手に入れたことに感謝しています。",
            ),
        },
    ),
)

_BY_SENTIMENT: dict[int, tuple[Variant, ...]] = {
    s: tuple(v for v in VARIANTS if v.sentiment == s) for s in SENTIMENTS
}

# A Korean particle pair after a filled slot: the first form follows a final consonant.
_KOREAN_PARTICLE = re.compile(r"([가-힣])(이/가|을/를|은/는|과/와)")


def _korean_particles(text: str) -> str:
    """Resolve "이/가"-style pairs by the preceding syllable (e.g. 치킨이, 피자가)."""

    def pick(match: re.Match[str]) -> str:
        syllable, pair = match.groups()
        with_final, without_final = pair.split("/")
        has_final = (ord(syllable) - 0xAC00) % 28 != 0
        return syllable + (with_final if has_final else without_final)

    return _KOREAN_PARTICLE.sub(pick, text)


def _slots(rng: random.Random, language: str) -> dict[str, str]:
    item, other = rng.sample(ITEMS[language], 2)
    return {
        "order": f"#{rng.randint(1000, 9999)}",
        "minutes": str(rng.randrange(20, 125, 5)),
        "days": str(rng.randint(3, 14)),
        "points": str(rng.randrange(100, 5050, 50)),
        "item": item,
        "other": other,
        "store": rng.choice(STORES[language]),
        "allergen": rng.choice(ALLERGENS[language]),
    }


def _example(rng: random.Random, seed: int, index: int) -> dict[str, Any]:
    """One example: sentiment first (so the classes stay balanced), then a variant with it."""
    language = rng.choice(LANGUAGES)
    sentiment = rng.choice(SENTIMENTS)
    variant = rng.choice(_BY_SENTIMENT[sentiment])
    lines = variant.text[language]
    slots = _slots(rng, language)
    user_id = str(rng.randint(100, 9999))
    agent_id = str(rng.randint(1, 99))  # never equal to a customer id

    def fill(template: str) -> str:
        return _korean_particles(template.format_map(slots))

    turns = [(user_id, rng.choice(lines.openings)), (agent_id, rng.choice(lines.replies))]
    extra_turns = rng.randint(0, 2)
    if extra_turns >= 1:
        turns.append((user_id, rng.choice(lines.follow_ups)))
    if extra_turns == 2:
        turns.append((agent_id, rng.choice(CLOSINGS[language][sentiment])))

    return {
        "id": f"syn-{seed}-{index}",
        "user_id": user_id,
        "language": language,
        "topic": variant.topic,
        "chat_message": "\n".join(f"id {who}: {fill(text)}" for who, text in turns),
        "sentiment": sentiment,
        "summary": fill(lines.summary),
        "draft": fill(DRAFTS[variant.topic][language]) if sentiment == -1 else None,
        "synthetic": True,
    }


def generate(n: int, seed: int) -> list[dict[str, Any]]:
    """n examples, deterministic under seed."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    return [_example(rng, seed, index) for index in range(n)]


def write_jsonl(path: str | Path, examples: Iterable[dict[str, Any]]) -> None:
    """One JSON object per line, UTF-8, non-ASCII text kept readable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for example in examples:
            out.write(json.dumps(example, ensure_ascii=False) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m triage.synthetic",
        description="Write synthetic, labelled support chats (en/ko/ja) as JSON lines.",
    )
    parser.add_argument("--n", type=int, default=3000, help="number of examples (default 3000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--out", required=True, help="output .jsonl path")
    args = parser.parse_args(argv)
    if args.n < 0:
        parser.error("--n must be >= 0")
    write_jsonl(args.out, generate(args.n, args.seed))
    print(f"wrote {args.n} synthetic examples (seed {args.seed}) to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
