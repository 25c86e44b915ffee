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
import secrets
import tomllib
from pathlib import Path

from werkzeug.security import check_password_hash, generate_password_hash

__all__ = ["Reviewers", "hash_password", "is_loopback"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def hash_password(password: str) -> str:
    return generate_password_hash(password)


class Reviewers:
    def __init__(self, hashes: dict[str, str]):
        self._hashes = dict(hashes)
        # Checked against a real hash even for unknown names: same time either way.
        self._dummy = generate_password_hash(secrets.token_hex(8))

    @classmethod
    def from_file(cls, path: str | Path) -> Reviewers:
        data = tomllib.loads(Path(path).read_text("utf-8"))
        reviewers = data.get("reviewers", {})
        if not reviewers or not all(isinstance(v, str) for v in reviewers.values()):
            raise ValueError(f'{path}: expected a [reviewers] table of name = "hash" lines')
        return cls(reviewers)

    @classmethod
    def one_time(cls) -> tuple[Reviewers, str, str]:
        """A single local reviewer with a fresh password: (reviewers, name, password)."""
        name = getpass.getuser() or "reviewer"
        password = secrets.token_urlsafe(12)
        return cls({name: generate_password_hash(password)}), name, password

    def check(self, name: str, password: str) -> bool:
        stored = self._hashes.get(name)
        ok = check_password_hash(stored or self._dummy, password)
        return ok and stored is not None

    def __len__(self) -> int:
        return len(self._hashes)
