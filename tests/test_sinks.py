"""Sink building blocks: retry policy, row ids, table names; idempotent writes on the emulator."""

from __future__ import annotations

import uuid

import pytest
from google.api_core import exceptions as gexc

from triage.gcp import Infrastructure, split_table
from triage.records import DeadLetter, Draft, TriageResult, row_id, table_schema, utc_now
from triage.retry import RetriesExhausted, is_transient, with_backoff


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, secs: float) -> None:
        self.sleeps.append(secs)
        self.now += secs

    def __call__(self) -> float:
        return self.now


def flaky(failures: list[BaseException], result: str = "ok"):
    calls = {"n": 0}

    def call() -> str:
        calls["n"] += 1
        if failures:
            raise failures.pop(0)
        return result

    return call, calls


def test_backoff_retries_transient_errors_then_succeeds():
    clock = FakeClock()
    call, calls = flaky(
        [gexc.ServiceUnavailable("down"), ConnectionRefusedError(), gexc.TooManyRequests("slow")]
    )
    assert with_backoff(call, 60, what="x", sleep=clock.sleep, clock=clock) == "ok"
    assert calls["n"] == 4
    assert len(clock.sleeps) == 3
    assert clock.sleeps[2] > clock.sleeps[0]  # the pauses grow


def test_backoff_does_not_retry_a_bad_request():
    clock = FakeClock()
    call, calls = flaky([gexc.BadRequest("invalid row")])
    with pytest.raises(gexc.BadRequest):
        with_backoff(call, 60, what="x", sleep=clock.sleep, clock=clock)
    assert calls["n"] == 1


def test_backoff_gives_up_when_the_budget_is_spent():
    clock = FakeClock()
    call, _ = flaky([gexc.InternalServerError("boom")] * 1000)
    with pytest.raises(RetriesExhausted) as info:
        with_backoff(call, 30, what="insert", sleep=clock.sleep, clock=clock)
    assert isinstance(info.value.__cause__, gexc.InternalServerError)
    assert clock.now <= 30.0 + 1e-9
    assert max(clock.sleeps) <= 8.0


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (gexc.ServiceUnavailable("x"), True),
        (gexc.InternalServerError("x"), True),
        (gexc.TooManyRequests("x"), True),
        (gexc.DeadlineExceeded("x"), True),
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (gexc.BadRequest("x"), False),
        (gexc.NotFound("x"), False),
        (gexc.Forbidden("x"), False),
        (ValueError("x"), False),
    ],
)
def test_transient_classification(error, transient):
    assert is_transient(error) is transient


def _result(chat_id: str = "c1") -> TriageResult:
    return TriageResult(chat_id, "u", "hi", 1, "s", "m", "triage-v1", 1, utc_now())


def test_row_ids_follow_chat_and_stage():
    assert row_id(_result()) == "c1/summary"
    draft = Draft("c1", "u", "hi", -1, "s", "d", "m", "triage-v1", "apology-v1", 1, "t")
    assert row_id(draft) == "c1/draft"
    dead = DeadLetter("triage_parse", "no_json_object", "", b"{}", chat_id="c1", attempt=2)
    assert row_id(dead) == "chat:c1/triage_parse/2"
    # Same chat, same stage, next attempt: a new fact, a new row.
    assert row_id(dead) != row_id(DeadLetter("triage_parse", "x", "", b"{}", chat_id="c1"))


def test_dead_letters_without_chat_id_are_keyed_by_their_bytes():
    a = DeadLetter("validate", "not_json", "", b"junk", message_id="1")
    again = DeadLetter("validate", "not_json", "later", b"junk", message_id="2")
    other = DeadLetter("validate", "not_json", "", b"other junk", message_id="1")
    assert row_id(a) == row_id(again)
    assert row_id(a) != row_id(other)
    assert row_id(a).startswith("sha256:")


def test_table_schema_adds_the_row_id():
    names = [f["name"] for f in table_schema(TriageResult)]
    assert names[-1] == "row_id" and names.count("row_id") == 1
    assert "sentiment" in names


@pytest.mark.parametrize(
    ("table", "parts"),
    [
        ("p.d.t", ("p", "d", "t")),
        ("p:d.t", ("p", "d", "t")),
        ("my-proj.ds.x", ("my-proj", "ds", "x")),
    ],
)
def test_split_table(table, parts):
    assert split_table(table) == parts


@pytest.mark.parametrize("table", ["d.t", "p.d.t.x", "", "p..t"])
def test_split_table_rejects_malformed_names(table):
    with pytest.raises(ValueError):
        split_table(table)


def test_conventional_names_in_one_project():
    infra = Infrastructure.named("acme", prefix="stg-")
    assert infra.input_subscription == "projects/acme/subscriptions/stg-chats-triage"
    assert infra.drafts_topic == "projects/acme/topics/stg-drafts"
    assert infra.summaries_table == "acme.triage.stg_summaries"


@pytest.mark.emulators
def test_infra_is_idempotent_and_inserts_are_exactly_once(emulators_env):
    """Against the real emulators: infra twice changes nothing; the same batch twice (a retry
    after a lost answer, a redelivery) leaves one row per id."""
    from triage.bigquery_sink import InsertRows
    from triage.gcp import bigquery_client, ensure_infrastructure, publisher_client

    infra = Infrastructure.named("demo-project", prefix="idem-")
    ensure_infrastructure(infra)
    ensure_infrastructure(infra)
    topics = {
        t.name for t in publisher_client().list_topics(request={"project": "projects/demo-project"})
    }
    assert {infra.input_topic, infra.drafts_topic} <= topics

    insert = InsertRows(infra.summaries_table, TriageResult, "write_summary", retry_secs=10)
    insert.setup()
    batch = [_result("c1"), _result("c2"), _result("c1")]
    assert list(insert.process(batch)) == []
    assert list(insert.process(batch)) == []
    insert.teardown()
    client = bigquery_client("demo-project")
    got = sorted(
        r["row_id"]
        for r in client.query(f"SELECT row_id FROM `{infra.summaries_table}`").result(timeout=30)
    )
    assert got == ["c1/summary", "c2/summary"]


def test_the_lookup_reads_only_the_horizon_and_readers_see_each_row_once(emulators_env):
    """The exactly-once lookup is bounded to the deduplication horizon of a table clustered on
    row_id; a row older than the horizon is not looked up (its id may be written again), and
    the `_unique` view shows each row id once all the same."""
    import dataclasses

    from triage.bigquery_sink import DEDUP_HORIZON_DAYS, RowWriter
    from triage.gcp import bigquery_client, unique_view

    table = f"demo-project.triage.horizon_{uuid.uuid4().hex[:8]}"
    writer = RowWriter(table, TriageResult, retry_secs=10)
    client = bigquery_client("demo-project")
    assert client.get_table(table).clustering_fields == ["row_id"]
    old = dataclasses.replace(_result("c1"), created_at="2020-01-01T00:00:00.000Z", summary="old")
    assert writer.write([old]) == [] and writer.written == 1
    new = dataclasses.replace(_result("c1"), summary="new")
    assert writer.write([new]) == [] and writer.written == 2  # beyond the horizon: not seen
    assert writer.write([new]) == [] and writer.written == 2  # within it: exactly once
    assert DEDUP_HORIZON_DAYS == 7
    rows = list(client.query(f"SELECT row_id, summary FROM `{unique_view(table)}`").result())
    assert [(r["row_id"], r["summary"]) for r in rows] == [("c1/summary", "old")]
    writer.close()
