"""The record types every stage exchanges, and the BigQuery schemas derived from them.

Each field is named once, here. Sinks, tests and (later) replay tools read the field names and
types from these dataclasses instead of repeating them, so adding a column is a one-line change.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import enum
import hashlib
import json
import types
import typing
from typing import Any, TypeVar

__all__ = [
    "Chat",
    "DeadLetter",
    "Draft",
    "Replay",
    "Review",
    "Stage",
    "TriageResult",
    "ROW_ID",
    "bigquery_schema",
    "from_dict",
    "from_json",
    "review_row_id",
    "row_id",
    "table_schema",
    "to_dict",
    "to_json",
    "utc_now",
]


class Stage(enum.StrEnum):
    """Where in the pipeline a chat failed; a dead letter's `stage` is one of these."""

    VALIDATE = "validate"
    PROMPT = "prompt"
    TRIAGE_INFERENCE = "triage_inference"
    TRIAGE_PARSE = "triage_parse"
    REPAIR_PROMPT = "repair_prompt"
    REPAIR_INFERENCE = "repair_inference"
    APOLOGY_PROMPT = "apology_prompt"
    APOLOGY_INFERENCE = "apology_inference"
    APOLOGY_PARSE = "apology_parse"
    WRITE_SUMMARY = "write_summary"
    PUBLISH_DRAFT = "publish_draft"


def utc_now() -> str:
    """ISO-8601 UTC time with a `Z`, the form BigQuery's TIMESTAMP accepts from JSON."""
    return (
        datetime.datetime.now(datetime.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


@dataclasses.dataclass(frozen=True)
class Chat:
    """A validated input message.

    `payload` keeps the exact bytes that arrived, so any later failure can dead-letter (and
    replay) the original message rather than a re-serialisation of it.
    """

    chat_id: str
    user_id: str
    chat_message: str
    payload: bytes
    attempt: int = 1
    # Pub/Sub's id and attributes of the message that carried it, so a redelivery is recognised.
    message_id: str | None = None
    attributes: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class TriageResult:
    """The model's verdict on one chat; sentiment 0/1 results are the summary rows."""

    chat_id: str
    user_id: str
    chat_message: str
    sentiment: int
    summary: str
    model_id: str
    prompt_version: str
    attempt: int
    created_at: str


@dataclasses.dataclass(frozen=True)
class Draft:
    """An apology draft for a dissatisfied customer, waiting for a support agent's review."""

    chat_id: str
    user_id: str
    chat_message: str
    sentiment: int
    summary: str
    draft: str
    model_id: str
    prompt_version: str
    apology_prompt_version: str
    attempt: int
    created_at: str
    # What a reviewer should check first (triage.draft_checks.draft_warnings): the draft's
    # language differs from the chat's, it states a number or offers a refund the chat lacks.
    warnings: tuple[str, ...] = ()
    # Similar resolved cases found for this chat (triage.retrieval), best first: document ids
    # and cosine scores; `retrieval` is "ok", "unavailable: why", or "" when it is off.
    similar_ids: tuple[str, ...] = ()
    similar_scores: tuple[float, ...] = ()
    retrieval: str = ""


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """One shape for every failure, holding what an operator needs to understand and replay it.

    `reason` is a short stable code (for grouping and alerting); `detail` is for humans.
    """

    stage: str
    reason: str
    detail: str
    payload: bytes
    chat_id: str | None = None
    model_reply: str | None = None
    attempt: int = 1
    model_id: str | None = None
    prompt_version: str | None = None
    message_id: str | None = None
    # How many in-pipeline repair prompts were tried on this chat's reply before giving up.
    repairs: int = 0
    failed_at: str = dataclasses.field(default_factory=utc_now)
    # Set where the payload was cut to fit a row (triage.dead_letters): its full size and
    # sha256, and where the full bytes are kept when a blob store is configured.
    payload_bytes: int | None = None
    payload_sha256: str | None = None
    payload_uri: str | None = None


@dataclasses.dataclass(frozen=True)
class Replay:
    """What `triage replay` did with one dead letter, so a second run does not do it again."""

    dead_letter_row_id: str
    chat_id: str | None
    stage: str
    reason: str
    attempt: int
    # "republished" (sent to the input topic), "rewritten" (a stored row written again),
    # "attempt_cap" (left dead: the chat failed too many times), or "failed" (the action was
    # refused or timed out; `detail` says why, and a later run tries it again).
    action: str
    replayed_at: str = dataclasses.field(default_factory=utc_now)
    detail: str | None = None


@dataclasses.dataclass(frozen=True)
class Review:
    """A support agent's decision on one draft: a row of the `reviews` table, and, when
    approved, the message on the `approved` topic for the system that sends replies.

    It keeps the chat, summary and both texts, so approved rows are training data as they are
    (`triage export-approved`) and a rejected one can be understood without the draft.
    """

    draft_id: str
    chat_id: str
    user_id: str
    decision: str  # "approved" or "rejected"
    final_text: str  # what the customer gets; the draft as written when not edited
    edited: bool
    reason: str  # why it was rejected; empty when approved
    reviewer: str  # the signed-in identity, never a form field
    model_id: str
    prompt_version: str
    apology_prompt_version: str
    sentiment: int
    summary: str
    chat_message: str
    draft: str  # the model's text, before any edit
    drafted_at: str
    decided_at: str
    seconds_to_decision: float


R = TypeVar("R")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """Return (inner type, is optional) for `X | None`."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def to_dict(record: Any) -> dict[str, Any]:
    """A JSON-ready dict: bytes become base64 text, as BigQuery's BYTES type expects in JSON."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if isinstance(value, bytes):
            value = base64.b64encode(value).decode("ascii")
        elif isinstance(value, enum.Enum):
            value = value.value
        out[f.name] = value
    return out


def from_dict(cls: type[R], data: dict[str, Any]) -> R:
    """Inverse of `to_dict`; unknown keys are ignored so older readers accept newer rows."""
    hints = _field_types(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            continue
        value = data[f.name]
        inner, _ = _unwrap_optional(hints[f.name])
        if inner is bytes and isinstance(value, str):
            value = base64.b64decode(value)
        elif typing.get_origin(inner) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def to_json(record: Any) -> str:
    return json.dumps(to_dict(record), ensure_ascii=False, sort_keys=False)


def from_json(cls: type[R], text: str | bytes) -> R:
    return from_dict(cls, json.loads(text))


_BQ_TYPES: dict[Any, str] = {
    str: "STRING",
    int: "INTEGER",
    float: "FLOAT",
    bool: "BOOLEAN",
    bytes: "BYTES",
}
_TIMESTAMP_FIELDS = {"created_at", "failed_at", "replayed_at", "drafted_at", "decided_at"}


def bigquery_schema(cls: type) -> list[dict[str, str]]:
    """BigQuery schema (REST JSON form) for a record type, so tables never drift from the code."""
    hints = _field_types(cls)
    schema = []
    for f in dataclasses.fields(cls):
        inner, optional = _unwrap_optional(hints[f.name])
        mode = "NULLABLE" if optional else "REQUIRED"
        if typing.get_origin(inner) is tuple:  # tuple[str, ...]: a repeated column
            inner, mode = typing.get_args(inner)[0], "REPEATED"
        if f.name in _TIMESTAMP_FIELDS:
            bq_type = "TIMESTAMP"
        elif inner in _BQ_TYPES:
            bq_type = _BQ_TYPES[inner]
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: no BigQuery type for {inner!r}")
        schema.append({"name": f.name, "type": bq_type, "mode": mode})
    return schema


ROW_ID = "row_id"


def review_row_id(draft_id: str) -> str:
    """One decision per draft, whoever clicks twice and on whichever app instance."""
    return f"{draft_id}/review"


def row_id(record: TriageResult | Draft | DeadLetter | Replay | Review) -> str:
    """The idempotency key of a stored row: the same chat at the same stage always gets the same
    id, so a redelivered or replayed message never adds a second row.

    Dead letters also key on the attempt: a replayed chat that fails again is a new fact. A
    message without a readable chat id is keyed by its bytes, so resending the same broken
    message does not add rows either.
    """
    if isinstance(record, TriageResult):
        return f"{record.chat_id}/summary"
    if isinstance(record, Draft):
        return f"{record.chat_id}/draft"
    if isinstance(record, Replay):  # one success per dead letter; every failure is a fact
        if record.action == "failed":
            return f"{record.dead_letter_row_id}/failed/{record.replayed_at}"
        return record.dead_letter_row_id
    if isinstance(record, Review):
        return review_row_id(record.draft_id)
    if record.chat_id is not None:
        who = f"chat:{record.chat_id}"
        if record.reason == "conflicting_duplicate":  # one row per chat using the id
            who += "#" + hashlib.sha256(record.payload).hexdigest()[:16]
    else:
        digest = record.payload_sha256 or hashlib.sha256(record.payload).hexdigest()
        who = "sha256:" + digest[:32]
    return f"{who}/{record.stage}/{record.attempt}"


def table_schema(cls: type) -> list[dict[str, str]]:
    """A stored table: the record's own fields plus its `row_id` (see `row_id`)."""
    return [*bigquery_schema(cls), {"name": ROW_ID, "type": "STRING", "mode": "REQUIRED"}]
