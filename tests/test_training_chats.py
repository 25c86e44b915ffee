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
