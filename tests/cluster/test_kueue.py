"""The operator with Kueue's own controller manager (built from the Go module proxy by kueue.sh) on a control plane
of its own whose API server keeps an audit log of Job writes.

A ClusterQueue with quota for one stage Job at a time (the Jobs request cpu 1 and memory 2Gi) and a LocalQueue;
the operator runs with MODELDEPLOY_KUEUE_QUEUE naming it. The quickstart-sized deployment of cluster/chaos.py (nine
tasks, several ready at once) must: have every Job created suspended with the queue label; show a waiting stage as
queued in that LocalQueue; have Kueue admit the Jobs one at a time; become Ready; and at no point have the operator
write to a Job after creating it (so it never set spec.suspend to false: only Kueue did).

A deployment in a LocalQueue whose ClusterQueue has no quota waits there for good: the object the operator writes
then is the GitOps testdata `queued` (cluster/gitops_testdata.py), Reconciling with the reason Queued, Suspended for
Argo CD's health check and InProgress for kstatus.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cluster.chaos import ARTIFACTS, SOURCES, deployment, start_moto, stop_process
from cluster.control_plane import ApiError, ControlPlane, Node, wait_for
from cluster.gitops_testdata import (
    QUEUED_IN_KUEUE,
    as_captured,
    check_with_go,
    compare_with_committed,
    observed,
    reason,
)
from cluster.kubelet import Kubelet
from cluster.kueue import USER as KUEUE_USER
from cluster.kueue import Kueue, audit_events
from cluster.operator_env import EXAMPLES, OPERATOR_NAMESPACE, SERVICE_ACCOUNT, Environment, Kube, running_operator

QUEUE = "conversions"
QUOTA = {"cpu": "1", "memory": "2Gi"}  # the operator's default requests of one stage Job
NO_QUOTA = {"cpu": "0", "memory": "0"}
LABEL_QUEUE = "kueue.x-k8s.io/queue-name"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{SERVICE_ACCOUNT}"
READY_SECONDS = 900
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Request
  verbs: [create, update, patch]
  resources: [{group: batch, resources: [jobs]}]
- level: None
"""


@dataclass
class Cluster:
    cp: ControlPlane
    kueue: Kueue
    environment: Environment
    audit_log: Path
    scratch: Path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    scratch = tmp_path_factory.mktemp("kueue")
    audit_log = scratch / "audit.log"
    policy = scratch / "audit-policy.yaml"
    policy.write_text(AUDIT_POLICY)
    with contextlib.ExitStack() as stack:
        moto, moto_port = start_moto()
        stack.callback(stop_process, moto)
        cp = stack.enter_context(ControlPlane(extra_args={"kube-apiserver": [
            f"--audit-policy-file={policy}", f"--audit-log-path={audit_log}"]}))
        node = Node.cpu(cp.api, "cpu-1")
        node.register()
        stack.callback(node.stop)
        kubelet = Kubelet(cp, [node.name], scratch / "kubelet")
        kubelet.start()
        stack.callback(kubelet.stop)
        wait_for(f"node {node.name} Ready and untainted", node.is_ready, timeout=180)
        kueue = stack.enter_context(Kueue(cp, scratch / "kueue"))
        kube = Kube(cp.binary("kubectl"), cp.kubeconfig, "default")
        kube.install_crd()
        environment = Environment(kube, f"http://127.0.0.1:{moto_port}", local=True, control_plane=cp)
        s3 = environment.create_buckets(SOURCES, ARTIFACTS)
        for name in ("digits_cnn.py", "digits_cnn.pt"):
            s3.upload_file(str(EXAMPLES / name), SOURCES, f"quickstart/{name}")
        yield Cluster(cp, kueue, environment, audit_log, scratch)


@dataclass
class JobTimeline:
    """The namespace's Jobs as a watch tells them, in the API server's order: when each was admitted (spec.suspend
    false) and when it stopped holding quota (its pod succeeded, or it finished or went)."""

    cp: ControlPlane
    namespace: str
    created: dict[str, dict[str, Any]] = field(default_factory=dict)  # each Job as first seen
    order: list[tuple[str, str]] = field(default_factory=list)  # ("admitted" | "done", Job name)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._admitted: set[str] = set()
        self._done: set[str] = set()
        self._stop = threading.Event()
        self._watch: Any = None
        path = f"/apis/batch/v1/namespaces/{self.namespace}/jobs"
        version = self.cp.api.get(path)["metadata"]["resourceVersion"]
        self._thread = threading.Thread(target=self._run, args=(path, version), name="kueue-jobs", daemon=True)
        self._thread.start()

    def _run(self, path: str, version: str) -> None:
        while not self._stop.is_set():
            self._watch = self.cp.api.watch(path, {"resourceVersion": version, "allowWatchBookmarks": "true",
                                                   "timeoutSeconds": "300"})
            try:
                for event in self._watch:
                    job = event["object"]
                    version = job["metadata"]["resourceVersion"]
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        self._see(event["type"], job)
            except (OSError, ApiError) as error:
                if not self._stop.is_set():
                    self.errors.append(str(error))
                    time.sleep(1)

    def _see(self, kind: str, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        self.created.setdefault(name, job)
        status = job.get("status") or {}
        finished = {c.get("type") for c in status.get("conditions") or [] if c.get("status") == "True"} & {
            "Complete", "Failed", "SuccessCriteriaMet", "FailureTarget"}
        if name not in self._admitted and (job.get("spec") or {}).get("suspend") is False:
            self._admitted.add(name)
            self.order.append(("admitted", name))
        if name in self._admitted and name not in self._done and (
                kind == "DELETED" or finished or int(status.get("succeeded") or 0) > 0):
            self._done.add(name)
            self.order.append(("done", name))

    def most_admitted_at_once(self) -> int:
        holding: set[str] = set()
        most = 0
        for what, name in list(self.order):
            if what == "admitted":
                holding.add(name)
                most = max(most, len(holding))
            else:
                holding.discard(name)
        return most

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.close()
        self._thread.join(timeout=10)


def test_kueue_admits_the_operators_suspended_jobs_one_at_a_time_and_the_deployment_gets_ready(
        cluster: Cluster) -> None:
    operator_dir = cluster.scratch / "operator"
    operator_dir.mkdir()
    with running_operator(cluster.environment, operator_dir, every_namespace=True,
                          MODELDEPLOY_KUEUE_QUEUE=QUEUE) as (kube, _operator):
        namespace = kube.namespace
        cluster.kueue.queue(namespace, QUEUE, QUOTA)
        timeline = JobTimeline(cluster.cp, namespace)
        try:
            body = deployment(0, f"s3://{ARTIFACTS}/kueue")
            name = body["metadata"]["name"]
            cluster.cp.api.create(f"/apis/modeldeploy.io/v1alpha1/namespaces/{namespace}/modeldeployments", body)
            queued_messages: set[str] = set()
            progress: set[str] = set()

            def ready() -> bool:
                status = kube.get("mdep", namespace, name).get("status") or {}
                for stage in status.get("stages") or []:
                    if stage.get("phase") == "Pending" and (stage.get("message") or "").startswith("queued"):
                        queued_messages.add(stage["message"])
                conditions = {c["type"]: c for c in status.get("conditions") or []}
                progress.add((conditions.get("Reconciling") or {}).get("message", ""))
                stalled = conditions.get("Stalled") or {}
                assert stalled.get("status") != "True", f"the deployment stalled: {stalled.get('message')}"
                return (conditions.get("Ready") or {}).get("status") == "True"

            wait_for(f"{name} Ready", ready, timeout=READY_SECONDS, interval=0.5)
        finally:
            timeline.stop()
        workloads = cluster.kueue.workloads(namespace)

    # Every Job was created suspended, in the queue.
    jobs = timeline.created
    assert len(jobs) == 9, sorted(jobs)
    for job in jobs.values():
        assert job["spec"]["suspend"] is True  # as first seen: the watch began before the deployment
        assert job["metadata"]["labels"][LABEL_QUEUE] == QUEUE
    # The status told a stage as queued in the LocalQueue while it waited.
    assert queued_messages, "no stage was ever shown queued"
    assert all(m.startswith(f"queued in Kueue LocalQueue {namespace}/{QUEUE}") for m in queued_messages)
    assert any(f"queued in Kueue LocalQueue {namespace}/{QUEUE}" in m for m in progress)
    # Kueue admitted every Job, never two holding the quota at once.
    assert {name for what, name in timeline.order if what == "admitted"} == set(jobs)
    assert timeline.most_admitted_at_once() == 1, timeline.order
    assert not timeline.errors, timeline.errors
    admitted = {w["metadata"]["name"] for w in workloads
                if any(c["type"] == "Admitted" for c in (w.get("status") or {}).get("conditions") or [])}
    assert len(admitted) == len(jobs), [w["metadata"]["name"] for w in workloads]

    # From the audit log: the operator only ever created Jobs, each suspended in the queue; what set suspend to
    # false was Kueue, once for every Job.
    writes = [e for e in audit_events(cluster.audit_log) if e.get("stage") == "ResponseComplete"
              and (e.get("objectRef") or {}).get("namespace") == namespace
              and (e.get("responseStatus") or {}).get("code", 0) < 300]
    by_operator = [e for e in writes if e["user"]["username"] == OPERATOR_USER]
    assert {e["verb"] for e in by_operator} == {"create"}
    assert len(by_operator) == len(jobs)
    for event in by_operator:
        assert event["requestObject"]["spec"]["suspend"] is True
        assert event["requestObject"]["metadata"]["labels"][LABEL_QUEUE] == QUEUE
    unsuspended = [e for e in writes if e["verb"] in ("update", "patch")
                   and ((e.get("requestObject") or {}).get("spec") or {}).get("suspend") is False]
    assert {e["user"]["username"] for e in unsuspended} == {KUEUE_USER}
    assert {e["objectRef"]["name"] for e in unsuspended} == set(jobs)


def test_a_deployment_whose_jobs_all_wait_in_kueue_is_queued_and_suspended_for_argo_cd(
        cluster: Cluster, tmp_path: Path) -> None:
    with running_operator(cluster.environment, tmp_path, every_namespace=True,
                          MODELDEPLOY_KUEUE_QUEUE=QUEUE) as (kube, _operator):
        namespace = kube.namespace
        cluster.kueue.queue(namespace, QUEUE, NO_QUOTA)
        body = deployment(1, f"s3://{ARTIFACTS}/kueue-queued")
        body["metadata"]["name"] = "queued"
        cluster.cp.api.create(f"/apis/modeldeploy.io/v1alpha1/namespaces/{namespace}/modeldeployments", body)

        def queued() -> dict[str, Any] | None:
            found = kube.get("mdep", namespace, "queued")
            return found if found and observed(found) and reason(found, "Reconciling") == "Queued" else None

        captured = as_captured(wait_for("the deployment queued", queued, timeout=READY_SECONDS, interval=0.5))

    conditions = {c["type"]: c for c in captured["status"]["conditions"]}
    assert conditions["Reconciling"]["status"] == "True" and conditions["Stalled"]["status"] == "False"
    assert f"convert {QUEUED_IN_KUEUE}LocalQueue {namespace}/{QUEUE}" in conditions["Reconciling"]["message"]
    waiting = [stage for stage in captured["status"]["stages"] if stage.get("job")]
    assert waiting and all(stage["phase"] == "Pending" and stage["message"].startswith(QUEUED_IN_KUEUE)
                           for stage in waiting), waiting
    compare_with_committed({"queued": captured})
    check_with_go({"queued": captured}, tmp_path / "gitops")
