"""`triage review`, `triage review-user` and `triage export-approved`."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "DashboardRefresher",
    "ReviewServer",
    "add_reviews_table_args",
    "build_app",
    "export_rows",
    "fetch_approved",
    "main_export_approved",
    "main_review",
    "main_review_user",
    "parse_since",
    "reviews_table_from",
    "secure_cookies",
    "serve",
]

LOG = logging.getLogger(__name__)

DASHBOARD_TTL_S = 30.0


def add_reviews_table_args(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """`--project`, `--dataset`, `--prefix` and `--reviews_table`, named as `triage infra`
    names them, for every command that reads the `reviews` table (`triage index` too, where
    the table is one source among others and `--project` is not always needed)."""
    parser.add_argument("--project", required=required)
    parser.add_argument("--dataset", default="triage")
    parser.add_argument("--prefix", default="", help="the prefix given to `triage infra`")
    parser.add_argument("--reviews_table", help="default: PROJECT.DATASET.reviews")


def reviews_table_from(args: argparse.Namespace) -> str:
    """The table `add_reviews_table_args`' flags name: `--reviews_table`, else the
    conventional one in `--project`."""
    from triage.gcp import Infrastructure

    if args.reviews_table:
        return str(args.reviews_table)
    return Infrastructure.named(
        args.project, dataset=args.dataset, prefix=args.prefix
    ).reviews_table


def _targets_args(parser: argparse.ArgumentParser) -> None:
    add_reviews_table_args(parser)
    parser.add_argument("--subscription", help="default: the drafts review subscription")
    parser.add_argument("--approved_topic", help="default: projects/PROJECT/topics/approved")


def _targets(args: argparse.Namespace) -> Any:
    from review.queue import ReviewTargets
    from triage.gcp import Infrastructure

    infra = Infrastructure.named(args.project, dataset=args.dataset, prefix=args.prefix)
    return ReviewTargets(
        subscription=args.subscription or infra.review_subscription,
        reviews_table=reviews_table_from(args),
        approved_topic=args.approved_topic or infra.approved_topic,
    )


class ReviewServer:
    """waitress serving the app on a background thread. Port 0 picks a free port."""

    def __init__(self, app: Any, host: str, port: int):
        from waitress import create_server

        self._server = create_server(
            app, host=host, port=port, threads=8, ident="chat-triage-review"
        )
        self.url = f"http://{host}:{self._server.effective_port}/"
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="review-http", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._server.run()
        except OSError:
            # close() from another thread pulls the socket out from under select(): expected
            # when stopping, a real failure otherwise.
            if not self._stopping.is_set():
                raise

    def wait(self) -> None:
        self._thread.join()

    def stop(self) -> None:
        self._stopping.set()
        # Let in-flight requests finish first: closing the server alone leaves worker threads
        # writing to its closed wake-up pipe.
        self._server.task_dispatcher.shutdown()
        self._server.close()
        self._thread.join(timeout=10)


def serve(queue: Any, app: Any, host: str, port: int, announce: Any) -> None:
    """Pull drafts and serve the app until Ctrl-C; `announce(url)` says where, once listening."""
    queue.start()
    server = ReviewServer(app, host, port)
    announce(server.url)
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        queue.stop()


def build_app(args: argparse.Namespace, reviewers: Any) -> tuple[Any, Any]:
    """The queue (pulling) and the Flask app for parsed `triage review` arguments."""
    from review.app import create_app
    from review.dashboard import Dashboard, fetch_decisions
    from review.queue import ReviewQueue
    from review.sessions import Sessions
    from review.store import DraftStore
    from triage.gcp import bigquery_client, split_table

    targets = _targets(args)
    store = DraftStore(Path(args.state_dir) / "drafts.sqlite3")
    queue = ReviewQueue(targets, store)
    client = bigquery_client(split_table(targets.reviews_table)[0])
    board = DashboardRefresher(
        lambda: fetch_decisions(client, targets.reviews_table, datetime.now(UTC))
    )
    queue.on_decision = board.refresh_soon  # an agent sees their own decision counted soon
    board.start()

    def dashboard() -> Dashboard:
        return board.dashboard(store.count_waiting(), datetime.now(UTC))

    secret = os.environ.get("TRIAGE_REVIEW_SECRET")
    app = create_app(
        queue,
        reviewers,
        dashboard=dashboard,
        secret_key=secret,
        secure_cookies=secure_cookies(args.host, args.secure_cookies),
        sessions=Sessions(Path(args.state_dir) / "sessions.sqlite3"),
        similar_cases=_similar_cases(
            getattr(args, "vector_store", None), getattr(args, "vector_collection", "similar_cases")
        ),
    )
    return queue, app


def _similar_cases(uri: str | None, collection: str) -> Any:
    """Looks up the similar cases a draft names, in the store `triage index` filled."""
    if not uri:
        return None
    from triage.retrieval.store import VectorStore

    store = VectorStore(uri, dim=0, collection=collection)  # reads only: the width is unused
    return store.documents


def secure_cookies(host: str, asked: bool) -> bool:
    """Secure cookies whenever the app is reachable from another machine: a session cookie
    sent in clear text there is as good as a password."""
    from review.auth import is_loopback

    return asked or not is_loopback(host)


class DashboardRefresher:
    """The dashboard's decisions, re-read from BigQuery on a background thread every
    DASHBOARD_TTL_S (sooner after a decision). Pages only read what was last fetched, so a
    slow or unreachable BigQuery never holds a request thread: during an outage every page
    and /healthz still answer at once, with the last numbers and a note."""

    def __init__(self, fetch: Any, every_s: float = DASHBOARD_TTL_S):
        self._fetch = fetch
        self._every_s = every_s
        self._rows: Any = None
        self._error: str | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()

    def refresh(self) -> None:
        try:
            self._rows, self._error = self._fetch(), None
        except Exception as err:  # noqa: BLE001 - kept until the next round succeeds
            LOG.warning("dashboard query failed: %s", err)
            self._error = "the reviews table cannot be read right now"

    def refresh_soon(self, _: Any = None) -> None:
        self._wake.set()

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                self.refresh()
                self._wake.wait(self._every_s)
                self._wake.clear()

        threading.Thread(target=loop, name="review-dashboard", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def dashboard(self, waiting: int, now: datetime) -> Any:
        from review.dashboard import Dashboard, summarize

        board = (
            Dashboard(waiting=waiting)
            if self._rows is None
            else summarize(self._rows, waiting, now)
        )
        if self._error:
            board.error = self._error
        elif self._rows is None:
            board.error = "loading"
        return board


def main_review(argv: Sequence[str] | None = None) -> int:
    from review.auth import Reviewers, is_loopback

    parser = argparse.ArgumentParser(
        prog="triage review", description="serve the support agents' review queue"
    )
    _targets_args(parser)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--users",
        default=os.environ.get("TRIAGE_REVIEW_USERS"),
        help="TOML file of reviewers and password hashes (see `triage review-user`); "
        "required on any address but loopback",
    )
    parser.add_argument(
        "--state_dir",
        default=os.environ.get("TRIAGE_REVIEW_STATE", ".review-state"),
        help="where the local store of pulled drafts and leases lives",
    )
    parser.add_argument(
        "--vector_store",
        default=None,
        help="the Milvus Lite file or URI the pipeline retrieves from: shows similar cases",
    )
    parser.add_argument("--vector_collection", default="similar_cases")
    parser.add_argument(
        "--secure_cookies",
        action="store_true",
        help="mark the session cookie Secure on loopback too (always on other addresses, "
        "which must be served behind HTTPS)",
    )
    args = parser.parse_args(argv)

    if args.users:
        reviewers = Reviewers.from_file(args.users)
    elif is_loopback(args.host):
        reviewers, name, password = Reviewers.one_time()
        print(
            f"review: no --users file; sign in as {name!r} with one-time password {password}",
            file=sys.stderr,
        )
    else:
        parser.error(f"refusing to serve on {args.host} without --users (reviewer credentials)")
    queue, app = build_app(args, reviewers)
    serve(
        queue,
        app,
        args.host,
        args.port,
        lambda url: print(
            f"review: queue at {url} (drafts from {queue.targets.subscription})",
            file=sys.stderr,
            flush=True,
        ),
    )
    return 0


def main_review_user(argv: Sequence[str] | None = None) -> int:
    from review.auth import hash_password

    parser = argparse.ArgumentParser(
        prog="triage review-user",
        description="print a reviewers-file line (name = hash) for `triage review --users`",
    )
    parser.add_argument("name")
    args = parser.parse_args(argv)
    password = os.environ.get("TRIAGE_REVIEW_PASSWORD") or getpass.getpass("password: ")
    if len(password) < 8:
        print("review-user: use at least 8 characters", file=sys.stderr)
        return 2
    print(f"{json.dumps(args.name)} = {json.dumps(hash_password(password))}")
    return 0


def export_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Approved reviews as `triage finetune` examples: the triage answer and the final reply.
    `draft_id` names the approval, so `triage index --cases` keys the case by it and indexing
    the same approval again (from this file, BigQuery or the `approved` topic) overwrites it."""
    return [
        {
            "draft_id": r["draft_id"],
            "chat_id": r["chat_id"],
            "chat_message": r["chat_message"],
            "sentiment": int(r["sentiment"]),
            "summary": r["summary"],
            "draft": r["final_text"],
            "edited": bool(r["edited"]),
            "reviewer": r["reviewer"],
        }
        for r in rows
        if r["decision"] == "approved" and r["final_text"]
    ]


def fetch_approved(
    client: Any, table: str, since: datetime | None = None, timeout: float = 120.0
) -> list[dict[str, Any]]:
    """The approved replies in the `reviews` table, oldest decision first, as `export_rows`
    writes them: what `triage export-approved` exports and `triage index --from_bigquery`
    indexes. A draft has one decision, but the table can hold a second row for it (two app
    instances racing, or a write past the deduplication horizon); the first stands, as in the
    review queue and the `reviews_unique` view, so each draft appears once, and only if its
    first decision was an approval. `since` filters on that first decision."""
    from google.cloud import bigquery

    sql = (
        "SELECT * EXCEPT (_nth) FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY draft_id "
        f"ORDER BY decided_at, reviewer) AS _nth FROM `{table}`) "
        "WHERE _nth = 1 AND decision = 'approved'"
    )
    params = []
    if since is not None:
        sql += " AND decided_at >= @since"
        params.append(bigquery.ScalarQueryParameter("since", "TIMESTAMP", since))
    sql += " ORDER BY decided_at, draft_id"
    job = client.query(
        sql,
        job_config=bigquery.QueryJobConfig(query_parameters=params),
        retry=None,
        job_retry=None,
    )
    return export_rows([dict(r.items()) for r in job.result(timeout=timeout, retry=None)])


def parse_since(text: str | None) -> datetime | None:
    """`--since` as an aware time: ISO 8601, a trailing `Z` accepted."""
    if not text:
        return None
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def main_export_approved(argv: Sequence[str] | None = None) -> int:
    from triage.gcp import bigquery_client, split_table

    parser = argparse.ArgumentParser(
        prog="triage export-approved",
        description="approved replies as JSON lines for `triage finetune --examples`",
    )
    _targets_args(parser)
    parser.add_argument("--out", required=True, help="JSON-lines file to write")
    parser.add_argument("--since", help="only decisions at or after this ISO time")
    args = parser.parse_args(argv)
    table = _targets(args).reviews_table
    client = bigquery_client(split_table(table)[0])
    try:
        rows = fetch_approved(client, table, parse_since(args.since))
    finally:
        client.close()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"export-approved: {len(rows)} approved replies -> {args.out}", file=sys.stderr)
    return 0
