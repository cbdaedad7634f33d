"""A new deployment's first pass runs from the operator's own watch of ModelDeployments, before kopf gets to the
deployment's daemon: its first Jobs are created there, and its Events, which only kopf's own tasks can post, are
posted by the daemon when it starts. Here: the quickstart's first Jobs, the StageStarted Events that tell them, the
status the daemon writes, and not one failed pass in the operator's log."""

from __future__ import annotations

import uuid
from pathlib import Path

from scenarios import apply, deployment, jobs_of, quickstart, wait_for

from cluster.operator_env import Environment, running_operator

pytest_plugins = ["cluster.operator_fixtures"]


def test_the_first_pass_creates_the_first_jobs_and_the_daemon_tells_them(environment: Environment,
                                                                        tmp_path: Path) -> None:
    environment.create_buckets("modeldeploy-examples", "modeldeploy-artifacts")
    with running_operator(environment, tmp_path, every_namespace=False) as (kube, operator):
        # a store of its own: in a session whose earlier tests ran the quickstart, the shared one has every task
        # done already, and a first pass that finds them so creates no Job
        apply(kube, quickstart(**{"metadata.name": "first", "spec.artifacts.uri":
                                  f"s3://modeldeploy-artifacts/first-pass-{uuid.uuid4().hex[:8]}"}))
        jobs = wait_for(lambda: jobs_of(kube, "first"), 120, what="the first Jobs")
        stages = {job["metadata"]["labels"]["modeldeploy.io/stage"] for job in jobs}
        assert "convert" in stages

        def started() -> set[str]:
            return {event["message"].split(":")[0] for event in kube.list("events", kube.namespace)
                    if event.get("reason") == "StageStarted"}

        told = wait_for(lambda: started() >= {"convert"} and started(), 120, what="StageStarted for convert")
        assert told >= {"convert"}
        status = wait_for(lambda: deployment(kube, "first").get("status"), 120, what="the status")
        stage = next(stage for stage in status["stages"] if stage["kind"] == "convert")
        assert stage["job"] in {job["metadata"]["name"] for job in jobs}
    log = operator.log.read_text()
    assert "first pass failed" not in log and "reconcile failed" not in log, log[-4000:]
