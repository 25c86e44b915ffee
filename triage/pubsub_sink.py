"""Publish drafts to the review topic, where support agents pull, edit and approve them.

Each message is the draft as JSON with `chat_id`, `user_id`, `sentiment` and `draft_id`
attributes, so a review tool can filter and deduplicate without parsing bodies (Pub/Sub may
deliver a message twice; `draft_id` is the same for the same chat).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import apache_beam as beam

from triage import metrics
from triage.bigquery_sink import batch_rows
from triage.gcp import publisher_client
from triage.records import DeadLetter, Draft, Stage, row_id, to_json
from triage.retry import with_backoff

__all__ = ["PublishDrafts", "draft_attributes"]

LOG = logging.getLogger(__name__)


def draft_attributes(draft: Draft) -> dict[str, str]:
    return {
        "chat_id": draft.chat_id,
        "user_id": draft.user_id,
        "sentiment": str(draft.sentiment),
        "draft_id": row_id(draft),
    }


class _Publish(beam.DoFn):
    def __init__(self, topic: str, retry_secs: float):
        self._topic = topic
        self._retry_secs = retry_secs
        self._published = metrics.counter(metrics.DRAFTS_PUBLISHED)
        self._write_failures = metrics.counter(metrics.WRITE_FAILURES)

    def setup(self) -> None:
        from google.cloud.pubsub_v1.types import BatchSettings

        # The client batches the publishes of one process: one request for many drafts.
        self._publisher = publisher_client(
            batch_settings=BatchSettings(max_messages=100, max_latency=0.05)
        )

    def _publish_one(self, draft: Draft) -> str:
        future = self._publisher.publish(
            self._topic, to_json(draft).encode("utf-8"), **draft_attributes(draft)
        )
        return future.result(timeout=60)

    def process(self, batch: Iterable[Draft]) -> Iterator[DeadLetter]:
        drafts = list(batch)
        futures = [
            (d, self._publisher.publish(self._topic, to_json(d).encode(), **draft_attributes(d)))
            for d in drafts
        ]
        for draft, future in futures:
            try:
                try:
                    future.result(timeout=60)
                except Exception:  # noqa: BLE001 - retried below, with backoff
                    with_backoff(
                        lambda d=draft: self._publish_one(d),
                        self._retry_secs,
                        what=f"publish draft {draft.chat_id}",
                    )
                self._published.inc()
            except Exception as err:  # noqa: BLE001 - a draft that cannot be sent is kept
                self._write_failures.inc()
                LOG.error("could not publish draft %s: %s", draft.chat_id, err)
                yield DeadLetter(
                    stage=Stage.PUBLISH_DRAFT.value,
                    reason="write_failed",
                    detail=str(err)[:2000],
                    payload=to_json(draft).encode("utf-8"),
                    chat_id=draft.chat_id,
                    attempt=draft.attempt,
                    model_id=draft.model_id,
                    prompt_version=draft.apology_prompt_version,
                )


class PublishDrafts(beam.PTransform):
    """PCollection[Draft] -> messages on `topic`; returns DeadLetters of drafts not published."""

    def __init__(self, topic: str, *, retry_secs: float = 120.0, max_wait_secs: float = 1.0):
        super().__init__()
        self._publish = _Publish(topic, retry_secs)
        self._max_wait_secs = max_wait_secs

    def expand(self, drafts: beam.PCollection) -> beam.PCollection:
        return (
            drafts
            | "Batch" >> batch_rows(100, self._max_wait_secs)
            | "Publish" >> beam.ParDo(self._publish)
        )
