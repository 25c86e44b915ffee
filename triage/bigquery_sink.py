"""Write records to a BigQuery table: batched, exactly once, retried, never dropped.

Exactly once, on the emulator and on BigQuery alike: every row carries a `row_id` derived from
the chat id and stage (`records.row_id`). Before each insert attempt, the batch's ids already in
the table are looked up and skipped, so a redelivered message, a replay, or a retry after a
request that succeeded but whose answer was lost adds nothing. The same id is also sent as
BigQuery's `insertId`, which covers two workers racing on the same row within a minute.
The lookup reads only the partitions of the last `DEDUP_HORIZON_DAYS` days of a table
clustered on `row_id`: its cost does not grow with the table (README: the exactly-once
contract).

Uses the official `google-cloud-bigquery` client rather than Beam's `WriteToBigQuery`, which
cannot reach an emulator: one code path for tests and production.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam

from triage import metrics
from triage.dead_letters import keep_last_resort
from triage.gcp import PARTITION_FIELDS, bigquery_client, ensure_table, split_table
from triage.records import ROW_ID, DeadLetter, row_id, to_dict, to_json
from triage.retry import RetriesExhausted, with_backoff

__all__ = ["InsertRows", "RowWriter", "WriteRecordsToBigQuery", "batch_rows"]

LOG = logging.getLogger(__name__)


# How far back a write looks for its row id. Pub/Sub keeps an unacknowledged message for 7 days
# at most, so a redelivery always finds its first row; a chat sent again by hand after that
# adds a second row, which the `_unique` views hide (triage.gcp.unique_view).
DEDUP_HORIZON_DAYS = 7

# What makes two rows with one row id the same chat: a redelivery repeats these, a chat id
# reused for another chat does not. Such a row is refused as a conflicting duplicate (a dead
# letter) instead of being skipped as already written.
IDENTITY = {"TriageResult": ("user_id", "chat_message")}
CONFLICT = "conflicting_duplicate"

# insertAll takes 10 MB a request; requests are cut at half that, so JSON escaping and the
# request envelope never tip one over.
MAX_REQUEST_BYTES = 5_000_000


def _by_size(rows: dict[str, dict[str, Any]], limit: int) -> list[list[str]]:
    """Row ids in chunks whose JSON stays under `limit` bytes (a larger row alone)."""
    chunks: list[list[str]] = []
    size = 0
    for rid, row in rows.items():
        n = len(json.dumps(row, ensure_ascii=False).encode("utf-8")) + len(rid) + 64
        if not chunks or size + n > limit:
            chunks.append([])
            size = 0
        chunks[-1].append(rid)
        size += n
    return chunks


def _chat_bytes(record: Any) -> bytes:
    return json.dumps(
        {"id": record.chat_id, "user_id": record.user_id, "chat_message": record.chat_message},
        ensure_ascii=False,
        sort_keys=True,
    ).encode("utf-8")


class RowWriter:
    """Exactly-once, retried writes of records to one table; used by the pipeline's sink and by
    `triage replay`. `write` returns (record, why) for the rows BigQuery refused, and raises
    `RetriesExhausted` (or a permanent error) when the table cannot be reached at all."""

    def __init__(
        self, table: str, record_type: type, retry_secs: float = 120.0, client: Any = None
    ):
        self.table = table
        self._record_type = record_type
        self._identity = IDENTITY.get(record_type.__name__, ())
        self._retry_secs = retry_secs
        self.written = 0
        self.already_present = 0
        self._client = client or bigquery_client(split_table(table)[0])
        with_backoff(
            lambda: ensure_table(self._client, table, record_type),
            retry_secs,
            what=f"create table {table}",
        )

    def close(self) -> None:
        self._client.close()

    def _recent(self) -> str:
        """The partition filter of the lookup: the days inside the deduplication horizon."""
        field = PARTITION_FIELDS.get(self._record_type.__name__)
        if field is None:
            return ""
        return (
            f" AND {field} >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL {DEDUP_HORIZON_DAYS} DAY)"
        )

    def _present(self, ids: list[str]) -> dict[str, tuple[Any, ...]]:
        """The ids already stored, each with its identity columns (see `IDENTITY`)."""
        from google.cloud import bigquery

        columns = ", ".join([ROW_ID, *self._identity])
        job = self._client.query(
            f"SELECT {columns} FROM `{self.table}` WHERE {ROW_ID} IN UNNEST(@ids){self._recent()}",
            job_config=bigquery.QueryJobConfig(
                query_parameters=[bigquery.ArrayQueryParameter("ids", "STRING", ids)]
            ),
            retry=None,
            job_retry=None,
        )
        return {row[0]: tuple(row[1:]) for row in job.result(timeout=60, retry=None)}

    def stored_rows(self, rid: str) -> list[dict[str, Any]]:
        """Every row stored under `rid`: more than one only when two writers raced past the
        lookup (BigQuery's insertId deduplication is best effort)."""
        from google.cloud import bigquery

        job = self._client.query(
            f"SELECT * FROM `{self.table}` WHERE {ROW_ID} = @id{self._recent()}",
            job_config=bigquery.QueryJobConfig(
                query_parameters=[bigquery.ScalarQueryParameter("id", "STRING", rid)]
            ),
        )
        return [dict(row) for row in job.result(timeout=60)]

    def _insert_missing(self, groups: dict[str, list[tuple[Any, dict[str, Any]]]]) -> list:
        """One attempt: rows already there are skipped, the rest inserted. Of the records
        sharing a row id, those with the stored identity (or, for a new id, the first's) are
        one row; the others are another chat under the same id: (record, CONFLICT)."""
        present = self._present(list(groups))
        rows: dict[str, dict[str, Any]] = {}
        by_id: dict[str, Any] = {}
        out: list[tuple[Any, Any]] = []
        for rid, items in groups.items():
            owner = present.get(rid, self._key(items[0][1]))
            if rid in present:
                self.already_present += 1
            for record, row in items:
                if self._key(row) != owner:
                    out.append((record, CONFLICT))
                elif rid not in present and rid not in rows:
                    rows[rid], by_id[rid] = row, record
        for chunk in _by_size(rows, MAX_REQUEST_BYTES):
            out += [(by_id[rid], errors) for rid, errors in self._insert(chunk, rows)]
        return out

    def _insert(self, ids: list[str], rows: dict[str, dict[str, Any]]) -> list[tuple[str, Any]]:
        """Insert `ids`; a request BigQuery refuses as a whole (400, 413) is split in halves
        until the one row it is about is refused alone, instead of failing all of them."""
        from google.api_core.exceptions import GoogleAPICallError

        try:
            errors = self._client.insert_rows_json(
                self.table, [rows[rid] for rid in ids], row_ids=ids, retry=None, timeout=60
            )
        except GoogleAPICallError as err:
            if getattr(err, "code", None) not in (400, 413):
                raise
            if len(ids) == 1:
                return [(ids[0], f"HTTP {err.code}: {str(err)[:500]}")]
            half = len(ids) // 2
            return self._insert(ids[:half], rows) + self._insert(ids[half:], rows)
        self.written += len(ids) - len(errors)
        return [(ids[e["index"]], e.get("errors")) for e in errors]

    def _key(self, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(row.get(column) for column in self._identity)

    def write(self, records: Iterable[Any]) -> list[tuple[Any, str]]:
        groups: dict[str, list[tuple[Any, dict[str, Any]]]] = {}
        for record in records:
            rid = row_id(record)
            groups.setdefault(rid, []).append((record, {**to_dict(record), ROW_ID: rid}))
        if not groups:
            return []
        refused = with_backoff(
            lambda: self._insert_missing(groups), self._retry_secs, what=f"insert {self.table}"
        )
        return [
            (record, f"{CONFLICT}: {row_id(record)} belongs to another chat")
            if errors == CONFLICT
            else (record, f"rejected by BigQuery: {errors}")
            for record, errors in refused
        ]


class InsertRows(beam.DoFn):
    """A batch of records -> their rows in `table`; rows that cannot be written -> DeadLetter.

    Args:
      table: `project.dataset.table`; created if missing, schema from `record_type`.
      record_type: the records' dataclass.
      stage: the dead-letter stage for rows that could not be written.
      retry_secs: how long transient errors (outages, 5xx, 429) are retried per batch.
      dead_letter_on_failure: False for the dead-letter table itself. There is no further
        table: exhausted retries (an outage) raise and the runner retries the bundle (with row
        ids, that is safe); a row BigQuery refuses for good goes to
        `triage.dead_letters.keep_last_resort` (the blob store and the log), so one bad row
        cannot block the stage forever.
      blobs: the blob store for `keep_last_resort` (`--dead_letter_blobs`).
    """

    def __init__(
        self,
        table: str,
        record_type: type,
        stage: str,
        retry_secs: float = 120.0,
        dead_letter_on_failure: bool = True,
        blobs: str | None = None,
    ):
        self._table = table
        self._record_type = record_type
        self._stage = stage
        self._retry_secs = retry_secs
        self._dead_letter_on_failure = dead_letter_on_failure
        self._blobs = blobs
        self._rows_written = metrics.counter(f"rows_written_{split_table(table)[2]}")
        self._rows_skipped = metrics.counter(f"rows_already_present_{split_table(table)[2]}")
        self._write_failures = metrics.counter(metrics.WRITE_FAILURES)

    def setup(self) -> None:
        self._writer = RowWriter(self._table, self._record_type, self._retry_secs)

    def teardown(self) -> None:
        writer = getattr(self, "_writer", None)
        if writer is not None:
            writer.close()

    def process(self, batch: Iterable[Any]) -> Iterator[DeadLetter]:
        records = list(batch)
        written, skipped = self._writer.written, self._writer.already_present
        try:
            failures = self._writer.write(records)
        except Exception as err:
            if not self._dead_letter_on_failure:
                raise
            reason = "retries exhausted" if isinstance(err, RetriesExhausted) else "write failed"
            failures = [(r, f"{reason}: {err}") for r in {row_id(r): r for r in records}.values()]
        self._rows_written.inc(self._writer.written - written)
        self._rows_skipped.inc(self._writer.already_present - skipped)
        for record, detail in failures:
            self._write_failures.inc()
            if not self._dead_letter_on_failure:
                keep_last_resort(record, f"{self._table}: {detail}", self._blobs)
                continue
            LOG.error("could not write %s to %s: %s", row_id(record), self._table, detail)
            conflict = detail.startswith(CONFLICT)
            yield DeadLetter(
                stage=self._stage,
                reason=CONFLICT if conflict else "write_failed",
                detail=detail[:2000],
                # The row itself, so replay can write it again without re-running the model;
                # for a conflict, the chat (stable bytes: each conflicting chat its own row).
                payload=_chat_bytes(record) if conflict else to_json(record).encode("utf-8"),
                chat_id=getattr(record, "chat_id", None),
                attempt=getattr(record, "attempt", 1),
                model_id=getattr(record, "model_id", None),
                prompt_version=getattr(record, "prompt_version", None),
            )


class WriteRecordsToBigQuery(beam.PTransform):
    """PCollection[record] -> rows in `table`; returns the DeadLetters of rows not written.

    Rows are grouped into batches (`batch_size` rows, or whatever arrived within
    `max_wait_secs`) across bundles, so a trickle of chats still makes few requests.
    """

    def __init__(
        self,
        table: str,
        record_type: type,
        stage: str,
        *,
        batch_size: int = 500,
        max_wait_secs: float = 2.0,
        retry_secs: float = 120.0,
        dead_letter_on_failure: bool = True,
        blobs: str | None = None,
    ):
        super().__init__()
        self._insert = InsertRows(
            table, record_type, stage, retry_secs, dead_letter_on_failure, blobs
        )
        self._batch_size = batch_size
        self._max_wait_secs = max_wait_secs

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return (
            records
            | "Batch" >> batch_rows(self._batch_size, self._max_wait_secs)
            | "Insert" >> beam.ParDo(self._insert)
        )


def _shard_key(record: Any, shards: int = 4) -> tuple[int, Any]:
    return hash(row_id(record)) % shards, record


@beam.ptransform_fn
def batch_rows(records: beam.PCollection, batch_size: int, max_wait_secs: float) -> Any:
    """Group records into lists across bundles: by size, or by time in a streaming job."""
    return (
        records
        | "ShardKey" >> beam.Map(_shard_key).with_output_types(tuple[int, Any])
        | "GroupIntoBatches"
        >> beam.GroupIntoBatches(batch_size, max_buffering_duration_secs=max_wait_secs)
        | "Values" >> beam.Values()
    )
