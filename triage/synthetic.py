"""Synthetic support chats across trades and languages, with the answers the pipeline expects.

Why this exists: there is no real customer data to fine-tune on. This module composes made-up
chats from per-language data files (`triage/synthetic_data/*.json`, see SCHEMA.md there): a
customer opening from one of eleven trades, agent turns, optional filler exchanges, and the
customer's last reaction, which sets the label (the customer's state at the end of the chat).
Every example says `"synthetic": true` and has an id starting with `syn-`.

Generation uses only `random.Random(seed)`: the same (n, seed) always gives the same examples.

    python -m triage.synthetic --n 3000 --seed 1 --out data/train.jsonl
    python -m triage.synthetic --check triage/synthetic_data/ko.json
"""

from __future__ import annotations

import argparse
import json
import random
import re
import string
import sys
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).parent / "synthetic_data"
LANGUAGES = ("en", "ko", "ja", "es", "de", "fr")
DOMAINS = (
    "food_delivery",
    "restaurant",
    "ecommerce_returns",
    "airline_travel",
    "banking_cards",
    "telecom_internet",
    "software_subscription",
    "utilities",
    "hotel",
    "ride_hailing",
    "games",
)
NUMERIC_SLOTS = frozenset({"order", "amount", "minutes", "days", "date", "time"})
COMMON_SLOTS = NUMERIC_SLOTS | {"brand", "name", "agent"}
_ENDINGS = {"satisfied": 15, "neutral": 15, "angry": 12, "polite_unhappy": 12, "sarcastic": 12}
_OUTCOMES = ("resolved_happy", "unresolved", "sarcastic", "answered", "no_reply", "praise")
_DIGIT = re.compile(r"\d")


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def check_language_data(data: dict[str, Any]) -> list[str]:
    """Every way a data file breaks the schema (SCHEMA.md), as readable problems; [] if none."""
    problems: list[str] = []

    def need_list(where: str, value: Any, at_least: int) -> list[Any]:
        if not isinstance(value, list) or len(value) < at_least:
            problems.append(f"{where}: needs a list of at least {at_least}")
            return value if isinstance(value, list) else []
        return value

    def texts(where: str, value: Any, at_least: int, slots: set[str], drafts: bool = False):
        for i, text in enumerate(need_list(where, value, at_least)):
            if not isinstance(text, str) or not text.strip():
                problems.append(f"{where}[{i}]: not a non-empty string")
                continue
            try:
                unknown = _fields(text) - slots
            except ValueError as e:
                problems.append(f"{where}[{i}]: bad braces ({e}): {text!r}")
                continue
            if unknown:
                problems.append(f"{where}[{i}]: unknown slots {sorted(unknown)}: {text!r}")
            if drafts and (_DIGIT.search(text) or _fields(text) & NUMERIC_SLOTS):
                problems.append(f"{where}[{i}]: drafts may hold no digits or numeric slots")

    if data.get("language") not in LANGUAGES:
        problems.append(f"language: one of {LANGUAGES}")
    for key in ("currency", "date"):
        if not isinstance(data.get(key), str):
            problems.append(f"{key}: a format string")
    if "{n}" not in str(data.get("currency")):
        problems.append("currency: must contain {n}")
    if not {"{month}", "{day}"} <= set(re.findall(r"\{\w+\}", str(data.get("date")))):
        problems.append("date: must contain {month} and {day}")
    labels = data.get("speaker_labels") or {}
    for who in ("customer", "agent"):
        texts(f"speaker_labels.{who}", labels.get(who), 2, set())
    texts("customer_names", data.get("customer_names"), 6, set())
    texts("agent_names", data.get("agent_names"), 4, set())
    endings = data.get("endings") or {}
    for kind, n in _ENDINGS.items():
        texts(f"endings.{kind}", endings.get(kind), n, COMMON_SLOTS)
    closings = data.get("agent_closings") or {}
    for kind in ("satisfied", "neutral", "dissatisfied"):
        texts(f"agent_closings.{kind}", closings.get(kind), 4, COMMON_SLOTS)
    for i, pair in enumerate(need_list("fillers", data.get("fillers"), 10)):
        if not (isinstance(pair, list) and len(pair) == 2):
            problems.append(f"fillers[{i}]: needs [agent line, customer line]")
        else:
            texts(f"fillers[{i}]", pair, 2, COMMON_SLOTS)
    texts("injections", data.get("injections"), 5, set())
    outcomes = data.get("outcomes") or {}
    for kind in _OUTCOMES:
        texts(f"outcomes.{kind}", [outcomes.get(kind)], 1, set())
    texts("draft_openers", data.get("draft_openers"), 4, {"name"}, drafts=True)
    texts("draft_closers", data.get("draft_closers"), 5, set(), drafts=True)

    domains = data.get("domains") or {}
    missing = set(DOMAINS) - set(domains)
    if missing:
        problems.append(f"domains: missing {sorted(missing)}")
    for name, domain in domains.items():
        if name not in DOMAINS:
            problems.append(f"domains.{name}: not one of {DOMAINS}")
            continue
        at = f"domains.{name}"
        texts(f"{at}.brands", domain.get("brands"), 3, set())
        extra = domain.get("slots") or {}
        for key, values in extra.items():
            if key in COMMON_SLOTS:
                problems.append(f"{at}.slots.{key}: shadows a built-in slot")
            texts(f"{at}.slots.{key}", values, 4, set())
        slots = COMMON_SLOTS | set(extra)
        for i, issue in enumerate(need_list(f"{at}.issues", domain.get("issues"), 4)):
            texts(f"{at}.issues[{i}].open", issue.get("open"), 3, slots)
            texts(f"{at}.issues[{i}].fix", issue.get("fix"), 2, slots)
            texts(f"{at}.issues[{i}].nofix", issue.get("nofix"), 2, slots)
            texts(f"{at}.issues[{i}].summary", [issue.get("summary")], 1, slots)
            texts(f"{at}.issues[{i}].draft", [issue.get("draft")], 1, slots, drafts=True)
        for kind, n_open, n_answer, at_least in (("requests", 2, 2, 3), ("praise", 2, 1, 2)):
            for i, item in enumerate(need_list(f"{at}.{kind}", domain.get(kind), at_least)):
                texts(f"{at}.{kind}[{i}].open", item.get("open"), n_open, slots)
                texts(f"{at}.{kind}[{i}].answer", item.get("answer"), n_answer, slots)
                texts(f"{at}.{kind}[{i}].summary", [item.get("summary")], 1, slots)
    return problems


@cache
def load_language(language: str) -> dict[str, Any]:
    with (DATA_DIR / f"{language}.json").open(encoding="utf-8") as f:
        return json.load(f)


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


# How a chat ends, by label: (opening kind, agent reply kind, customer ending, summary outcome).
# None = that turn is absent. The label is the customer's state at the end.
PATTERNS: dict[int, tuple[tuple[str, str | None, str | None, str], ...]] = {
    1: (
        ("issues", "fix", "satisfied", "resolved_happy"),
        ("issues", "fix", "satisfied", "resolved_happy"),
        ("praise", "answer", None, "praise"),
        ("praise", "answer", "satisfied", "praise"),
        ("requests", "answer", "satisfied", "resolved_happy"),
    ),
    0: (
        ("requests", "answer", "neutral", "answered"),
        ("requests", "answer", "neutral", "answered"),
        ("requests", "answer", None, "answered"),
        ("requests", None, None, "no_reply"),
        ("issues", "fix", "neutral", "answered"),
    ),
    -1: (
        ("issues", "nofix", "angry", "unresolved"),
        ("issues", "nofix", "polite_unhappy", "unresolved"),
        ("issues", "nofix", "sarcastic", "sarcastic"),
        ("issues", "fix", "sarcastic", "sarcastic"),
        ("issues", None, None, "no_reply"),
    ),
}
_CLOSING_KIND = {1: "satisfied", 0: "neutral", -1: "dissatisfied"}
_EMOJI = {1: ("😊", "🙏", "👍", "❤️", "!!"), 0: ("",), -1: ("😡", "🙄", "😤", "...", "!!!")}
_COMMA_DECIMALS = {"de", "fr", "es"}


def _number_slots(rng: random.Random, data: dict[str, Any]) -> dict[str, str]:
    language = data["language"]
    if any(sign in data["currency"] for sign in ("원", "円")):
        amount = f"{rng.randrange(1_000, 300_000, 100):,}"
    elif rng.random() < 0.5:
        amount = str(rng.randint(5, 400))
    else:
        amount = f"{rng.randint(5, 400)}.{rng.choice(('99', '50', '90', '00'))}"
        if language in _COMMA_DECIMALS:
            amount = amount.replace(".", ",")
    letters = "ABCDEFGHKLMNPRSTXZ"
    order = rng.choice(
        (
            f"#{rng.randint(10_000, 99_999)}",
            f"{rng.choice(letters)}{rng.choice(letters)}-{rng.randint(1000, 9999)}",
            str(rng.randint(10_000_000, 99_999_999)),
        )
    )
    return {
        "order": order,
        "amount": data["currency"].format(n=amount),
        "minutes": str(rng.randrange(15, 185, 5)),
        "days": str(rng.randint(2, 21)),
        "date": data["date"].format(month=rng.randint(1, 12), day=rng.randint(1, 28)),
        "time": f"{rng.randint(7, 22)}:{rng.choice(('00', '15', '30', '45', '05', '50'))}",
    }


def _typo(rng: random.Random, text: str) -> str:
    """Swap two neighbouring letters once, as a hurried customer does."""
    spots = [i for i in range(len(text) - 1) if text[i].isalpha() and text[i + 1].isalpha()]
    if not spots:
        return text
    i = rng.choice(spots)
    return text[:i] + text[i + 1] + text[i] + text[i + 2 :]


def _customer_style(rng: random.Random, text: str, sentiment: int, language: str) -> str:
    """Real customers write lower case, in capitals when angry, with typos and emoji."""
    latin = language in ("en", "es", "de", "fr")
    roll = rng.random()
    if latin and roll < 0.15:
        text = text.lower().rstrip(".")
    elif latin and sentiment == -1 and roll < 0.22:
        text = text.upper()
    if rng.random() < 0.12:
        text = _typo(rng, text)
    if rng.random() < 0.12:
        text = f"{text} {rng.choice(_EMOJI[sentiment])}".rstrip()
    return text


def _speakers(
    rng: random.Random, data: dict[str, Any], user_id: str, name: str, agent: str, brand: str
) -> tuple[str, str, bool]:
    """Prefixes of customer and agent turns in one of the styles chat exports use; the bool
    says whether the customer's name appears (a draft may then greet by name)."""
    labels = data["speaker_labels"]
    style = rng.randrange(5)
    if style == 0:
        return f"id {user_id}: ", f"id {rng.randint(1, 99)}: ", False
    if style == 1:
        return f"{rng.choice(labels['customer'])}: ", f"{rng.choice(labels['agent'])}: ", False
    if style == 2:
        return f"{name}: ", f"{rng.choice((agent, brand))}: ", True
    clock = f"[{rng.randint(8, 21):02d}:{rng.randint(0, 59):02d}] "
    if style == 3:
        return f"{clock}{rng.choice(labels['customer'])}: ", f"{clock}{agent}: ", False
    return f"{name} > ", f"{brand} > ", True


def _example(rng: random.Random, seed: int, index: int) -> dict[str, Any]:
    """One example: label first (balanced classes), then language, trade and pattern."""
    sentiment = rng.choice((-1, 0, 1))
    language = rng.choice(LANGUAGES)
    data = load_language(language)
    domain_name = rng.choice(DOMAINS)
    domain = data["domains"][domain_name]
    opening_kind, reply_kind, ending_kind, outcome = rng.choice(PATTERNS[sentiment])
    case = rng.choice(domain[opening_kind])
    user_id = str(rng.randint(100, 99_999))
    name = rng.choice(data["customer_names"])
    agent = rng.choice(data["agent_names"])
    brand = rng.choice(domain["brands"])
    slots = {"brand": brand, "name": name, "agent": agent, **_number_slots(rng, data)}
    slots.update({key: rng.choice(values) for key, values in (domain.get("slots") or {}).items()})

    def fill(template: str) -> str:
        return _korean_particles(template.format_map(slots))

    customer, staff, named = _speakers(rng, data, user_id, name, agent, brand)
    turns: list[tuple[str, str]] = [(customer, rng.choice(case["open"]))]
    if reply_kind is not None:
        fillers = rng.sample(
            data["fillers"], k=min(len(data["fillers"]), rng.choice((0, 0, 0, 1, 2, 7)))
        )
        for ask, answer in fillers:
            turns += [(staff, ask), (customer, answer)]
        reply_texts = case["answer"] if reply_kind == "answer" else case[reply_kind]
        turns.append((staff, rng.choice(reply_texts)))
        if ending_kind is not None:
            turns.append((customer, rng.choice(data["endings"][ending_kind])))
            if rng.random() < 0.4:
                turns.append((staff, rng.choice(data["agent_closings"][_CLOSING_KIND[sentiment]])))
    if rng.random() < 0.05:  # a customer tries to instruct the model: the label must not move
        at = rng.choice([i for i, (who, _) in enumerate(turns) if who == customer])
        turns[at] = (customer, f"{turns[at][1]} {rng.choice(data['injections'])}")
    lines = []
    for who, text in turns:
        text = fill(text)
        if who == customer:
            text = _customer_style(rng, text, sentiment, language)
        lines.append(f"{who}{text}")
    if len(turns) == 1 and rng.random() < 0.5:
        lines = [fill(turns[0][1])]  # a lone message, exported without a speaker label

    summary = f"{fill(case['summary'])} {data['outcomes'][outcome]}"
    draft = None
    if sentiment == -1:
        openers = [o for o in data["draft_openers"] if named or "{name}" not in o]
        parts = [rng.choice(openers)] if openers else []
        parts += [case["draft"], rng.choice(data["draft_closers"])]
        draft = " ".join(fill(part) for part in parts)
    return {
        "id": f"syn-{seed}-{index}",
        "user_id": user_id,
        "language": language,
        "domain": domain_name,
        "pattern": f"{opening_kind}/{reply_kind}/{ending_kind}",
        "chat_message": "\n".join(lines),
        "sentiment": sentiment,
        "summary": summary,
        "draft": draft,
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
    parser = argparse.ArgumentParser(prog="python -m triage.synthetic", description=__doc__)
    parser.add_argument("--check", nargs="+", metavar="FILE", help="validate data files")
    parser.add_argument("--n", type=int, default=3000, help="number of examples (default 3000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--out", help="output .jsonl path")
    args = parser.parse_args(argv)
    if not args.check:
        if not args.out:
            parser.error("--out is required (or --check FILE...)")
        if args.n < 0:
            parser.error("--n must be >= 0")
        write_jsonl(args.out, generate(args.n, args.seed))
        print(
            f"wrote {args.n} synthetic examples (seed {args.seed}) to {args.out}", file=sys.stderr
        )
        return 0
    status = 0
    for path in args.check or []:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            print(f"{path}: {e}", file=sys.stderr)
            status = 1
            continue
        problems = check_language_data(data)
        for p in problems:
            print(f"{path}: {p}", file=sys.stderr)
        print(f"{path}: {'ok' if not problems else f'{len(problems)} problems'}", file=sys.stderr)
        status = status or int(bool(problems))
    return status


if __name__ == "__main__":
    raise SystemExit(main())
