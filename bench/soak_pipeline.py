"""The streaming pipeline as `make soak` runs it: a process of its own (so it can be killed),
the real pipeline and sinks, and the scripted stand-in model (the model is not under test).

`python -m bench.soak_pipeline --input_subscription=... --summaries_table=... ...`
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from tests.fakes import ScriptedApologyHandler, ScriptedTriageHandler
from triage.infer import byte_counter
from triage.options import TriageOptions
from triage.pipeline import streaming_pipeline

# Longer than the input subscription's ack deadline (`triage.gcp.ensure_subscription`, 60 s).
SMALL_PULLS_SECS = 180.0


class ShrinkingPuller:
    """A subscriber client whose `pull` asks for up to `max_messages`, and for fewer when an
    answer would not fit gRPC's 4 MiB limit.

    The emulator refuses such an answer (ResourceExhausted) *after* handing its messages out:
    they come back only when their ack deadline expires, and then together again. Shrinking only
    the one pull (the first fix) let the next full-size pull take the same messages and fail the
    same way, every minute, for ever: the 10,000-chat soak lost the 100 messages after c1800
    (4.2 MB with three near-1 MiB chats) in two runs. So the smaller size holds for
    `small_secs`, past the ack deadline, until the messages handed out in the refused answer
    have been read in pieces that fit."""

    def __init__(
        self,
        client: Any,
        max_messages: int,
        small_secs: float = SMALL_PULLS_SECS,
    ):
        self._client = client
        self._max = max_messages
        self._small_secs = small_secs
        self._size = max_messages
        self._small_until = 0.0

    def pull(self, **kwargs: Any) -> Any:
        from google.api_core.exceptions import ResourceExhausted

        if time.monotonic() >= self._small_until:
            self._size = self._max
        while True:
            try:
                return self._client.pull(**{**kwargs, "max_messages": self._size})
            except ResourceExhausted:
                if self._size == 1:
                    raise
                self._size = max(1, self._size // 4)
                self._small_until = time.monotonic() + self._small_secs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def pull_at_most(max_messages: int) -> None:
    """Make the DirectRunner's Pub/Sub reader pull up to `max_messages` per bundle, not 10,
    through `ShrinkingPuller`.

    Every bundle pays the DirectRunner's per-stage overhead and one deduplicating BigQuery
    lookup per sink; with 10 messages a bundle the soak ended about a chat a second, so its
    10,000 chats took hours. Dataflow's reader is not this one; only the soak uses this. The
    hook is Beam's private `_PubSubReadEvaluator._get_subscriber_client` (apache-beam is pinned;
    the soak test fails loudly if it goes)."""
    from apache_beam.runners.direct import transform_evaluator

    evaluator = transform_evaluator._PubSubReadEvaluator
    original = evaluator.__dict__["_get_subscriber_client"].__func__
    pullers: dict[int, ShrinkingPuller] = {}  # one per client: the shrink must outlive a pull

    def client_for(cls: Any, transform: Any) -> ShrinkingPuller:
        client = original(cls, transform)
        if id(client) not in pullers:
            pullers[id(client)] = ShrinkingPuller(client, max_messages)
        return pullers[id(client)]

    evaluator._get_subscriber_client = classmethod(client_for)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pull_size", type=int, default=10)
    ours, rest = parser.parse_known_args(argv)
    pull_at_most(ours.pull_size)  # also shrinks a pull that would not fit gRPC's limit
    options = TriageOptions(rest, save_main_session=False)
    handlers = (ScriptedTriageHandler(max_batch_size=32), ScriptedApologyHandler(max_batch_size=32))
    pipeline = streaming_pipeline(
        options, handlers=handlers, token_counter=byte_counter, max_wait_secs=1.0
    )
    print(f"soak-pipeline: running, pulling up to {ours.pull_size}", file=sys.stderr, flush=True)
    pipeline.run().wait_until_finish()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
