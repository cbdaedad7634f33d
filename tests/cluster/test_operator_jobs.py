"""What only a real control plane shows about the operator's Jobs: the garbage collector deletes them and their pods
with their ModelDeployment; the Job controller acts on activeDeadlineSeconds and the TTL controller on
ttlSecondsAfterFinished as the operator's configuration sets them; and the operator comes through an API server
restart and a watch that expired (410 Gone). And the RBAC check every operator of these tests ends with catches
a permission missing from the shipped RBAC.

Each test runs its own operator (as the ServiceAccount of examples/cluster/rbac.yaml, every namespace), one at a
time, with its deployment's artifacts under a prefix of its own, so that its Jobs run instead of finding their
results from earlier tests.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from scenarios import Operator, apply, condition, deployment, jobs_of, quickstart, ready, wait_for

from cluster.operator_env import (
    EXAMPLES,
    OPERATOR_NAMESPACE,
    RBAC,
    Environment,
    Kube,
    excused_refusals,
    refusals,
    running_operator,
    token_kubeconfig,
)

pytest_plugins = ["cluster.operator_fixtures"]

READY_SECONDS = 420
RESYNC_SECONDS = 3  # scenarios.Operator's


@pytest.fixture(scope="module")
def s3(environment: Environment) -> Any:
    assert environment.local, "these tests restart the local control plane's API server and read its etcd"
    client = environment.create_buckets("modeldeploy-examples", "modeldeploy-artifacts")
    for name in ("digits_cnn.py", "digits_cnn.pt"):
        client.upload_file(str(EXAMPLES / name), "modeldeploy-examples", f"quickstart/{name}")
    return client


@pytest.fixture
def operator_with(environment: Environment, s3: Any, tmp_path: Path) -> Iterator[Any]:
    """Starts the operator with an installation config of the test's choosing."""
    running: list[Any] = []

    def start(config: dict[str, Any] | None = None) -> tuple[Kube, Operator]:
        context = running_operator(environment, tmp_path, every_namespace=True, config=config)
        running.append(context)
        return context.__enter__()

    yield start
    for context in running:
        context.__exit__(None, None, None)


def small(name: str) -> dict[str, Any]:
    """One cell: convert, prepare, the reference, one evaluation and the report, in a store of its own."""
    return quickstart(**{
        "metadata.name": name,
        "spec.artifacts.uri": f"s3://modeldeploy-artifacts/{name}-{uuid.uuid4().hex[:8]}",
        "spec.targets": [{"name": "ort", "backend": "onnxruntime", "precisions": ["fp32"], "batchSizes": [1]}],
        "spec.performance": {"warmup": 2, "iterations": 10},
    })


def pods_of_deployment(kube: Kube, name: str) -> list[dict[str, Any]]:
    return kube.list("pods", kube.namespace, f"modeldeploy.io/deployment={name}")


def jobs_created(operator: Operator) -> float:
    return sum(float(value) for value in re.findall(r"^modeldeploy_jobs_created_total\{[^}]*\} (\S+)$",
                                                    operator.metrics(), re.MULTILINE))


def assert_one_job_per_task(kube: Kube, name: str, operator: Operator) -> None:
    jobs = jobs_of(kube, name)
    keys = [job["metadata"]["annotations"]["modeldeploy.io/task-key"] for job in jobs]
    assert len(keys) == len(set(keys)), keys
    # None was created twice (deleted in between): a create whose answer the restart lost is a 409 the next time
    assert jobs_created(operator) <= len(jobs)


def test_deleting_a_deployment_removes_its_jobs_and_pods_through_the_garbage_collector(operator_with: Any) -> None:
    kube, _ = operator_with()
    apply(kube, small("collected"))
    wait_for(lambda: any(pod["status"].get("phase") == "Running" for pod in pods_of_deployment(kube, "collected")),
             READY_SECONDS, interval=0.5, what="a pod of the deployment running")
    owner = deployment(kube, "collected")["metadata"]["uid"]
    jobs = jobs_of(kube, "collected")
    assert jobs and all(job["metadata"]["ownerReferences"] == [{
        "apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "name": "collected", "uid": owner,
        "controller": True, "blockOwnerDeletion": True}] for job in jobs)
    kube.kubectl("delete", "mdep", "collected", "--timeout=60s")  # the operator deletes no Job of it itself
    wait_for(lambda: not jobs_of(kube, "collected"), 60, interval=0.5, what="the garbage collector to delete the Jobs")
    wait_for(lambda: not pods_of_deployment(kube, "collected"), 90, interval=0.5,
             what="the garbage collector to delete the pods (and the kubelet to stop them)")


def test_active_deadline_seconds_fails_a_job_that_runs_too_long(operator_with: Any) -> None:
    kube, _ = operator_with({"jobs": {"activeDeadlineSeconds": 1}})  # every stage takes longer than that
    apply(kube, small("deadline"))
    body = wait_for(lambda: (b := deployment(kube, "deadline")) and (b.get("status") or {}).get("phase") == "Failed"
                    and b, READY_SECONDS, interval=1, what="deadline to fail")
    stalled = condition(body, "Stalled")
    assert stalled["reason"] == "StageFailed" and "DeadlineExceeded: Job was active longer than specified deadline" in (
        stalled["message"])
    failed = [job for job in jobs_of(kube, "deadline") if condition(job, "Failed").get("status") == "True"]
    assert failed and all(job["spec"]["activeDeadlineSeconds"] == 1 for job in failed)
    assert {condition(job, "Failed")["reason"] for job in failed} == {"DeadlineExceeded"}
    # the Job controller deleted the pods it stopped; the kubelet killed their processes
    wait_for(lambda: not [pod for pod in pods_of_deployment(kube, "deadline")
                          if pod["status"].get("phase") in ("Pending", "Running")], 60, what="no pod left running")


def test_ttl_seconds_after_finished_removes_finished_jobs_and_the_deployment_stays_ready(operator_with: Any) -> None:
    kube, operator = operator_with({"jobs": {"ttlSecondsAfterFinished": 2}})
    apply(kube, small("short-lived"))
    body = wait_for(lambda: ready(kube, "short-lived"), READY_SECONDS, interval=1, what="short-lived Ready")
    planned = len(body["status"]["stages"])
    wait_for(lambda: not jobs_of(kube, "short-lived"), 60, interval=0.5, what="the TTL controller to delete the Jobs")
    wait_for(lambda: not pods_of_deployment(kube, "short-lived"), 60, interval=0.5, what="their pods to go")
    # Several resync periods later: nothing was started again, the results are in the store
    for _ in range(4):
        time.sleep(RESYNC_SECONDS)
        assert jobs_of(kube, "short-lived") == []
        assert ready(kube, "short-lived") is not None
    assert jobs_created(operator) == planned


def test_an_api_server_restart_is_survived(operator_with: Any, environment: Environment) -> None:
    kube, operator = operator_with()
    apply(kube, small("through-restart"))
    wait_for(lambda: jobs_of(kube, "through-restart"), 120, interval=0.5, what="a first Job")
    with excused_refusals(operator):
        environment.control_plane.restart("kube-apiserver")
    body = wait_for(lambda: ready(kube, "through-restart"), READY_SECONDS, interval=1, what="through-restart Ready")
    assert operator.process is not None and operator.process.poll() is None
    assert len(body["status"]["results"]) == 1
    assert_one_job_per_task(kube, "through-restart", operator)


def test_an_expired_watch_is_survived(operator_with: Any, environment: Environment) -> None:
    """The API server restarts after a write the operator's watches did not see: its new watch cache starts at a
    resourceVersion past theirs, so each watch resumes from a version the server no longer has, gets 410 Gone, and
    the operator lists again."""
    kube, operator = operator_with()
    apply(kube, small("expired"))
    wait_for(lambda: jobs_of(kube, "expired"), 120, interval=0.5, what="a first Job")
    kube.kubectl("create", "configmap", "a-later-revision")
    with excused_refusals(operator):
        environment.control_plane.restart("kube-apiserver")
    body = wait_for(lambda: ready(kube, "expired"), READY_SECONDS, interval=1, what="expired Ready")
    assert len(body["status"]["results"]) == 1
    log = operator.log.read_text()
    assert re.search(r"the watch of (Jobs|pods) in every namespace expired \(.*\); listing again", log), log[-3000:]
    assert_one_job_per_task(kube, "expired", operator)


def test_a_permission_missing_from_the_shipped_rbac_shows_as_a_refusal(environment: Environment, s3: Any,
                                                                       tmp_path: Path) -> None:
    """The check every operator of these tests ends with, shown to catch what it is for: rbac.yaml without its
    `pods` rule, under other names, and the operator's log tells the refusal."""
    kube = environment.kube
    documents = [document for document in yaml.safe_load_all(RBAC.read_text()) if document["kind"] != "Namespace"]
    for document in documents:
        document["metadata"]["name"] = "modeldeploy-operator-no-pods"
        if document["kind"] == "ClusterRole":
            document["rules"] = [rule for rule in document["rules"] if rule["resources"] != ["pods"]]
        elif document["kind"] == "ClusterRoleBinding":
            document["roleRef"]["name"] = "modeldeploy-operator-no-pods"
            document["subjects"][0]["name"] = "modeldeploy-operator-no-pods"
    kube.ensure_namespace(OPERATOR_NAMESPACE)
    kube.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(documents), scoped=False)
    try:
        kubeconfig = token_kubeconfig(kube, tmp_path / "kubeconfig", OPERATOR_NAMESPACE, "modeldeploy-operator-no-pods")
        operator = Operator(kubeconfig, tmp_path / "operator.log", None, MODELDEPLOY_S3_ENDPOINT=environment.s3_endpoint)
        operator.start()
        try:
            refused = wait_for(lambda: refusals(operator.log), 60, interval=0.5, what="a refusal in the log")
        finally:
            operator.stop()
    finally:
        kube.kubectl("delete", "-f", "-", input=yaml.safe_dump_all(documents), scoped=False)
    assert all('cannot list resource \\"pods\\"' in line or "watching pods" in line for line in refused), refused
