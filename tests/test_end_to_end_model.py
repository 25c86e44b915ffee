"""The real pipeline with the real Gemma handler on the tiny random preset, and `triage run`.

The tiny model's free-text replies are noise, so without constrained decoding every valid chat
must land in the dead letters with the model's reply kept: the error path through the real
model code. With constrained decoding (the default) the same noise must come out as valid
triage objects: every valid chat becomes a summary or a draft.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from triage.options import TriageOptions
from triage.pipeline import build_pipeline
from triage.records import DeadLetter, from_json
from triage.sinks import OUTPUT_FILES, WriteJsonLines

pytestmark = pytest.mark.model

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "chats.jsonl"


def _payloads() -> list[bytes]:
    return [line for line in EXAMPLES.read_bytes().splitlines() if line.strip()]


def _n_invalid() -> int:
    from triage.validate import Rejection, parse_chat

    return sum(isinstance(parse_chat(p), Rejection) for p in _payloads())


def test_real_handler_pipeline_sends_noise_to_dead_letters(tiny_preset, tmp_path):
    payloads = _payloads()
    options = TriageOptions(
        [
            f"--model_preset={tiny_preset}",
            "--max_new_tokens=24",
            "--max_batch_size=8",
            "--no_warm_up",
            "--no_constrained_decoding",
        ]
    )
    pipeline = TestPipeline(options=options)
    outputs = build_pipeline(
        pipeline, beam.Create(payloads), WriteJsonLines(str(tmp_path)), options
    )
    counts = (
        outputs.summaries | "S" >> beam.Map(lambda _: "summary"),
        outputs.drafts | "D" >> beam.Map(lambda _: "draft"),
        outputs.dead_letters
        | "DL" >> beam.Map(lambda d: "parse" if d.stage == "triage_parse" else d.stage),
    ) | beam.Flatten()
    n_invalid = _n_invalid()
    expected = ["parse"] * (len(payloads) - n_invalid) + ["validate"] * n_invalid
    assert_that(counts, equal_to(expected))
    pipeline.run().wait_until_finish()

    dead = [
        from_json(DeadLetter, line)
        for line in (tmp_path / OUTPUT_FILES["dead_letters"]).read_text("utf-8").splitlines()
    ]
    parsed = [d for d in dead if d.stage == "triage_parse"]
    assert parsed and all(d.model_reply is not None for d in parsed)
    assert all(d.model_id == tiny_preset for d in parsed)
    # Noise, then noise again when asked to repair: one repair recorded on each.
    assert all(d.prompt_version == "triage-v3+repair-v1" and d.repairs == 1 for d in parsed)
    assert sorted(d.payload for d in dead) == sorted(payloads)  # every original byte kept


def test_constrained_noise_becomes_summaries_and_drafts(tiny_preset, tmp_path):
    payloads = _payloads()
    options = TriageOptions(
        [f"--model_preset={tiny_preset}", "--max_new_tokens=24", "--max_batch_size=8"]
    )
    pipeline = TestPipeline(options=options)
    outputs = build_pipeline(
        pipeline, beam.Create(payloads), WriteJsonLines(str(tmp_path)), options
    )
    counts = (
        outputs.summaries | "S" >> beam.Map(lambda _: "kept"),
        outputs.drafts | "D" >> beam.Map(lambda _: "kept"),
        outputs.dead_letters | "DL" >> beam.Map(lambda d: d.stage),
    ) | beam.Flatten()
    n_invalid = _n_invalid()
    # An empty free-text draft would be an `apology` dead letter; the triage replies never fail.
    expected = ["kept"] * (len(payloads) - n_invalid) + ["validate"] * n_invalid
    assert_that(counts, equal_to(expected))
    pipeline.run().wait_until_finish()
    summaries = [
        json.loads(line)
        for line in (tmp_path / OUTPUT_FILES["summaries"]).read_text("utf-8").splitlines()
    ]
    assert summaries and all(0 < len(s["summary"]) <= 512 for s in summaries)
    assert all(s["prompt_version"] == "triage-v3" for s in summaries)  # no repair was needed


def test_triage_run_cli_counts_add_up(tiny_preset, tmp_path):
    """The issue's acceptance command, as a user runs it, on the examples with blank lines
    between them: every line read is an output or a counted blank line."""
    out_dir = tmp_path / "out"
    chats = tmp_path / "chats.jsonl"
    blanks = [b"", b"   ", b"\r"]  # an empty line, spaces, and an empty CRLF line
    lines = []
    for i, payload in enumerate(_payloads()):
        lines += [payload, blanks[i % 3]] if i % 4 == 0 else [payload]
    chats.write_bytes(b"\n".join(lines))  # the last line has no newline
    n_blank = sum(1 for line in lines if not line.strip())
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "triage"),
            "run",
            "--input",
            str(chats),
            "--output-dir",
            str(out_dir),
            f"--model_preset={tiny_preset}",
            "--max_new_tokens=16",
            "--no_warm_up",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = {
        name: len((out_dir / filename).read_text("utf-8").splitlines())
        for name, filename in OUTPUT_FILES.items()
    }
    assert sum(counts.values()) == len(_payloads())
    assert counts["dead_letters"] >= _n_invalid()
    assert (
        f"{len(lines)} lines read -> {counts['summaries']} summaries, {counts['drafts']} drafts, "
        f"{counts['dead_letters']} dead letters, {n_blank} blank lines skipped" in proc.stderr
    )
    for line in (out_dir / OUTPUT_FILES["dead_letters"]).read_text("utf-8").splitlines():
        assert json.loads(line)["reason"]
