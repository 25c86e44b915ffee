"""Who is signed in, kept on the server so it can be taken back, and how often one may guess.

A signed cookie alone cannot be revoked: one captured before logout worked for 31 days, and a
reviewer removed from `--users` kept access. The cookie now holds only a random session id;
`Sessions` keeps the id's reviewer and times in SQLite (in `--state_dir`), and every request
checks it: the session exists, it has been used within `IDLE`, it is younger than `ABSOLUTE`,
and its reviewer is still in the reviewers file. Logout deletes it.

`LoginThrottle` bounds guessing: per user and per client address, failed sign-ins within
`WINDOW` lock further tries for the rest of it, and password checks (scrypt, deliberately
slow) run at most `CONCURRENT_CHECKS` at a time, so a flood cannot take the CPU.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

__all__ = ["LoginThrottle", "Sessions"]

IDLE = timedelta(hours=1)
ABSOLUTE = timedelta(hours=12)
# last_seen is written at most this often: not one SQLite write per page view.
_TOUCH = timedelta(minutes=1)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    sid TEXT PRIMARY KEY,
    reviewer TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_seen TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_reviewer ON sessions (reviewer);
"""


class Sessions:
    def __init__(self, path: str | Path = ":memory:"):
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def start(self, reviewer: str, now: datetime) -> str:
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._db.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?)",
                (sid, reviewer, now.isoformat(), now.isoformat()),
            )
        return sid

    def check(self, sid: str | None, now: datetime, allowed: Callable[[str], bool]) -> str | None:
        """The reviewer of a live session, or None (and the session is gone)."""
        if not sid:
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT reviewer, created_at, last_seen FROM sessions WHERE sid = ?", (sid,)
            ).fetchone()
        if row is None:
            return None
        reviewer, created, seen = (
            row[0],
            datetime.fromisoformat(row[1]),
            datetime.fromisoformat(row[2]),
        )
        if now - seen > IDLE or now - created > ABSOLUTE or not allowed(reviewer):
            self.end(sid)
            return None
        if now - seen > _TOUCH:
            with self._lock:
                self._db.execute(
                    "UPDATE sessions SET last_seen = ? WHERE sid = ?", (now.isoformat(), sid)
                )
        return reviewer

    def end(self, sid: str | None) -> None:
        with self._lock:
            self._db.execute("DELETE FROM sessions WHERE sid = ?", (sid,))

    def count(self, reviewer: str) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM sessions WHERE reviewer = ?", (reviewer,)
            ).fetchone()
        return int(row[0])


WINDOW = timedelta(minutes=15)
MAX_FAILURES_PER_USER = 5
MAX_FAILURES_PER_ADDRESS = 20
CONCURRENT_CHECKS = 2
_MAX_KEYS = 10_000  # the memory an attacker can make this take, with random names


class LoginThrottle:
    def __init__(self) -> None:
        self._failures: OrderedDict[str, deque[datetime]] = OrderedDict()
        self._lock = threading.Lock()
        self.checks = threading.BoundedSemaphore(CONCURRENT_CHECKS)

    def _recent(self, key: str, now: datetime) -> deque[datetime]:
        times = self._failures.get(key, deque())
        while times and now - times[0] > WINDOW:
            times.popleft()
        return times

    def wait(self, user: str, address: str, now: datetime) -> timedelta:
        """How long this user or address must wait before the next try (zero: go on)."""
        with self._lock:
            waits = []
            for key, limit in (
                (f"user:{user}", MAX_FAILURES_PER_USER),
                (f"addr:{address}", MAX_FAILURES_PER_ADDRESS),
            ):
                times = self._recent(key, now)
                if len(times) >= limit:
                    waits.append(times[-limit] + WINDOW - now)
            return max(waits, default=timedelta(0))

    def failed(self, user: str, address: str, now: datetime) -> None:
        with self._lock:
            for key in (f"user:{user}", f"addr:{address}"):
                times = self._recent(key, now)
                times.append(now)
                self._failures[key] = times
                self._failures.move_to_end(key)
            while len(self._failures) > _MAX_KEYS:
                self._failures.popitem(last=False)

    def succeeded(self, user: str) -> None:
        with self._lock:
            self._failures.pop(f"user:{user}", None)
