"""The streaming pipeline as `make soak` runs it: a process of its own (so it can be killed),
the real pipeline and sinks, and the scripted stand-in model (the model is not under test).

`python -m bench.soak_pipeline --input_subscription=... --summaries_table=... ...`
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tests.fakes import ScriptedApologyHandler, ScriptedTriageHandler
from triage.infer import byte_counter
from triage.options import TriageOptions
from triage.pipeline import streaming_pipeline


def pull_at_most(max_messages: int) -> None:
    """Make the DirectRunner's Pub/Sub reader pull up to `max_messages` per bundle, not 10.

    Every bundle pays the DirectRunner's per-stage overhead and one deduplicating BigQuery
    lookup per sink; with 10 messages a bundle the soak ended about a chat a second, so its
    10,000 chats took hours. Dataflow's reader is not this one; only the soak uses this. The
    hook is Beam's private `_PubSubReadEvaluator._get_subscriber_client` (apache-beam is pinned;
    the soak test fails loudly if it goes)."""
    from apache_beam.runners.direct import transform_evaluator

    evaluator = transform_evaluator._PubSubReadEvaluator
    original = evaluator.__dict__["_get_subscriber_client"].__func__

    class Client:
        def __init__(self, client: Any):
            self._client = client

        def pull(self, **kwargs: Any) -> Any:
            """A pull of up to `max_messages`; fewer when the answer would not fit gRPC's
            4 MiB receive limit. Near-1 MiB chats four to a pull failed every pull, and the
            emulator hands the same outstanding messages back together: the reader stalled
            with chats unread (the first 10,000-chat soak lost 90 this way)."""
            from google.api_core.exceptions import ResourceExhausted

            size = max_messages
            while True:
                try:
                    return self._client.pull(**{**kwargs, "max_messages": size})
                except ResourceExhausted:
                    if size == 1:
                        raise
                    size = max(1, size // 4)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._client, name)

    evaluator._get_subscriber_client = classmethod(
        lambda cls, transform: Client(original(cls, transform))
    )


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
