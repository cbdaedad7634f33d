"""Prometheus metrics of the operator, served on their own HTTP port."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILES = Counter("modeldeploy_reconciles_total", "Reconciles of a ModelDeployment.", ["result"])
JOBS_CREATED = Counter("modeldeploy_jobs_created_total", "Stage Jobs created.", ["stage"])
STAGES_FINISHED = Counter("modeldeploy_stages_finished_total", "Stage tasks finished.", ["stage", "outcome"])
STAGE_SECONDS = Histogram(
    "modeldeploy_stage_duration_seconds",
    "Wall time of stage Jobs, from start to completion.",
    ["stage"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600),
)
DEPLOYMENTS = Gauge("modeldeploy_deployments", "ModelDeployments by phase.", ["phase"])
PHASES = ("Pending", "Running", "Succeeded", "Failed")


def serve(port: int | None) -> None:
    if port is not None:
        start_http_server(port)


def count_phases(phases: Mapping[object, str]) -> None:
    for phase in PHASES:
        DEPLOYMENTS.labels(phase).set(sum(1 for value in phases.values() if value == phase))
