"""Repair and replay end to end on the emulators, with scripted handlers whose answers depend on
how often a chat was asked: repaired in the pipeline, replayed with `triage replay`, capped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.fakes import ScriptedApologyHandler, ScriptedTriageHandler
from tests.test_streaming_emulators import count, fresh_infra, pull_all, rows, wait_until
from triage.demo import PROJECT, StreamingRun, publish_lines
from triage.infer import byte_counter

pytestmark = pytest.mark.emulators

TRIAGE = str(Path(sys.executable).parent / "triage")


def msg(chat_id: str, text: str) -> bytes:
    return json.dumps({"id": chat_id, "user_id": "u9", "chat_message": text}).encode()


def triage_cli(*args: str, prefix: str) -> list[str]:
    proc = subprocess.run(
        [TRIAGE, *args, "--project", PROJECT, "--prefix", prefix],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()


@pytest.fixture
def bq(emulators):
    from triage.gcp import bigquery_client

    client = bigquery_client(PROJECT)
    yield client
    client.close()


def test_repair_then_replay_until_success_or_the_attempt_cap(bq):
    tag = uuid.uuid4().hex[:6]
    prefix = f"r{tag}-"
    infra, audit = fresh_infra(prefix)

    chats = {
        "pos": msg("pos", "[pos] all good"),
        "fix": msg("fix", f"[fixable] [neu] {tag} repaired in the pipeline"),
        "flakyneg": msg("flakyneg", f"[flaky2] [neg] {tag} fails twice, then a draft"),
        "flakypos": msg("flakypos", f"[flaky2] [pos] {tag} fails twice, then a summary"),
        "hopeless": msg("hopeless", "[garbage] never answers well"),
        "broken": b"{not json",
    }
    handlers = (
        ScriptedTriageHandler(max_batch_size=4),
        ScriptedApologyHandler(max_batch_size=4),
    )
    run = StreamingRun(
        infra, ["--repair_attempts=1"], handlers=handlers, token_counter=byte_counter
    )
    run.start()
    drafts: list = []
    try:
        publish_lines(infra.input_topic, list(chats.values()))

        def dead_chats() -> list:
            return rows(bq, infra.dead_letter_table, "chat_id, attempt, repairs, stage")

        wait_until(
            lambda: count(bq, infra.summaries_table) >= 2 and len(dead_chats()) >= 4,
            120,
            "first pass",
        )
        summaries = {r["chat_id"]: r for r in rows(bq, infra.summaries_table)}
        assert set(summaries) == {"pos", "fix"}
        assert summaries["fix"]["prompt_version"] == "triage-v3+repair-v1"
        first_dead = dead_chats()
        assert sorted(r["chat_id"] or "-" for r in first_dead) == [
            "-",
            "flakyneg",
            "flakypos",
            "hopeless",
        ]
        assert all(r["repairs"] == 1 for r in first_dead if r["stage"] == "triage_parse")

        # Dry run: says what it would send, sends and records nothing.
        dry = triage_cli("replay", "--dry-run", prefix=prefix)
        assert dry[-1].startswith("replay: 4 dead letters selected; would replay: 4 republished")
        assert count(bq, infra.replays_table) == 0

        first = triage_cli("replay", prefix=prefix)
        assert first[-1].startswith("replay: 4 dead letters selected; replayed: 4 republished")
        # Twice in a row: nothing that was replayed is sent again.
        again = triage_cli("replay", "--dry-run", prefix=prefix)
        first_ids = {line.split()[1] for line in first[:-1]}
        assert not first_ids & {line.split()[2] for line in again[:-1]}

        wait_until(
            lambda: (
                count(bq, infra.summaries_table) >= 3
                and len(dead_chats()) >= 6
                and (drafts.extend(pull_all(audit, max_wait=2)) or len(drafts) >= 1)
            ),
            120,
            "the replayed chats",
        )
        # Attempt 2 of the hopeless ones fails again; replay them to attempt 3, then the cap.
        triage_cli("replay", prefix=prefix)
        wait_until(lambda: len(dead_chats()) >= 8, 120, "the third attempts")
        capped = triage_cli("replay", prefix=prefix)
        assert capped[-1].endswith("2 left dead at the attempt cap; 0 failed")
        assert triage_cli("replay", prefix=prefix)[-1].startswith("replay: 0 dead letters")
        report = triage_cli("dead-letters", prefix=prefix)
    finally:
        run.cancel()

    summaries = [r["chat_id"] for r in rows(bq, infra.summaries_table, "chat_id")]
    draft_ids = {d.attributes["chat_id"] for d in drafts}
    dead = rows(bq, infra.dead_letter_table)
    ledger = rows(bq, infra.replays_table)
    assert sorted(summaries) == ["fix", "flakypos", "pos"]  # each once: replay adds no duplicate
    assert draft_ids == {"flakyneg"}
    # Conservation across the whole sequence: every chat ends in exactly one place. A chat
    # that succeeded has its earlier dead letters marked replayed; the others end dead, their
    # last attempt left at the cap.
    succeeded = set(summaries) | draft_ids
    dead_only = {r["chat_id"] or "broken" for r in dead} - succeeded
    assert succeeded | dead_only == set(chats) and not succeeded & dead_only
    actions = {r["dead_letter_row_id"]: r["action"] for r in ledger}
    for row in dead:
        if (row["chat_id"] or "broken") in succeeded:
            assert actions[row["row_id"]] == "republished"
        elif row["attempt"] == 3:
            assert actions[row["row_id"]] == "attempt_cap"
    assert sorted((r["chat_id"] or "-", r["attempt"]) for r in dead if r["attempt"] == 3) == [
        ("-", 3),
        ("hopeless", 3),
    ]
    assert any("triage_parse / truncated_json" in line for line in report)


def test_a_refused_row_is_recorded_as_failed_and_the_run_goes_on(bq):
    """The oldest dead letter cannot be rewritten (its stored row is not a summary): replay
    records `failed` with the reason, replays the others, and a later run tries the never-tried
    dead letters before the one that keeps failing."""
    from triage.bigquery_sink import RowWriter
    from triage.records import DeadLetter

    prefix = f"f{uuid.uuid4().hex[:6]}-"
    infra, _ = fresh_infra(prefix)
    writer = RowWriter(infra.dead_letter_table, DeadLetter)

    def dead(chat_id: str, stage: str, payload: bytes, at: str) -> DeadLetter:
        return DeadLetter(stage, "write_failed", "x", payload, chat_id=chat_id, failed_at=at)

    writer.write(
        [
            dead("bad", "write_summary", b'{"not": "a summary"}', "2026-11-01T00:00:00.000Z"),
            dead("ok", "validate", msg("ok", "hello"), "2026-11-02T00:00:00.000Z"),
        ]
    )

    def replay_cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [TRIAGE, "replay", *args, "--project", PROJECT, "--prefix", prefix],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    first = replay_cli()
    assert first.returncode == 1, first.stderr[-2000:]  # something needs a look
    lines = first.stdout.strip().splitlines()
    assert lines[-1].endswith(
        "1 republished, 0 rewritten; 0 left dead at the attempt cap; 1 failed"
    )
    assert any(line.split()[0] == "failed" and "chat bad" in line for line in lines)
    ledger = {r["chat_id"]: r for r in rows(bq, infra.replays_table)}
    assert ledger["ok"]["action"] == "republished" and ledger["ok"]["detail"] is None
    assert ledger["bad"]["action"] == "failed" and "TypeError" in ledger["bad"]["detail"]

    # A newer dead letter, never tried, comes before the one that failed, whatever its age.
    writer.write([dead("new", "validate", msg("new", "hi"), "2026-11-03T00:00:00.000Z")])
    writer.close()
    second = replay_cli("--limit", "1")
    assert second.returncode == 0, second.stderr[-2000:]
    assert "chat new" in second.stdout
    third = replay_cli()  # the failing one is tried again, and fails again: both recorded
    assert third.returncode == 1 and "1 dead letters selected" in third.stdout
    failures = [r for r in rows(bq, infra.replays_table) if r["action"] == "failed"]
    assert len(failures) == 2 and {r["chat_id"] for r in failures} == {"bad"}
