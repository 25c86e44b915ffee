"""Where raw chat messages come from. File mode now; Pub/Sub plugs in beside it."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.coders import BytesCoder

from triage import metrics

__all__ = ["ReadFromSubscription", "ReadJsonLines", "count_lines"]


def _not_blank(line: bytes) -> bool:
    if line.strip():
        return True
    metrics.counter(metrics.BLANK_LINES).inc()
    return False


def count_lines(path: str) -> tuple[int, int]:
    """(lines, blank lines) of a file as `ReadJsonLines` splits it (on `\\n`, a `\\r` before
    it dropped), so file mode can show that every line was either an output or skipped."""
    lines = blank = 0
    tail = b""
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            *complete, tail = (tail + chunk).split(b"\n")
            lines += len(complete)
            blank += sum(1 for line in complete if not line.strip())
    if tail:  # a last line without a newline
        lines += 1
        blank += not tail.strip()
    return lines, blank


class ReadJsonLines(beam.PTransform):
    """One raw message per line, as bytes: undecodable lines must reach validation, not crash
    a text decoder. Blank lines are not messages and are skipped (and counted)."""

    def __init__(self, path: str):
        super().__init__()
        self._path = path

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            pbegin
            | "ReadLines" >> beam.io.ReadFromText(self._path, coder=BytesCoder())
            | "SkipBlank" >> beam.Filter(_not_blank)
        )


class ReadFromSubscription(beam.PTransform):
    """Pub/Sub messages with their attributes and message ids (`PubsubMessage`), so validation
    can read the replay `attempt` and dead letters can name the message they came from."""

    def __init__(self, subscription: str):
        super().__init__()
        self._subscription = subscription

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return pbegin | "ReadFromPubSub" >> beam.io.ReadFromPubSub(
            subscription=self._subscription, with_attributes=True
        )
