"""Constrained decoding: the reply schema as a token automaton, masked inside the jitted loop.

The tiny preset has random weights, so its free-text replies almost never parse: if its
constrained replies always do, the guarantee comes from the automaton, not from the model.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from handlers.gemma import GemmaModelHandler
from handlers.token_automaton import TokenAutomaton, automaton_for, token_bytes
from triage.parse import CONSTRAINED_REPLY_CHARS, REPLY_SCHEMA, ParsedReply, parse_reply
from triage.prompts import load_template
from triage.synthetic import generate

pytestmark = pytest.mark.model

TRIAGE = load_template("triage")


@pytest.fixture(scope="module")
def tokenizer(tiny_preset):
    import keras_hub

    return keras_hub.models.Tokenizer.from_preset(tiny_preset)


@pytest.fixture(scope="module")
def stop_ids(tokenizer):
    return sorted({tokenizer.token_to_id("<eos>"), tokenizer.token_to_id("<end_of_turn>")})


@pytest.fixture(scope="module")
def automaton(tokenizer, stop_ids, tmp_path_factory):
    return automaton_for(tokenizer, REPLY_SCHEMA, stop_ids, tmp_path_factory.mktemp("automata"))


def _ids(tokenizer, text: str) -> list[int]:
    return [int(i) for i in tokenizer.tokenize(text)]


# --- the automaton ------------------------------------------------------------------------


def test_text_pieces_exclude_markers_and_map_bytes(tokenizer):
    pieces = token_bytes(tokenizer)
    assert len(pieces) == tokenizer.vocabulary_size()
    for marker in ("<start_of_turn>", "<end_of_turn>", "<eos>", "<bos>", "<pad>"):
        assert pieces[tokenizer.token_to_id(marker)] is None
    assert pieces[tokenizer.token_to_id("<0x0A>")] == b"\n"
    assert pieces[tokenizer.token_to_id("<0xE3>")] == b"\xe3"


@pytest.mark.parametrize(
    "reply",
    [
        '{"sentiment": -1, "summary": "late pizza"}',
        '{"sentiment":0,"summary":"x"}',
        '{ "sentiment" : 1 , "summary" : "配達が早い \\"great\\"" }',
    ],
)
def test_valid_replies_reach_an_accepting_state(tokenizer, automaton, stop_ids, reply):
    state = automaton.walk(_ids(tokenizer, reply))
    assert state >= 0 and automaton.accepting[state]
    assert automaton.walk([*_ids(tokenizer, reply), stop_ids[0]]) >= 0


@pytest.mark.parametrize(
    "reply",
    [
        '{"sentiment": 2, "summary": "late"}',  # not in the enum
        '{"sentiment": "1", "summary": "late"}',  # a string, not the number
        '{"summary": "late", "sentiment": 1}',  # keys in schema order only
        '{"sentiment": 1, "summary": "late", "extra": 1}',  # no other keys
        '{"sentiment": 1, "summary": ""}',  # empty summary
        '{"sentiment": 1, "summary": " late"}',  # blank-first: could strip to empty
        '{"sentiment": 1, "summary": "\\u0041"}',  # \\u escapes could spell lone surrogates
        'Sure! {"sentiment": 1, "summary": "late"}',  # nothing before the object
    ],
)
def test_invalid_replies_are_refused(tokenizer, automaton, reply):
    state = automaton.walk(_ids(tokenizer, reply))
    assert state < 0 or not automaton.accepting[state]


def test_stop_token_only_in_accepting_states(automaton, stop_ids):
    for stop in stop_ids:
        allowed = automaton.next_state[:, stop] >= 0
        assert np.array_equal(allowed, automaton.accepting)


def _random_walk(automaton: TokenAutomaton, rng: random.Random, budget: int, cap: int):
    """Host-side twin of the device mask: a random allowed token while the budgets allow."""
    state, chars, out = automaton.initial, 0, []
    for left in range(budget, 0, -1):
        row = automaton.next_state[state].astype(np.int64)
        ok = row >= 0
        safe = np.where(ok, row, 0)
        ok &= automaton.min_tokens[safe] <= left - 1
        ok &= chars + automaton.token_chars + automaton.min_chars[safe] <= cap
        choices = np.flatnonzero(ok)
        assert len(choices), f"no token allowed in state {state} with {left} tokens left"
        token = int(rng.choice(choices))
        out.append(token)
        chars += int(automaton.token_chars[token])
        state = int(row[token])
        if state == automaton.num_states - 1:  # `done`: a stop token was chosen
            out.pop()
            break
    return out, state


@pytest.mark.parametrize("budget,cap", [(12, 60), (40, 80), (192, CONSTRAINED_REPLY_CHARS)])
def test_every_walk_within_budget_parses(tokenizer, automaton, budget, cap):
    """Random tokens, only the masks guiding them: the reply always parses, within budget."""
    rng = random.Random(7)
    pieces = token_bytes(tokenizer)
    for _ in range(60):
        ids, state = _random_walk(automaton, rng, budget, cap)
        assert automaton.accepting[state]
        text = b"".join(pieces[i] for i in ids).decode("utf-8", "replace")
        assert len(ids) <= budget and len(text) <= cap
        parsed = parse_reply(text)
        assert isinstance(parsed, ParsedReply), (parsed, text)
        assert json.loads(text)["sentiment"] == parsed.sentiment


def test_budget_smaller_than_any_reply_is_seen(automaton):
    assert automaton.min_tokens[automaton.initial] > 1
    assert automaton.min_chars[automaton.initial] == len('{"sentiment":0,"summary":"x"}')


def test_index_is_cached_on_disk(tokenizer, stop_ids, tmp_path, monkeypatch):
    first = automaton_for(tokenizer, REPLY_SCHEMA, stop_ids, tmp_path)
    (path,) = tmp_path.glob("*.npz")

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt instead of read from the cache")

    monkeypatch.setattr(TokenAutomaton, "build", no_build)
    again = automaton_for(tokenizer, REPLY_SCHEMA, stop_ids, tmp_path)
    assert np.array_equal(first.next_state, again.next_state)
    assert again.initial == first.initial and again.regex == first.regex
    # Another schema is another file.
    monkeypatch.undo()
    other = {**REPLY_SCHEMA, "properties": {"sentiment": {"enum": [0, 1]}}}
    other["required"] = ["sentiment"]
    automaton_for(tokenizer, other, stop_ids, tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 2
    # A damaged file is rebuilt, not trusted.
    path.write_bytes(b"not an npz")
    rebuilt = automaton_for(tokenizer, REPLY_SCHEMA, stop_ids, tmp_path)
    assert np.array_equal(rebuilt.next_state, first.next_state)


def test_table_is_small(automaton, tokenizer):
    assert automaton.class_next.dtype == np.int16
    assert automaton.num_states < 100
    # Token classes, not a dense [states, vocabulary] table: well under one int16 per state
    # and token.
    assert automaton.class_next.shape[1] < tokenizer.vocabulary_size() // 4
    assert automaton.nbytes < automaton.num_states * tokenizer.vocabulary_size() * 2 // 4


def test_token_classes_preserve_every_transition(tokenizer, stop_ids):
    """The class table is a lossless compression of the dense table outlines-core indexes."""
    from handlers.token_automaton import dense_table, regex_for_schema

    regex, vocabulary = regex_for_schema(REPLY_SCHEMA), token_bytes(tokenizer)
    automaton = TokenAutomaton.build(regex, vocabulary, stop_ids)
    table, accepting, initial = dense_table(regex, vocabulary, stop_ids)
    assert np.array_equal(automaton.next_state, table)
    assert np.array_equal(automaton.accepting, accepting) and automaton.initial == initial


# --- the sampler inside the real model's jitted loop ----------------------------------------


def _prompts(n: int) -> tuple[list[str], list[dict]]:
    chats = generate(n, seed=11)
    return [TRIAGE.render(c["chat_message"], user_id=str(c["user_id"])).text for c in chats], chats


def _handler(tiny_preset, constrained: bool, **kwargs) -> GemmaModelHandler:
    schema = (
        {"reply_schema": REPLY_SCHEMA, "max_reply_chars": CONSTRAINED_REPLY_CHARS}
        if constrained
        else {}
    )
    kwargs.setdefault("max_new_tokens", TRIAGE.max_reply_tokens)
    kwargs.setdefault("max_batch_size", 8)
    kwargs.setdefault("warm_up", False)
    return GemmaModelHandler(tiny_preset, **schema, **kwargs)


def _parse_rate(results) -> float:
    return sum(isinstance(parse_reply(text), ParsedReply) for text, _, _ in results) / len(results)


def test_random_model_replies_parse_only_when_constrained(tiny_preset):
    prompts, _ = _prompts(56)
    constrained = _handler(tiny_preset, True).load_model()
    free = _handler(tiny_preset, False).load_model()
    assert free.constrained is None and constrained.constrained is not None
    # Same weights: the constrained function shares the loaded model.
    assert constrained.causal_lm is free.causal_lm
    results = constrained.generate(prompts, TRIAGE.max_reply_tokens)
    assert _parse_rate(results) == 1.0
    assert all(n_new <= TRIAGE.max_reply_tokens for _, _, n_new in results)
    assert all(len(text) <= CONSTRAINED_REPLY_CHARS for text, _, _ in results)
    assert _parse_rate(free.generate(prompts, TRIAGE.max_reply_tokens)) <= 0.1


def test_tight_budgets_still_close_the_reply(tiny_preset):
    """12 new tokens: the random model would ramble inside the summary; the budget mask makes
    it close the string and the object in time."""
    model = _handler(tiny_preset, True, max_new_tokens=12, max_batch_tokens=1 << 16).load_model()
    prompts, _ = _prompts(8)
    # Mixed prompt lengths in one padded batch: each row's budget starts at its own prompt end.
    results = model.generate([*prompts, "short"], 12)
    assert all(n_new <= 12 for _, _, n_new in results)
    assert _parse_rate(results) == 1.0


def test_sampling_is_constrained_too(tiny_preset):
    model = _handler(tiny_preset, True, sampler="random").load_model()
    prompts, _ = _prompts(8)
    assert _parse_rate(model.generate(prompts, TRIAGE.max_reply_tokens)) == 1.0


def test_handler_rejects_an_automaton_for_another_vocabulary(tiny_preset, automaton):
    from handlers.constrained import ConstrainedGenerate

    model = _handler(tiny_preset, False).load_model()
    narrow = TokenAutomaton(
        class_next=automaton.class_next,
        token_class=automaton.token_class[:10],
        min_tokens=automaton.min_tokens,
        min_chars=automaton.min_chars,
        token_chars=automaton.token_chars[:10],
        initial=automaton.initial,
        accepting=automaton.accepting,
        regex=automaton.regex,
    )
    with pytest.raises(ValueError, match="vocabulary"):
        ConstrainedGenerate(model.causal_lm, narrow, CONSTRAINED_REPLY_CHARS)


def test_constrained_compilations_are_bounded_by_the_buckets(tiny_preset):
    """Warm-up compiles the constrained function for every bucket; a random stream of batch
    sizes, prompt lengths and budgets compiles nothing more (the budget is an argument)."""
    from handlers.compilations import CompilationCounter

    handler = _handler(
        tiny_preset,
        True,
        max_new_tokens=16,
        max_batch_size=4,
        length_buckets=(64, 128),
        max_batch_tokens=1 << 16,
        warm_up=True,
    )
    counter = CompilationCounter()
    model = handler.load_model()
    after_warm_up = counter.count
    assert after_warm_up > 0
    rng = random.Random(3)
    for _ in range(20):
        prompts = ["word " * rng.randint(1, 30) for _ in range(rng.randint(1, 4))]
        results = model.generate(prompts, 16)
        assert _parse_rate(results) == 1.0
    assert counter.count == after_warm_up


# --- apology drafts: free text without digits -------------------------------------------------


def test_draft_automaton_refuses_every_token_with_a_digit(tokenizer, stop_ids, tmp_path):
    from triage.parse import DRAFT_REGEX

    draft = automaton_for(tokenizer, DRAFT_REGEX, stop_ids, tmp_path)
    pieces = token_bytes(tokenizer)
    digit = [
        i
        for i, b in enumerate(pieces)
        if b and any(c.isdigit() for c in b.decode("utf-8", "ignore"))
    ]
    assert digit  # the tiny vocabulary has digit tokens to refuse
    table = draft.next_state
    assert (table[:, digit] < 0).all()
    letters = _ids(tokenizer, "Sorry")
    assert all(table[draft.initial, i] >= 0 for i in letters[:1])


def test_draft_automaton_refuses_hidden_characters_and_code(tokenizer, stop_ids, tmp_path):
    """A draft copying a pasted error object looped on bidi overrides (U+202D) between dashes;
    invisible format characters, braces and backslashes are refused, line breaks are not."""
    from triage.parse import DRAFT_REGEX

    draft = automaton_for(tokenizer, DRAFT_REGEX, stop_ids, tmp_path)
    pieces = [b.decode("utf-8", "ignore") if b else "" for b in token_bytes(tokenizer)]
    refused = [i for i, p in enumerate(pieces) if any(c in p for c in "{}\\\u202d\u200b\t")]
    assert refused  # byte-fallback tokens cover these characters even in the tiny vocabulary
    after_a_word = int(draft.next_state[draft.initial, _ids(tokenizer, "Sorry")[0]])
    assert after_a_word >= 0
    assert (draft.next_state[[draft.initial, after_a_word]][:, refused] < 0).all()
    newline = [i for i, p in enumerate(pieces) if p == "\n"]
    assert newline and (draft.next_state[after_a_word, newline] >= 0).all()


def test_random_model_drafts_hold_no_digits(tiny_preset):
    from triage.parse import DRAFT_MAX_CHARS, DRAFT_REGEX

    apology = load_template("apology")
    chats = generate(6, seed=4)
    prompts = [
        apology.render(
            c["chat_message"], user_id=str(c["user_id"]), summary=c["summary"], similar="[]"
        ).text
        for c in chats
    ]
    model = GemmaModelHandler(
        tiny_preset,
        max_new_tokens=40,
        reply_schema=DRAFT_REGEX,
        max_reply_chars=DRAFT_MAX_CHARS,
        warm_up=False,
        sampler="random",
    ).load_model()
    texts = [text for text, _, _ in model.generate(prompts, 40)]
    assert all(text.strip() for text in texts)
    assert not any(ch.isdigit() for text in texts for ch in text), texts


def test_triage_replies_may_put_the_summary_first(tokenizer, stop_ids, tmp_path):
    from triage.parse import reply_regex

    either = automaton_for(tokenizer, reply_regex(), stop_ids, tmp_path)
    for reply in ('{"sentiment": -1, "summary": "late"}', '{"summary": "late", "sentiment": -1}'):
        state = either.initial
        for token in _ids(tokenizer, reply):
            state = int(either.next_state[state, token])
            assert state >= 0, reply
        assert either.accepting[state], reply
        assert parse_reply(reply) == ParsedReply(-1, "late")
