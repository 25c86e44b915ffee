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
    "domain",
    "pattern",
    "chat_message",
    "sentiment",
    "summary",
    "draft",
    "synthetic",
}
CONTROL_STRINGS = ("<start_of_turn>", "<end_of_turn>", "<eos>", "<bos>")
HANGUL = re.compile(r"[\uac00-\ud7a3]")
KANA = re.compile(r"[\u3040-\u30ff]")


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
        assert ex["domain"] in synthetic.DOMAINS
    assert [ex["id"] for ex in examples] == [f"syn-7-{i}" for i in range(len(examples))]


def test_sentiments_are_valid_and_roughly_balanced(examples):
    counts = Counter(ex["sentiment"] for ex in examples)
    assert set(counts) == {-1, 0, 1}
    for count in counts.values():
        assert 0.25 <= count / len(examples) <= 0.42, counts


def test_every_language_domain_and_pattern_appears(examples):
    assert {ex["language"] for ex in examples} == set(synthetic.LANGUAGES)
    assert {ex["domain"] for ex in examples} == set(synthetic.DOMAINS)
    patterns = {
        (label, "/".join(map(str, p[:3]))) for label, ps in synthetic.PATTERNS.items() for p in ps
    }
    assert {(ex["sentiment"], ex["pattern"]) for ex in examples} == patterns


def test_the_label_follows_the_end_of_the_chat(examples):
    """Same opening kind, different endings, different labels: a fixed complaint that ends in
    thanks is satisfied, one that ends in sarcasm is not."""
    fixed = {ex["sentiment"] for ex in examples if ex["pattern"] == "issues/fix/satisfied"}
    sarcastic = {ex["sentiment"] for ex in examples if ex["pattern"].endswith("/sarcastic")}
    assert fixed == {1} and sarcastic == {-1}


def test_the_shapes_real_chats_have_appear(examples):
    chats = [ex["chat_message"] for ex in examples]
    turns = [len(c.split("\n")) for c in chats]
    assert min(turns) == 1 and max(turns) >= 15  # a lone message, and long chats
    assert any(c.startswith("id ") for c in chats)  # the pipeline's own export style
    assert any(re.match(r"^\[\d\d:\d\d\] ", c) for c in chats)  # timestamps
    assert any(re.search(r"[😊🙏👍😡🙄😤]", c) for c in chats)
    injections = [
        i for lang in synthetic.LANGUAGES for i in synthetic.load_language(lang)["injections"]
    ]
    assert any(i in c for i in injections for c in chats)


def test_data_files_pass_their_schema():
    for language in synthetic.LANGUAGES:
        assert synthetic.check_language_data(synthetic.load_language(language)) == [], language


def test_the_schema_check_finds_problems():
    data = json.loads(json.dumps(synthetic.load_language("en")))
    data["domains"]["hotel"]["issues"][0]["draft"] = "Sorry about order {order}, worth 20 dollars."
    del data["domains"]["games"]
    data["endings"]["neutral"] = ["ok"]
    problems = "\n".join(synthetic.check_language_data(data))
    assert "domains: missing ['games']" in problems
    assert "endings.neutral: needs a list of at least 15" in problems
    assert "domains.hotel.issues[0].draft[0]: drafts may hold no digits" in problems


def test_drafts_iff_negative(examples):
    for ex in examples:
        if ex["sentiment"] == -1:
            assert isinstance(ex["draft"], str) and ex["draft"].strip()
        else:
            assert ex["draft"] is None


def test_summaries_are_short_and_drafts_hold_no_numbers(examples):
    for ex in examples:
        assert 20 <= len(ex["summary"]) <= 300 < 512, ex["summary"]
        assert "\n" not in ex["summary"]
        assert not re.search(r"\d", ex["draft"] or ""), ex["draft"]


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
        # pasted JSON keeps its braces; an unfilled {slot} must not survive
        assert not re.search(
            r"\{[a-z_]+\}", ex["chat_message"] + ex["summary"] + (ex["draft"] or "")
        )
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


def test_chats_pass_the_input_contract(examples):
    for ex in examples:
        payload = json.dumps(
            {"id": ex["id"], "user_id": ex["user_id"], "chat_message": ex["chat_message"]}
        ).encode()
        assert isinstance(parse_chat(payload), Chat), ex


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
