"""The soak in CI: chats through the streaming pipeline on the emulators, with BigQuery cut
twice, draft publishing cut, and the pipeline killed and restarted (`make soak` runs more, with
30-second faults)."""

from __future__ import annotations

import collections

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
