"""`triage finetune` on a few steps and `triage eval` on a handful of examples."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from triage.evaluate import evaluate
from triage.finetune import END_OF_TURN, _Batches, _encode, build_examples, finetune
from triage.parse import ParsedReply, parse_reply
from triage.prompts import quote_untrusted
from triage.synthetic import generate

LAST_LINE = re.compile(r"^eval: parsed \d+\.\d%, sentiment accuracy \d+\.\d%, drafts \d+\.\d%$")


@pytest.fixture(scope="module")
def records():
    return generate(12, seed=5)


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
    batches = _Batches(encoded, batch_size=8, seed=0)
    x, y, weight = batches.batch(0)
    end = tokenizer.token_to_id(END_OF_TURN)
    for row, index in enumerate(batches.batches[0]):
        ids, answer_start = encoded[index]
        weighted = np.flatnonzero(weight[row])
        answer_len = len(ids) - answer_start  # answer tokens plus <end_of_turn>
        assert len(weighted) == answer_len
        assert y[row][weighted[-1]] == end  # the last thing learned is to stop
        assert list(y[row][weighted]) == ids[answer_start:]
        assert x["padding_mask"][row].sum() == len(ids) - 1
    assert x["token_ids"].shape[1] % 64 == 0


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
    assert report["steps"] == -(-report["examples"] // 4)
    assert np.isfinite(report["final_loss"])
    assert all(np.array_equal(a, b) for a, b in zip(*runs, strict=True))  # same seed, same model
    base = _weights(tiny_preset)
    assert any(not np.array_equal(a, b) for a, b in zip(base, runs[0], strict=True))  # it learned
    model = GemmaModelHandler(str(tmp_path / "a"), max_new_tokens=4, warm_up=False).load_model()
    assert len(model.generate(["hello"], 4)) == 1


@pytest.mark.model
def test_finetune_with_lora_saves_a_loadable_preset(records, tiny_preset, tmp_path):
    report = finetune(
        tiny_preset,
        build_examples(records[:4]),
        str(tmp_path / "lora"),
        epochs=1,
        batch_size=4,
        lora_rank=2,
        verbose=0,
    )
    assert report["lora_rank"] == 2
    assert len(_weights(str(tmp_path / "lora"))) > 0


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
    assert report.lines()[-1] == "eval: parsed 100.0%, sentiment accuracy 100.0%, drafts 100.0%"


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
    assert LAST_LINE.match(report.lines()[-1])


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
    assert LAST_LINE.match(lines[-1]), lines[-1]
    assert "confusion" in proc.stdout
