"""The operator's Job informer against the test API server, over HTTP: list, then every change as it happens."""

from __future__ import annotations

import asyncio
from typing import Any

from kube.apiserver import ApiServer
from kubernetes import client
from modeldeploy.controller.informer import JobIndex, JobInformer, OwnedJob
from modeldeploy.controller.jobs import ANNOTATION_KEY, ANNOTATION_TASK_URI, LABEL_DEPLOYMENT, MANAGED_BY

pytest_plugins = ["kube.fixtures"]


def task_job(name: str, deployment: str, key: str, managed_by: str = MANAGED_BY) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": managed_by, LABEL_DEPLOYMENT: deployment},
                     "annotations": {ANNOTATION_KEY: key, ANNOTATION_TASK_URI: f"s3://artifacts/tasks/{key}/task.json"}},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
                                       "containers": [{"name": "stage", "image": "python:3.11"}]}}},
    }


COMPLETE = {"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}}


async def until(condition: Any, what: str) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_informer_lists_then_follows_creation_completion_and_deletion(apiserver: ApiServer) -> None:
    with apiserver.api_client() as api:
        batch = client.BatchV1Api(api)
        batch.create_namespaced_job("default", task_job("before", "mdep-a", "k0"))
        batch.create_namespaced_job("default", task_job("not-ours", "mdep-a", "k9", managed_by="someone-else"))

        async def follow() -> list[tuple[str, str, bool]]:
            index = JobIndex()
            seen: list[tuple[str, str, bool]] = []

            def listener(kind: str, job: OwnedJob) -> None:
                seen.append((kind, job.state.name, job.state.active))

            informer = JobInformer(api, ["default"], index, listener, asyncio.get_running_loop())
            informer.start()
            try:
                await asyncio.wait_for(informer.listed.wait(), timeout=10)
                assert index.active == {("default", "mdep-a"): {"k0"}}  # listed before anything is planned
                await asyncio.to_thread(batch.create_namespaced_job, "default", task_job("during", "mdep-a", "k1"))
                await until(lambda: index.active.get(("default", "mdep-a")) == {"k0", "k1"}, "the new Job")
                await asyncio.to_thread(batch.patch_namespaced_job_status, "during", "default", COMPLETE)
                await until(lambda: index.active.get(("default", "mdep-a")) == {"k0"}, "the Job to complete")
                assert index.states(("default", "mdep-a"))["k1"].succeeded
                await asyncio.to_thread(batch.delete_namespaced_job, "before", "default")
                await until(lambda: ("default", "mdep-a") not in index.active, "the deleted Job to free its slot")
                assert set(index.states(("default", "mdep-a"))) == {"k1"}
            finally:
                informer.stop()
            return seen

        seen = asyncio.run(follow())
    assert seen == [("ADDED", "before", True), ("ADDED", "during", True), ("MODIFIED", "during", False),
                    ("DELETED", "before", True)]
