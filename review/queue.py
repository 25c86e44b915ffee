"""Drafts in from Pub/Sub, decisions out to BigQuery and the `approved` topic; acks last.

Order of a decision, and why nothing is lost whichever step fails:

1. the `Review` row is written to BigQuery (exactly once per draft: `records.row_id`);
2. an approved reply is published to the `approved` topic (attribute `draft_id`, so the sender
   deduplicates a second publish after a crash);
3. the local store marks the draft decided;
4. the Pub/Sub message is acknowledged.

A crash before 4 leaves the message unacknowledged: Pub/Sub delivers it again, the store
recognises the draft, and a decided one is acknowledged at once instead of shown again.
While a draft waits, its message's ack deadline is extended, so Pub/Sub does not hand it to
another app instance; after a restart the store still lists it (and its lease) immediately.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core.exceptions import GoogleAPICallError

from review.store import DraftStore, StoredDraft
from triage.records import Review, to_json

__all__ = ["DecisionError", "ReviewQueue", "ReviewTargets"]

LOG = logging.getLogger(__name__)

# Pub/Sub's longest ack deadline; the puller extends it well before it runs out.
_ACK_DEADLINE_S = 600
_EXTEND_EVERY_S = 120.0
LEASE = timedelta(minutes=15)


class DecisionError(Exception):
    """A decision that cannot be taken (lease held by another agent, already decided, ...)."""


@dataclass(frozen=True)
class ReviewTargets:
    subscription: str  # projects/P/subscriptions/S on the drafts topic
    reviews_table: str  # PROJECT.DATASET.TABLE
    approved_topic: str  # projects/P/topics/T


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ReviewQueue:
    """What the web app talks to. `pull_once`/`extend_deadlines` run on a background thread
    (`start`), or directly in tests."""

    def __init__(
        self,
        targets: ReviewTargets,
        store: DraftStore,
        *,
        clock: Callable[[], datetime] = _utc_now,
        subscriber: Any = None,
        publisher: Any = None,
        writer: Any = None,
    ):
        from triage.bigquery_sink import RowWriter
        from triage.gcp import publisher_client, subscriber_client

        self.targets = targets
        self.store = store
        self._clock = clock
        self._subscriber = subscriber or subscriber_client()
        self._publisher = publisher or publisher_client()
        self._writer = writer or RowWriter(targets.reviews_table, Review, retry_secs=30.0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._decide_lock = threading.Lock()
        # Called with each stored Review (the app refreshes its dashboard numbers).
        self.on_decision: Callable[[Review], None] | None = None

    # --- Pub/Sub side -------------------------------------------------------------------

    def pull_once(self, max_messages: int = 100, timeout: float = 10.0) -> int:
        """Store what the subscription has; ack redeliveries of drafts already decided."""
        from google.api_core import exceptions

        try:
            response = self._subscriber.pull(
                request={"subscription": self.targets.subscription, "max_messages": max_messages},
                timeout=timeout,
                retry=None,
            )
        except exceptions.DeadlineExceeded:
            return 0
        now, stored, done = self._clock(), 0, []
        for received in response.received_messages:
            message = received.message
            try:
                draft = _draft_dict(message.data)
            except ValueError as err:
                # Not a draft: keep it unacked for an operator (it goes to the subscription's
                # dead-letter topic after the policy's attempts), never crash the puller.
                LOG.warning("skipping a message that is not a draft: %s", err)
                continue
            draft_id = message.attributes.get("draft_id") or f"{draft['chat_id']}/draft"
            state = self.store.add(draft_id, draft, received.ack_id, now)
            if state == "decided":
                done.append(received.ack_id)
            else:
                stored += 1
        if done:
            self._ack(done)
        if response.received_messages:
            self._extend([r.ack_id for r in response.received_messages if r.ack_id not in done])
        return stored

    def extend_deadlines(self) -> None:
        self._extend(self.store.pending_ack_ids())

    def _extend(self, ack_ids: list[str]) -> None:
        for i in range(0, len(ack_ids), 1000):
            try:
                self._subscriber.modify_ack_deadline(
                    request={
                        "subscription": self.targets.subscription,
                        "ack_ids": ack_ids[i : i + 1000],
                        "ack_deadline_seconds": _ACK_DEADLINE_S,
                    },
                    retry=None,
                    timeout=30,
                )
            except GoogleAPICallError as err:  # an expired ack id: the message comes back
                LOG.info("could not extend ack deadlines: %s", err)

    def _ack(self, ack_ids: list[str]) -> None:
        try:
            self._subscriber.acknowledge(
                request={"subscription": self.targets.subscription, "ack_ids": ack_ids},
                retry=None,
                timeout=30,
            )
        except GoogleAPICallError as err:  # redelivered later, then acked as already decided
            LOG.info("ack failed, will ack on redelivery: %s", err)

    def start(self, every_s: float = 2.0) -> None:
        def loop() -> None:
            last_extend = 0.0
            while not self._stop.is_set():
                try:
                    self.pull_once(timeout=every_s + 5)
                    ticks = self._clock().timestamp()
                    if ticks - last_extend > _EXTEND_EVERY_S:
                        self.extend_deadlines()
                        last_extend = ticks
                except Exception:  # keep pulling; the page shows what is stored
                    LOG.exception("pulling drafts failed")
                self._stop.wait(every_s)

        self._thread = threading.Thread(target=loop, name="review-puller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)

    # --- agents' side -------------------------------------------------------------------

    def open(self, draft_id: str, reviewer: str) -> StoredDraft:
        """Lease the draft to `reviewer` (renewed on every open) and return it."""
        now = self._clock()
        if not self.store.lease(draft_id, reviewer, now, now + LEASE):
            current = self.store.get(draft_id)
            if current is None:
                raise DecisionError("no such draft")
            if current.state != "waiting":
                raise DecisionError("this draft has already been decided")
            raise DecisionError(f"{current.lease_holder} is reviewing this draft")
        stored = self.store.get(draft_id)
        assert stored is not None
        return stored

    def release(self, draft_id: str, reviewer: str) -> None:
        self.store.release(draft_id, reviewer)

    def decide(
        self,
        draft_id: str,
        reviewer: str,
        decision: str,
        final_text: str = "",
        reason: str = "",
    ) -> Review:
        """Store the decision, publish an approval, then acknowledge (see the module doc)."""
        if decision not in ("approved", "rejected"):
            raise DecisionError(f"unknown decision {decision!r}")
        with self._decide_lock:
            stored = self.open(draft_id, reviewer)  # checks the lease and the state
            draft = stored.draft
            now = self._clock()
            original = str(draft.get("draft", ""))
            text = final_text.replace("\r\n", "\n").strip() if decision == "approved" else ""
            if decision == "approved" and not text:
                raise DecisionError("an approved reply cannot be empty")
            if decision == "rejected" and not reason.strip():
                raise DecisionError("a rejection needs a reason")
            drafted = _parse_time(stored.drafted_at) or now
            review = Review(
                draft_id=draft_id,
                chat_id=str(draft.get("chat_id", "")),
                user_id=str(draft.get("user_id", "")),
                decision=decision,
                final_text=text,
                edited=decision == "approved" and text != original.strip(),
                reason=reason.strip() if decision == "rejected" else "",
                reviewer=reviewer,
                model_id=str(draft.get("model_id", "")),
                prompt_version=str(draft.get("prompt_version", "")),
                apology_prompt_version=str(draft.get("apology_prompt_version", "")),
                sentiment=int(draft.get("sentiment", -1)),
                summary=str(draft.get("summary", "")),
                chat_message=str(draft.get("chat_message", "")),
                draft=original,
                drafted_at=drafted.isoformat(),
                decided_at=now.isoformat(),
                seconds_to_decision=round(max(0.0, (now - drafted).total_seconds()), 3),
            )
            refused = self._writer.write([review])
            if refused:
                raise DecisionError(f"BigQuery refused the review: {refused[0][1]}")
            if decision == "approved":
                self._publisher.publish(
                    self.targets.approved_topic,
                    to_json(review).encode("utf-8"),
                    draft_id=draft_id,
                    chat_id=review.chat_id,
                ).result(timeout=60)
            ack_id = self.store.mark_decided(draft_id, now)
            if ack_id:
                self._ack([ack_id])
            if self.on_decision:
                self.on_decision(review)
            return review


def _draft_dict(data: bytes) -> dict[str, Any]:
    import json

    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"not JSON: {err}") from err
    if not isinstance(value, dict) or "chat_id" not in value or "draft" not in value:
        raise ValueError("not a draft object")
    return value


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
