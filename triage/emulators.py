"""Start Google's Pub/Sub emulator and the `bqemulator` BigQuery emulator on loopback.

Used by `make demo` and the end-to-end tests, so both run the real clients against real servers
and the production code path. Each emulator runs in its own process group and is stopped with it.

Example Usage::

    with PubSubEmulator() as pubsub, BigQueryEmulator() as bigquery:
        os.environ.update(pubsub.env | bigquery.env)
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["BigQueryEmulator", "EmulatorError", "PubSubEmulator", "free_port"]

DEFAULT_PROJECT = "demo-project"  # Beam refuses some short project ids, such as "demo"


class EmulatorError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class _Emulator:
    name = "emulator"

    def __init__(self, project: str = DEFAULT_PROJECT, startup_timeout: float = 90.0):
        self.project = project
        self.port = free_port()
        self._startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix=f"{self.name}-", suffix=".log", delete=False)

    @property
    def log_path(self) -> str:
        return self._log.name

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Anything to do once before the server starts."""

    def _ready(self) -> bool:
        return _port_open(self.port)

    def start(self) -> _Emulator:
        self._prepare()
        self._proc = subprocess.Popen(
            self._command(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stop() ends its children too
        )
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise EmulatorError(f"{self.name} exited at start; see {self.log_path}")
            if self._ready():
                return self
            time.sleep(0.25)
        self.stop()
        raise EmulatorError(
            f"{self.name} not ready in {self._startup_timeout}s; see {self.log_path}"
        )

    def stop(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        try:
            os.killpg(self._proc.pid, signal.SIGTERM)
            self._proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._proc.wait(timeout=15)

    def __enter__(self) -> _Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class PubSubEmulator(_Emulator):
    """Google's own Pub/Sub emulator (Java), from the Google Cloud CLI."""

    name = "pubsub-emulator"

    def _command(self) -> list[str]:
        gcloud = shutil.which("gcloud")
        if gcloud is None:
            raise EmulatorError(
                "gcloud not found: install google-cloud-cli and google-cloud-cli-pubsub-emulator"
            )
        return [
            gcloud,
            "beta",
            "emulators",
            "pubsub",
            "start",
            f"--host-port=127.0.0.1:{self.port}",
            f"--project={self.project}",
            "--quiet",
        ]

    def _ready(self) -> bool:
        return "Server started, listening on" in Path(self.log_path).read_text(errors="replace")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """How clients find it (no scheme, as the Pub/Sub clients expect)."""
        return {"PUBSUB_EMULATOR_HOST": self.host}


class BigQueryEmulator(_Emulator):
    """`bqemulator` (DuckDB-backed, speaks BigQuery's REST API), in-memory."""

    name = "bigquery-emulator"

    def __init__(self, project: str = DEFAULT_PROJECT, startup_timeout: float = 90.0):
        super().__init__(project, startup_timeout)
        self.grpc_port = free_port()

    def _prepare(self) -> None:
        # bqemulator loads DuckDB's spatial extension at start and would download it; the
        # duckdb-extension-spatial wheel carries it, so install it from there (offline).
        from duckdb_extensions import import_extension

        import_extension("spatial")

    def _command(self) -> list[str]:
        exe = Path(sys.executable).with_name("bqemulator")
        return [
            str(exe) if exe.exists() else "bqemulator",
            "start",
            "--rest-port",
            str(self.port),
            "--grpc-port",
            str(self.grpc_port),
            "--project",
            self.project,
            "--log-level",
            "warning",
        ]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """How `google-cloud-bigquery` finds it (the scheme is required)."""
        return {"BIGQUERY_EMULATOR_HOST": self.endpoint}
