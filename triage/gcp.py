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


# On the emulators only: publish through this host:port instead of PUBSUB_EMULATOR_HOST, while
# pulls stay on it. `make soak` points it at a proxy it cuts, to fail draft publishing alone.
PUBLISH_HOST_ENV = "TRIAGE_PUBLISH_EMULATOR_HOST"


def publisher_client(**kwargs: Any) -> Any:
    from google.cloud import pubsub_v1

    host = os.environ.get(PUBLISH_HOST_ENV)
    if host and os.environ.get("PUBSUB_EMULATOR_HOST"):
        import grpc
        from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

        kwargs["transport"] = PublisherGrpcTransport(channel=grpc.insecure_channel(host))
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
    # Drafts the review app could not handle after many deliveries, kept for an operator.
    dead_drafts_topic: str
    dead_drafts_subscription: str
    # Approved replies for `triage index --approved_subscription` (similar resolved cases).
    approved_index_subscription: str

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
            dead_drafts_topic=f"projects/{project}/topics/{prefix}drafts-dead",
            dead_drafts_subscription=f"projects/{project}/subscriptions/{prefix}drafts-dead",
            approved_index_subscription=f"projects/{project}/subscriptions/{prefix}approved-index",
        )


def _ensure_topic(publisher: Any, topic: str) -> None:
    from google.api_core.exceptions import AlreadyExists

    try:
        publisher.create_topic(name=topic)
        LOG.info("created topic %s", topic)
    except AlreadyExists:
        pass


# Unacknowledged messages survive a week-long outage or a drained job; acknowledged input can
# be replayed with `gcloud pubsub subscriptions seek --time=...` for as long.
RETENTION_SECONDS = 7 * 24 * 3600
# Most redeliveries before the review subscription gives a message up to its dead-letter
# topic (Pub/Sub's maximum): a draft waiting through many app restarts is not given up.
MAX_DELIVERY_ATTEMPTS = 100


def ensure_subscription(
    subscriber: Any,
    subscription: str,
    topic: str,
    *,
    dead_letter_topic: str | None = None,
    retain_acked: bool = False,
    ack_deadline_seconds: int = 60,
) -> None:
    """Create a subscription for a long-lived service: it never expires (the default deletes
    a subscription idle for 31 days), keeps messages for a week, and optionally hands
    undeliverable ones to a dead-letter topic."""
    from google.api_core.exceptions import AlreadyExists

    request: dict[str, Any] = {
        "name": subscription,
        "topic": topic,
        "ack_deadline_seconds": ack_deadline_seconds,
        "message_retention_duration": {"seconds": RETENTION_SECONDS},
        "retain_acked_messages": retain_acked,
        "expiration_policy": {},  # set, without a ttl: never expires
    }
    if dead_letter_topic:
        request["dead_letter_policy"] = {
            "dead_letter_topic": dead_letter_topic,
            "max_delivery_attempts": MAX_DELIVERY_ATTEMPTS,
        }
    try:
        subscriber.create_subscription(request=request)
        LOG.info("created subscription %s", subscription)
    except AlreadyExists:
        pass


# Each table is partitioned by day on its own event time: queries by time (dashboards,
# `triage dead-letters --since`, replay windows) read only the days they need. Each is also
# clustered on `row_id`, so the writers' exactly-once lookup reads a few blocks of the days
# inside the deduplication horizon (`bigquery_sink.DEDUP_HORIZON_DAYS`), not the table.
PARTITION_FIELDS = {
    "TriageResult": "created_at",
    "DeadLetter": "failed_at",
    "Replay": "replayed_at",
    "Review": "decided_at",
}


def ensure_table(client: Any, table: str, record_type: type) -> None:
    """Create the dataset and table if missing, with the schema derived from `record_type`,
    partitioned by day on the record's time field; add the nullable columns a newer
    `record_type` has to an existing table."""
    from google.cloud import bigquery

    from triage.records import ROW_ID, table_schema

    project, dataset, name = split_table(table)
    client.create_dataset(bigquery.Dataset(f"{project}.{dataset}"), exists_ok=True)
    schema = [
        bigquery.SchemaField(f["name"], f["type"], mode=f["mode"])
        for f in table_schema(record_type)
    ]
    definition = bigquery.Table(f"{project}.{dataset}.{name}", schema=schema)
    partition = PARTITION_FIELDS.get(record_type.__name__)
    if partition:
        definition.time_partitioning = bigquery.TimePartitioning(
            type_=bigquery.TimePartitioningType.DAY, field=partition
        )
    definition.clustering_fields = [ROW_ID]
    client.create_table(definition, exists_ok=True)
    existing = client.get_table(definition.reference)
    names = {field.name for field in existing.schema}
    added = [f for f in schema if f.name not in names and f.mode == "NULLABLE"]
    changed = []
    if added:  # a table from an older version: nullable columns are added in place
        existing.schema = [*existing.schema, *added]
        changed.append("schema")
    if not existing.clustering_fields:  # clusters the rows written from now on
        existing.clustering_fields = [ROW_ID]
        changed.append("clustering_fields")
    if changed:
        client.update_table(existing, changed)
    view = bigquery.Table(unique_view(table))
    view.view_query = (
        "SELECT * EXCEPT (_copy) FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY "
        f"{ROW_ID} ORDER BY {partition or ROW_ID}) AS _copy FROM `{table}`) WHERE _copy = 1"
    )
    client.create_table(view, exists_ok=True)


def unique_view(table: str) -> str:
    """The view of `table` that shows each `row_id` once (its first row): what readers
    should query. Rows repeat only past the deduplication horizon (see the README's
    exactly-once contract), or when two writers race within a moment."""
    return f"{table}_unique"


def ensure_infrastructure(infra: Infrastructure) -> None:
    """Create what is missing; running it twice changes nothing."""
    from triage.records import DeadLetter, Replay, Review, TriageResult

    publisher, subscriber = publisher_client(), subscriber_client()
    try:
        for topic in (
            infra.input_topic,
            infra.drafts_topic,
            infra.approved_topic,
            infra.dead_drafts_topic,
        ):
            _ensure_topic(publisher, topic)
        # Dataflow acknowledges what it has durably read, so a dead-letter policy would never
        # fire on the input; bad chats become BigQuery dead letters in the pipeline instead.
        ensure_subscription(
            subscriber, infra.input_subscription, infra.input_topic, retain_acked=True
        )
        ensure_subscription(
            subscriber,
            infra.review_subscription,
            infra.drafts_topic,
            dead_letter_topic=infra.dead_drafts_topic,
            ack_deadline_seconds=600,
        )
        ensure_subscription(subscriber, infra.dead_drafts_subscription, infra.dead_drafts_topic)
        # The streaming indexer runs on a runner that may ack on pull (the DirectRunner), so
        # acknowledged approvals are kept for a seek back; `index --from_bigquery` covers older.
        ensure_subscription(
            subscriber,
            infra.approved_index_subscription,
            infra.approved_topic,
            retain_acked=True,
        )
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
