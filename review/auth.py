"""Who may review: reviewers and password hashes from configuration, never from the request.

The file is TOML, one line per reviewer, written with `triage review-user NAME`:

    [reviewers]
    alice = "scrypt:32768:8:1$..."

On loopback with no file, `triage review` makes a one-time password for the local user and
prints it, so a developer can try the queue; on any other address it refuses to start.
"""

from __future__ import annotations

import getpass
import ipaddress
import logging
import secrets
import threading
import time
import tomllib
from pathlib import Path

from werkzeug.security import check_password_hash, generate_password_hash

__all__ = ["Reviewers", "hash_password", "is_loopback"]

LOG = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def hash_password(password: str) -> str:
    return generate_password_hash(password)


def _read(path: Path) -> dict[str, str]:
    data = tomllib.loads(path.read_text("utf-8"))
    reviewers = data.get("reviewers", {})
    if not reviewers or not all(isinstance(v, str) for v in reviewers.values()):
        raise ValueError(f'{path}: expected a [reviewers] table of name = "hash" lines')
    return reviewers


class Reviewers:
    """The reviewers file, read again when it changes (checked every `RELOAD_S` at most): a
    reviewer removed from it loses access at their next request, without a restart."""

    RELOAD_S = 2.0

    def __init__(self, hashes: dict[str, str], path: Path | None = None):
        self._hashes = dict(hashes)
        self._path = path
        self._mtime = path.stat().st_mtime_ns if path else 0
        self._checked = time.monotonic()
        self._lock = threading.Lock()
        # Checked against a real hash even for unknown names: same time either way.
        self._dummy = generate_password_hash(secrets.token_hex(8))

    @classmethod
    def from_file(cls, path: str | Path) -> Reviewers:
        return cls(_read(Path(path)), Path(path))

    def _refresh(self) -> None:
        if self._path is None or time.monotonic() - self._checked < self.RELOAD_S:
            return
        with self._lock:
            self._checked = time.monotonic()
            try:
                mtime = self._path.stat().st_mtime_ns
                if mtime != self._mtime:
                    self._hashes, self._mtime = _read(self._path), mtime
                    LOG.info("reviewers reloaded from %s: %d reviewers", self._path, len(self))
            except (OSError, ValueError) as err:  # a half-written file: keep the last good one
                LOG.error("could not reload reviewers from %s: %s", self._path, err)

    def exists(self, name: str) -> bool:
        self._refresh()
        return name in self._hashes

    @classmethod
    def one_time(cls) -> tuple[Reviewers, str, str]:
        """A single local reviewer with a fresh password: (reviewers, name, password)."""
        name = getpass.getuser() or "reviewer"
        password = secrets.token_urlsafe(12)
        return cls({name: generate_password_hash(password)}), name, password

    def check(self, name: str, password: str) -> bool:
        self._refresh()
        stored = self._hashes.get(name)
        ok = check_password_hash(stored or self._dummy, password)
        return ok and stored is not None

    def __len__(self) -> int:
        return len(self._hashes)
