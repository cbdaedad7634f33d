"""Prometheus metrics of the operator, served on their own HTTP port."""

from __future__ import annotations

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
for _phase in PHASES:
    DEPLOYMENTS.labels(_phase)  # each phase shows, at 0, before any deployment is in it


def serve(port: int | None) -> None:
    if port is not None:
        start_http_server(port)


def phase_changed(before: str | None, after: str | None) -> None:
    """A deployment went from one phase to another (None: it was not counted, or is no longer)."""
    if before == after:
        return
    if before in PHASES:
        DEPLOYMENTS.labels(before).dec()
    if after in PHASES:
        DEPLOYMENTS.labels(after).inc()
