"""The review queue's local durable store: drafts pulled from Pub/Sub, their leases, their state.

SQLite on the app's disk. Why a local store when Pub/Sub already holds the messages: a draft an
agent has open must survive an app restart with its lease (so a second agent does not get it
meanwhile), and the queue page must list drafts oldest first with filters, which a
subscription cannot do. Pub/Sub stays the source of truth: a message is acknowledged only after
its decision is stored (`review/queue.py`), so losing this file loses nothing but leases.

Every method takes `now` explicitly, so lease expiry is tested without sleeping.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["DraftStore", "StoredDraft", "guess_language"]

_SPEAKER = re.compile(r"^[^:\n]{1,40}:", re.MULTILINE)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS drafts (
    draft_id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    language TEXT NOT NULL,
    drafted_at TEXT NOT NULL,
    received_at TEXT NOT NULL,
    ack_id TEXT,
    state TEXT NOT NULL DEFAULT 'waiting',
    lease_holder TEXT,
    lease_until TEXT,
    decided_at TEXT
);
CREATE INDEX IF NOT EXISTS drafts_waiting ON drafts (state, drafted_at);
"""
# Added after the first release: a file from then gets them on open.
_COLUMNS = {"review": "TEXT", "published_at": "TEXT"}


def guess_language(text: str) -> str:
    """The chat's script, for the queue's language filter: Korean, Japanese, Chinese, Latin.

    A script count, not a language model: the chats are short and the agents' teams are split
    by script (Hangul, kana, Han characters, Latin letters), which is what the filter needs.
    """
    counts = {"ko": 0, "ja": 0, "zh": 0, "latin": 0}
    for ch in text:
        code = ord(ch)
        if 0xAC00 <= code <= 0xD7A3 or 0x1100 <= code <= 0x11FF or 0x3130 <= code <= 0x318F:
            counts["ko"] += 1
        elif 0x3040 <= code <= 0x30FF:
            counts["ja"] += 1
        elif 0x4E00 <= code <= 0x9FFF:
            counts["zh"] += 1
        elif (ch.isascii() and ch.isalpha()) or 0xC0 <= code <= 0x24F:
            counts["latin"] += 1
    if counts["ja"]:  # kana decide: Japanese text mixes kana with Han characters
        return "ja"
    best = max(counts, key=lambda k: counts[k])
    return best if counts[best] else "other"


@dataclass(frozen=True)
class StoredDraft:
    draft_id: str
    draft: dict[str, Any]  # the Draft record as published (records.Draft fields)
    language: str
    drafted_at: str
    received_at: str
    ack_id: str | None
    state: str  # waiting | deciding (recorded here, not yet stored everywhere) | decided
    lease_holder: str | None
    lease_until: str | None
    review: dict[str, Any] | None = None  # the decision, recorded before any I/O
    published_at: str | None = None  # when an approval reached the approved topic

    def leased_to_other(self, reviewer: str, now: datetime) -> bool:
        return (
            self.lease_holder is not None
            and self.lease_holder != reviewer
            and self.lease_until is not None
            and self.lease_until > now.isoformat()
        )


def _row(row: sqlite3.Row) -> StoredDraft:
    return StoredDraft(
        draft_id=row["draft_id"],
        draft=json.loads(row["body"]),
        language=row["language"],
        drafted_at=row["drafted_at"],
        received_at=row["received_at"],
        ack_id=row["ack_id"],
        state=row["state"],
        lease_holder=row["lease_holder"],
        lease_until=row["lease_until"],
        review=json.loads(row["review"]) if row["review"] else None,
        published_at=row["published_at"],
    )


class DraftStore:
    """Thread-safe: the web server's threads and the puller share one connection under a lock."""

    def __init__(self, path: str | Path):
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        have = {row["name"] for row in self._db.execute("PRAGMA table_info(drafts)")}
        for name, kind in _COLUMNS.items():
            if name not in have:
                self._db.execute(f"ALTER TABLE drafts ADD COLUMN {name} {kind}")
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def add(self, draft_id: str, draft: dict[str, Any], ack_id: str | None, now: datetime) -> str:
        """Store a delivered draft; a redelivery only refreshes its ack id. Returns its state
        ("waiting", or "decided" when the decision was stored before the ack got through)."""
        # The customer's language: the chat's words, without the "id 221:" speaker labels.
        text = _SPEAKER.sub("", str(draft.get("chat_message", "")))
        with self._tx() as db:
            db.execute(
                "INSERT INTO drafts (draft_id, body, language, drafted_at, received_at, ack_id)"
                " VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (draft_id) DO UPDATE SET ack_id = excluded.ack_id",
                (
                    draft_id,
                    json.dumps(draft, ensure_ascii=False),
                    guess_language(text),
                    str(draft.get("created_at") or now.isoformat()),
                    now.isoformat(),
                    ack_id,
                ),
            )
            return db.execute(
                "SELECT state FROM drafts WHERE draft_id = ?", (draft_id,)
            ).fetchone()[0]

    def get(self, draft_id: str) -> StoredDraft | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM drafts WHERE draft_id = ?", (draft_id,)
            ).fetchone()
        return _row(row) if row else None

    def waiting(
        self,
        *,
        language: str | None = None,
        older_than: str | None = None,
        newer_than: str | None = None,
        limit: int = 200,
    ) -> list[StoredDraft]:
        """Undecided drafts, oldest first, optionally filtered by language and drafted_at."""
        sql, args = "SELECT * FROM drafts WHERE state = 'waiting'", []
        if language:
            sql, args = sql + " AND language = ?", [*args, language]
        if older_than:
            sql, args = sql + " AND drafted_at < ?", [*args, older_than]
        if newer_than:
            sql, args = sql + " AND drafted_at >= ?", [*args, newer_than]
        sql += " ORDER BY drafted_at, draft_id LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, [*args, limit]).fetchall()
        return [_row(r) for r in rows]

    def count_waiting(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) FROM drafts WHERE state = 'waiting'").fetchone()
        return int(row[0])

    def languages(self) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT language FROM drafts WHERE state = 'waiting' ORDER BY language"
            ).fetchall()
        return [r[0] for r in rows]

    def lease(self, draft_id: str, reviewer: str, now: datetime, until: datetime) -> bool:
        """Give the draft to `reviewer` until `until`, unless another holds a live lease."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE drafts SET lease_holder = ?, lease_until = ?"
                " WHERE draft_id = ? AND state = 'waiting'"
                " AND (lease_holder IS NULL OR lease_holder = ? OR lease_until <= ?)",
                (reviewer, until.isoformat(), draft_id, reviewer, now.isoformat()),
            )
            return cur.rowcount == 1

    def release(self, draft_id: str, reviewer: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE drafts SET lease_holder = NULL, lease_until = NULL"
                " WHERE draft_id = ? AND lease_holder = ?",
                (draft_id, reviewer),
            )

    def record_decision(self, draft_id: str, review: dict[str, Any], reviewer: str) -> bool:
        """Record `review` as the draft's decision, once: True if this call recorded it; False
        if a decision was recorded before (read it with `get`), or `reviewer` lost the lease.
        Nothing else happens to a decision before this, so a crash after it is completed by
        `ReviewQueue.complete_pending`, never replaced."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE drafts SET state = 'deciding', review = ?"
                " WHERE draft_id = ? AND state = 'waiting' AND review IS NULL"
                " AND (lease_holder IS NULL OR lease_holder = ?)",
                (json.dumps(review, ensure_ascii=False), draft_id, reviewer),
            )
            return cur.rowcount == 1

    def adopt_decision(self, draft_id: str, review: dict[str, Any]) -> None:
        """Replace this instance's recorded decision by the one stored first in BigQuery (by
        another app instance): the only change a recorded decision ever gets."""
        with self._tx() as db:
            db.execute(
                "UPDATE drafts SET review = ? WHERE draft_id = ?",
                (json.dumps(review, ensure_ascii=False), draft_id),
            )

    def mark_published(self, draft_id: str, now: datetime) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE drafts SET published_at = ? WHERE draft_id = ?", (now.isoformat(), draft_id)
            )

    def deciding(self) -> list[StoredDraft]:
        """Decisions recorded but not yet completed (stored, published, acknowledged)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM drafts WHERE state = 'deciding' ORDER BY draft_id"
            ).fetchall()
        return [_row(r) for r in rows]

    def mark_decided(self, draft_id: str, now: datetime) -> str | None:
        """Record that the decision is stored; returns the ack id to acknowledge."""
        with self._tx() as db:
            db.execute(
                "UPDATE drafts SET state = 'decided', decided_at = ?, lease_holder = NULL,"
                " lease_until = NULL WHERE draft_id = ?",
                (now.isoformat(), draft_id),
            )
            row = db.execute("SELECT ack_id FROM drafts WHERE draft_id = ?", (draft_id,)).fetchone()
        return row[0] if row else None

    def pending_ack_ids(self) -> list[str]:
        """Ack ids of drafts not yet decided everywhere: their Pub/Sub deadlines are extended
        while they wait."""
        with self._lock:
            rows = self._db.execute(
                "SELECT ack_id FROM drafts WHERE state != 'decided' AND ack_id IS NOT NULL"
            ).fetchall()
        return [r[0] for r in rows]
