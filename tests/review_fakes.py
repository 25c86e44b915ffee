"""Small fakes for the review queue's clients: Pub/Sub pull/ack, publish, and the row writer.

They record the order of calls, so tests can check that a message is acknowledged only after
its decision is stored. The browser test runs the real clients against the emulators.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

from review.queue import ReviewQueue, ReviewTargets
from review.store import DraftStore
from triage.records import to_dict

T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
TARGETS = ReviewTargets(
    "projects/p/subscriptions/review", "p.triage.reviews", "projects/p/topics/a"
)


def draft(chat_id: str, text: str = "We are sorry.", created: datetime = T0) -> dict:
    return {
        "chat_id": chat_id,
        "user_id": "221",
        "chat_message": "id 221: cold pizza\nid 12: sorry",
        "sentiment": -1,
        "summary": "cold pizza",
        "draft": text,
        "model_id": "models/triage-gemma3-270m",
        "prompt_version": "triage-v1",
        "apology_prompt_version": "apology-v1",
        "attempt": 1,
        "created_at": created.isoformat(),
    }


@dataclass
class FakeSubscriber:
    """Pub/Sub's pull/modify/ack surface; records every call."""

    inbox: list = field(default_factory=list)
    acked: list = field(default_factory=list)
    extended: list = field(default_factory=list)
    log: list = field(default_factory=list)
    pulls: int = 0

    def deliver(self, body: dict, ack_id: str, draft_id: str | None = None) -> None:
        attributes = {"draft_id": draft_id or f"{body['chat_id']}/draft"}
        message = SimpleNamespace(data=json.dumps(body).encode(), attributes=attributes)
        self.inbox.append(SimpleNamespace(ack_id=ack_id, message=message))

    def pull(self, request, timeout, retry):
        self.pulls += 1
        out, self.inbox = self.inbox[: request["max_messages"]], []
        return SimpleNamespace(received_messages=out)

    def modify_ack_deadline(self, request, retry, timeout):
        self.extended += request["ack_ids"]

    def acknowledge(self, request, retry, timeout):
        self.log.append("ack")
        self.acked += request["ack_ids"]


@dataclass
class FakePublisher:
    log: list
    published: list = field(default_factory=list)
    fail_next: int = 0  # publishes that time out, without landing

    def publish(self, topic, data, **attributes):
        if self.fail_next:
            self.fail_next -= 1

            def timeout(timeout):
                raise TimeoutError("publish timed out")

            return SimpleNamespace(result=timeout)
        self.log.append("publish")
        self.published.append((topic, json.loads(data), attributes))
        return SimpleNamespace(result=lambda timeout: "m1")


@dataclass
class FakeWriter:
    log: list
    rows: dict = field(default_factory=dict)
    fail: bool = False

    def write(self, records):
        if self.fail:
            raise RuntimeError("BigQuery is down")
        for r in records:
            if r.draft_id not in self.rows:  # exactly once per draft, as RowWriter
                self.log.append("write")
                self.rows[r.draft_id] = r
        return []

    def stored_rows(self, row_id):
        draft_id = row_id.removesuffix("/review")
        return [to_dict(self.rows[draft_id])] if draft_id in self.rows else []


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def make_parts(tmp_path: Path) -> SimpleNamespace:
    """A queue on a real SQLite store with fake Pub/Sub and BigQuery clients, and a clock."""
    clock = Clock()
    sub = FakeSubscriber()
    pub = FakePublisher(sub.log)
    writer = FakeWriter(sub.log)
    store = DraftStore(tmp_path / "drafts.sqlite3")
    queue = ReviewQueue(TARGETS, store, clock=clock, subscriber=sub, publisher=pub, writer=writer)
    return SimpleNamespace(
        clock=clock, sub=sub, pub=pub, writer=writer, store=store, queue=queue, path=tmp_path
    )
