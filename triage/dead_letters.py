"""Dead letters that always fit: bounded before they are written, kept somewhere if refused.

A dead letter holds what arrived, and Pub/Sub accepts 10 MB messages: stored whole, as base64,
one was over 13 MB, above BigQuery's row and request limits, and the dead-letter writer retried
it forever. Before a dead letter is written to BigQuery:
- its payload is cut to `PAYLOAD_PREFIX_BYTES`, with the full size and sha256 beside it, and the
  full bytes put in a blob store when one is configured (`--dead_letter_blobs`: a `gs://` path in
  production, a local folder in demos), named by their sha256, so `triage replay` sends the
  original bytes;
- its texts are cut to bounds, and its attempt clamped (it comes from a message attribute).

A row BigQuery still refuses for good goes to `keep_last_resort`: the blob store, and the log.
File mode writes dead letters to a local file whole; none of this applies there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from typing import Any

from triage import metrics
from triage.records import DeadLetter, row_id, to_dict
from triage.retry import with_backoff

__all__ = [
    "MAX_ATTEMPT",
    "PAYLOAD_PREFIX_BYTES",
    "clamp_attempt",
    "fit_dead_letter",
    "keep_last_resort",
    "read_payload",
]

LOG = logging.getLogger(__name__)

# 64 KiB of a payload is enough to see what it was; base64 makes it ~87 KB in a row.
PAYLOAD_PREFIX_BYTES = 64 * 1024
MAX_DETAIL_CHARS = 4000
MAX_REPLY_CHARS = 16 * 1024
MAX_SHORT_CHARS = 1024  # ids, codes, versions: Pub/Sub caps an attribute value at 1024 bytes
# Attempts come from an `attempt` attribute anyone can set; INT64 must hold them.
MAX_ATTEMPT = 1_000_000


def clamp_attempt(value: int) -> int:
    return min(max(1, value), MAX_ATTEMPT)


def _blob_path(blobs: str, *parts: str) -> str:
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.join(blobs, *parts)


def _write_blob(path: str, data: bytes) -> None:
    from apache_beam.io.filesystems import FileSystems

    if not path.startswith("gs://"):
        import os

        os.makedirs(os.path.dirname(path), exist_ok=True)
    with FileSystems.create(path) as f:
        f.write(data)


def read_payload(uri: str) -> bytes:
    """The full bytes of a payload that `fit_dead_letter` put in the blob store."""
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(uri) as f:
        return f.read()


def _cut(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def fit_dead_letter(dead: DeadLetter, blobs: str | None = None) -> DeadLetter:
    """`dead` bounded to fit a BigQuery row. Never raises: a blob store that cannot be written
    leaves the payload cut, and says so in `detail`."""
    payload = dead.payload
    digest = dead.payload_sha256 or hashlib.sha256(payload).hexdigest()
    detail = dead.detail
    uri = dead.payload_uri
    if len(payload) > PAYLOAD_PREFIX_BYTES:
        if blobs and uri is None:
            path = _blob_path(blobs, "payloads", digest)
            try:
                with_backoff(lambda: _write_blob(path, payload), 30.0, what=f"write {path}")
                uri = path
            except Exception as err:  # noqa: BLE001 - the prefix, size and hash still land
                detail = f"{detail} [full payload not stored: {err}]"
        payload = payload[:PAYLOAD_PREFIX_BYTES]
    return dataclasses.replace(
        dead,
        stage=_cut(dead.stage, MAX_SHORT_CHARS) or "",
        reason=_cut(dead.reason, MAX_SHORT_CHARS) or "",
        detail=_cut(detail, MAX_DETAIL_CHARS) or "",
        payload=payload,
        chat_id=_cut(dead.chat_id, MAX_SHORT_CHARS),
        model_reply=_cut(dead.model_reply, MAX_REPLY_CHARS),
        attempt=clamp_attempt(dead.attempt),
        model_id=_cut(dead.model_id, MAX_SHORT_CHARS),
        prompt_version=_cut(dead.prompt_version, MAX_SHORT_CHARS),
        message_id=_cut(dead.message_id, MAX_SHORT_CHARS),
        payload_bytes=dead.payload_bytes if dead.payload_bytes is not None else len(dead.payload),
        payload_sha256=digest,
        payload_uri=uri,
    )


def keep_last_resort(record: Any, why: str, blobs: str | None = None) -> None:
    """A row the dead-letter table refused for good: into the blob store when there is one,
    and into the log, so the stage goes on instead of retrying it forever."""
    metrics.counter(metrics.LAST_RESORT).inc()
    rid = row_id(record)
    entry = json.dumps({"row_id": rid, "why": why, "row": to_dict(record)}, ensure_ascii=False)
    if blobs:
        name = hashlib.sha256(rid.encode()).hexdigest()
        path = _blob_path(blobs, "last-resort", f"{name}.json")
        try:
            _write_blob(path, entry.encode("utf-8"))
            LOG.error("dead letter %s refused by BigQuery (%s); kept in %s", rid, why, path)
            return
        except Exception as err:  # noqa: BLE001 - fall through to the log
            why = f"{why}; blob store failed: {err}"
    LOG.error("dead letter %s refused by BigQuery (%s); the row: %s", rid, why, entry)
