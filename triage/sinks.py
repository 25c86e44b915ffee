"""Where results go: the one seam between the pipeline and storage.

A sink is a PTransform applied to `TriageOutputs` (summaries, drafts, dead letters). File mode
writes JSON lines; the Pub/Sub and BigQuery sinks implement the same shape.
"""

from __future__ import annotations

import os

import apache_beam as beam

from triage.records import to_json

__all__ = ["OUTPUT_FILES", "WriteJsonLines"]

OUTPUT_FILES = {
    "summaries": "summaries.jsonl",
    "drafts": "drafts.jsonl",
    "dead_letters": "dead_letters.jsonl",
}


class WriteJsonLines(beam.PTransform):
    """Writes `summaries.jsonl`, `drafts.jsonl` and `dead_letters.jsonl` into `out_dir`."""

    def __init__(self, out_dir: str):
        super().__init__()
        self._out_dir = out_dir

    def expand(self, outputs):
        for name, filename in OUTPUT_FILES.items():
            stem, suffix = os.path.splitext(filename)
            (
                getattr(outputs, name)
                | f"{name}ToJson" >> beam.Map(to_json)
                | f"Write_{name}"
                >> beam.io.WriteToText(
                    os.path.join(self._out_dir, stem),
                    file_name_suffix=suffix,
                    num_shards=1,
                    shard_name_template="",
                )
            )
        return beam.pvalue.PDone(outputs.summaries.pipeline)
