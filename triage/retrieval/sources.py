"""Resolved cases from the review queue: its `reviews` table in batch, its `approved` topic
as approvals happen. Both feed `triage index` the same `Document`s that files do.

Both read what `review.queue` writes on approval: a `Review` record, stored as a row of the
`reviews` table and then published as JSON on the `approved` topic (attribute `draft_id`).
A case needs the chat and the approved reply, and the record carries both (`chat_message`,
copied from the draft, and `final_text`), plus the summary, which becomes the case's title.
It carries no language, topic or remedy (nothing upstream classifies those): a case gets
them when a message has them, and is indexed with them empty otherwise. The document id is
the approval's `draft_id`, as in `triage export-approved` files, so the same approval read
from a file, the table or the topic is one document: indexing it again overwrites it.

An approval that cannot be a case (a message that is not UTF-8 JSON, not an object, not an
approval, without a reply or a chat) is counted (`approvals_unusable`), logged on one
WARNING line with its reason code and ids but none of its text, and dropped. It is not
dead-lettered: the pipeline's dead-letter table holds chats (`triage replay` republishes
its rows to the chats topic, where an approval does not belong), and a Beam job cannot leave
a message unacknowledged for a subscription's dead-letter policy. Nothing is lost by
dropping it: each approval is written to the `reviews` table before it is published, and
`triage index --from_bigquery` indexes from there.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

import apache_beam as beam

from triage import metrics
from triage.retrieval.documents import Document, case_document

__all__ = [
    "ParseApproved",
    "ReadApprovedFromBigQuery",
    "ReadApprovedFromPubSub",
    "UnusableApproval",
    "approved_case",
]

LOG = logging.getLogger(__name__)

_PASSED_ON = ("language", "topic", "remedy", "summary", "chat_id")


class UnusableApproval(ValueError):
    """An approval that cannot be indexed; `reason` is a stable code for counting and logs."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def approved_case(data: bytes, attributes: Mapping[str, str] | None = None) -> Document:
    """The resolved case an `approved` topic message describes; `UnusableApproval` if none."""
    try:
        body = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise UnusableApproval("not_utf8", str(err)) from err
    except json.JSONDecodeError as err:
        raise UnusableApproval("not_json", str(err)) from err
    if not isinstance(body, dict):
        raise UnusableApproval("not_object", type(body).__name__)
    if body.get("decision") != "approved":
        raise UnusableApproval("not_approved", repr(body.get("decision"))[:40])
    reply = body.get("final_text")
    if not isinstance(reply, str) or not reply.strip():
        raise UnusableApproval("no_reply")
    chat = body.get("chat_message")
    if not isinstance(chat, str) or not chat.strip():
        raise UnusableApproval("no_chat")
    draft_id = body.get("draft_id") or (attributes or {}).get("draft_id")
    row = {k: body[k] for k in _PASSED_ON if isinstance(body.get(k), str | int)}
    row |= {"draft_id": draft_id, "chat_message": chat, "approved_reply": reply}
    try:
        return case_document(row)
    except ValueError as err:  # no draft_id nor chat_id
        raise UnusableApproval("no_id", str(err)) from err


def _drop(reason: str, source: str, **ids: Any) -> None:
    """Count and log an approval that is not indexed: one line, ids and reason, no text."""
    metrics.counter(metrics.APPROVALS_UNUSABLE).inc()
    LOG.warning(
        "%s",
        json.dumps(
            {"event": "approval_not_indexed", "reason": reason, "source": source, **ids},
            ensure_ascii=False,
        ),
    )


class ParseApproved(beam.DoFn):
    """`PubsubMessage`s in, case `Document`s out; unusable ones counted, logged and dropped."""

    def process(self, message: Any) -> Iterator[Document]:
        metrics.counter(metrics.APPROVALS_READ).inc()
        attributes = dict(message.attributes or {})
        try:
            doc = approved_case(message.data, attributes)
        except UnusableApproval as err:
            _drop(
                err.reason,
                "pubsub",
                message_id=message.message_id,
                draft_id=attributes.get("draft_id"),
                bytes=len(message.data or b""),
                detail=str(err)[:200],
            )
            return
        yield doc


class ReadApprovedFromPubSub(beam.PTransform):
    """Approvals as they are published, from a subscription on the `approved` topic
    (`triage infra` creates `approved-index`). Streaming only."""

    def __init__(self, subscription: str):
        super().__init__()
        self.subscription = subscription

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            pbegin
            | "ReadFromPubSub"
            >> beam.io.ReadFromPubSub(subscription=self.subscription, with_attributes=True)
            | "ParseApproved" >> beam.ParDo(ParseApproved())
        )


class _QueryApproved(beam.DoFn):
    """The table's approvals through `triage export-approved`'s own query and conversion."""

    def __init__(self, since: datetime | None):
        self._since = since

    def process(self, table: str) -> Iterator[Document]:
        from review.cli import fetch_approved
        from triage.gcp import bigquery_client, split_table

        client = bigquery_client(split_table(table)[0])
        try:
            rows = fetch_approved(client, table, self._since)
        finally:
            client.close()
        for row in rows:
            metrics.counter(metrics.APPROVALS_READ).inc()
            try:
                doc = case_document(row)
            except ValueError as err:  # an approval stored without its chat
                _drop("no_chat", "bigquery", draft_id=row.get("draft_id"), detail=str(err)[:200])
                continue
            yield doc


class ReadApprovedFromBigQuery(beam.PTransform):
    """Every approved reply in the `reviews` table (or those decided since `since`), once per
    draft. The query runs in the pipeline, not where it is launched: the rows never pass
    through the launcher or the job description (`beam.Create` would embed them there, and
    Dataflow refuses descriptions over 10 MB). A reshuffle then spreads the embedding."""

    def __init__(self, table: str, since: datetime | None = None):
        super().__init__()
        self._table, self._since = table, since

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            pbegin
            | "Table" >> beam.Create([self._table])
            | "QueryApproved" >> beam.ParDo(_QueryApproved(self._since))
            | "Spread" >> beam.Reshuffle()
        )
