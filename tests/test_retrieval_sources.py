"""`triage index` from the review queue's approvals: the `reviews` table in BigQuery (batch)
and the `approved` Pub/Sub topic (streaming), on the emulators, through the real Beam path
(DirectRunner, MLTransform with the local e5-small model, Beam's Milvus writer) into a Milvus
Lite file. Re-indexing the same approval, from any source, updates it and never adds a copy;
a message on the topic that is not a usable approval is counted, logged and dropped, and the
streaming job goes on."""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from review.cli import main_export_approved
from triage import metrics
from triage.demo import PROJECT, publish_lines
from triage.records import ROW_ID, Review, review_row_id, to_dict, to_json
from triage.retrieval.documents import read_cases
from triage.retrieval.index import counter_total, index_pipeline, main
from triage.retrieval.sources import ReadApprovedFromPubSub, UnusableApproval, approved_case
from triage.retrieval.store import VectorStore

pytestmark = pytest.mark.emulators

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def review(chat_id: str, chat: str, reply: str, minutes: int = 0, **changes) -> Review:
    decided = T0 + timedelta(minutes=minutes)
    fields = {
        "draft_id": f"{chat_id}/draft",
        "chat_id": chat_id,
        "user_id": "u1",
        "decision": "approved",
        "final_text": reply,
        "edited": False,
        "reason": "",
        "reviewer": "alice",
        "model_id": "models/triage-gemma3-270m",
        "prompt_version": "triage-v2",
        "apology_prompt_version": "apology-v3",
        "sentiment": -1,
        "summary": f"summary of {chat_id}",
        "chat_message": chat,
        "draft": reply,
        "drafted_at": (decided - timedelta(minutes=5)).isoformat(),
        "decided_at": decided.isoformat(),
        "seconds_to_decision": 300.0,
    }
    return Review(**{**fields, **changes})


BAG = "Customer: my suitcase never came off the belt in Lisbon, two days now"
TWICE = "고객: 같은 주문인데 카드에서 두 번 결제됐어요. 빨리 처리해 주세요"
LATE = "お客様: 注文してから1時間半たってもまだ届きません。もう冷めてるでしょう"


@pytest.fixture
def store(tmp_path) -> VectorStore:
    return VectorStore(str(tmp_path / "cases.db"), dim=384, collection="approved")


def _store_flags(store: VectorStore) -> list[str]:
    return ["--vector_store", store.uri, "--collection", store.collection]


def test_an_approved_message_becomes_a_case_and_anything_else_says_why():
    body = to_json(review("c7", BAG, "We are tracing your bag.")).encode()
    doc = approved_case(body, {"draft_id": "c7/draft"})
    assert (doc.doc_id, doc.kind, doc.text, doc.reply) == (
        "c7/draft",
        "case",
        BAG,
        "We are tracing your bag.",
    )
    assert doc.title == "summary of c7" and doc.language == doc.topic == doc.remedy == ""
    extra = json.loads(body) | {"language": "en", "topic": "baggage-delayed", "remedy": "trace"}
    doc = approved_case(json.dumps(extra).encode())
    assert (doc.language, doc.topic, doc.remedy) == ("en", "baggage-delayed", "trace")
    rejected = to_dict(review("c8", BAG, "", decision="rejected", reason="wrong"))
    for data, reason in [
        (b"\xff\xfe", "not_utf8"),
        (b"not json", "not_json"),
        (b"[1, 2]", "not_object"),
        (json.dumps(rejected).encode(), "not_approved"),
        (json.dumps({**json.loads(body), "final_text": " "}).encode(), "no_reply"),
        (json.dumps({**json.loads(body), "chat_message": None}).encode(), "no_chat"),
        (b'{"decision": "approved", "final_text": "x", "chat_message": "y"}', "no_id"),
    ]:
        with pytest.raises(UnusableApproval) as err:
            approved_case(data)
        assert err.value.reason == reason


@pytest.mark.parametrize(
    "argv",
    [
        [],  # nothing to index
        ["--from_bigquery"],  # which table?
        ["--streaming"],  # which subscription?
        ["--streaming", "--project", PROJECT, "--from_bigquery"],  # streaming is alone
    ],
)
def test_the_command_refuses_what_cannot_run(argv, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--vector_store", str(tmp_path / "x.db")])
    assert exit_.value.code == 2


def test_a_real_subscription_is_refused_on_the_direct_runner(tmp_path, monkeypatch, capsys):
    """It acks on pull, as for `triage run`; here the loss is recoverable (`--from_bigquery`),
    so `--allow_direct_runner_pubsub` accepts it."""
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main(["--streaming", "--project", "p", "--vector_store", str(tmp_path / "x.db")])
    assert exit_.value.code == 2
    assert "refusing to read a real Pub/Sub subscription" in capsys.readouterr().err


def test_bigquery_approvals_are_indexed_once_and_updated_in_place(
    emulators, bq_direct, store, tmp_path, capsys
):
    from triage.bigquery_sink import RowWriter
    from triage.gcp import Infrastructure, ensure_table

    prefix = f"t{uuid.uuid4().hex[:8]}_"
    table = Infrastructure.named(PROJECT, prefix=prefix).reviews_table
    ensure_table(bq_direct, table, Review)
    writer = RowWriter(table, Review, retry_secs=30.0)
    refused = writer.write(
        [
            review("bag", BAG, "We are sorry: your bag is traced and comes to you tomorrow."),
            review("twice", TWICE, "중복 결제는 취소했습니다. 3영업일 안에 환불됩니다.", 1),
            review("late", LATE, "遅れて申し訳ありません。代金は全額お返しします。", 2),
            review("rude", BAG, "", 3, decision="rejected", reason="tone"),
        ]
    )
    writer.close()
    assert refused == []
    # A second row for one draft (two app instances racing): the first decision stands.
    later = review("bag", BAG, "A later, conflicting reply.", 9, reviewer="bob")
    overruled = review("rude", BAG, "Approved by a second instance, too late.", 9, reviewer="bob")
    errors = bq_direct.insert_rows_json(
        table, [{**to_dict(r), ROW_ID: review_row_id(r.draft_id)} for r in (later, overruled)]
    )
    assert errors == []

    flags = ["--from_bigquery", "--project", PROJECT, "--prefix", prefix, *_store_flags(store)]
    assert main(flags) == 0
    assert "index: 3 documents, 3 chunks" in capsys.readouterr().err
    ids = ["bag/draft", "twice/draft", "late/draft"]
    docs = store.documents(ids)
    assert store.count() == 3 and set(docs) == set(ids)
    assert docs["bag/draft"]["reply"].startswith("We are sorry: your bag is traced")
    assert docs["bag/draft"]["title"] == "summary of bag" and docs["bag/draft"]["kind"] == "case"
    assert TWICE in docs["twice/draft"]["text"]

    assert main(flags) == 0  # the same approvals again: updated, not duplicated
    assert "index: 3 documents, 3 chunks" in capsys.readouterr().err
    assert store.count() == 3
    # Decided since 09:01: two of them (the conflicting row for `bag` is not its decision).
    assert main([*flags, "--since", "2026-11-20T09:01:00Z"]) == 0
    assert "index: 2 documents, 2 chunks" in capsys.readouterr().err
    assert store.count() == 3
    assert store.documents(["bag/draft"])["bag/draft"]["reply"].startswith("We are sorry: your")

    # An operator corrects a stored reply; indexing again replaces the case's text.
    fixed = "遅れて申し訳ありません。次回使えるクーポンもお送りしました。"
    bq_direct.query(
        f"UPDATE `{table}` SET final_text = @text WHERE draft_id = 'late/draft'",
        job_config=_params(text=fixed),
    ).result(timeout=30)
    assert main(flags) == 0
    late = store.documents(["late/draft"])["late/draft"]
    assert (
        store.count() == 3
        and late["reply"] == fixed
        and f"Approved reply: {fixed}" in (late["text"])
    )

    # `triage export-approved` writes the same approvals under the same ids: indexing its
    # file (`--cases`) overwrites them too.
    exported = tmp_path / "approved.jsonl"
    assert (
        main_export_approved(["--project", PROJECT, "--prefix", prefix, "--out", str(exported)])
        == 0
    )
    assert sorted(d.doc_id for d in read_cases([exported])) == sorted(ids)
    assert main(["--cases", str(exported), *_store_flags(store)]) == 0
    assert store.count() == 3


def _params(**values: str):
    from google.cloud import bigquery

    return bigquery.QueryJobConfig(
        query_parameters=[bigquery.ScalarQueryParameter(k, "STRING", v) for k, v in values.items()]
    )


def _wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def test_a_bundle_writes_each_document_once_its_last_copy():
    """Milvus refuses one upsert that names an id twice: copies within a bundle (an approval
    delivered twice, a case from a file and from BigQuery) are written once, the newest."""
    from apache_beam.transforms.window import GlobalWindow

    from triage.retrieval.index import ChunkOnce

    first = approved_case(to_json(review("c1", BAG, "First reply.")).encode())
    other = approved_case(to_json(review("c2", TWICE, "다른 답변.")).encode())
    newer = approved_case(to_json(review("c1", BAG, "Corrected reply.")).encode())
    step = ChunkOnce()
    step.start_bundle()
    for doc in (first, other, newer):
        step.process(doc, 0, GlobalWindow())
    out = [value.value for value in step.finish_bundle()]
    assert [c.id for c in out] == ["c2/draft#0", "c1/draft#0"]
    assert out[1].content.text.endswith("Approved reply: Corrected reply.")
    step.start_bundle()
    assert list(step.finish_bundle()) == []  # nothing carried into the next bundle


def test_unusable_messages_are_counted_and_dropped_not_fatal():
    """The parse step in a batch pipeline, where Beam's counters are exact (the streaming
    DirectRunner's are not: bundles after the first went uncounted when this was written)."""
    import apache_beam as beam
    from apache_beam.io.gcp.pubsub import PubsubMessage
    from apache_beam.testing.util import assert_that, equal_to

    from triage.retrieval.sources import ParseApproved

    good = review("c1", BAG, "We are tracing your bag.")
    messages = [
        PubsubMessage(b"not json", {}, message_id="m1"),
        PubsubMessage(to_json(good).encode(), {"draft_id": good.draft_id}, message_id="m2"),
        PubsubMessage(b'{"decision": "rejected"}', {}, message_id="m3"),
    ]
    pipeline = beam.Pipeline()
    ids = (
        pipeline
        | beam.Create(messages)
        | beam.ParDo(ParseApproved())
        | beam.Map(lambda doc: doc.doc_id)
    )
    assert_that(ids, equal_to(["c1/draft"]))
    result = pipeline.run()
    result.wait_until_finish()
    assert counter_total(result, metrics.APPROVALS_READ) == 3
    assert counter_total(result, metrics.APPROVALS_UNUSABLE) == 2


def test_streaming_indexes_approvals_as_they_come_and_drops_what_it_cannot_use(
    emulators, store, caplog
):
    from apache_beam.options.pipeline_options import PipelineOptions

    from triage.gcp import Infrastructure, ensure_infrastructure, publisher_client
    from triage.retrieval.embedders import load_embedder

    names = Infrastructure.named(PROJECT, prefix=f"t{uuid.uuid4().hex[:8]}-")
    ensure_infrastructure(names)  # creates the approved-index subscription
    bag = review("bag", BAG, "We are sorry: your bag is traced and comes to you tomorrow.")
    twice = review("twice", TWICE, "중복 결제는 취소했습니다. 3영업일 안에 환불됩니다.")
    late = review("late", LATE, "遅れて申し訳ありません。代金は全額お返しします。")
    publisher = publisher_client()

    def publish(record: Review) -> None:  # as the review queue publishes an approval
        publisher.publish(
            names.approved_topic,
            to_json(record).encode(),
            draft_id=record.draft_id,
            chat_id=record.chat_id,
        ).result(timeout=30)

    secret = "PRIVATE-CHAT-TEXT"
    publish_lines(
        names.approved_topic,
        [
            b"not json",
            b"\xff\xfe\x00",
            json.dumps({**to_dict(bag), "chat_message": "", "draft_id": "x/draft"}).encode(),
            json.dumps(to_dict(review("no", secret, "", decision="rejected"))).encode(),
        ],
    )
    publish(bag)
    publish(twice)
    publish(bag)  # a second copy (a publish that timed out but landed)

    caplog.set_level(logging.WARNING, logger="triage.retrieval.sources")
    options = PipelineOptions(["--streaming"], save_main_session=False)
    subscription = names.approved_index_subscription
    pipeline = index_pipeline(
        {"ReadApproved": ReadApprovedFromPubSub(subscription)}, store, options=options
    )
    result = pipeline.run()
    fixed = "We are sorry: your bag is traced, and the courier brings it to your hotel tonight."
    try:
        _wait_until(lambda: _count(store) >= 2, 50, "the first two cases in the store")
        # The bad messages came first and were dropped; the job still takes approvals, and
        # the same draft again (here with its reply corrected) replaces its case.
        publish(late)
        publish(review("bag", BAG, fixed))
        _wait_until(
            lambda: _count(store) >= 3 and _reply(store, "bag/draft") == fixed,
            30,
            "the approvals published afterwards",
        )
        assert "FAILED" not in str(result.state)
    finally:
        result.cancel()
        publisher.stop()
    assert store.count() == 3  # bag three times, one case
    docs = store.documents(["bag/draft", "twice/draft", "late/draft"])
    assert docs["late/draft"]["reply"] == late.final_text and LATE in docs["late/draft"]["text"]
    assert f"Approved reply: {fixed}" in docs["bag/draft"]["text"]

    model = load_embedder("e5-small")
    query = "my luggage did not arrive at the airport baggage claim"
    top = store.search(model.embed([query], query=True), limit=1)[0][0]
    assert top.metadata["doc_id"] == "bag/draft" and "courier brings it" in top.text

    logged = [
        json.loads(r.getMessage()) for r in caplog.records if r.name == "triage.retrieval.sources"
    ]
    assert sorted(e["reason"] for e in logged) == [
        "no_chat",
        "not_approved",
        "not_json",
        "not_utf8",
    ]
    assert all(e["event"] == "approval_not_indexed" and e["message_id"] for e in logged)
    assert secret not in caplog.text  # ids and reasons, never a customer's text


def _reply(store: VectorStore, doc_id: str) -> str | None:
    try:
        return store.documents([doc_id]).get(doc_id, {}).get("reply")
    except Exception:  # noqa: BLE001 - not there yet
        return None


def _count(store: VectorStore) -> int:
    try:
        return store.count()
    except Exception:  # noqa: BLE001 - the writer may hold the file for a moment
        return 0
