"""`make demo`: the streaming service end to end on local emulators, then a readable report.

Starts the Pub/Sub and BigQuery emulators on free loopback ports, creates the infrastructure,
publishes the example chats, runs the streaming pipeline (DirectRunner) until every chat is
accounted for, prints what landed where, and stops everything it started. The last line is
`demo: N chats -> S summaries, D drafts, E dead letters`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Outcome", "StreamingRun", "count_outcomes", "main", "publish_lines"]

PROJECT = "demo-project"
# The `bq` tool reads the API description from here instead of asking the (emulated) server.
BQ_DISCOVERY = "/usr/lib/google-cloud-sdk/platform/bq/discovery_next/bigquery.json"


def _say(message: str) -> None:
    print(message, flush=True)


def publish_lines(topic: str, payloads: list[bytes]) -> None:
    """Publish raw message bodies, as the chat system upstream would."""
    from triage.gcp import publisher_client

    publisher = publisher_client()
    futures = [publisher.publish(topic, payload) for payload in payloads]
    for future in futures:
        future.result(timeout=60)


@dataclass
class Outcome:
    summaries: int = 0
    drafts: int = 0
    dead_letters: int = 0

    @property
    def total(self) -> int:
        return self.summaries + self.drafts + self.dead_letters


def _count_rows(client: Any, table: str) -> int:
    try:
        return next(iter(client.query(f"SELECT COUNT(*) FROM `{table}`").result(timeout=30)))[0]
    except Exception:  # noqa: BLE001 - the table may not exist yet; it is counted next time
        return 0


class DraftCounter:
    """Counts drafts on an audit subscription, leaving the review subscription untouched."""

    def __init__(self, subscription: str):
        from triage.gcp import subscriber_client

        self._subscriber = subscriber_client()
        self._subscription = subscription
        self._seen: set[str] = set()

    def count(self) -> int:
        from google.api_core.exceptions import DeadlineExceeded

        try:
            response = self._subscriber.pull(
                request={"subscription": self._subscription, "max_messages": 100}, timeout=2
            )
        except DeadlineExceeded:
            return len(self._seen)
        if response.received_messages:
            for m in response.received_messages:
                self._seen.add(m.message.attributes.get("draft_id", m.message.message_id))
            self._subscriber.acknowledge(
                request={
                    "subscription": self._subscription,
                    "ack_ids": [m.ack_id for m in response.received_messages],
                }
            )
        return len(self._seen)

    def close(self) -> None:
        self._subscriber.close()


def count_outcomes(bq: Any, infra: Any, drafts: DraftCounter) -> Outcome:
    return Outcome(
        summaries=_count_rows(bq, infra.summaries_table),
        drafts=drafts.count(),
        dead_letters=_count_rows(bq, infra.dead_letter_table),
    )


# Where the demo keeps the full bytes of dead letters too large for a row (GCS in production).
DEMO_BLOBS = "out/dead-letter-blobs"
DEMO_STORE = "out/similar-cases.db"
DEMO_ARTICLES = "examples/knowledge"
DEMO_CASES = [f"examples/resolved_cases_{lang}.jsonl" for lang in ("en", "ko", "ja")]


def index_examples(store_path: str) -> str:
    """The example policies and resolved cases in a Milvus Lite file, for the drafts to
    follow (the same `triage index` path: MLTransform, then VectorDatabaseWriteTransform)."""
    from triage.retrieval.documents import read_documents
    from triage.retrieval.embedders import DEFAULT_EMBEDDER, embedding_width
    from triage.retrieval.index import index_documents
    from triage.retrieval.store import VectorStore

    Path(store_path).parent.mkdir(parents=True, exist_ok=True)
    docs = read_documents(DEMO_ARTICLES, DEMO_CASES)
    store = VectorStore(os.path.abspath(store_path), dim=embedding_width(DEFAULT_EMBEDDER))
    chunks = index_documents(docs, store)
    _say(f"demo: indexed {len(docs)} policies and resolved cases ({chunks} chunks) in {store_path}")
    return store.uri


class StreamingRun:
    """The streaming pipeline, started in this process and cancelled when done."""

    def __init__(
        self,
        infra: Any,
        beam_args: list[str],
        handlers: tuple[Any, Any] | None = None,
        token_counter: Any = None,
    ):
        from triage.options import TriageOptions
        from triage.pipeline import streaming_pipeline

        io_flags = [
            f"--input_subscription={infra.input_subscription}",
            f"--summaries_table={infra.summaries_table}",
            f"--dead_letter_table={infra.dead_letter_table}",
            f"--drafts_topic={infra.drafts_topic}",
        ]
        options = TriageOptions([*io_flags, *beam_args], save_main_session=False)
        self._pipeline = streaming_pipeline(
            options, handlers=handlers, token_counter=token_counter, max_wait_secs=0.5
        )
        self._result: Any = None

    def start(self) -> StreamingRun:
        self._result = self._pipeline.run()
        return self

    def cancel(self) -> None:
        if self._result is not None:
            try:
                self._result.cancel()
            except Exception:  # noqa: BLE001 - already stopped
                pass


def wait_for(
    expected: int,
    measure: Callable[[], Outcome],
    timeout_secs: float,
    progress: Callable[[str], None] = _say,
    every_secs: float = 2.0,
) -> Outcome:
    """Poll until `expected` chats are accounted for or the time is up; show progress."""
    start = time.monotonic()
    last = Outcome()
    while time.monotonic() - start < timeout_secs:
        last = measure()
        elapsed = time.monotonic() - start
        progress(
            f"  {elapsed:5.1f}s  {last.total}/{expected} accounted for "
            f"({last.summaries} summaries, {last.drafts} drafts, {last.dead_letters} dead letters)"
        )
        if last.total >= expected:
            return last
        time.sleep(every_secs)
    return last


def _short(text: str | None, width: int = 88) -> str:
    flat = " ".join((text or "").split())
    return textwrap.shorten(flat, width=width, placeholder=" …") if flat else "(empty)"


def _report(bq: Any, infra: Any) -> list[str]:
    """Summaries and dead letters read back from BigQuery; drafts pulled as an agent would."""
    from triage.gcp import subscriber_client

    lines = ["", "Summaries in BigQuery (a few):"]
    rows = bq.query(
        f"SELECT chat_id, sentiment, summary FROM `{infra.summaries_table}` "
        "ORDER BY chat_id LIMIT 5"
    ).result(timeout=30)
    lines += [f"  [{r.chat_id}] {r.sentiment:+d} {_short(r.summary)}" for r in rows] or ["  (none)"]

    lines += ["", "Drafts pulled from the review subscription:"]
    subscriber = subscriber_client()
    try:
        response = subscriber.pull(
            request={"subscription": infra.review_subscription, "max_messages": 5}, timeout=10
        )
        for m in response.received_messages:
            draft = json.loads(m.message.data)
            lines.append(f"  [{m.message.attributes['chat_id']}] {_short(draft['summary'], 70)}")
            lines.append(f"      draft: {_short(draft['draft'])}")
            for doc_id, score in list(
                zip(draft.get("similar_ids") or [], draft.get("similar_scores") or [], strict=False)
            )[:2]:
                lines.append(f"      similar case: {doc_id} ({score:.2f})")
        if response.received_messages:  # only a look: hand them straight back to the queue
            subscriber.modify_ack_deadline(
                request={
                    "subscription": infra.review_subscription,
                    "ack_ids": [m.ack_id for m in response.received_messages],
                    "ack_deadline_seconds": 0,
                }
            )
        else:
            lines.append("  (none)")
    finally:
        subscriber.close()

    lines += ["", "Dead letters in BigQuery, by stage and reason:"]
    groups = bq.query(
        f"SELECT stage, reason, COUNT(*) AS n FROM `{infra.dead_letter_table}` "
        "GROUP BY stage, reason ORDER BY n DESC, stage, reason"
    ).result(timeout=30)
    lines += [f"  {g.n:4d}  {g.stage:18s} {g.reason}" for g in groups] or ["  (none)"]
    return lines


@contextmanager
def local_services() -> Iterator[tuple[Any, Any]]:
    """Both emulators running, with the client environment pointing at them."""
    from triage.emulators import BigQueryEmulator, PubSubEmulator

    with ExitStack() as stack:
        pubsub = stack.enter_context(PubSubEmulator(PROJECT))
        bigquery = stack.enter_context(BigQueryEmulator(PROJECT))
        saved = {k: os.environ.get(k) for k in (*pubsub.env, *bigquery.env)}
        os.environ.update({**pubsub.env, **bigquery.env})
        try:
            yield pubsub, bigquery
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", default="examples/chats.jsonl")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait, at most")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the emulators running after the report, to inspect them (Ctrl-C stops)",
    )
    parser.add_argument(
        "--review",
        action="store_true",
        help="then serve the review queue on the demo's drafts until Ctrl-C",
    )
    parser.add_argument("--review_port", type=int, default=8080)
    args, beam_args = parser.parse_known_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    from triage.cli import configure_logging

    configure_logging(verbose=False)
    payloads = [line for line in Path(args.chats).read_bytes().splitlines() if line.strip()]

    _say("demo: starting the Pub/Sub and BigQuery emulators on loopback ...")
    with local_services() as (pubsub, bigquery):
        from triage.gcp import (
            Infrastructure,
            bigquery_client,
            ensure_infrastructure,
            ensure_subscription,
            subscriber_client,
        )

        infra = Infrastructure.named(PROJECT)
        ensure_infrastructure(infra)
        audit = f"projects/{PROJECT}/subscriptions/drafts-demo-audit"
        sub = subscriber_client()
        ensure_subscription(sub, audit, infra.drafts_topic)
        sub.close()
        _say(f"demo: Pub/Sub at {pubsub.host}, BigQuery at {bigquery.endpoint}")
        _say(f"demo: infrastructure ready; publishing {len(payloads)} chats to {infra.input_topic}")
        publish_lines(infra.input_topic, payloads)

        if not any(a.startswith("--vector_store") for a in beam_args):
            beam_args = [*beam_args, f"--vector_store={index_examples(DEMO_STORE)}"]
        _say("demo: running the streaming pipeline (DirectRunner); loading the model ...")
        if not any(a.startswith("--dead_letter_blobs") for a in beam_args):
            beam_args = [*beam_args, f"--dead_letter_blobs={os.path.abspath(DEMO_BLOBS)}"]
        run = StreamingRun(infra, beam_args).start()
        bq = bigquery_client(PROJECT)
        drafts = DraftCounter(audit)
        try:
            outcome = wait_for(
                len(payloads), lambda: count_outcomes(bq, infra, drafts), args.timeout
            )
        finally:
            run.cancel()
            drafts.close()
        report = _report(bq, infra)
        bq.close()
        for line in report:
            _say(line)
        _say("")
        if outcome.total != len(payloads):
            _say(f"demo: only {outcome.total} of {len(payloads)} chats accounted for in time")
            return 1
        _say(
            f"demo: {len(payloads)} chats -> {outcome.summaries} summaries, "
            f"{outcome.drafts} drafts, {outcome.dead_letters} dead letters"
        )
        if args.review:
            _serve_review(infra, args.review_port, _flag(beam_args, "vector_store"))
        elif args.keep:
            _keep_running(pubsub, bigquery, infra)
        else:
            _say(
                "demo: review these drafts in a browser: make demo-review "
                f"(this demo again, then the review queue at http://127.0.0.1:{args.review_port}/)"
            )
    return 0


def _flag(args: list[str], name: str) -> str | None:
    return next((a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")), None)


def _serve_review(infra: Any, port: int, vector_store: str | None = None) -> None:
    """The review app on the demo's emulators, signed in with a one-time password."""
    import tempfile
    from types import SimpleNamespace

    from review.auth import Reviewers
    from review.cli import build_app, serve

    reviewers, name, password = Reviewers.one_time()
    options = SimpleNamespace(
        project=PROJECT,
        dataset="triage",
        prefix="",
        subscription=infra.review_subscription,
        reviews_table=infra.reviews_table,
        approved_topic=infra.approved_topic,
        state_dir=tempfile.mkdtemp(prefix="triage-review-"),
        secure_cookies=False,
        host="127.0.0.1",
        vector_store=vector_store,
        vector_collection="similar_cases",
    )
    queue, app = build_app(options, reviewers)
    serve(
        queue,
        app,
        "127.0.0.1",
        port,
        lambda url: _say(
            f"\ndemo: review queue at {url} "
            f"(sign in as {name!r}, one-time password {password}); Ctrl-C stops"
        ),
    )


def _keep_running(pubsub: Any, bigquery: Any, infra: Any) -> None:
    bq = (
        f"bq --api={bigquery.endpoint} --discovery_file={BQ_DISCOVERY} "
        f"--project_id={PROJECT} --oauth_access_token=emulator"
    )
    _say(
        "\nThe emulators keep running until Ctrl-C. From another shell:\n"
        f"  {bq} query --nouse_legacy_sql "
        f"'SELECT stage, reason, COUNT(*) n FROM `{infra.dead_letter_table}` GROUP BY 1, 2'\n"
        f"  {bq} head -n 5 {infra.summaries_table.replace('.', ':', 1)}\n"
        f'  PUBSUB_EMULATOR_HOST={pubsub.host} .venv/bin/python -c "..."  # Pub/Sub clients'
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
