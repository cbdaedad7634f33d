"""Operator configuration: a YAML file (MODELDEPLOY_CONFIG) and MODELDEPLOY_* environment variables.

Every field has a default, so the operator runs without any configuration; the default policy
is the one for a cluster that several teams share (docs/policy.md). Environment variables
override the file: MODELDEPLOY_NAMESPACES (comma-separated; empty = all),
MODELDEPLOY_DEFAULT_STORE, MODELDEPLOY_MAX_JOBS, MODELDEPLOY_MAX_JOBS_PER_DEPLOYMENT,
MODELDEPLOY_METRICS_PORT, MODELDEPLOY_KUEUE_QUEUE, MODELDEPLOY_SCHEDULER_NAME, and
MODELDEPLOY_ALLOW_PYTHON_ARCHITECTURES (policy.allowPythonArchitectures: what the quickstart needs).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from modeldeploy.backends import Backend
from modeldeploy.backends.cpu import JOBS_IMAGE
from modeldeploy.policy import RESERVED_ENV_PREFIX, Policy
from modeldeploy.spec import Placement, Resources, Target

LimitName = Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]*$", max_length=64)]


class _Config(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class JobSettings(_Config):
    backoff_limit: int = Field(default=2, ge=0)
    active_deadline_seconds: int = Field(default=6 * 3600, ge=1)
    ttl_seconds_after_finished: int = Field(default=24 * 3600, ge=0)
    service_account_name: str | None = None
    image_pull_secrets: list[str] = Field(default_factory=list)
    resources: Resources = Field(
        default_factory=lambda: Resources(requests={"cpu": "1", "memory": "2Gi"}, limits={"memory": "8Gi"}),
        description="Every stage container's resources; a target's placement.resources overrides them.",
    )


class OperatorConfig(_Config):
    namespaces: list[str] = Field(default_factory=list, description="Namespaces to watch; empty: all.")
    images: dict[str, str] = Field(
        default_factory=dict,
        description="Job image per backend name, per backend and toolchain release ('ascend:6.0.rc1') for "
        "targets naming one, and 'default' for convert, prepare and report.",
    )
    placement: dict[str, Placement] = Field(
        default_factory=dict, description="Placement per backend, over the backend's defaults, under the target's."
    )
    resource_names: dict[str, str] = Field(
        default_factory=dict,
        description="Extended resources to request instead of a backend's default, e.g. cambricon.com/mlu370: "
        "cambricon.com/mlu when the device plugin runs without --enable-device-type.",
    )
    default_store: str | None = Field(default=None, description="s3://bucket/prefix for specs without artifacts.")
    default_secret: str | None = Field(default=None, description="Secret with S3 credentials for the default store.")
    s3_endpoint: str | None = None
    s3_region: str | None = None
    max_jobs: int = Field(default=20, ge=1, description="Active Jobs across every ModelDeployment.")
    max_jobs_per_deployment: int = Field(default=4, ge=1)
    jobs: JobSettings = Field(default_factory=JobSettings)
    kueue_queue: str | None = Field(
        default=None, description="The Kueue LocalQueue of every Job (kueue.x-k8s.io/queue-name): Jobs are created "
        "suspended and run when Kueue admits them (docs/kueue.md).")
    scheduler_name: str | None = Field(default=None, description="e.g. volcano")
    resync_seconds: float = Field(default=30.0, gt=0, description="Reconcile at least this often.")
    metrics_port: int | None = Field(default=9090, description="Prometheus metrics; none to disable.")
    policy: Policy = Field(
        default_factory=Policy, description="What a spec may choose: code, images, placement, URIs, credentials."
    )
    limits: dict[LimitName, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict,
        description=f"Caps the stages enforce on users' files, each NAME given to every stage container as "
        f"{RESERVED_ENV_PREFIX}NAME, e.g. MAX_MODEL_BYTES: 8589934592 (docs/limits.md); a stage's own default "
        "applies to a cap not named here.",
    )

    def limit_environment(self) -> dict[str, str]:
        """The environment variables that carry `limits` to a stage."""
        return {f"{RESERVED_ENV_PREFIX}{name}": str(value) for name, value in self.limits.items()}

    def image(self, backend: Backend | None, target: Target | None = None) -> str:
        """The job image of a target's stages on its backend, or of convert, prepare and report (backend None).

        A target naming another toolchain release than the backend's gets that release's image: the
        installation's `images["<backend>:<release>"]`, else the backend's image tagged with the release.
        """
        if backend is None:
            return self.images.get("default", JOBS_IMAGE)
        release = backend.named_release(target) if target is not None else None
        if release is not None:
            return self.images.get(f"{backend.name}:{release}", backend.target_image(target))
        return self.images.get(backend.name, backend.image)


ENVIRONMENT: Mapping[str, tuple[str, Any]] = {
    "MODELDEPLOY_NAMESPACES": ("namespaces", lambda text: [item.strip() for item in text.split(",") if item.strip()]),
    "MODELDEPLOY_DEFAULT_STORE": ("defaultStore", str),
    "MODELDEPLOY_DEFAULT_SECRET": ("defaultSecret", str),
    "MODELDEPLOY_S3_ENDPOINT": ("s3Endpoint", str),
    "MODELDEPLOY_MAX_JOBS": ("maxJobs", int),
    "MODELDEPLOY_MAX_JOBS_PER_DEPLOYMENT": ("maxJobsPerDeployment", int),
    "MODELDEPLOY_METRICS_PORT": ("metricsPort", lambda text: int(text) if text else None),
    "MODELDEPLOY_KUEUE_QUEUE": ("kueueQueue", str),
    "MODELDEPLOY_SCHEDULER_NAME": ("schedulerName", str),
    "MODELDEPLOY_RESYNC_SECONDS": ("resyncSeconds", float),
    "MODELDEPLOY_ALLOW_PYTHON_ARCHITECTURES": ("policy.allowPythonArchitectures", str),
}


def load(environ: Mapping[str, str] = os.environ) -> OperatorConfig:
    """The file named by MODELDEPLOY_CONFIG (if any), then the environment over it."""
    values: dict[str, Any] = {}
    if environ.get("MODELDEPLOY_CONFIG"):
        values = yaml.safe_load(Path(environ["MODELDEPLOY_CONFIG"]).read_text()) or {}
    for variable, (path, parse) in ENVIRONMENT.items():
        if variable in environ:
            *parents, field = path.split(".")
            node = values
            for parent in parents:
                node = node.setdefault(parent, {})
            node[field] = parse(environ[variable])
    return OperatorConfig.model_validate(values)
