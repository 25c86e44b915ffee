"""What makes an apology draft one an agent would send, as checks a machine can run.

A draft must be in the chat's language, must not state a number (order id, amount, time, date)
that the chat does not contain, and must not offer a refund, credit or compensation that nobody
in the chat mentioned. With retrieval, what the team's retrieved policies and approved replies
say is grounded too (`grounding`): a draft that offers the remedy the matching policy prescribes,
with the policy's own numbers, is what the team wants. Reviewers are also warned of an amount
of money, a phone number or a web address that the chat does not contain. `triage eval` reports
the share of drafts failing each check.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

__all__ = [
    "DraftCheck",
    "check_draft",
    "contact_warnings",
    "detect_language",
    "draft_warnings",
    "invented_amounts",
    "invented_links",
    "invented_numbers",
    "invented_phones",
    "invented_remedies",
    "offers_remedy",
]

# Languages langid may answer: the product's six and the neighbours it confuses them with.
_CANDIDATES = ("en", "ko", "ja", "es", "de", "fr", "it", "pt", "nl", "zh")
_NUMBER = re.compile(r"\d+(?:[.,:/-]\d+)*")
# Words that offer a remedy, by language (stems, matched case-insensitively).
REMEDY_WORDS: dict[str, tuple[str, ...]] = {
    "en": ("refund", "credit", "compensat", "voucher", "discount", "coupon", "reimburs"),
    "ko": ("환불", "보상", "쿠폰", "적립", "할인", "크레딧"),
    "ja": ("返金", "補償", "クーポン", "割引", "ポイント", "払い戻"),
    "es": ("reembols", "compens", "cupón", "descuento", "crédito", "devolución del dinero"),
    "de": ("erstatt", "gutschrift", "entschädig", "gutschein", "rabatt", "kompensation"),
    "fr": ("rembours", "compens", "bon d'achat", "réduction", "geste commercial", "un avoir"),
}


@cache
def _identifier():
    from langid.langid import LanguageIdentifier, model

    identifier = LanguageIdentifier.from_modelstring(model, norm_probs=True)
    identifier.set_languages(list(_CANDIDATES))
    return identifier


def detect_language(text: str) -> str:
    """ISO 639-1 code of the text's language (langid's bundled model, offline)."""
    return str(_identifier().classify(text)[0])


def _numbers(text: str) -> set[str]:
    """Digit strings with separators removed: "1,200" and "1200" are the same number."""
    text = unicodedata.normalize("NFKC", text)  # full-width digits become ASCII
    return {re.sub(r"\D", "", n) for n in _NUMBER.findall(text)}


def invented_numbers(draft: str, chat: str) -> list[str]:
    """Numbers in the draft that appear nowhere in the chat."""
    known = _numbers(chat)
    return sorted(n for n in _numbers(draft) if n not in known)


_LINK = re.compile(
    r"(?:https?://|www\.)[^\s<>\"')\]]+|\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|net|org|io|co|"
    r"app|shop|help|support|info|de|fr|es|jp|kr|uk|eu)\b(?:/[^\s<>\"')\]]*)?",
    re.IGNORECASE,
)
_PHONE = re.compile(r"(?<![\w.])\+?\(?\d[\d\s().-]{6,}\d(?!\w)")
_CURRENCY = (
    r"[$€£¥₩]|usd|eur|gbp|jpy|krw|dollars?|euros?|pounds?|yen|won|円|원|ドル|ユーロ|달러|유로"
)
_AMOUNT = re.compile(
    rf"(?:(?:{_CURRENCY})\s?(\d[\d.,]*))|(?:(\d[\d.,]*)\s?(?:만|천|억)?\s?(?:{_CURRENCY}))",
    re.IGNORECASE,
)


def _link_key(link: str) -> str:
    return re.sub(r"^(?:https?://)?(?:www\.)?", "", link.lower()).rstrip("/.,;:!?")


def invented_links(draft: str, chat: str) -> list[str]:
    """Web addresses in the draft that the chat does not contain: a reply must not send the
    customer anywhere nobody in the chat pointed to."""
    known = _link_key(chat)
    links = {link.rstrip(".,;:!?") for link in _LINK.findall(draft)}
    return sorted(link for link in links if _link_key(link) not in known)


def invented_phones(draft: str, chat: str) -> list[str]:
    """Phone numbers (7+ digits with separators) in the draft whose digits the chat lacks."""
    chat_digits = re.sub(r"\D", "", unicodedata.normalize("NFKC", chat))
    found = _PHONE.findall(unicodedata.normalize("NFKC", draft))
    return sorted({p.strip() for p in found if re.sub(r"\D", "", p) not in chat_digits})


def _amounts(text: str) -> set[str]:
    text = unicodedata.normalize("NFKC", text)
    return {re.sub(r"\D", "", a or b) for a, b in _AMOUNT.findall(text)}


def invented_amounts(draft: str, chat: str) -> list[str]:
    """Money in the draft (a number with a currency) that the chat never states as money:
    "refund of $20" when the chat only says "20 minutes late"."""
    return sorted(_amounts(draft) - _amounts(chat) - {""})


def invented_remedies(draft: str, chat: str, language: str) -> list[str]:
    """Remedy words in the draft (refund, credit, ...) that the chat never mentions."""
    words = REMEDY_WORDS.get(language, REMEDY_WORDS["en"])
    draft_l, chat_l = draft.lower(), chat.lower()
    return [w for w in words if w in draft_l and w not in chat_l]


@dataclass(frozen=True)
class DraftCheck:
    language: str  # detected in the draft
    expected_language: str
    numbers_not_in_chat: tuple[str, ...]
    remedies_not_in_chat: tuple[str, ...]

    @property
    def language_ok(self) -> bool:
        return self.language == self.expected_language


def check_draft(
    draft: str, chat: str, language: str | None = None, grounding: str = ""
) -> DraftCheck:
    """All checks on one draft; `language` is the chat's (detected from the chat if None);
    numbers and remedies in `grounding` (the retrieved context) count as known."""
    expected = language or detect_language(chat)
    known = f"{chat}\n{grounding}" if grounding else chat
    # A policy is often written in another language than the chat (an English knowledge base,
    # a German customer): a remedy it names in any language grounds one in the draft.
    remedies = () if _names_a_remedy(grounding) else invented_remedies(draft, known, expected)
    return DraftCheck(
        language=detect_language(draft) if draft.strip() else "",
        expected_language=expected,
        numbers_not_in_chat=tuple(invented_numbers(draft, known)),
        remedies_not_in_chat=tuple(remedies),
    )


def _names_a_remedy(text: str) -> bool:
    folded = text.lower()
    return any(word in folded for words in REMEDY_WORDS.values() for word in words)


def offers_remedy(draft: str, terms: Sequence[str]) -> bool:
    """Whether the draft names the prescribed remedy: any of its hand-written terms, matched
    case-insensitively (eval/handwritten_topics.jsonl)."""
    folded = unicodedata.normalize("NFKC", draft).lower()
    return any(unicodedata.normalize("NFKC", t).lower() in folded for t in terms)


def draft_warnings(draft: str, chat: str, grounding: str = "") -> tuple[str, ...]:
    """What the reviewer should check before approving, in words: the draft stage puts these on
    the record and the review page shows them. A check that cannot run warns nothing: it must
    never cost a customer their draft."""
    try:
        check = check_draft(draft, chat, grounding=grounding)
    except Exception:  # noqa: BLE001 - a broken language model must not drop the draft
        return ()
    warnings = []
    if check.language and not check.language_ok:
        warnings.append(f"written in {check.language}, the chat in {check.expected_language}")
    if check.numbers_not_in_chat:
        warnings.append(
            "numbers the chat does not contain: " + ", ".join(check.numbers_not_in_chat)
        )
    if check.remedies_not_in_chat:
        warnings.append(
            "offers what nobody in the chat mentioned: " + ", ".join(check.remedies_not_in_chat)
        )
    return (*warnings, *contact_warnings(draft, f"{chat}\n{grounding}" if grounding else chat))


def contact_warnings(draft: str, chat: str) -> tuple[str, ...]:
    """Money, phone numbers and web addresses in the draft that the chat does not contain:
    cheap enough for the review page to check on every draft it shows, whatever the pipeline
    version that wrote it."""
    warnings = []
    for found, what in (
        (invented_amounts(draft, chat), "an amount the chat does not state"),
        (invented_phones(draft, chat), "a phone number the chat does not contain"),
        (invented_links(draft, chat), "a web address the chat does not contain"),
    ):
        if found:
            warnings.append(f"{what}: " + ", ".join(found))
    return tuple(warnings)
