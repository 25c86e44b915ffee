"""Drafts in from Pub/Sub, decisions out to BigQuery and the `approved` topic; acks last.

A decision is final. Its order, and why none is lost or replaced whichever step fails:

1. it is recorded in the local store (`DraftStore.record_decision`) before any I/O; from then
   on the draft accepts no other decision: a retry or a second agent with the same decision
   completes it, a different one is refused with what was decided, by whom and when;
2. the `Review` row is written to BigQuery (one row id per draft: `records.row_id`), then read
   back: if another app instance stored a decision for the same draft first, that one stands,
   this instance adopts it and publishes nothing;
3. an approved reply is published to the `approved` topic, once: `published_at` is recorded,
   and the attribute `draft_id` lets the sender drop a second copy of a publish that timed
   out but landed (Pub/Sub cannot make a publish exactly-once);
4. the draft is marked decided and its Pub/Sub message acknowledged.

A failure in 2-4 leaves the decision recorded and the message unacknowledged: the puller's
`complete_pending` finishes exactly that decision, also after a restart. A redelivered draft
that is decided is acknowledged at once instead of shown again. While a draft waits, its
message's ack deadline is extended, so Pub/Sub does not hand it to another instance.
Decisions on different drafts do not wait for each other: the lock is per draft.
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
from triage.records import Review, from_dict, review_row_id, to_dict, to_json

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
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
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
                    self.complete_pending()
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

    def _draft_lock(self, draft_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(draft_id, threading.Lock())

    def decide(
        self,
        draft_id: str,
        reviewer: str,
        decision: str,
        final_text: str = "",
        reason: str = "",
    ) -> Review:
        """Record the decision, then store, publish and acknowledge it (see the module doc)."""
        if decision not in ("approved", "rejected"):
            raise DecisionError(f"unknown decision {decision!r}")
        text = final_text.replace("\r\n", "\n").strip() if decision == "approved" else ""
        reason = reason.strip() if decision == "rejected" else ""
        with self._draft_lock(draft_id):
            stored = self.store.get(draft_id)
            if stored is None:
                raise DecisionError("no such draft")
            if stored.review is None:
                if decision == "approved" and not text:
                    raise DecisionError("an approved reply cannot be empty")
                if decision == "rejected" and not reason:
                    raise DecisionError("a rejection needs a reason")
                stored = self.open(draft_id, reviewer)  # checks the lease and the state
                review = self._review(stored, reviewer, decision, text, reason)
                if not self.store.record_decision(draft_id, to_dict(review), reviewer):
                    stored = self.store.get(draft_id)  # recorded meanwhile: that one stands
                    if stored is None or stored.review is None:
                        raise DecisionError("another agent took this draft; open it again")
            if stored.review is not None:
                review = from_dict(Review, stored.review)
                if (review.decision, review.final_text, review.reason) != (decision, text, reason):
                    raise DecisionError(_already(review))
                if stored.state == "decided":  # a repeat of what is done: nothing to redo
                    return review
            try:
                return self._complete(draft_id, review)
            except DecisionError:
                raise
            except Exception as err:  # recorded: complete_pending finishes it
                raise DecisionError(
                    f"The decision is recorded, but storing it failed ({err}); it is completed "
                    "automatically."
                ) from err

    def complete_pending(self) -> int:
        """Finish the decisions recorded but not completed (a failed write or publish, a
        restart); returns how many were finished. Runs on the puller's thread."""
        done = 0
        for stored in self.store.deciding():
            with self._draft_lock(stored.draft_id):
                try:
                    assert stored.review is not None
                    self._complete(stored.draft_id, from_dict(Review, stored.review))
                    done += 1
                except DecisionError as err:
                    LOG.info("decision on %s: %s", stored.draft_id, err)
                except Exception:  # tried again on the next round
                    LOG.exception("completing the decision on %s failed", stored.draft_id)
        return done

    def _complete(self, draft_id: str, review: Review) -> Review:
        """Steps 2-4 for a recorded decision; each is safe to repeat."""
        refused = self._writer.write([review])
        if refused:
            raise DecisionError(f"BigQuery refused the review: {refused[0][1]}")
        first = self._first_stored(draft_id)
        if first is not None and _key(first) != _key(review):  # another instance was first
            self.store.adopt_decision(draft_id, to_dict(first))
            self._finish(draft_id, None)
            raise DecisionError(_already(first))
        stored = self.store.get(draft_id)
        if review.decision == "approved" and stored is not None and not stored.published_at:
            try:
                self._publisher.publish(
                    self.targets.approved_topic,
                    to_json(review).encode("utf-8"),
                    draft_id=draft_id,
                    chat_id=review.chat_id,
                ).result(timeout=60)
            except Exception as err:  # recorded and stored: sent again later
                raise DecisionError(
                    f"The approval is recorded, but sending it failed ({err}); it is sent "
                    "again automatically."
                ) from err
            self.store.mark_published(draft_id, self._clock())
        self._finish(draft_id, review)
        return review

    def _finish(self, draft_id: str, review: Review | None) -> None:
        ack_id = self.store.mark_decided(draft_id, self._clock())
        if ack_id:
            self._ack([ack_id])
        if review is not None and self.on_decision:
            self.on_decision(review)

    def _first_stored(self, draft_id: str) -> Review | None:
        """The decision BigQuery holds for the draft; of two written at once by two
        instances, the earlier (then by reviewer), which every instance picks alike."""
        stored_rows = getattr(self._writer, "stored_rows", None)
        if stored_rows is None:
            return None
        rows = stored_rows(review_row_id(draft_id))
        reviews = [from_dict(Review, row) for row in rows]
        return min(reviews, key=lambda r: (str(r.decided_at), r.reviewer), default=None)

    def _review(
        self, stored: StoredDraft, reviewer: str, decision: str, text: str, reason: str
    ) -> Review:
        draft = stored.draft
        now = self._clock()
        original = str(draft.get("draft", ""))
        drafted = _parse_time(stored.drafted_at) or now
        return Review(
            draft_id=stored.draft_id,
            chat_id=str(draft.get("chat_id", "")),
            user_id=str(draft.get("user_id", "")),
            decision=decision,
            final_text=text,
            edited=decision == "approved" and text != original.strip(),
            reason=reason,
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


def _key(review: Review) -> tuple[str, str, str]:
    return review.decision, review.final_text, review.reason


def _already(review: Review) -> str:
    return (
        f"This draft has already been decided: {review.decision} by {review.reviewer} at "
        f"{review.decided_at}. A second decision is refused."
    )


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
