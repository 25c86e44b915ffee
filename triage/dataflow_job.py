"""The Dataflow job this pipeline would submit, described offline: no credentials, no network.

`--dry_run` makes the DataflowRunner return the job right after building it, before it
authenticates, stages files or calls the API. Beam then skips the step that fills in the job's
`environment` (workers, container image, service options), and `--dataflow_job_file` is only
written on submission. So this module completes the description with the same building blocks
Beam's `create_job_description` uses (pure functions of the options and the pipeline proto),
minus the uploads. Those are Beam internals: `apache-beam` is pinned in pyproject.toml, and
the offline job test (`tests/test_dataflow_job.py`) fails loudly if they move.

    triage dataflow-job --out job.json --project P --region R --temp_location gs://B/tmp ...

Transform names are not in the job JSON (Runner v2 stages the pipeline proto as
`pipeline.pb`); they come from the pipeline proto, which is what an in-place update compares.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["JobDescription", "describe_job", "main"]


@dataclass(frozen=True)
class JobDescription:
    job: dict[str, Any]  # the Dataflow Job resource as the API would receive it
    transforms: list[str]  # every transform's unique name (what an update matches on)
    top_level: list[str]  # the pipeline's stages as the user named them

    @property
    def streaming(self) -> bool:
        return self.job.get("type") == "JOB_TYPE_STREAMING"


def describe_job(argv: Sequence[str]) -> JobDescription:
    """Build the streaming pipeline for DataflowRunner with `argv` and describe the job."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import GoogleCloudOptions
    from apache_beam.portability.api import beam_runner_api_pb2
    from apache_beam.runners.dataflow.internal import apiclient
    from apache_beam.runners.internal import names

    from triage.options import TriageOptions
    from triage.pipeline import streaming_pipeline

    options = TriageOptions(
        [*argv, "--runner=DataflowRunner", "--dry_run=True"], save_main_session=False
    )
    result = streaming_pipeline(options).run()
    job = result.job
    proto = job.proto_pipeline
    # What DataflowApplicationClient.create_job_description does, without staging anything.
    apiclient.DataflowApplicationClient._apply_sdk_environment_overrides(proto, {}, job.options)
    staged = []
    for environment in proto.components.environments.values():
        for dependency in environment.dependencies:
            if dependency.role_urn == "beam:artifact:role:staging_to:v1":
                payload = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(
                    dependency.role_payload
                )
                staged.append(payload.staged_name)
    staging = job.options.view_as(GoogleCloudOptions).staging_location
    job.proto.environment = apiclient.Environment(
        packages=staged,
        options=job.options,
        environment_version=apiclient._FNAPI_ENVIRONMENT_MAJOR_VERSION,
        proto_pipeline_staged_url=FileSystems.join(staging, names.STAGED_PIPELINE_FILENAME),
        proto_pipeline=proto,
        pipeline_proto_hash=hashlib.sha256(proto.SerializeToString()).hexdigest(),
    ).proto
    transforms = proto.components.transforms
    (root,) = proto.root_transform_ids  # one wrapper; the user's stages are its children
    return JobDescription(
        job=json.loads(job.json()),
        transforms=sorted(t.unique_name for t in transforms.values()),
        top_level=[transforms[i].unique_name for i in transforms[root].subtransforms],
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="triage dataflow-job",
        description="write the Dataflow job description for these options, without submitting",
    )
    parser.add_argument("--out", required=True, help="where to write the job JSON")
    args, pipeline_args = parser.parse_known_args(argv)
    described = describe_job(pipeline_args)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({**described.job, "transformNames": described.transforms}, f, indent=2)
    pools = described.job.get("environment", {}).get("workerPools", [{}])
    print(
        f"dataflow-job: {described.job.get('type')} on "
        f"{pools[0].get('machineType', 'default machines')}, image "
        f"{pools[0].get('workerHarnessContainerImage', '?')}, stages: "
        f"{', '.join(described.top_level)} -> {args.out}",
        file=sys.stderr,
    )
    return 0
