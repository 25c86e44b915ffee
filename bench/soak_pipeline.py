"""The streaming pipeline as `make soak` runs it: a process of its own (so it can be killed),
the real pipeline and sinks, and the scripted stand-in model (the model is not under test).

`python -m bench.soak_pipeline --input_subscription=... --summaries_table=... ...`
"""

from __future__ import annotations

import sys

from tests.fakes import ScriptedApologyHandler, ScriptedTriageHandler
from triage.infer import byte_counter
from triage.options import TriageOptions
from triage.pipeline import streaming_pipeline


def main(argv: list[str]) -> int:
    options = TriageOptions(argv, save_main_session=False)
    handlers = (ScriptedTriageHandler(max_batch_size=32), ScriptedApologyHandler(max_batch_size=32))
    pipeline = streaming_pipeline(
        options, handlers=handlers, token_counter=byte_counter, max_wait_secs=1.0
    )
    print("soak-pipeline: running", file=sys.stderr, flush=True)
    pipeline.run().wait_until_finish()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
