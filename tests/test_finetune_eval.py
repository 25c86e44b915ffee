"""`triage finetune` on a few steps and `triage eval` on a handful of examples."""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from triage.evaluate import evaluate
from triage.finetune import (
    END_OF_TURN,
    _answer_only_model,
    _Batches,
    _encode,
    build_examples,
    enable_lora,
    finetune,
    merge_adapter,
)
from triage.parse import ParsedReply, parse_reply
from triage.prompts import quote_untrusted
from triage.synthetic import generate

EVAL_LINE = re.compile(r"^eval: parsed \d+\.\d%, sentiment accuracy \d+\.\d%, drafts \d+\.\d%$")
DRAFTS_LINE = re.compile(
    r"^drafts: in the chat's language \d+\.\d%, with a number not in the chat \d+\.\d%$"
)


@pytest.fixture(scope="module")
def records():
    # Chats short enough that no prompt budget shortens them (the oracle below finds them).
    return [r for r in generate(60, seed=5) if len(r["chat_message"].encode()) < 600][:12]


def test_training_answers_are_what_the_parser_accepts(records):
    """The model is trained on exactly the answers the pipeline will accept: no drift between
    the training target and the parser."""
    examples = build_examples(records)
    triage = [e for e in examples if "<chat>" in e.prompt and '"sentiment"' in e.answer]
    assert len(triage) == len(records)
    for record, example in zip(records, triage, strict=True):
        assert parse_reply(example.answer, prompt=example.prompt) == ParsedReply(
            record["sentiment"], record["summary"]
        )
        assert example.prompt.endswith("<start_of_turn>model\n")
    drafts = [e for e in examples if e not in triage]
    assert len(drafts) == sum(1 for r in records if r["draft"])
    assert all("<summary>" in e.prompt for e in drafts)


@pytest.mark.model
def test_loss_is_on_the_answer_and_its_end_only(records, tiny_preset):
    import keras_hub

    tokenizer = keras_hub.models.Tokenizer.from_preset(tiny_preset)
    examples = build_examples(records[:3])
    encoded = _encode(tokenizer, examples, max_length=4096)
    batches = _Batches(encoded, batch_size=8, seed=0, boost=4.0)
    x, y, weight = batches.batch(0)
    end = tokenizer.token_to_id(END_OF_TURN)
    for row, index in enumerate(batches.batches[0]):
        item = encoded[index]
        targets = len(item.ids) - item.answer_start  # answer tokens plus <end_of_turn>
        assert np.count_nonzero(weight[row]) == targets
        assert list(y[row][:targets]) == item.ids[item.answer_start :]
        assert y[row][targets - 1] == end  # the last thing learned is to stop
        # position p holds token p and predicts token p + 1
        positions = x["answer_positions"][row][:targets]
        assert [item.ids[p + 1] for p in positions] == list(y[row][:targets])
        assert list(x["token_ids"][row][positions]) == item.ids[item.answer_start - 1 : -1]
        assert x["padding_mask"][row].sum() == len(item.ids) - 1
        boosted = np.flatnonzero(weight[row] == 4.0)
        if examples[index].answer.startswith("{"):  # a triage answer: its label is weighted
            value = tokenizer.detokenize(np.asarray(y[row][boosted]))
            assert str(json.loads(examples[index].answer)["sentiment"]) in str(value)
        else:
            assert boosted.size == 0  # drafts have no sentiment to weight
    assert x["token_ids"].shape[1] % 128 == 0 and y.shape[1] % 64 == 0


@pytest.mark.model
def test_fixed_shapes_keep_each_batchs_loss(records, tiny_preset):
    """One shape per width, short batches filled with weightless rows, and every batch's mean
    over its answer slots unchanged: fewer compilations without reweighting the data."""
    import keras_hub

    tokenizer = keras_hub.models.Tokenizer.from_preset(tiny_preset)
    encoded = _encode(tokenizer, build_examples(records), max_length=4096)
    fixed = _Batches(
        encoded, batch_size=16, seed=0, boost=4.0, tokens_per_batch=1024, fixed_shapes=True
    )
    shapes = {}
    for index, members in enumerate(fixed.batches):
        x, _, _, y, weight = fixed.arrays(index)
        assert x.shape[1] % 64 == 0 and y.shape[1] == fixed._answer_width
        assert shapes.setdefault(x.shape[1], x.shape) == x.shape  # one shape per width
        assert not weight[len(members) :].any()  # filler rows teach nothing
        # the loss Keras takes is sum(weight * ce) / weight.size: the same per slot as the
        # natural batch of these rows, whose answers are padded to their own width
        natural = max(fixed._shape(encoded[i])[1] for i in members) * len(members)
        for row, i in enumerate(members):
            item = encoded[i]
            n = len(item.ids) - item.answer_start
            assert list(y[row][:n]) == item.ids[item.answer_start :]
            assert weight[row][:n].min() * natural / weight.size == pytest.approx(1.0)


@pytest.mark.model
def test_answer_only_logits_equal_the_full_models_at_those_positions(records, tiny_preset):
    """The training model computes the output projection only where the loss is taken; what it
    computes there must be exactly the causal LM's logits."""
    import keras_hub

    causal_lm = keras_hub.models.CausalLM.from_preset(tiny_preset)
    encoded = _encode(causal_lm.preprocessor.tokenizer, build_examples(records[:2]), 4096)
    x, _, _ = _Batches(encoded, batch_size=2, seed=0, boost=1.0).batch(0)
    full = np.asarray(causal_lm({"token_ids": x["token_ids"], "padding_mask": x["padding_mask"]}))
    partial = np.asarray(_answer_only_model(causal_lm)(x))
    expected = np.take_along_axis(full, x["answer_positions"][:, :, None], axis=1)
    # float32 in another fusion order: ~5e-4 apart; a wrong position is off by O(1)
    np.testing.assert_allclose(partial, expected, rtol=2e-3, atol=2e-3)


@pytest.mark.model
def test_lora_on_the_top_blocks_trains_only_their_adapters(tiny_preset):
    import keras_hub

    backbone = keras_hub.models.CausalLM.from_preset(tiny_preset).backbone
    adapted = enable_lora(backbone, rank=2, top_layers=1)
    trainable = backbone.trainable_weights
    assert adapted > 0 and len(trainable) == 2 * adapted
    assert all(w.path.split("/")[-1] in ("lora_kernel_a", "lora_kernel_b") for w in trainable)
    top = backbone.transformer_layers[-1].name
    assert all(w.path.startswith(top) or f"/{top}/" in w.path for w in trainable)


@pytest.mark.model
def test_the_trained_head_computes_the_adapted_model(records, tiny_preset):
    """Factored LoRA, cached frozen blocks and the compact vocabulary are a faster route to
    the same logits as the whole merged model (the loss restricted to the data's tokens)."""
    import keras_hub

    from triage.training_model import FrozenPrefix, adapted_head, compact_vocabulary, fast_lora

    causal_lm = keras_hub.models.CausalLM.from_preset(tiny_preset)
    backbone = causal_lm.backbone
    adapted = enable_lora(backbone, rank=2, top_layers=1)
    rng = np.random.default_rng(0)
    for weight in backbone.trainable_weights:  # B starts at zero: make the adapters count
        weight.assign(rng.normal(0, 0.5, weight.shape).astype("float32"))
    encoded = _encode(causal_lm.preprocessor.tokenizer, build_examples(records[:3]), 4096)
    vocab, index = compact_vocabulary([e.ids for e in encoded], backbone.vocabulary_size)
    start = backbone.num_layers - 1
    prefix = FrozenPrefix(backbone, start)
    batches = _Batches(encoded, 3, 0, 1.0, prefix=prefix, target_index=index)
    x, mask, positions, y, _ = batches.arrays(0)
    inputs = {"token_ids": x, "padding_mask": mask, "answer_positions": positions}
    expected = np.asarray(_answer_only_model(causal_lm)(inputs))[..., vocab]

    assert fast_lora(backbone) == adapted
    prefix.compute([tuple(b) for b in batches.batches], lambda i: batches.arrays(i)[:2])
    head_inputs, compact_y, _ = batches.batch(0)
    assert np.array_equal(vocab[compact_y], y)  # targets renumbered, not changed
    got = np.asarray(adapted_head(backbone, start, vocab)(head_inputs))
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2e-3)
    assert np.abs(expected).max() > 0.1  # a real comparison, not of zeros


@pytest.mark.model
def test_the_guard_scores_the_whole_vocabulary_at_its_slots(records, tiny_preset):
    """The compact vocabulary leaves the other logits untrained; the guard adds the probability
    leaking outside it at a few slots per chat, the end of turn first. When every outside token
    is drawn, compact loss + leak is exactly the full model's cross-entropy at those slots."""
    import keras_hub

    from triage.training_model import FrozenPrefix, adapted_head, compact_vocabulary

    causal_lm = keras_hub.models.CausalLM.from_preset(tiny_preset)
    backbone = causal_lm.backbone
    encoded = _encode(causal_lm.preprocessor.tokenizer, build_examples(records[:3]), 4096)
    vocab, index = compact_vocabulary([e.ids for e in encoded], backbone.vocabulary_size)
    outside = np.setdiff1d(np.arange(backbone.vocabulary_size), vocab)
    assert 0 < len(outside) < 16_384  # all of it is drawn: the comparison below is exact
    prefix = FrozenPrefix(backbone, backbone.num_layers - 1)
    batches = _Batches(encoded, 3, 0, 1.0, prefix=prefix, target_index=index, guard_outside=outside)
    prefix.compute([tuple(b) for b in batches.batches], lambda i: batches.arrays(i)[:2])
    x, mask, positions, _, weight = batches.arrays(0)
    inputs, _, weights = batches.batch(0)
    slots = inputs["guard_slots"]
    for row, n in enumerate(np.count_nonzero(weight, axis=1)):
        assert slots[row, 0] == n - 1 and slots[row].max() < n  # end of turn, then answer slots
    assert weights["guard"].min() == 1.0

    out = adapted_head(backbone, backbone.num_layers - 1, vocab)(inputs)
    full = np.asarray(
        _answer_only_model(causal_lm)(
            {"token_ids": x, "padding_mask": mask, "answer_positions": positions}
        )
    )
    at_slots = np.take_along_axis(full, slots[:, :, None], axis=1)
    leak = np.asarray(out["guard"])

    def logsumexp(a: np.ndarray) -> np.ndarray:
        top = a.max(axis=-1, keepdims=True)
        return (top + np.log(np.exp(a - top).sum(axis=-1, keepdims=True)))[..., 0]

    np.testing.assert_allclose(
        leak, logsumexp(at_slots) - logsumexp(at_slots[..., vocab]), rtol=1e-3, atol=1e-3
    )
    assert leak.min() > 0  # a random model puts mass outside: the guard has something to push
    np.testing.assert_allclose(np.asarray(out["answer"]), full[..., vocab], rtol=2e-3, atol=2e-3)


@pytest.mark.model
def test_a_lora_run_trains_with_the_guard(records, tiny_preset, tmp_path):
    examples = build_examples(records[:6])
    report = finetune(
        tiny_preset,
        examples,
        str(tmp_path / "m"),
        epochs=1,
        lora_rank=2,
        lora_layers=1,
        tokens_per_batch=1024,
        verbose=0,
    )
    assert report["outside_guard"]["slots"] == 4
    assert np.isfinite(report["guard_loss_per_epoch"][0]) and report["guard_loss_per_epoch"][0] > 0


def _weights(preset: str) -> list[np.ndarray]:
    import keras_hub

    return [np.asarray(w) for w in keras_hub.models.CausalLM.from_preset(preset).get_weights()]


@pytest.mark.model
def test_finetune_a_few_steps_is_deterministic_and_loadable(records, tiny_preset, tmp_path):
    from handlers.gemma import GemmaModelHandler

    examples = build_examples(records[:8])
    runs = []
    for name in ("a", "b"):
        report = finetune(
            tiny_preset, examples, str(tmp_path / name), epochs=1, batch_size=4, seed=3, verbose=0
        )
        runs.append(_weights(str(tmp_path / name)))
    assert report["lora_rank"] == 0  # a tiny preset is trained in full
    import keras_hub

    tokenizer = keras_hub.models.Tokenizer.from_preset(tiny_preset)
    batches = _Batches(_encode(tokenizer, examples, 1024), batch_size=4, seed=3, boost=4.0)
    assert report["steps"] == len(batches.batches)  # one epoch: batches of one shape, <= 4 rows
    assert all(len(b) <= 4 for b in batches.batches)
    assert np.isfinite(report["loss_per_epoch"][-1])
    assert all(np.array_equal(a, b) for a, b in zip(*runs, strict=True))  # same seed, same model
    base = _weights(tiny_preset)
    assert any(not np.array_equal(a, b) for a, b in zip(base, runs[0], strict=True))  # it learned
    model = GemmaModelHandler(str(tmp_path / "a"), max_new_tokens=4, warm_up=False).load_model()
    assert len(model.generate(["hello"], 4)) == 1


@pytest.mark.model
def test_a_merged_adapter_is_the_tuned_model(records, tiny_preset, tmp_path):
    """What `make setup` builds from the committed adapter equals what training saved."""
    adapter = tmp_path / "adapter.lora.h5"
    report = finetune(
        tiny_preset,
        build_examples(records[:4]),
        str(tmp_path / "tuned"),
        epochs=1,
        batch_size=4,
        lora_rank=2,
        lora_layers=1,
        learning_rate=1e-2,
        adapter_out=str(adapter),
        verbose=0,
    )
    assert report["lora_rank"] == 2 and adapter.stat().st_size < 1_000_000
    merge_adapter(tiny_preset, str(adapter), str(tmp_path / "merged"), lora_layers=1)
    tuned = _weights(str(tmp_path / "tuned"))
    merged = _weights(str(tmp_path / "merged"))
    base = _weights(tiny_preset)
    assert len(tuned) == len(merged) == len(base)
    for a, b in zip(tuned, merged, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    changed = sum(not np.array_equal(a, b) for a, b in zip(base, tuned, strict=True))
    assert 0 < changed < len(base)  # the adapted projections moved, nothing else


def test_eval_scores_a_perfect_model_at_100_percent(records):
    answers = {}
    for r in records:
        answers[r["chat_message"]] = json.dumps(
            {"sentiment": r["sentiment"], "summary": r["summary"]}
        )

    def oracle(prompts, _max_new_tokens):
        out = []
        for p in prompts:
            if "<summary>" in p:
                out.append("We are sorry.")
                continue
            out.append(next(a for chat, a in answers.items() if quote_untrusted(chat) in p))
        return out

    report = evaluate(records, oracle, batch_size=5)
    assert (report.parsed_pct, report.accuracy_pct, report.drafts_pct) == (100.0, 100.0, 100.0)
    assert report.lines()[-2] == "eval: parsed 100.0%, sentiment accuracy 100.0%, drafts 100.0%"
    assert report.macro_f1() == 100.0
    assert DRAFTS_LINE.match(report.lines()[-1])


def test_eval_counts_failures_and_wrong_answers(records):
    def always_positive_or_noise(prompts, _):
        positive = '{"sentiment": 1, "summary": "ok"}'
        return [
            "" if "<summary>" in p else positive if i % 2 else "noise"
            for i, p in enumerate(prompts)
        ]

    report = evaluate(records, always_positive_or_noise, batch_size=4)
    assert report.parsed == sum(1 for i in range(len(records)) if (i % 4) % 2)
    assert report.correct == sum(
        1 for i, r in enumerate(records) if (i % 4) % 2 and r["sentiment"] == 1
    )
    assert report.drafts == 0 and report.negatives == sum(r["sentiment"] == -1 for r in records)
    assert sum(report.confusion.values()) == len(records)
    assert EVAL_LINE.match(report.lines()[-2]) and DRAFTS_LINE.match(report.lines()[-1])
    assert report.macro_f1() < 50.0  # only one label ever predicted


@pytest.mark.model
def test_triage_eval_cli_on_a_handful(records, tiny_preset, tmp_path):
    path = tmp_path / "few.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records[:4]), "utf-8")
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "triage"),
            "eval",
            "--model_preset",
            tiny_preset,
            "--examples",
            str(path),
            "--max_new_tokens",
            "8",
            "--apology_max_new_tokens",
            "8",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "KERAS_BACKEND": "jax"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert EVAL_LINE.match(lines[-2]) and DRAFTS_LINE.match(lines[-1]), lines[-2:]
    assert "confusion" in proc.stdout


def _rows(tasks: list[str]) -> list:
    from triage.finetune import _Encoded

    # widths 64 and 128 (two shapes), answers of 8 tokens
    return [
        _Encoded(list(range(40 if i % 2 else 100)), 30 if i % 2 else 90, (0, 0), task)
        for i, task in enumerate(tasks)
    ]


def test_drafts_dealt_into_one_of_two_passes_and_ratings_into_both():
    rows = _rows(["triage"] * 10 + ["apology"] * 7)
    batches = _Batches(rows, 3, seed=1, boost=1.0, fixed_shapes=True, passes=2, apology_passes=1)
    seen = collections.Counter(i for b in batches.batches for i in b)
    assert all(seen[i] == 2 for i in range(10))  # every rating in both passes
    assert all(seen[i] == 1 for i in range(10, 17))  # every draft in exactly one
    by_pass = collections.Counter(
        p
        for b, (p, _) in zip(batches.batches, batches.batch_pass, strict=True)
        for i in b
        if i >= 10
    )
    assert sorted(by_pass.values()) == [3, 4]  # the drafts split evenly between the passes
    assert sorted(i for b in batches.cover() for i in b) == list(range(17))  # prefix: once each


def test_one_pass_per_epoch_deals_as_before():
    rows = _rows(["triage"] * 6 + ["apology"] * 3)
    a = _Batches(rows, 3, seed=4, boost=1.0, fixed_shapes=True)
    b = _Batches(rows, 3, seed=4, boost=1.0, fixed_shapes=True, apology_passes=None)
    assert a.batches == b.batches and sorted(i for x in a.batches for i in x) == list(range(9))
    a.deal()
    assert sorted(i for x in a.batches for i in x) == list(range(9))  # the next epoch: all


@pytest.mark.model
def test_a_run_with_drafts_in_one_epoch_reports_both_epochs(records, tiny_preset, tmp_path):
    examples = build_examples(records[:8])
    report = finetune(
        tiny_preset,
        examples,
        str(tmp_path / "m"),
        epochs=2,
        lora_rank=2,
        lora_layers=1,
        tokens_per_batch=1024,
        verbose=0,
        apology_epochs=1,
    )
    drafts = sum(e.task == "apology" for e in examples)
    assert drafts and report["batches"].endswith("each draft in 1 of them")
    assert len(report["loss_per_epoch"]) == 2 and len(report["guard_loss_per_epoch"]) == 2
    assert all(np.isfinite(v) and v > 0 for v in report["loss_per_epoch"])
