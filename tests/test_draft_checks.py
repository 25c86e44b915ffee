"""The draft checks of `triage eval`: language, invented numbers, invented remedies."""

from __future__ import annotations

import pytest

from triage.draft_checks import check_draft, detect_language, invented_numbers, invented_remedies
from triage.evaluate import evaluate


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("We're very sorry that your parcel arrived damaged; our team is on it.", "en"),
        ("주문하신 음식이 늦게 도착해서 정말 죄송합니다.", "ko"),
        ("ご注文の商品が遅れてしまい、大変申し訳ございません。", "ja"),
        ("Sentimos mucho que su pedido llegara tarde y frío.", "es"),
        ("Es tut uns sehr leid, dass Ihre Bestellung zu spät angekommen ist.", "de"),
        ("Nous sommes vraiment désolés que votre commande soit arrivée en retard.", "fr"),
    ],
)
def test_the_six_languages_are_recognised(text, language):
    assert detect_language(text) == language


def test_numbers_must_come_from_the_chat():
    chat = "Order #48213 cost $1,200.50 and was due at 18:30 on 3/14."
    assert invented_numbers("About order 48213 (1200.50), due 18:30 on 3/14.", chat) == []
    assert invented_numbers("Your order 48214 will arrive in 20 minutes.", chat) == ["20", "48214"]
    assert invented_numbers("ご注文４８２１３について", chat) == []  # full-width digits
    assert invented_numbers("注文番号９９９", chat) == ["999"]


def test_remedies_must_come_from_the_chat():
    assert invented_remedies("We will refund you in full.", "My food was cold.", "en") == ["refund"]
    assert invented_remedies("Your refund is on its way.", "Agent: I issued a refund.", "en") == []
    assert invented_remedies("환불해 드리겠습니다.", "음식이 식었어요.", "ko") == ["환불"]


def test_check_draft_takes_the_language_from_the_chat_when_not_given():
    check = check_draft("I'm sorry about the delay.", "Mein Paket ist seit Tagen verspätet.")
    assert check.expected_language == "de" and not check.language_ok


def test_eval_reports_draft_failures_per_language():
    chats = [
        {"chat_message": "My order #123 never came.", "sentiment": -1, "language": "en"},
        {"chat_message": "주문 #55 이 안 왔어요.", "sentiment": -1, "language": "ko"},
    ]

    def model(prompts, _):
        return [
            "Sorry, order 999 is refunded."
            if "<summary>" in p
            else '{"sentiment": -1, "summary": "x"}'
            for p in prompts
        ]

    report = evaluate(chats, model, batch_size=2)
    assert report.accuracy_pct == 100.0
    assert report.invented_number_pct == 100.0  # 999 is in neither chat
    assert report.language_match_pct == 50.0  # the Korean chat got an English draft
    assert report.invented_remedy_pct == 50.0  # "refund" checked with English words only
    lines = report.lines()
    assert lines[-1] == "drafts: in the chat's language 50.0%, with a number not in the chat 100.0%"
    assert any(line.startswith("by language:") for line in lines)


def test_draft_warnings_name_what_the_reviewer_must_check():
    from triage.draft_checks import draft_warnings

    chat = "Customer: my order 4821 never came\nAgent: I am sorry, I will look into it."
    assert (
        draft_warnings("We are sorry your order has not arrived; we are looking into it.", chat)
        == ()
    )
    warned = draft_warnings("We are sorry. Your refund for order 9999 is on its way.", chat)
    assert any("9999" in w for w in warned)
    assert any("refund" in w for w in warned)
    assert any("written in" in w for w in draft_warnings("注文が届かず申し訳ございません。", chat))


CHAT = (
    "Customer: my order #4521 was 20 minutes late, call me at 010-1234-5678\n"
    "Agent: sorry, see help.example.com/late"
)


def test_links_phones_and_amounts_the_chat_lacks_are_flagged():
    from triage.draft_checks import invented_amounts, invented_links, invented_phones

    draft = (
        "We refund $20. Call +1 (555) 123-4567 or visit https://evil.example.net/x. "
        "See help.example.com/late, or we call 010-1234-5678."
    )
    assert invented_amounts(draft, CHAT) == ["20"]  # "20 minutes" is not money
    assert invented_phones(draft, CHAT) == ["+1 (555) 123-4567"]
    assert invented_links(draft, CHAT) == ["https://evil.example.net/x"]
    assert invented_amounts("2만원을 환불해 드립니다", "배달이 2시간 늦었어요") == ["2"]
    assert invented_amounts("返金は500円です", "500円の注文でした") == []
    clean = "Sorry for the wait on order #4521; see help.example.com/late."
    assert not (invented_links(clean, CHAT) or invented_phones(clean, CHAT))


def test_draft_warnings_name_links_phones_and_amounts():
    from triage.draft_checks import draft_warnings

    warnings = draft_warnings("Sorry! Write to us at www.refunds-now.co or call 555 0199 22.", CHAT)
    assert any(
        w.startswith("a web address the chat does not contain: www.refunds-now.co")
        for w in warnings
    )
    assert any(w.startswith("a phone number the chat does not contain") for w in warnings)


def test_the_retrieved_policy_grounds_its_remedy_and_numbers():
    from triage.draft_checks import check_draft, draft_warnings

    chat = "Customer: my food is 70 minutes late and cold\nAgent: sorry, checking"
    policy = '[{"kind": "policy", "remedy": "Over 60 minutes late: full refund or redelivery."}]'
    draft = "Sorry your order was so late. As it was over 60 minutes late, we offer a full refund."
    alone = check_draft(draft, chat, "en")
    assert alone.numbers_not_in_chat == ("60",) and "refund" in alone.remedies_not_in_chat
    grounded = check_draft(draft, chat, "en", grounding=policy)
    assert grounded.numbers_not_in_chat == () and grounded.remedies_not_in_chat == ()
    assert draft_warnings(draft, chat, policy) == ()
    assert any("refund" in w for w in draft_warnings(draft, chat))


def test_a_prescribed_remedy_is_found_by_its_terms_in_any_case_and_width():
    from triage.draft_checks import offers_remedy

    assert offers_remedy("We will arrange a free REDELIVERY tonight.", ["full refund", "redeliver"])
    assert offers_remedy("全額返金いたします。", ["返金"])
    assert not offers_remedy("We are looking into it.", ["full refund", "redeliver"])
    assert not offers_remedy("Any draft at all.", [])


def test_eval_compares_drafts_without_and_with_retrieval_on_the_same_chats():
    from triage.retrieval.context import Similar

    chats = [
        {
            "id": "a",
            "chat_message": "My food is 70 minutes late.",
            "sentiment": -1,
            "language": "en",
        },
        {"id": "b", "chat_message": "The app crashes.", "sentiment": -1, "language": "en"},
    ]
    policy = Similar("kb-late", "article", 0.9, title="Late food", remedy="Over 60 min: refund")
    asked: list[list[str]] = []

    def similar_for(texts):
        asked.append(texts)
        return [(policy,) if "late" in t else () for t in texts]

    def model(prompts, _):
        # follows the policy only when the prompt carries one
        def draft(prompt):
            if "Over 60 min: refund" in prompt:
                return "Sorry. Over 60 minutes late, so a full refund."
            return "Sorry for the trouble, we are on it."

        return [
            draft(p) if "<summary>" in p else '{"sentiment": -1, "summary": "x"}' for p in prompts
        ]

    report = evaluate(
        chats, model, batch_size=2, similar_for=similar_for, remedy_terms={"a": ["full refund"]}
    )
    assert asked == [[c["chat_message"] for c in chats]]  # only the retrieval column asks
    without, with_ = report.rows[0], report.rows[0]["retrieval"]
    assert without["prescribed"] is False and with_["prescribed"] is True
    assert with_["similar_ids"] == ["kb-late"] and report.rows[1]["retrieval"]["similar_ids"] == []
    # the policy grounds its own number and remedy
    assert with_["numbers_not_in_chat"] == [] and with_["remedies_not_in_chat"] == []
    assert report.rows[1]["prescribed"] is None  # no policy covers the crash
    lines = report.lines()
    row = next(line for line in lines if "offering the prescribed remedy (1 chats)" in line)
    assert row.split()[-2:] == ["0.0%", "100.0%"]
    assert "prescribed remedy by language: en 0/1 | 1/1" in "\n".join(lines)
    assert lines[-1].startswith("drafts: in the chat's language 100.0%")


def test_a_policy_in_another_language_grounds_the_remedy_it_names():
    from triage.draft_checks import check_draft

    chat = "Kunde: Mein Essen kam 70 Minuten zu spät und kalt an."
    draft = "Es tut uns leid. Wir erstatten Ihnen den vollen Bestellwert."
    english_policy = '[{"kind": "policy", "remedy": "Over an hour late: full refund."}]'
    assert check_draft(draft, chat, "de").remedies_not_in_chat == ("erstatt",)
    assert check_draft(draft, chat, "de", grounding=english_policy).remedies_not_in_chat == ()
    unrelated = '[{"kind": "policy", "remedy": "Send the recovery form."}]'
    assert check_draft(draft, chat, "de", grounding=unrelated).remedies_not_in_chat == ("erstatt",)
