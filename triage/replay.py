"""`triage replay` and `triage dead-letters`: see what failed, and run it again, safely.

Replay selects dead letters from BigQuery and, for each one:
- a chat that failed before it was stored (validation, prompt, model, parsing, apology) is
  republished, byte for byte, to the input topic with attributes `attempt` (incremented) and
  `replay_of` (the dead letter's row id); the running streaming job takes it like any chat;
- a result that failed to be stored (`write_summary`, `publish_draft`) is written again from the
  row kept in the dead letter, without running the model again;
- a chat that already failed `--max_attempts` times stays dead, recorded as `attempt_cap`.
Every action is recorded in the replays table (keyed by the dead letter's row id), in batches
of `LEDGER_BATCH` rows, so a second run sends nothing again. If replay stops between an action
and its record, the next run repeats it; the row ids of the pipeline's outputs (and `draft_id`
on the review queue) make the repeat harmless.

One dead letter whose action is refused or times out does not stop the run: it is recorded as
`failed` with the reason, the run goes on, and a later run tries it again after the dead
letters never tried (so a row that always fails cannot keep the others waiting).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ReplaySummary", "main_dead_letters", "main_replay", "replay", "select_dead_letters"]

_REWRITE_STAGES = {"write_summary", "publish_draft"}
LEDGER_BATCH = 100


def select_dead_letters(
    client: Any,
    dead_letter_table: str,
    replays_table: str,
    *,
    stage: str | None = None,
    reason: str | None = None,
    since: str | None = None,
    until: str | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Dead letters matching the filters that have not been replayed yet, oldest first."""
    from google.cloud import bigquery

    conditions = [
        f"d.row_id NOT IN (SELECT dead_letter_row_id FROM `{replays_table}` "
        "WHERE action != 'failed')"
    ]
    params = [bigquery.ScalarQueryParameter("limit", "INT64", limit)]
    for name, value, sql in (
        ("stage", stage, "d.stage = @stage"),
        ("reason", reason, "d.reason = @reason"),
        ("since", since, "d.failed_at >= TIMESTAMP(@since)"),
        ("until", until, "d.failed_at < TIMESTAMP(@until)"),
    ):
        if value is not None:
            conditions.append(sql)
            params.append(bigquery.ScalarQueryParameter(name, "STRING", value))
    query = (
        f"SELECT d.* FROM `{dead_letter_table}` AS d LEFT JOIN ("
        f"SELECT dead_letter_row_id, COUNT(*) AS failures FROM `{replays_table}` "
        "WHERE action = 'failed' GROUP BY dead_letter_row_id) AS f "
        f"ON f.dead_letter_row_id = d.row_id WHERE {' AND '.join(conditions)} "
        "ORDER BY COALESCE(f.failures, 0), d.failed_at, d.row_id LIMIT @limit"
    )
    job = client.query(query, job_config=bigquery.QueryJobConfig(query_parameters=params))
    return [dict(row) for row in job.result(timeout=120)]


@dataclass
class ReplaySummary:
    selected: int = 0
    republished: int = 0
    rewritten: int = 0
    capped: int = 0
    failed: int = 0
    # (action, row id, chat, why it failed or "")
    actions: list[tuple[str, str, str, str]] = field(default_factory=list)

    def tally(self, action: str) -> None:
        name = {"attempt_cap": "capped"}.get(action, action)
        setattr(self, name, getattr(self, name) + 1)

    def line(self, dry_run: bool) -> str:
        verb = "would replay" if dry_run else "replayed"
        return (
            f"replay: {self.selected} dead letters selected; {verb}: {self.republished} "
            f"republished, {self.rewritten} rewritten; {self.capped} left dead at the attempt "
            f"cap; {self.failed} failed"
        )


def _rewrite(row: dict[str, Any], infra: Any, writers: dict[str, Any]) -> None:
    """Store again a result whose first write failed, from the row kept in the dead letter."""
    from triage.gcp import publisher_client
    from triage.pubsub_sink import draft_attributes
    from triage.records import Draft, TriageResult, from_json

    if row["stage"] == "write_summary":
        from triage.bigquery_sink import RowWriter

        writer = writers.setdefault("summaries", RowWriter(infra.summaries_table, TriageResult))
        refused = writer.write([from_json(TriageResult, row["payload"])])
        if refused:
            raise RuntimeError(refused[0][1])
    else:
        draft = from_json(Draft, row["payload"])
        publisher = writers.setdefault("publisher", publisher_client())
        publisher.publish(infra.drafts_topic, row["payload"], **draft_attributes(draft)).result(60)


def _original_payload(row: dict[str, Any]) -> bytes:
    """The bytes that arrived: the row's own, or the blob store's where the row holds a cut
    prefix (triage.dead_letters)."""
    payload = row["payload"]
    size = row.get("payload_bytes")
    if size is None or len(payload) >= size:
        return payload
    if not row.get("payload_uri"):
        raise ValueError(
            f"the row keeps {len(payload)} of {size} bytes and no blob store had the rest"
        )
    from triage.dead_letters import read_payload

    full = read_payload(row["payload_uri"])
    if hashlib.sha256(full).hexdigest() != row.get("payload_sha256"):
        raise ValueError(f"{row['payload_uri']} does not hold the payload that failed")
    return full


def replay(
    infra: Any,
    rows: Sequence[dict[str, Any]],
    *,
    max_attempts: int = 3,
    dry_run: bool = False,
) -> ReplaySummary:
    from triage.bigquery_sink import RowWriter
    from triage.gcp import publisher_client
    from triage.records import Replay

    summary = ReplaySummary(selected=len(rows))
    publisher = None if dry_run else publisher_client()
    ledger = None if dry_run else RowWriter(infra.replays_table, Replay)
    writers: dict[str, Any] = {}
    done: list[Replay] = []

    def record() -> None:
        if ledger is not None and done:
            refused = ledger.write(done)
            done.clear()
            if refused:
                raise RuntimeError(f"the replays ledger refused a row: {refused[0][1]}")

    try:
        for row in rows:
            attempt = int(row["attempt"] or 1)
            detail = None
            try:
                if attempt >= max_attempts:
                    action = "attempt_cap"
                elif row["stage"] in _REWRITE_STAGES:
                    action = "rewritten"
                    if not dry_run:
                        _rewrite(row, infra, writers)
                else:
                    action = "republished"
                    if publisher is not None:
                        attributes = {"attempt": str(attempt + 1), "replay_of": row["row_id"]}
                        payload = _original_payload(row)
                        publisher.publish(infra.input_topic, payload, **attributes).result(60)
            except Exception as err:  # noqa: BLE001 - one row must not stop the others
                action, detail = "failed", f"{type(err).__name__}: {err}"[:2000]
            summary.tally(action)
            summary.actions.append((action, row["row_id"], row.get("chat_id") or "-", detail or ""))
            done.append(
                Replay(
                    dead_letter_row_id=row["row_id"],
                    chat_id=row.get("chat_id"),
                    stage=row["stage"],
                    reason=row["reason"],
                    attempt=attempt,
                    action=action,
                    detail=detail,
                )
            )
            if len(done) >= LEDGER_BATCH:
                record()
        record()
    finally:
        if ledger is not None:
            ledger.close()
        if "summaries" in writers:
            writers["summaries"].close()
    return summary


def _infra_from(args: argparse.Namespace) -> Any:
    from triage.gcp import Infrastructure

    infra = Infrastructure.named(args.project, dataset=args.dataset, prefix=args.prefix)
    overrides = {
        name: getattr(args, name)
        for name in (
            "dead_letter_table",
            "replays_table",
            "input_topic",
            "summaries_table",
            "drafts_topic",
        )
        if getattr(args, name, None)
    }
    return dataclasses.replace(infra, **overrides)


def _common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project", required=True)
    parser.add_argument("--dataset", default="triage")
    parser.add_argument("--prefix", default="", help="resource name prefix, as in triage infra")
    parser.add_argument("--dead_letter_table", default=None)
    parser.add_argument("--replays_table", default=None)


def main_replay(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="triage replay", description=__doc__.splitlines()[0])
    _common_flags(parser)
    parser.add_argument("--input_topic", default=None)
    parser.add_argument("--summaries_table", default=None)
    parser.add_argument(
        "--drafts_topic", default=None, help="where drafts that failed to publish are sent again"
    )
    parser.add_argument("--stage", default=None)
    parser.add_argument("--reason", default=None)
    parser.add_argument("--since", default=None, help="ISO time, e.g. 2026-11-21T00:00:00Z")
    parser.add_argument("--until", default=None, help="ISO time")
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument(
        "--max_attempts", type=int, default=3, help="a chat that failed this often stays dead"
    )
    parser.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true")
    args = parser.parse_args(argv)

    from triage.gcp import bigquery_client, ensure_infrastructure

    infra = _infra_from(args)
    ensure_infrastructure(infra)  # the replays table may be new
    client = bigquery_client(args.project)
    rows = select_dead_letters(
        client,
        infra.dead_letter_table,
        infra.replays_table,
        stage=args.stage,
        reason=args.reason,
        since=args.since,
        until=args.until,
        limit=args.limit,
    )
    summary = replay(infra, rows, max_attempts=args.max_attempts, dry_run=args.dry_run)
    client.close()
    for action, rid, chat, why in summary.actions:
        prefix = "would " if args.dry_run else ""
        print(f"  {prefix}{action:12s} {rid}  (chat {chat}){f': {why}' if why else ''}")
    print(summary.line(args.dry_run))
    return 1 if summary.failed else 0


def main_dead_letters(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="triage dead-letters", description="Recent dead letters, grouped by stage and reason."
    )
    _common_flags(parser)
    parser.add_argument("--since", default=None, help="ISO time; default: everything")
    parser.add_argument("--examples", type=int, default=2, help="examples shown per group")
    args = parser.parse_args(argv)

    from google.cloud import bigquery

    from triage.gcp import bigquery_client

    infra = _infra_from(args)
    client = bigquery_client(args.project)
    where, params = "", []
    if args.since:
        where = "WHERE failed_at >= TIMESTAMP(@since)"
        params.append(bigquery.ScalarQueryParameter("since", "STRING", args.since))
    rows = client.query(
        f"SELECT stage, reason, chat_id, detail, attempt, repairs, failed_at "
        f"FROM `{infra.dead_letter_table}` {where} ORDER BY failed_at DESC",
        job_config=bigquery.QueryJobConfig(query_parameters=params),
    ).result(timeout=120)
    groups: dict[tuple[str, str], list[Any]] = collections.defaultdict(list)
    for row in rows:
        groups[(row.stage, row.reason)].append(row)
    client.close()
    total = sum(len(g) for g in groups.values())
    since = f" since {args.since}" if args.since else ""
    print(f"{total} dead letters in {infra.dead_letter_table}{since}")
    for (stage, reason), group in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        print(f"\n{len(group):5d}  {stage} / {reason}")
        for row in group[: args.examples]:
            detail = textwrap.shorten(" ".join((row.detail or "").split()), 90, placeholder=" …")
            print(f"       chat {row.chat_id or '-'} (attempt {row.attempt}): {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main_replay())
