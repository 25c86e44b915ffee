"""The review queue's storage, lease and ack logic, with small fakes for Pub/Sub and BigQuery.

The browser test (`test_review_browser.py`) runs the same code against the emulators; here the
fakes make the order of the steps visible: store the decision, publish, then acknowledge.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from review.dashboard import summarize
from review.queue import DecisionError, ReviewQueue
from review.store import DraftStore, guess_language
from tests.review_fakes import T0, TARGETS, draft, make_parts
from triage.records import Review


@pytest.fixture
def parts(tmp_path):
    return make_parts(tmp_path)


def test_pulled_drafts_wait_oldest_first_and_redelivery_adds_nothing(parts):
    parts.sub.deliver(draft("2", created=T0 + timedelta(minutes=5)), "a2")
    parts.sub.deliver(draft("1", created=T0), "a1")
    assert parts.queue.pull_once() == 2
    parts.sub.deliver(draft("1", created=T0), "a1-again")  # Pub/Sub delivers twice
    parts.queue.pull_once()
    waiting = parts.store.waiting()
    assert [d.draft["chat_id"] for d in waiting] == ["1", "2"]
    assert parts.store.get("1/draft").ack_id == "a1-again"  # the fresh ack id is kept
    assert parts.sub.acked == []  # nothing acknowledged before a decision
    assert {"a1", "a2"} <= set(parts.sub.extended)  # their deadlines are held


def test_not_a_draft_is_skipped_not_fatal(parts):
    parts.sub.inbox.append(
        SimpleNamespace(ack_id="x", message=SimpleNamespace(data=b"\xff not json", attributes={}))
    )
    parts.sub.deliver(draft("1"), "a1")
    assert parts.queue.pull_once() == 1
    assert parts.sub.acked == []


def test_lease_keeps_a_draft_from_a_second_agent_until_it_expires(parts):
    parts.sub.deliver(draft("1"), "a1")
    parts.queue.pull_once()
    parts.queue.open("1/draft", "alice")
    with pytest.raises(DecisionError, match="alice is reviewing"):
        parts.queue.open("1/draft", "bob")
    with pytest.raises(DecisionError, match="alice is reviewing"):
        parts.queue.decide("1/draft", "bob", "approved", final_text="hi")
    assert parts.store.get("1/draft").leased_to_other("bob", parts.clock.now)
    parts.clock.now += timedelta(minutes=16)  # alice walked away: the lease lapses
    assert parts.queue.open("1/draft", "bob").lease_holder == "bob"


def test_release_puts_a_draft_back(parts):
    parts.sub.deliver(draft("1"), "a1")
    parts.queue.pull_once()
    parts.queue.open("1/draft", "alice")
    parts.queue.release("1/draft", "alice")
    assert parts.queue.open("1/draft", "bob").lease_holder == "bob"


def test_lease_survives_a_restart(parts):
    parts.sub.deliver(draft("1"), "a1")
    parts.queue.pull_once()
    parts.queue.open("1/draft", "alice")
    parts.store.close()
    reopened = DraftStore(parts.path / "drafts.sqlite3")  # the app restarted
    again = ReviewQueue(
        TARGETS,
        reopened,
        clock=parts.clock,
        subscriber=parts.sub,
        publisher=parts.pub,
        writer=parts.writer,
    )
    assert [d.draft_id for d in reopened.waiting()] == ["1/draft"]
    with pytest.raises(DecisionError, match="alice is reviewing"):
        again.open("1/draft", "bob")


def test_approve_edited_stores_then_publishes_then_acks(parts):
    parts.sub.deliver(draft("1", text="We are sorry."), "a1")
    parts.queue.pull_once()
    parts.queue.open("1/draft", "alice")
    parts.clock.now += timedelta(minutes=3)
    review = parts.queue.decide("1/draft", "alice", "approved", final_text="Sorry! Refund sent.")
    assert parts.sub.log == ["write", "publish", "ack"]
    assert parts.sub.acked == ["a1"]
    assert review.edited and review.final_text == "Sorry! Refund sent."
    assert review.reviewer == "alice" and review.seconds_to_decision == 180.0
    topic, body, attributes = parts.pub.published[0]
    assert topic == TARGETS.approved_topic and attributes["draft_id"] == "1/draft"
    assert body["final_text"] == "Sorry! Refund sent."
    assert parts.store.waiting() == []


def test_approve_unchanged_is_not_edited_and_reject_needs_a_reason(parts):
    parts.sub.deliver(draft("1", text="We are sorry."), "a1")
    parts.sub.deliver(draft("2"), "a2")
    parts.queue.pull_once()
    assert not parts.queue.decide("1/draft", "a", "approved", final_text="We are sorry.").edited
    with pytest.raises(DecisionError, match="reason"):
        parts.queue.decide("2/draft", "a", "rejected", reason="  ")
    review = parts.queue.decide("2/draft", "a", "rejected", reason="wrong customer")
    assert review.final_text == "" and review.reason == "wrong customer"
    assert len(parts.pub.published) == 1  # rejections are not sent anywhere


def test_empty_approval_is_refused(parts):
    parts.sub.deliver(draft("1"), "a1")
    parts.queue.pull_once()
    with pytest.raises(DecisionError, match="empty"):
        parts.queue.decide("1/draft", "a", "approved", final_text=" \n ")
    assert parts.sub.log == []


def test_failed_store_leaves_the_message_unacked_and_the_decision_recorded(parts):
    parts.sub.deliver(draft("1"), "a1")
    parts.queue.pull_once()
    parts.writer.fail = True
    with pytest.raises(DecisionError, match="recorded, but storing it failed"):
        parts.queue.decide("1/draft", "a", "approved", final_text="ok")
    assert parts.sub.acked == [] and parts.pub.published == []
    assert parts.store.waiting() == []  # not offered to anyone else meanwhile
    assert [d.draft_id for d in parts.store.deciding()] == ["1/draft"]
    assert parts.queue.complete_pending() == 0  # still down: kept for the next round
    parts.writer.fail = False
    assert parts.queue.complete_pending() == 1
    assert parts.sub.log == ["write", "publish", "ack"]
    assert parts.pub.published[0][1]["final_text"] == "ok"


def test_a_timed_out_publish_then_a_reject_cannot_override_the_approval(parts):
    """Issue 15 (a): approve X, the publish times out after the row is stored, the agent then
    rejects. The approval stands, is sent once when the retry succeeds, and is acked then."""
    parts.sub.deliver(draft("1"), "a1")
    parts.queue.pull_once()
    parts.pub.fail_next = 1
    with pytest.raises(DecisionError, match="approval is recorded, but sending it failed"):
        parts.queue.decide("1/draft", "alice", "approved", final_text="Refund of 12 EUR sent.")
    with pytest.raises(DecisionError, match="already been decided: approved by alice"):
        parts.queue.decide("1/draft", "alice", "rejected", reason="changed my mind")
    with pytest.raises(DecisionError, match="already been decided"):  # an edited retry too
        parts.queue.decide("1/draft", "alice", "approved", final_text="Refund of 99 EUR sent.")
    assert parts.sub.acked == []
    review = parts.queue.decide("1/draft", "alice", "approved", final_text="Refund of 12 EUR sent.")
    assert review.decision == "approved"
    assert [body["final_text"] for _, body, _ in parts.pub.published] == ["Refund of 12 EUR sent."]
    assert [r.decision for r in parts.writer.rows.values()] == ["approved"]
    assert parts.sub.acked == ["a1"]
    parts.queue.complete_pending()  # nothing left to do: no second publish
    assert len(parts.pub.published) == 1


def test_two_instances_cannot_both_decide_one_draft(tmp_path):
    """Issue 15 (b): two app instances got the same draft (a redelivery). A rejects, then B
    approves a refund: B is refused, nothing is published, and both acknowledge."""
    a = make_parts(tmp_path / "a")
    b = make_parts(tmp_path / "b")
    b.queue._writer = a.writer  # one reviews table
    b.queue._publisher = a.pub  # one approved topic
    a.sub.deliver(draft("1"), "a-1")
    b.sub.deliver(draft("1"), "b-1")
    a.queue.pull_once()
    b.queue.pull_once()
    a.queue.decide("1/draft", "alice", "rejected", reason="not our customer")
    with pytest.raises(DecisionError, match="already been decided: rejected by alice"):
        b.queue.decide("1/draft", "bob", "approved", final_text="Full refund sent.")
    assert a.pub.published == []
    assert [r.decision for r in a.writer.rows.values()] == ["rejected"]
    assert a.sub.acked == ["a-1"] and b.sub.acked == ["b-1"]
    assert b.store.get("1/draft").state == "decided"
    assert b.store.get("1/draft").review["reviewer"] == "alice"  # B now shows A's decision


def test_a_recorded_decision_survives_a_restart_and_is_completed(parts):
    parts.sub.deliver(draft("1"), "a1")
    parts.queue.pull_once()
    parts.writer.fail = True
    with pytest.raises(DecisionError):
        parts.queue.decide("1/draft", "a", "approved", final_text="ok")
    parts.store.close()
    parts.writer.fail = False
    store = DraftStore(parts.path / "drafts.sqlite3")
    again = ReviewQueue(
        TARGETS,
        store,
        clock=parts.clock,
        subscriber=parts.sub,
        publisher=parts.pub,
        writer=parts.writer,
    )
    assert again.complete_pending() == 1
    assert parts.sub.acked == ["a1"] and len(parts.pub.published) == 1


def test_redelivery_of_a_decided_draft_is_acked_not_shown(parts):
    parts.sub.deliver(draft("1"), "a1")
    parts.queue.pull_once()
    parts.queue.decide("1/draft", "a", "approved", final_text="ok")
    parts.sub.deliver(draft("1"), "a1-redelivered")  # the first ack was lost
    assert parts.queue.pull_once() == 0
    assert parts.sub.acked == ["a1", "a1-redelivered"]
    assert parts.store.waiting() == []
    with pytest.raises(DecisionError, match="already been decided"):
        parts.queue.decide("1/draft", "a", "approved", final_text="again")


def test_filters_by_language_and_age(parts):
    parts.sub.deliver(draft("1", created=T0 - timedelta(hours=30)), "a1")
    ko = draft("2", created=T0)
    ko["chat_message"] = "id 221: 피자가 늦게 왔어요"
    parts.sub.deliver(ko, "a2")
    parts.queue.pull_once()
    assert [d.draft_id for d in parts.store.waiting(language="ko")] == ["2/draft"]
    old = (T0 - timedelta(hours=24)).isoformat()
    assert [d.draft_id for d in parts.store.waiting(older_than=old)] == ["1/draft"]
    assert parts.store.count_waiting() == 2
    assert parts.store.languages() == ["ko", "latin"]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("피자가 늦게 왔어요", "ko"),
        ("配達が早くて助かりました。", "ja"),
        ("披萨很好吃", "zh"),
        ("The pizza was cold", "latin"),
        ("🍕🍕", "other"),
    ],
)
def test_guess_language_by_script(text, expected):
    assert guess_language(text) == expected


def _review(decision: str, at: datetime, model="m1", prompt="apology-v1", seconds=60.0) -> dict:
    return {
        "decision": decision,
        "model_id": model,
        "apology_prompt_version": prompt,
        "seconds_to_decision": seconds,
        "decided_at": at,
    }


def test_dashboard_counts_today_rates_and_median():
    now = datetime(2026, 11, 21, 15, 0, tzinfo=UTC)
    rows = [
        _review("approved", now - timedelta(hours=1), seconds=30),
        _review("approved", now - timedelta(hours=2), seconds=90),
        _review("rejected", now - timedelta(hours=3), seconds=600),
        _review("approved", now - timedelta(days=2), model="m0", seconds=10),
    ]
    board = summarize(rows, waiting=4, now=now)
    assert (board.waiting, board.approved_today, board.rejected_today) == (4, 2, 1)
    assert board.median_seconds == 60.0
    rates = {(r.model_id, r.prompt_version): (r.approved, r.decided) for r in board.rates}
    assert rates == {("m0", "apology-v1"): (1, 1), ("m1", "apology-v1"): (2, 3)}


def test_review_row_id_is_one_per_draft():
    from triage.records import row_id, table_schema

    names = {f["name"] for f in table_schema(Review)}
    assert {"chat_id", "decision", "final_text", "edited", "reviewer", "decided_at"} <= names
    assert {"model_id", "prompt_version", "seconds_to_decision"} <= names
    fields = {f["name"]: f["type"] for f in table_schema(Review)}
    assert fields["decided_at"] == "TIMESTAMP" and fields["edited"] == "BOOLEAN"
    assert row_id(Review(**{**_minimal_review(), "draft_id": "7/draft"})) == "7/draft/review"


def _minimal_review() -> dict:
    return {
        "draft_id": "x",
        "chat_id": "7",
        "user_id": "1",
        "decision": "approved",
        "final_text": "ok",
        "edited": False,
        "reason": "",
        "reviewer": "a",
        "model_id": "m",
        "prompt_version": "triage-v1",
        "apology_prompt_version": "apology-v1",
        "sentiment": -1,
        "summary": "s",
        "chat_message": "c",
        "draft": "ok",
        "drafted_at": T0.isoformat(),
        "decided_at": T0.isoformat(),
        "seconds_to_decision": 1.0,
    }


def test_decision_hook_runs_after_the_ack(parts):
    seen = []
    parts.queue.on_decision = lambda review: seen.append((review.draft_id, list(parts.sub.log)))
    parts.sub.deliver(draft("1"), "a1")
    parts.queue.pull_once()
    parts.queue.decide("1/draft", "a", "approved", final_text="ok")
    assert seen == [("1/draft", ["write", "publish", "ack"])]
