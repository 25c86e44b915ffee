"""The synthetic training data: deterministic, well-formed, balanced and valid pipeline input."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from triage import synthetic
from triage.parse import ParsedReply, parse_reply
from triage.records import Chat
from triage.validate import parse_chat

KEYS = {
    "id",
    "user_id",
    "language",
    "topic",
    "chat_message",
    "sentiment",
    "summary",
    "draft",
    "synthetic",
}
TOPICS = {
    "late_delivery",
    "wrong_order",
    "refund",
    "rude_staff",
    "allergy",
    "app_problem",
    "praise",
    "loyalty_points",
}
CONTROL_STRINGS = ("<start_of_turn>", "<end_of_turn>", "<eos>", "<bos>")
HANGUL = re.compile(r"[\uac00-\ud7a3]")
KANA = re.compile(r"[\u3040-\u30ff]")
TURN = re.compile(r"^id (\d+): \S")


@pytest.fixture(scope="module")
def examples() -> list[dict]:
    return synthetic.generate(900, seed=7)


def test_same_seed_gives_the_same_examples():
    assert synthetic.generate(50, 11) == synthetic.generate(50, 11)


def test_different_seeds_give_different_examples():
    a, b = synthetic.generate(50, 1), synthetic.generate(50, 2)
    assert [x["chat_message"] for x in a] != [x["chat_message"] for x in b]
    assert a[0]["id"] == "syn-1-0" and b[0]["id"] == "syn-2-0"


def test_exact_keys_and_types(examples):
    for ex in examples:
        assert set(ex) == KEYS
        assert ex["user_id"].isdigit()
        assert ex["synthetic"] is True
        assert ex["language"] in synthetic.LANGUAGES
        assert ex["topic"] in TOPICS
    assert [ex["id"] for ex in examples] == [f"syn-7-{i}" for i in range(len(examples))]


def test_sentiments_are_valid_and_roughly_balanced(examples):
    counts = Counter(ex["sentiment"] for ex in examples)
    assert set(counts) == {-1, 0, 1}
    for count in counts.values():
        assert 0.25 <= count / len(examples) <= 0.42, counts


def test_every_language_and_topic_appears(examples):
    assert {ex["language"] for ex in examples} == {"en", "ko", "ja"}
    assert {ex["topic"] for ex in examples} == TOPICS


def test_drafts_iff_negative(examples):
    for ex in examples:
        if ex["sentiment"] == -1:
            assert isinstance(ex["draft"], str) and ex["draft"].strip()
        else:
            assert ex["draft"] is None


def test_summaries_are_one_short_sentence(examples):
    for ex in examples:
        assert 20 <= len(ex["summary"]) <= 200 < 512, ex["summary"]
        assert "\n" not in ex["summary"]


def test_summaries_are_accepted_by_the_reply_parser(examples):
    for ex in examples[:100]:
        reply = json.dumps(
            {"sentiment": ex["sentiment"], "summary": ex["summary"]}, ensure_ascii=False
        )
        assert parse_reply(reply) == ParsedReply(ex["sentiment"], ex["summary"])


def test_no_gemma_control_strings_or_unfilled_templates(examples):
    for ex in examples:
        text = json.dumps(ex, ensure_ascii=False)
        for marker in CONTROL_STRINGS:
            assert marker not in text
        assert "{" not in ex["chat_message"] + ex["summary"] + (ex["draft"] or "")
        assert not re.search(r"이/가|을/를|은/는|과/와", text)


def test_scripts_match_the_language(examples):
    for ex in examples:
        texts = (ex["chat_message"], ex["summary"], ex["draft"] or "")
        if ex["language"] == "ko":
            assert all(HANGUL.search(t) for t in texts if t)
        elif ex["language"] == "ja":
            assert all(KANA.search(t) for t in texts if t)
        else:
            assert not HANGUL.search("".join(texts)) and not KANA.search("".join(texts))


def test_chats_have_two_to_four_turns_between_customer_and_agent(examples):
    for ex in examples:
        turns = ex["chat_message"].split("\n")
        assert 2 <= len(turns) <= 4
        speakers = [TURN.match(turn).group(1) for turn in turns]
        assert speakers[0] == ex["user_id"]
        assert speakers[1] != ex["user_id"]
        assert speakers[::2] == [ex["user_id"]] * len(speakers[::2])


def test_chats_pass_the_input_contract(examples):
    for ex in examples:
        payload = json.dumps(
            {"id": ex["id"], "user_id": ex["user_id"], "chat_message": ex["chat_message"]}
        ).encode()
        assert isinstance(parse_chat(payload), Chat), ex


def test_every_variant_has_enough_templates():
    for variant in synthetic.VARIANTS:
        assert set(variant.text) == set(synthetic.LANGUAGES)
        for lines in variant.text.values():
            assert len(lines.openings) >= 3
            assert lines.replies and lines.follow_ups and lines.summary
        if variant.sentiment == -1:
            assert set(synthetic.DRAFTS[variant.topic]) == set(synthetic.LANGUAGES)


def test_write_jsonl_round_trips(tmp_path):
    data = synthetic.generate(30, 5)
    path = tmp_path / "out" / "data.jsonl"
    synthetic.write_jsonl(path, data)
    lines = path.read_text("utf-8").splitlines()
    assert [json.loads(line) for line in lines] == data
    assert any(HANGUL.search(line) for line in lines)  # written as text, not \u escapes


def test_cli_writes_n_lines(tmp_path):
    out = tmp_path / "x.jsonl"
    assert synthetic.main(["--n", "5", "--seed", "3", "--out", str(out)]) == 0
    lines = out.read_text("utf-8").splitlines()
    assert len(lines) == 5
    assert [json.loads(line) for line in lines] == synthetic.generate(5, 3)
