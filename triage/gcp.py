"""Google Cloud clients and resources, the same on the emulators and on real projects.

The official clients find the emulators through `PUBSUB_EMULATOR_HOST` and
`BIGQUERY_EMULATOR_HOST`; only credentials differ (anonymous for an emulator, Application
Default Credentials otherwise). `ensure_infrastructure` is what `triage infra` runs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Infrastructure",
    "bigquery_client",
    "ensure_infrastructure",
    "ensure_subscription",
    "ensure_table",
    "publisher_client",
    "split_table",
    "subscriber_client",
]

LOG = logging.getLogger(__name__)


def split_table(table: str) -> tuple[str, str, str]:
    """`project.dataset.table` or `project:dataset.table` -> (project, dataset, table)."""
    normalized = table.replace(":", ".", 1)
    parts = normalized.split(".")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"table {table!r} must be PROJECT.DATASET.TABLE")
    return parts[0], parts[1], parts[2]


def bigquery_client(project: str) -> Any:
    from google.cloud import bigquery

    if os.environ.get("BIGQUERY_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return bigquery.Client(project=project, credentials=AnonymousCredentials())
    return bigquery.Client(project=project)


def publisher_client(**kwargs: Any) -> Any:
    from google.cloud import pubsub_v1

    return pubsub_v1.PublisherClient(**kwargs)


def subscriber_client() -> Any:
    from google.cloud import pubsub_v1

    return pubsub_v1.SubscriberClient()


def _project_of(path: str) -> str:
    parts = path.split("/")
    if len(parts) != 4 or parts[0] != "projects" or parts[2] not in ("topics", "subscriptions"):
        raise ValueError(f"{path!r} must be projects/PROJECT/topics/NAME or .../subscriptions/NAME")
    return parts[1]


@dataclass(frozen=True)
class Infrastructure:
    """Every resource the service uses, by full name."""

    input_topic: str
    input_subscription: str
    drafts_topic: str
    review_subscription: str
    summaries_table: str
    dead_letter_table: str
    replays_table: str
    reviews_table: str
    approved_topic: str

    @classmethod
    def named(cls, project: str, dataset: str = "triage", prefix: str = "") -> Infrastructure:
        """The conventional names in one project (what `triage infra --project P` creates)."""
        return cls(
            input_topic=f"projects/{project}/topics/{prefix}chats",
            input_subscription=f"projects/{project}/subscriptions/{prefix}chats-triage",
            drafts_topic=f"projects/{project}/topics/{prefix}drafts",
            review_subscription=f"projects/{project}/subscriptions/{prefix}drafts-review",
            summaries_table=f"{project}.{dataset}.{prefix.replace('-', '_')}summaries",
            dead_letter_table=f"{project}.{dataset}.{prefix.replace('-', '_')}dead_letters",
            replays_table=f"{project}.{dataset}.{prefix.replace('-', '_')}replays",
            reviews_table=f"{project}.{dataset}.{prefix.replace('-', '_')}reviews",
            approved_topic=f"projects/{project}/topics/{prefix}approved",
        )


def _ensure_topic(publisher: Any, topic: str) -> None:
    from google.api_core.exceptions import AlreadyExists

    try:
        publisher.create_topic(name=topic)
        LOG.info("created topic %s", topic)
    except AlreadyExists:
        pass


def ensure_subscription(subscriber: Any, subscription: str, topic: str) -> None:
    from google.api_core.exceptions import AlreadyExists

    try:
        subscriber.create_subscription(
            request={"name": subscription, "topic": topic, "ack_deadline_seconds": 60}
        )
        LOG.info("created subscription %s", subscription)
    except AlreadyExists:
        pass


def ensure_table(client: Any, table: str, record_type: type) -> None:
    """Create the dataset and table if missing, with the schema derived from `record_type`."""
    from google.cloud import bigquery

    from triage.records import table_schema

    project, dataset, name = split_table(table)
    client.create_dataset(bigquery.Dataset(f"{project}.{dataset}"), exists_ok=True)
    schema = [
        bigquery.SchemaField(f["name"], f["type"], mode=f["mode"])
        for f in table_schema(record_type)
    ]
    client.create_table(
        bigquery.Table(f"{project}.{dataset}.{name}", schema=schema), exists_ok=True
    )


def ensure_infrastructure(infra: Infrastructure) -> None:
    """Create what is missing; running it twice changes nothing."""
    from triage.records import DeadLetter, Replay, Review, TriageResult

    publisher, subscriber = publisher_client(), subscriber_client()
    try:
        for topic in (infra.input_topic, infra.drafts_topic, infra.approved_topic):
            _ensure_topic(publisher, topic)
        ensure_subscription(subscriber, infra.input_subscription, infra.input_topic)
        ensure_subscription(subscriber, infra.review_subscription, infra.drafts_topic)
    finally:
        subscriber.close()
    for table, record_type in (
        (infra.summaries_table, TriageResult),
        (infra.dead_letter_table, DeadLetter),
        (infra.replays_table, Replay),
        (infra.reviews_table, Review),
    ):
        client = bigquery_client(split_table(table)[0])
        ensure_table(client, table, record_type)
        client.close()
