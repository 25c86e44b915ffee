"""The soak in CI: chats through the streaming pipeline on the emulators, with BigQuery cut
twice, draft publishing cut, and the pipeline killed and restarted (`make soak` runs more, with
30-second faults)."""

from __future__ import annotations

import collections
import time

import pytest

from bench.soak import key_of, make_messages, run_soak

pytestmark = pytest.mark.emulators


def test_the_message_mix_has_every_kind():
    messages = make_messages(1000)
    kinds = collections.Counter(key[0] for key in map(key_of, messages))
    assert kinds["bytes"] >= 60  # invalid and over-limit payloads
    assert len(set(messages)) < len(messages)  # exact resends
    ids = collections.Counter(key[1] for key in map(key_of, messages) if key[0] == "chat")
    assert any(n > 1 for n in ids.values())  # ids reused for another chat
    assert any(len(m) > 1_000_000 for m in messages)


def test_chats_under_faults_end_exactly_once(tmp_path):
    """1,000 chats under the four faults (`make soak` runs 10,000 with 30-second faults); the
    reader pulls 100 messages a bundle (`bench.soak_pipeline.pull_at_most`)."""
    result = run_soak(1000, fault_secs=6.0, publish_secs=20.0, timeout_secs=900, workdir=tmp_path)
    print(result.line(), result.details, f"peak RSS {result.peak_rss_mb} MB")
    assert result.lost == 0 and result.duplicated == 0, result.line()
    assert result.details["unexpected"] == 0
    assert result.summaries + result.drafts + result.dead_letters == result.distinct
    assert min(result.summaries, result.drafts, result.dead_letters) > 0
    assert len(result.faults) == 4


def test_messages_of_a_refused_pull_are_read_later_in_pieces(emulators):
    """Five ~1 MB messages cannot come back in one answer (gRPC's 4 MiB): the emulator refuses
    the pull after handing them out, and hands them back together once their ack deadline
    passes. A reader that went back to the full size for the next pull was refused again every
    time (the 10,000-chat soak lost 90 chats this way); this one holds the smaller size past
    the deadline and gets every message."""
    from bench.soak_pipeline import ShrinkingPuller
    from triage.demo import PROJECT
    from triage.gcp import ensure_subscription, publisher_client, subscriber_client

    topic = f"projects/{PROJECT}/topics/soak-big-pulls"
    subscription = f"projects/{PROJECT}/subscriptions/soak-big-pulls"
    publisher = publisher_client()
    publisher.create_topic(name=topic)
    subscriber = subscriber_client()
    ensure_subscription(subscriber, subscription, topic, ack_deadline_seconds=10)
    bodies = {f"m{i}".encode() + b"x" * 1_040_000 for i in range(5)}
    for future in [publisher.publish(topic, body) for body in bodies]:
        future.result(timeout=30)

    puller = ShrinkingPuller(subscriber, max_messages=100, small_secs=30)
    received: set[bytes] = set()
    deadline = time.monotonic() + 60  # one ack deadline (10 s) and plenty to spare
    while received != bodies and time.monotonic() < deadline:
        response = puller.pull(subscription=subscription, timeout=10)
        received |= {r.message.data for r in response.received_messages}
        if response.received_messages:
            subscriber.acknowledge(
                subscription=subscription, ack_ids=[r.ack_id for r in response.received_messages]
            )
    subscriber.close()
    assert received == bodies, f"{len(received)} of {len(bodies)} messages read"
