"""The written training chats: usable labels and drafts, balanced, and disjoint from eval/."""

import collections
import json
import re
from pathlib import Path

import pytest

from triage.training_set import WRITTEN_DIR, check_written, read_written, training_records

LANGUAGES = ("de", "en", "es", "fr", "ja", "ko")
EVAL = Path(__file__).resolve().parents[1] / "eval" / "handwritten.jsonl"


def _lines(chat: str) -> set[str]:
    """A chat's lines without speaker labels, those long enough to be more than a stock
    phrase ("ok, thanks", "Thank you for contacting us. Let me check.")."""
    said = (
        re.sub(r"^[^:：]{0,30}[:：]\s*", "", line.strip()).lower() for line in chat.splitlines()
    )
    return {line for line in said if len(line) >= 40}


def test_every_language_has_written_chats_that_pass_the_check():
    assert sorted(p.stem for p in WRITTEN_DIR.glob("*.jsonl")) == list(LANGUAGES)
    rows = read_written(split="train") + read_written(split="dev")
    assert check_written(rows) == []
    per_language = collections.Counter(r["language"] for r in rows)
    assert all(per_language[lang] >= 100 for lang in LANGUAGES), per_language


def test_the_train_split_is_balanced_and_disjoint_from_dev():
    train, dev = read_written(split="train"), read_written(split="dev")
    assert not {r["id"] for r in train} & {r["id"] for r in dev}
    for lang in LANGUAGES:
        labels = collections.Counter(r["sentiment"] for r in train if r["language"] == lang)
        assert sum(labels.values()) == 100
        assert min(labels.values()) >= 25, (lang, labels)  # no label starved


def test_no_written_training_chat_shares_a_line_with_the_evaluation_set():
    """The hand-written evaluation set must stay unseen: no line of 40+ characters (speaker
    label removed) appears in both."""
    evaluation = [json.loads(line) for line in EVAL.read_text(encoding="utf-8").splitlines()]
    eval_lines = set().union(*(_lines(r["chat_message"]) for r in evaluation))
    written = read_written(split="train") + read_written(split="dev")
    shared = {line for r in written for line in _lines(r["chat_message"]) & eval_lines}
    assert not shared


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"draft": "Sorry about order 4821."}, "digits"),
        ({"sentiment": 2}, "sentiment"),
        ({"summary": "x" * 513}, "summary"),
        ({"draft": None}, "needs a draft"),
    ],
)
def test_the_check_refuses_what_would_teach_the_model_wrong(change, problem):
    row = {
        "id": "t-1",
        "sentiment": -1,
        "chat_message": "Customer: still no refund",
        "summary": "Refund missing; the customer is unhappy.",
        "draft": "I am sorry the refund has not arrived yet.",
    }
    assert check_written([row]) == []
    assert any(problem in p for p in check_written([{**row, **change}]))


def test_the_training_set_adds_generated_chats_after_the_written_ones():
    rows = training_records(train_per_language=100, synthetic_n=12, seed=1)
    assert len(rows) == 600 + 12
    assert [bool(r.get("synthetic")) for r in rows] == [False] * 600 + [True] * 12


def test_grounded_drafts_pass_their_check_and_become_apology_examples_only():
    from triage.finetune import build_examples
    from triage.training_set import check_grounded, read_grounded

    rows = read_grounded()
    assert collections.Counter(r["language"] for r in rows) == {
        lang: 30 for lang in ("de", "en", "es", "fr", "ja", "ko")
    }
    assert check_grounded(rows) == []
    examples = build_examples(rows, apology_version="apology-v3")
    assert len(examples) == len(rows)  # no triage example: they carry no label
    first = json.dumps(rows[0]["similar"][0]["remedy"], ensure_ascii=False)[1:-1]
    assert first in examples[0].prompt and "<similar>" in examples[0].prompt


def test_the_grounded_check_refuses_numbers_nobody_gave_and_remedies_that_do_not_fit():
    from triage.training_set import check_grounded

    row = {
        "id": "x",
        "language": "en",
        "chat_message": "my order is late",
        "similar": [{"kind": "policy", "title": "Lost card", "remedy": "Block the card."}],
        "fits": False,
        "draft": "Sorry. You will get a refund within 48 hours.",
    }
    problems = check_grounded([row])
    assert any("number" in p for p in problems) and any("remedy" in p for p in problems)


def test_no_grounded_chat_shares_a_line_with_the_evaluation_sets():
    from triage.training_set import read_grounded

    held_out = [
        json.loads(line)
        for path in (EVAL, EVAL.parent / "retrieval.jsonl")
        for line in path.read_text(encoding="utf-8").splitlines()
    ]
    eval_lines = set().union(*(_lines(r["chat_message"]) for r in held_out))
    shared = {line for r in read_grounded() for line in _lines(r["chat_message"]) & eval_lines}
    assert not shared
