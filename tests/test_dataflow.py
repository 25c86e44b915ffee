"""The Dataflow path, checked offline: the job the Makefile would launch (built with the
DataflowRunner's --dry_run, nothing submitted), the flex-template metadata, the Dockerfile,
stable transform names for in-place updates, and `triage infra` against the emulators."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
import uuid
from pathlib import Path

import pytest

from triage.dataflow_job import describe_job
from triage.options import TriageOptions
from triage.pipeline import jax_memory_fraction

REPO = Path(__file__).resolve().parent.parent
PROJECT = "acme-triage-prod"
IMAGE = f"us-central1-docker.pkg.dev/{PROJECT}/chat-triage/chat-triage:v42"
GPU = "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"
STAGES = ["Read", "Triage", "Write"]


def make(*args: str) -> str:
    """What `make ARGS` prints (commands are only printed with -n)."""
    return subprocess.run(
        ["make", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=60
    ).stdout


def make_args(*overrides: str) -> list[str]:
    """The pipeline options `make dataflow` passes, as the Makefile prints them."""
    return make("-s", "dataflow-args", f"PROJECT={PROJECT}", "TAG=v42", *overrides).split()


@pytest.fixture(scope="module")
def job():
    return describe_job(make_args())


def test_offline_job_is_a_streaming_gpu_job_on_our_image(job):
    assert job.streaming
    environment = job.job["environment"]
    pool = environment["workerPools"][0]
    assert pool["machineType"] == "g2-standard-8"
    assert pool["workerHarnessContainerImage"] == IMAGE
    assert [c["containerImage"] for c in pool["sdkHarnessContainerImages"]] == [IMAGE]
    assert environment["serviceOptions"] == [GPU]
    experiments = set(environment["experiments"])
    assert {"no_use_multiple_sdk_containers", "enable_streaming_engine"} <= experiments
    options = environment["sdkPipelineOptions"]["options"]
    assert options["model_preset"] == "/opt/model"
    assert options["jax_memory_fraction"] == 0.8
    assert options["input_subscription"] == f"projects/{PROJECT}/subscriptions/chats-triage"


def test_offline_job_has_the_expected_stages(job):
    assert job.top_level == STAGES
    names = set(job.transforms)
    for stage in (
        "Read/ReadFromPubSub",
        "Triage/Validate",
        "Triage/Triage",
        "Triage/ParseAndRoute",
        "Triage/Repair1",
        "Triage/Apology",
        "Triage/MakeDrafts",
        "Write/WriteSummaries",
        "Write/PublishDrafts",
        "Write/WriteDeadLetters",
    ):
        assert any(n == stage or n.startswith(stage + "/") for n in names), stage


def test_transform_names_are_stable_across_prompt_and_model_changes(job):
    """An in-place update matches transforms by name: a new prompt version or model preset
    must not rename any. The committed list makes every rename a deliberate act."""
    other = describe_job(
        [
            *make_args("MODEL_PRESET=kaggle://google/gemma-2/keras/gemma2_instruct_9b_en"),
            "--triage_prompt_version=triage-v1",
            "--apology_prompt_version=apology-v1",
        ]
    )
    assert other.transforms == job.transforms
    assert len(set(job.transforms)) == len(job.transforms)
    committed = [
        line
        for line in (REPO / "dataflow" / "transform_names.txt").read_text("utf-8").splitlines()
        if line and not line.startswith("#")
    ]
    assert job.transforms == committed, "transform names changed: see dataflow/transform_names.txt"


def test_makefile_launch_command_carries_the_gpu_and_update_flags():
    dry = make("-n", "dataflow", f"PROJECT={PROJECT}", "TAG=v42", "UPDATE=1")
    assert "gcloud dataflow flex-template run chat-triage" in dry
    assert "--update" in dry and "--enable-streaming-engine" in dry
    assert f"sdk_container_image={IMAGE}" in dry and GPU in dry
    assert "--worker-machine-type=g2-standard-8" in dry
    without = make("-n", "dataflow", f"PROJECT={PROJECT}")
    assert "--update" not in without


def test_template_metadata_matches_the_pipeline_options():
    metadata = json.loads((REPO / "dataflow" / "metadata.json").read_text("utf-8"))
    assert metadata["streaming"] is True
    given = dict(arg.removeprefix("--").split("=", 1) for arg in make_args() if "=" in arg)
    for parameter in metadata["parameters"]:
        name = parameter["name"]
        value = (
            given.get(name)
            or {
                "triage_prompt_version": "triage-v1",
                "apology_prompt_version": "apology-v1",
                "repair_prompt_version": "repair-v1",
                "repair_attempts": "2",
                "max_prompt_tokens": "1024",
                "model_copies": "2",
                "write_retry_secs": "120",
            }[name]
        )
        options = TriageOptions([f"--{name}={value}"]).get_all_options()
        assert name in options, f"{name} is not a pipeline option"
        for regex in parameter.get("regexes", []):
            assert re.fullmatch(regex, value), (name, value)
            assert not re.fullmatch(regex, value + " --evil=1"), name


@pytest.mark.parametrize(
    "name,bad",
    [
        ("input_subscription", "projects/p/topics/chats"),
        ("summaries_table", "just_a_table"),
        ("dtype", "int8"),
        ("max_batch_size", "0"),
        ("model_preset", "http://example.com/model"),
        ("dataflow_service_options", "worker_accelerator=type:nvidia-l4;count:99"),
    ],
)
def test_template_metadata_rejects_bad_values(name, bad):
    metadata = json.loads((REPO / "dataflow" / "metadata.json").read_text("utf-8"))
    (parameter,) = [p for p in metadata["parameters"] if p["name"] == name]
    assert not any(re.fullmatch(r, bad) for r in parameter["regexes"])


def test_dockerfile_builds_on_the_pinned_beam_image_with_the_gpu_extra():
    dockerfile = (REPO / "Dockerfile").read_text("utf-8")
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))
    beam = next(d for d in pyproject["project"]["dependencies"] if d.startswith("apache-beam"))
    version = beam.split("==")[1]
    assert f"ARG BEAM_VERSION={version}" in dockerfile
    assert "FROM apache/beam_python3.11_sdk:${BEAM_VERSION}" in dockerfile
    assert "KERAS_BACKEND=jax" in dockerfile and "pip install '.[gpu]'" in dockerfile
    jax = next(d for d in pyproject["project"]["dependencies"] if d.startswith("jax=="))
    assert pyproject["project"]["optional-dependencies"]["gpu"] == [
        f"jax[cuda12]=={jax.split('==')[1]}"
    ]
    launcher = re.search(r"FLEX_TEMPLATE_PYTHON_PY_FILE=/opt/chat-triage/(\S+)", dockerfile)
    assert launcher and (REPO / launcher.group(1)).exists()
    assert 'ENTRYPOINT ["/opt/apache/beam/boot"]' in dockerfile
    for package in ("triage", "handlers", "prompts", "review"):
        assert f"COPY {package} {package}" in dockerfile
    ignored = (REPO / ".dockerignore").read_text("utf-8").split()
    assert ".venv" in ignored and "models/tiny-gemma2" in ignored


@pytest.mark.parametrize(
    "flags,expected",
    [
        ([], 0.8),
        (["--model_copies=2"], 0.4),
        (["--large_model"], 0.4),
        (["--large_model", "--model_copies=2"], 0.2),
        (["--jax_memory_fraction=0.5", "--model_copies=4"], 0.5),
    ],
)
def test_jax_memory_is_split_between_model_processes(flags, expected):
    assert jax_memory_fraction(TriageOptions(flags)) == expected


@pytest.mark.emulators
def test_infra_creates_production_settings_idempotently(emulators):
    from google.cloud import bigquery

    from triage.demo import PROJECT as EMULATED
    from triage.gcp import (
        MAX_DELIVERY_ATTEMPTS,
        RETENTION_SECONDS,
        Infrastructure,
        bigquery_client,
        ensure_infrastructure,
        subscriber_client,
    )

    infra = Infrastructure.named(EMULATED, prefix=f"i{uuid.uuid4().hex[:6]}-")
    ensure_infrastructure(infra)
    ensure_infrastructure(infra)  # twice: nothing fails, nothing changes
    subscriber = subscriber_client()
    try:
        review = subscriber.get_subscription(request={"subscription": infra.review_subscription})
        chats = subscriber.get_subscription(request={"subscription": infra.input_subscription})
    finally:
        subscriber.close()
    assert review.dead_letter_policy.dead_letter_topic == infra.dead_drafts_topic
    assert review.dead_letter_policy.max_delivery_attempts == MAX_DELIVERY_ATTEMPTS
    assert review.ack_deadline_seconds == 600
    for sub in (review, chats):
        assert sub.message_retention_duration.total_seconds() == RETENTION_SECONDS
    assert chats.retain_acked_messages
    client = bigquery_client(EMULATED)
    try:
        for table, field in (
            (infra.summaries_table, "created_at"),
            (infra.dead_letter_table, "failed_at"),
            (infra.reviews_table, "decided_at"),
        ):
            partitioning = client.get_table(table).time_partitioning
            assert partitioning is not None and partitioning.field == field
            assert partitioning.type_ == bigquery.TimePartitioningType.DAY
    finally:
        client.close()
