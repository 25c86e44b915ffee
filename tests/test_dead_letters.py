"""Dead letters always fit a BigQuery row, and one refused row never blocks the writer."""

from __future__ import annotations

import hashlib
import json
import types

import pytest
from google.api_core.exceptions import GoogleAPICallError

from triage.bigquery_sink import MAX_REQUEST_BYTES, InsertRows, RowWriter
from triage.dead_letters import (
    MAX_ATTEMPT,
    PAYLOAD_PREFIX_BYTES,
    fit_dead_letter,
    read_payload,
)
from triage.records import DeadLetter, table_schema, to_json
from triage.replay import _original_payload
from triage.validate import _attempt

BIG = b'{"id": "c-1", "user_id": "u", "chat_message": "' + b"x" * 10_000_000 + b'"}'


def test_a_ten_megabyte_payload_is_cut_and_kept_whole_in_the_blob_store(tmp_path):
    dead = DeadLetter("validate", "payload_too_large", "d" * 100_000, BIG, attempt=10**30)
    fitted = fit_dead_letter(dead, str(tmp_path))
    assert len(fitted.payload) == PAYLOAD_PREFIX_BYTES and BIG.startswith(fitted.payload)
    assert fitted.payload_bytes == len(BIG)
    assert fitted.payload_sha256 == hashlib.sha256(BIG).hexdigest()
    assert read_payload(fitted.payload_uri) == BIG
    assert fitted.attempt == MAX_ATTEMPT and len(fitted.detail) <= 4000
    assert len(to_json(fitted).encode()) < 200_000  # far under BigQuery's row limit
    # The same message again lands on the same blob and the same row id.
    again = fit_dead_letter(dead, str(tmp_path))
    assert again.payload_uri == fitted.payload_uri
    assert len(list((tmp_path / "payloads").iterdir())) == 1


def test_without_a_blob_store_the_prefix_size_and_hash_still_fit(tmp_path):
    fitted = fit_dead_letter(DeadLetter("validate", "payload_too_large", "x", BIG))
    assert fitted.payload_uri is None and fitted.payload_bytes == len(BIG)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    broken = fit_dead_letter(DeadLetter("validate", "r", "x", BIG), str(blocked))
    assert broken.payload_uri is None and "full payload not stored" in broken.detail


def test_small_dead_letters_are_unchanged_but_for_size_and_hash():
    dead = DeadLetter("validate", "not_json", "x", b"{oops", chat_id=None, attempt=2)
    fitted = fit_dead_letter(dead)
    assert fitted.payload == b"{oops" and fitted.payload_uri is None
    assert fitted.payload_bytes == 5 and fitted.attempt == 2


@pytest.mark.parametrize(
    "value, attempt",
    [("3", 3), ("9" * 30, MAX_ATTEMPT), ("9" * 5000, 1), ("-4", 1), ("x", 1)],
)
def test_the_attempt_attribute_is_clamped(value, attempt):
    assert _attempt({"attempt": value}) == attempt


class _TooLarge(GoogleAPICallError):
    code = 413


class _BadRequest(GoogleAPICallError):
    code = 400


class _FakeBigQuery:
    """insertAll with a request size cap and one poisonous row, as the service answers them."""

    def __init__(self, record_type, max_rows=10_000):
        self.schema = [types.SimpleNamespace(name=f["name"]) for f in table_schema(record_type)]
        self.max_rows = max_rows
        self.requests: list[int] = []
        self.stored: dict[str, dict] = {}

    def create_dataset(self, *a, **k):
        pass

    def create_table(self, *a, **k):
        pass

    def get_table(self, ref):
        return types.SimpleNamespace(schema=self.schema, clustering_fields=["row_id"])

    def query(self, sql, job_config=None, **k):
        ids = job_config.query_parameters[0].values
        columns = sql.split("SELECT ")[1].split(" FROM")[0].split(", ")[1:]
        present = [
            (rid, *(self.stored[rid].get(c) for c in columns)) for rid in ids if rid in self.stored
        ]
        return types.SimpleNamespace(result=lambda **kw: present)

    def insert_rows_json(self, table, rows, row_ids, **k):
        size = len(json.dumps(rows).encode())
        self.requests.append(size)
        if size > 10_000_000 or len(rows) > self.max_rows:
            raise _TooLarge("Request Entity Too Large")
        if any(r.get("reason") == "poison" for r in rows):
            raise _BadRequest("invalid row")
        self.stored.update(zip(row_ids, rows, strict=True))
        return []

    def close(self):
        pass


def _dead(i: int, reason: str = "r", size: int = 10) -> DeadLetter:
    return DeadLetter("validate", reason, "x", b"p" * size, chat_id=f"c{i}")


def test_requests_are_cut_by_bytes_and_a_refused_request_is_split():
    fake = _FakeBigQuery(DeadLetter)
    writer = RowWriter("p.d.t", DeadLetter, client=fake)
    records = [_dead(i, size=600_000) for i in range(20)]  # ~16 MB of base64 in all
    records[13] = _dead(13, reason="poison")
    refused = writer.write(records)
    assert [r.chat_id for r, _ in refused] == ["c13"] and "HTTP 400" in refused[0][1]
    assert len(fake.stored) == 19
    assert max(fake.requests) <= MAX_REQUEST_BYTES


def test_the_dead_letter_writer_keeps_a_refused_row_and_goes_on(tmp_path, caplog):
    fake = _FakeBigQuery(DeadLetter)
    insert = InsertRows(
        "p.d.dead",
        DeadLetter,
        "write_dead_letter",
        dead_letter_on_failure=False,
        blobs=str(tmp_path),
    )
    insert._writer = RowWriter("p.d.dead", DeadLetter, client=fake)
    out = list(insert.process([_dead(1), _dead(2, reason="poison"), _dead(3)]))
    assert out == [] and sorted(r["chat_id"] for r in fake.stored.values()) == ["c1", "c3"]
    kept = list((tmp_path / "last-resort").iterdir())
    assert len(kept) == 1
    entry = json.loads(kept[0].read_text())
    assert entry["row"]["chat_id"] == "c2" and "HTTP 400" in entry["why"]


def test_replay_reads_the_full_payload_back_and_checks_it(tmp_path):
    fitted = fit_dead_letter(DeadLetter("validate", "payload_too_large", "x", BIG), str(tmp_path))
    row = {**fitted.__dict__}
    assert _original_payload(row) == BIG
    with pytest.raises(ValueError, match="no blob store"):
        _original_payload({**row, "payload_uri": None})
    (tmp_path / "payloads" / fitted.payload_sha256).write_bytes(b"something else")
    with pytest.raises(ValueError, match="does not hold"):
        _original_payload(row)
    small = {"payload": b"{}", "payload_bytes": None}
    assert _original_payload(small) == b"{}"


def test_a_chat_id_reused_for_another_chat_is_a_conflicting_duplicate():
    """A redelivery (same chat) is skipped as written; the same id with another message is
    refused, whether it comes in a later batch or in the same one."""
    from triage.records import TriageResult, utc_now

    def result(message: str) -> TriageResult:
        return TriageResult("c1", "u", message, 1, "s", "m", "triage-v3", 1, utc_now())

    fake = _FakeBigQuery(TriageResult)
    writer = RowWriter("p.d.summaries", TriageResult, client=fake)
    assert writer.write([result("late pizza")]) == []
    assert writer.write([result("late pizza")]) == [] and writer.already_present == 1
    ((record, why),) = writer.write([result("a different chat")])
    assert record.chat_message == "a different chat" and why.startswith("conflicting_duplicate")
    fresh = RowWriter("p.d.summaries", TriageResult, client=_FakeBigQuery(TriageResult))
    refused = fresh.write([result("one"), result("one"), result("two")])
    assert [(r.chat_message, w.split(":")[0]) for r, w in refused] == [
        ("two", "conflicting_duplicate")
    ]
    insert = InsertRows("p.d.summaries", TriageResult, "write_summary")
    insert._writer = writer
    (dead,) = list(insert.process([result("yet another chat")]))
    assert dead.reason == "conflicting_duplicate" and dead.chat_id == "c1"
    # A redelivery of the stored chat beside a conflicting one: skipped, not a conflict; and
    # two conflicting chats are two dead letters, each kept (their row ids differ).
    both = list(insert.process([result("late pizza"), result("third"), result("fourth")]))
    assert sorted(json.loads(d.payload)["chat_message"] for d in both) == ["fourth", "third"]
    from triage.records import row_id

    assert len({row_id(d) for d in both}) == 2
    assert row_id(both[0]) == row_id(
        next(iter(insert.process([result(json.loads(both[0].payload)["chat_message"])])))
    )
