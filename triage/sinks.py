"""Where results go: the one seam between the pipeline and storage.

A sink is a PTransform applied to `TriageOutputs` (summaries, drafts, dead letters). File mode
writes JSON lines; the Pub/Sub and BigQuery sinks implement the same shape.
"""

from __future__ import annotations

import os

import apache_beam as beam

from triage.records import to_json

__all__ = ["OUTPUT_FILES", "WriteJsonLines", "WriteToGcp"]

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


class WriteToGcp(beam.PTransform):
    """Summaries and dead letters to BigQuery, drafts to the review topic on Pub/Sub.

    A summary or draft that cannot be written becomes a dead letter, so the count still adds up.
    Dead letters are cut to fit a row first (`triage.dead_letters`, full payloads in `blobs`);
    an outage of their table makes the bundle fail and be retried by the runner, and a row
    refused for good is kept in the last-resort sink.
    """

    def __init__(
        self,
        *,
        summaries_table: str,
        dead_letter_table: str,
        drafts_topic: str,
        retry_secs: float = 120.0,
        max_wait_secs: float = 2.0,
        blobs: str | None = None,
    ):
        super().__init__()
        self._blobs = blobs
        self._summaries_table = summaries_table
        self._dead_letter_table = dead_letter_table
        self._drafts_topic = drafts_topic
        self._retry_secs = retry_secs
        self._max_wait_secs = max_wait_secs

    def expand(self, outputs):
        from triage.bigquery_sink import WriteRecordsToBigQuery
        from triage.dead_letters import fit_dead_letter
        from triage.pubsub_sink import PublishDrafts
        from triage.records import DeadLetter, Stage, TriageResult

        timing = {"retry_secs": self._retry_secs, "max_wait_secs": self._max_wait_secs}
        unwritten_summaries = outputs.summaries | "WriteSummaries" >> WriteRecordsToBigQuery(
            self._summaries_table, TriageResult, Stage.WRITE_SUMMARY.value, **timing
        )
        unpublished_drafts = outputs.drafts | "PublishDrafts" >> PublishDrafts(
            self._drafts_topic, **timing
        )
        all_dead = (
            outputs.dead_letters,
            unwritten_summaries,
            unpublished_drafts,
        ) | "WithWriteFailures" >> beam.Flatten()
        _ = (
            all_dead
            | "FitDeadLetters" >> beam.Map(fit_dead_letter, self._blobs)
            | "WriteDeadLetters"
            >> WriteRecordsToBigQuery(
                self._dead_letter_table,
                DeadLetter,
                "write_dead_letter",
                dead_letter_on_failure=False,
                blobs=self._blobs,
                **timing,
            )
        )
        return beam.pvalue.PDone(outputs.summaries.pipeline)
