"""The operator's scenarios, written once against any Kubernetes cluster.

tests/cluster/test_operator.py runs them against the local control plane (kube-apiserver, etcd,
the controller manager and the scheduler built from source, with a process kubelet) and moto's S3
server; with MODELDEPLOY_E2E_CLUSTER=1 (tests/e2e_cluster/) against the cluster of KUBECONFIG.
Each scenario takes the cluster (an object with kubectl/get/list and the namespace the
deployments go to, like cluster.operator_env.Kube), the running operator (start/kill/metrics)
and a boto3 S3 client for the artifact buckets; they run in this order, on one cluster.
"""

from __future__ import annotations

import copy
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import yaml

MODELDEPLOY = Path(sys.executable).with_name("modeldeploy")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
QUICKSTART = EXAMPLES / "cluster" / "quickstart.yaml"
READY_SECONDS = 420
T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.2, what: str = "") -> T:
    """Poll until `condition()` returns something truthy, and return it. Events are waited for too: the operator
    posts them in the background, so one may land after the status that reports the same change."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)
    return result


class Cluster(Protocol):
    namespace: str

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]: ...

    def get(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None: ...

    def list(self, resource: str, namespace: str | None = None, label_selector: str = "") -> list[dict[str, Any]]: ...


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Operator:
    """`modeldeploy operator` in a subprocess, as the user of `kubeconfig`."""

    def __init__(self, kubeconfig: Path, log: Path, namespace: str | None, **settings: str):
        """Watches `namespace`, or every namespace for None; `settings` are MODELDEPLOY_* variables, e.g.
        MODELDEPLOY_S3_ENDPOINT."""
        self.scope = ["--namespace", namespace] if namespace else ["--all-namespaces"]
        self.metrics_port = free_port()
        self.environment = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "MODELDEPLOY_METRICS_PORT": str(self.metrics_port),
            "MODELDEPLOY_RESYNC_SECONDS": "3",
            "MODELDEPLOY_ALLOW_PYTHON_ARCHITECTURES": "true",  # the quickstart's model is code of its own
            **settings,
        }
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        liveness = f"http://127.0.0.1:{free_port()}/healthz"
        with self.log.open("ab") as handle:
            self.process = subprocess.Popen(
                [str(MODELDEPLOY), "operator", *self.scope, "--liveness", liveness],
                stdout=handle, stderr=subprocess.STDOUT, env=self.environment,
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def metrics(self) -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()


def _gauge(metrics: str, series: str) -> float | None:
    for line in metrics.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return None


def deployment(server: Cluster, name: str) -> dict[str, Any]:
    found = server.get("modeldeployments.modeldeploy.io", server.namespace, name)
    assert found is not None
    return found


def condition(body: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in (body.get("status") or {}).get("conditions") or [] if c["type"] == kind), {})


def apply(server: Cluster, document: dict[str, Any]) -> None:
    server.kubectl("apply", "-f", "-", input=yaml.safe_dump(document))


def jobs_of(server: Cluster, name: str) -> list[dict[str, Any]]:
    return server.list("jobs.batch", server.namespace, f"modeldeploy.io/deployment={name}")


def ready(server: Cluster, name: str, generation: int = 1) -> dict[str, Any] | None:
    body = deployment(server, name)
    status = body.get("status") or {}
    done = condition(body, "Ready").get("status") == "True" and status.get("observedGeneration") == generation
    return body if done else None


def quickstart(**changes: Any) -> dict[str, Any]:
    document = yaml.safe_load(QUICKSTART.read_text())
    for path, value in changes.items():
        node = document
        *parents, last = path.split(".")
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[last] = value
    return document


def a_spec_the_cluster_cannot_run_stalls_with_invalid_spec(server: Cluster, operator: Operator, s3: Any) -> None:
    apply(server, quickstart(**{"metadata.name": "local-paths", "spec.source.weights": "digits_cnn.pt"}))
    body = wait_for(lambda: (b := deployment(server, "local-paths")) and condition(b, "Stalled") and b, 30,
                    what="a Stalled condition")
    stalled = condition(body, "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "InvalidSpec")
    assert "spec.source.weights: digits_cnn.pt is not reachable from Jobs" in stalled["message"]
    assert body["status"]["phase"] == "Failed" and condition(body, "Ready")["status"] == "False"
    assert jobs_of(server, "local-paths") == []
    server.kubectl("delete", "mdep", "local-paths", "--wait=false")


def a_spec_the_policy_refuses_stalls_with_policy_denied(server: Cluster, operator: Operator, s3: Any) -> None:
    targets = quickstart()["spec"]["targets"]
    targets[1]["placement"] = {"tolerations": [{"operator": "Exists"}]}  # onto every tainted node
    apply(server, quickstart(**{"metadata.name": "tolerates-all", "spec.targets": targets}))
    body = wait_for(lambda: (b := deployment(server, "tolerates-all")) and condition(b, "Stalled") and b, 30,
                    what="a Stalled condition")
    stalled = condition(body, "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "PolicyDenied")
    assert "spec.targets[1].placement.tolerations" in stalled["message"]
    assert jobs_of(server, "tolerates-all") == []
    server.kubectl("delete", "mdep", "tolerates-all", "--wait=false")


def a_store_that_cannot_be_used_stalls_with_the_reason_until_it_can(server: Cluster, operator: Operator, s3: Any
                                                                      ) -> None:
    apply(server, quickstart(**{"metadata.name": "no-secret", "spec.artifacts.secretRef": {"name": "not-yet"}}))
    apply(server, quickstart(**{"metadata.name": "no-bucket", "spec.artifacts.uri": "s3://no-such-bucket/x"}))

    def stalled_on_the_store(name: str) -> dict[str, Any] | None:
        body = deployment(server, name)
        return body if condition(body, "Stalled").get("reason") == "StoreUnavailable" else None

    no_secret = condition(wait_for(lambda: stalled_on_the_store("no-secret"), 30, what="Stalled"), "Stalled")
    assert f"the Secret {server.namespace}/not-yet with its credentials cannot be read (404" in no_secret["message"]
    no_bucket = condition(wait_for(lambda: stalled_on_the_store("no-bucket"), 60, what="Stalled"), "Stalled")
    assert no_bucket["message"].startswith("s3://no-such-bucket/x: the server answered 404 NoSuchBucket")
    wait_for(lambda: any(event.get("reason") == "StoreUnavailable" and event["involvedObject"]["name"] == "no-secret"
                         for event in server.list("events", server.namespace)), 30, what="the StoreUnavailable Event")
    assert jobs_of(server, "no-secret") == [] and jobs_of(server, "no-bucket") == []

    credentials = server.get("secrets", server.namespace, "s3-credentials")
    assert credentials is not None
    apply(server, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "not-yet"},
                   "data": credentials["data"]})  # fixed: the next pass, within the backoff, uses the store
    wait_for(lambda: jobs_of(server, "no-secret"), 120, what="Jobs once the Secret exists")
    assert condition(deployment(server, "no-secret"), "Stalled")["status"] == "False"
    server.kubectl("delete", "mdep", "no-secret", "no-bucket", "--wait=false")


def the_quickstart_reaches_ready_with_results_in_status_and_the_report_in_s3(server: Cluster, operator: Operator, s3: Any) -> None:
    server.kubectl("apply", "-f", str(QUICKSTART))
    body = wait_for(lambda: ready(server, "quickstart"), READY_SECONDS, interval=1, what="quickstart Ready")
    status = body["status"]
    assert status["phase"] == "Succeeded" and status["targets"] == "2/2"
    assert len(status["results"]) == 12 and {cell["gate"] for cell in status["results"]} == {"Passed"}
    assert all(cell["throughput"] > 0 and cell["sha256"] for cell in status["results"])
    assert {best["target"] for best in status["best"]} == {"openvino", "onnxruntime"}
    assert {c["type"]: c["status"] for c in status["conditions"]} == {"Ready": "True", "Reconciling": "False",
                                                                     "Stalled": "False"}
    report = status["reportUri"]
    assert report.startswith("s3://modeldeploy-artifacts/quickstart/tasks/") and report.endswith("report.html")
    assert s3.head_object(Bucket="modeldeploy-artifacts", Key=report.split("/", 3)[3])["ContentLength"] > 1000
    jobs = jobs_of(server, "quickstart")
    assert len(jobs) == len({job["metadata"]["name"] for job in jobs}) == len(status["stages"])
    table = server.kubectl("get", "mdep", "quickstart").stdout
    assert "Succeeded" in table and "2/2" in table and "openvino: " in table and "onnxruntime: " in table
    wait_for(lambda: {"StageStarted", "StageSucceeded", "Succeeded"} <= {
        event.get("reason") for event in server.list("events", server.namespace)}, 30, what="the deployment's Events")
    metrics = operator.metrics()
    assert 'modeldeploy_jobs_created_total{stage="evaluate"} 13.0' in metrics
    # the operator watches every namespace, where other tests' deployments may still be, Succeeded too
    wait_for(lambda: _gauge(operator.metrics(), 'modeldeploy_deployments{phase="Succeeded"}') == sum(
        found.get("status", {}).get("phase") == "Succeeded" for found in server.list("modeldeployments.modeldeploy.io")
    ), 30, what="the Succeeded gauge to count the Succeeded deployments")


def adding_a_batch_size_runs_only_the_new_cells(server: Cluster, operator: Operator, s3: Any) -> None:
    before = {job["metadata"]["name"] for job in jobs_of(server, "quickstart")}
    apply(server, quickstart(**{"spec.targets.0.batchSizes": [1, 8, 16, 32]}))
    body = wait_for(lambda: ready(server, "quickstart", generation=2), READY_SECONDS, interval=1,
                    what="quickstart Ready at generation 2")
    new = {job["metadata"]["name"]: job for job in jobs_of(server, "quickstart")}
    added = sorted(job["metadata"]["labels"]["modeldeploy.io/stage"] for name, job in new.items() if name not in before)
    assert added == ["compile", "compile", "evaluate", "evaluate", "report"]
    assert len(body["status"]["results"]) == 14


def a_failing_stage_stalls_while_the_other_cells_finish(server: Cluster, operator: Operator, s3: Any) -> None:
    document = quickstart(**{
        "metadata.name": "small-data",
        "spec.dataset.limit": 6,
        "spec.calibration.samples": 4,
        "spec.targets": [{"name": "ort", "backend": "onnxruntime", "precisions": ["fp32"], "batchSizes": [4, 8]}],
    })
    apply(server, document)

    def settled() -> dict[str, Any] | None:
        body = deployment(server, "small-data")
        return body if (body.get("status") or {}).get("phase") == "Failed" else None

    body = wait_for(settled, READY_SECONDS, interval=1, what="small-data to settle")
    stalled = condition(body, "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "StageFailed"
    assert stalled["message"].startswith("evaluate ort/fp32/bs8: DatasetTooSmall: the prepared dataset")
    stages = {stage["name"]: stage["phase"] for stage in body["status"]["stages"]}
    assert stages["evaluate ort/fp32/bs4"] == "Succeeded" and stages["report"] == "Skipped"
    assert [(cell["batchSize"], cell["gate"]) for cell in body["status"]["results"]] == [(4, "NotEvaluated")]
    failed = [job for job in jobs_of(server, "small-data")
              if condition(job, "Failed").get("status") == "True"]
    assert [job["metadata"]["labels"]["modeldeploy.io/stage"] for job in failed] == ["evaluate"]
    assert condition(failed[0], "Failed")["reason"] == "PodFailurePolicy"


def a_restarted_operator_resumes_without_duplicate_jobs(server: Cluster, operator: Operator, s3: Any) -> None:
    document = quickstart(**{"metadata.name": "restarted", "spec.performance.iterations": 150})
    apply(server, document)
    wait_for(lambda: len(jobs_of(server, "restarted")) >= 1, 60, what="a first Job")
    operator.kill()
    operator.start()
    body = wait_for(lambda: ready(server, "restarted"), READY_SECONDS, interval=1, what="restarted Ready")
    jobs = jobs_of(server, "restarted")
    names = [job["metadata"]["name"] for job in jobs]
    assert len(names) == len(set(names))
    # the evaluations and the report are new work; everything else was done for the quickstart already
    assert sorted({job["metadata"]["labels"]["modeldeploy.io/stage"] for job in jobs}) == ["evaluate", "report"]
    assert len(body["status"]["results"]) == 12


def deleting_the_deployment_removes_its_jobs_and_never_hangs(server: Cluster, operator: Operator, s3: Any) -> None:
    assert jobs_of(server, "quickstart")
    server.kubectl("delete", "mdep", "quickstart", "--timeout=60s")
    assert server.get("modeldeployments.modeldeploy.io", server.namespace, "quickstart") is None
    wait_for(lambda: not jobs_of(server, "quickstart"), 30, what="the Jobs to be collected")


def on_delete_delete_removes_the_artifacts(server: Cluster, operator: Operator, s3: Any) -> None:
    body = deployment(server, "small-data")
    assert body["spec"]["artifacts"].get("onDelete", "Retain") == "Retain"
    apply(server, quickstart(**{
        "metadata.name": "small-data",
        "spec.dataset.limit": 6,
        "spec.calibration.samples": 4,
        "spec.targets": [{"name": "ort", "backend": "onnxruntime", "precisions": ["fp32"], "batchSizes": [4, 8]}],
        "spec.artifacts.onDelete": "Delete",
    }))
    keys = {stage["key"] for stage in body["status"]["stages"] if stage["phase"] == "Succeeded"}
    # "restarted" plans its convert, and its results are in the same store: they stay
    sharing = {stage["key"] for stage in deployment(server, "restarted")["status"]["stages"]}

    def stored(key: str) -> bool:
        listing = s3.list_objects_v2(Bucket="modeldeploy-artifacts", Prefix=f"quickstart/tasks/{key}/")
        return listing.get("KeyCount", 0) > 0

    assert keys - sharing and keys & sharing and all(stored(key) for key in keys)
    server.kubectl("delete", "mdep", "small-data", "--timeout=60s")
    assert not any(stored(key) for key in keys - sharing)
    assert all(stored(key) for key in sharing)
    assert ready(server, "restarted")


def the_same_document_twice_changes_nothing(server: Cluster, operator: Operator, s3: Any) -> None:
    body = copy.deepcopy(deployment(server, "restarted"))
    jobs = len(jobs_of(server, "restarted"))
    apply(server, quickstart(**{"metadata.name": "restarted", "spec.performance.iterations": 150}))
    assert deployment(server, "restarted")["metadata"]["generation"] == body["metadata"]["generation"]
    assert len(jobs_of(server, "restarted")) == jobs


SCENARIOS = [
    a_spec_the_cluster_cannot_run_stalls_with_invalid_spec,
    a_spec_the_policy_refuses_stalls_with_policy_denied,
    a_store_that_cannot_be_used_stalls_with_the_reason_until_it_can,
    the_quickstart_reaches_ready_with_results_in_status_and_the_report_in_s3,
    adding_a_batch_size_runs_only_the_new_cells,
    a_failing_stage_stalls_while_the_other_cells_finish,
    a_restarted_operator_resumes_without_duplicate_jobs,
    deleting_the_deployment_removes_its_jobs_and_never_hangs,
    on_delete_delete_removes_the_artifacts,
    the_same_document_twice_changes_nothing,
]
