"""`triage run`'s guards, which act before any model or client is loaded."""

from __future__ import annotations

import pytest

from triage.cli import direct_runner_refusal, main

STREAMING = [
    "run",
    "--input_subscription=projects/acme/subscriptions/chats",
    "--summaries_table=acme.triage.summaries",
    "--dead_letter_table=acme.triage.dead_letters",
    "--drafts_topic=projects/acme/topics/drafts",
]


def test_a_real_subscription_is_refused_on_the_direct_runner(monkeypatch, capsys):
    """The DirectRunner acks on pull: a crash would lose the chats in flight."""
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    assert main(STREAMING) == 2
    assert "acks each message on pull" in capsys.readouterr().err
    assert main([*STREAMING, "--runner=DirectRunner"]) == 2


@pytest.mark.parametrize(
    "runner, allowed, emulator, refused",
    [
        ("DirectRunner", False, None, True),
        ("BundleBasedDirectRunner", False, None, True),
        ("DirectRunner", True, None, False),  # --allow_direct_runner_pubsub: the user chose
        ("DirectRunner", False, "127.0.0.1:8085", False),  # the emulator: a demo
        ("DataflowRunner", False, None, False),  # acks after the outputs are committed
    ],
)
def test_direct_runner_refusal(monkeypatch, runner, allowed, emulator, refused):
    if emulator:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator)
    else:
        monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    assert (direct_runner_refusal(runner, allowed) is not None) == refused
