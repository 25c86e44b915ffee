"""Input contract: raw Pub/Sub message bytes in, a `Chat` or a rejection reason out.

`parse_chat` is a pure function, so the contract is unit-tested without Beam; `ValidateChats`
is the DoFn that routes rejections to the dead-letter output instead of raising.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam

from triage import metrics
from triage.dead_letters import clamp_attempt
from triage.records import Chat, DeadLetter, Stage

__all__ = ["MAX_ID_CHARS", "MAX_PAYLOAD_BYTES", "Rejection", "ValidateChats", "parse_chat"]

MAX_PAYLOAD_BYTES = 1 << 20
# Ids become Pub/Sub attributes and BigQuery keys; an attribute value is capped at 1024 bytes.
MAX_ID_CHARS = 256


@dataclass(frozen=True)
class Rejection:
    """Why a message is not a valid chat: a stable `reason` code and a human `detail`."""

    reason: str
    detail: str
    chat_id: str | None = None


def _is_encodable(text: str) -> bool:
    # JSON "\ud800" escapes decode to lone surrogates, which no UTF-8 sink can write later.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_id(obj: dict[str, Any], key: str) -> str | Rejection:
    if key not in obj:
        return Rejection(f"missing_{key}", f"field {key!r} is missing")
    value = obj[key]
    # bool is an int subclass in Python, but `true` is not an id.
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        kind = type(value).__name__ if value is not None else "null"
        return Rejection(
            f"invalid_{key}", f"field {key!r} must be an integer or a string, got {kind}"
        )
    text = str(value)
    if not text.strip():
        return Rejection(f"invalid_{key}", f"field {key!r} is empty")
    if len(text) > MAX_ID_CHARS:
        return Rejection(
            f"invalid_{key}", f"field {key!r} is longer than {MAX_ID_CHARS} characters"
        )
    if not _is_encodable(text):
        return Rejection(f"invalid_{key}", f"field {key!r} contains invalid unicode")
    return text


def _refuse_constant(literal: str) -> Any:
    """Python's json reads `NaN`, `Infinity` and `-Infinity`; RFC 8259 has no such literals,
    and no other reader of the payload (BigQuery, replay tools) accepts them."""
    raise ValueError(f"{literal} is not a JSON value")


def parse_chat(
    payload: bytes,
    attempt: int = 1,
    message_id: str | None = None,
    attributes: dict[str, str] | None = None,
) -> Chat | Rejection:
    """Apply the input contract. Never raises on any input bytes."""
    if not isinstance(payload, (bytes, bytearray)):
        return Rejection("not_bytes", f"message body is {type(payload).__name__}, not bytes")
    payload = bytes(payload)
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Rejection(
            "payload_too_large", f"{len(payload)} bytes, the limit is {MAX_PAYLOAD_BYTES}"
        )
    body = payload[len(codecs.BOM_UTF8) :] if payload.startswith(codecs.BOM_UTF8) else payload
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        return Rejection("not_utf8", f"invalid UTF-8 at byte {err.start}")
    try:
        obj = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as err:
        return Rejection("not_json", str(err)[:200])
    if not isinstance(obj, dict):
        return Rejection(
            "not_object", f"top-level JSON value is {type(obj).__name__}, not an object"
        )

    chat_id = _check_id(obj, "id")
    if isinstance(chat_id, Rejection):
        return chat_id
    user_id = _check_id(obj, "user_id")
    if isinstance(user_id, Rejection):
        return user_id

    if "chat_message" not in obj:
        return Rejection("missing_chat_message", "field 'chat_message' is missing", chat_id)
    message = obj["chat_message"]
    if not isinstance(message, str):
        kind = type(message).__name__ if message is not None else "null"
        return Rejection(
            "invalid_chat_message", f"field 'chat_message' must be a string, got {kind}", chat_id
        )
    if not message.strip():
        return Rejection(
            "empty_chat_message", "field 'chat_message' is empty or whitespace only", chat_id
        )
    if not _is_encodable(message):
        return Rejection(
            "invalid_chat_message", "field 'chat_message' contains invalid unicode", chat_id
        )

    # Other fields are allowed and kept only in `payload`: carrying them parsed cost 25 MB per
    # element for a 1 MiB payload of `[{}, ...]`.
    return Chat(
        chat_id=chat_id,
        user_id=user_id,
        chat_message=message,
        payload=payload,
        attempt=attempt,
        message_id=message_id,
        attributes=dict(attributes or {}),
    )


def _unpack(message: Any) -> tuple[Any, dict[str, str], str | None]:
    if isinstance(message, (bytes, bytearray)):
        return message, {}, None
    data = getattr(message, "data", message)
    attributes = dict(getattr(message, "attributes", None) or {})
    return data, attributes, getattr(message, "message_id", None) or None


def _attempt(attributes: dict[str, str]) -> int:
    """Replays carry an `attempt` attribute; anything unreadable counts as a first attempt."""
    try:
        return clamp_attempt(int(attributes.get("attempt", "1")))
    except (TypeError, ValueError):
        return 1


class ValidateChats(beam.DoFn):
    """Raw message bytes -> `Chat` on the main output, or a `DeadLetter` on `dead_letter`."""

    DEAD_LETTER = "dead_letter"

    def __init__(self) -> None:
        self._read = metrics.counter(metrics.CHATS_READ)
        self._invalid = metrics.counter(metrics.CHATS_INVALID)

    def process(self, message: Any) -> Iterator[Any]:
        """`message` is raw bytes (file mode) or a Beam `PubsubMessage` (streaming)."""
        self._read.inc()
        payload, attributes, message_id = _unpack(message)
        attempt = _attempt(attributes)
        try:
            result = parse_chat(payload, attempt, message_id, attributes)
        except Exception as err:  # noqa: BLE001 - a bug here must not stall the stream
            result = Rejection("internal_error", repr(err)[:500])
        if isinstance(result, Chat):
            yield result
            return
        self._invalid.inc()
        body = bytes(payload) if isinstance(payload, (bytes, bytearray)) else str(payload).encode()
        yield beam.pvalue.TaggedOutput(
            self.DEAD_LETTER,
            DeadLetter(
                stage=Stage.VALIDATE.value,
                reason=result.reason,
                detail=result.detail,
                payload=body,
                chat_id=result.chat_id,
                attempt=attempt,
                message_id=message_id,
            ),
        )
