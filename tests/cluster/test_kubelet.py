"""The process kubelet under the real control plane: the real Job controller, scheduler and garbage collector
act on the pods it runs, and what the operator's Jobs need reaches the process."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from cluster.control_plane import (
    ControlPlane,
    Node,
    wait_for,
)
from cluster.kubelet import Kubelet, expand

Obj = dict[str, Any]
PY = os.path.basename(sys.executable)  # found through PATH: the kubelet puts the venv's bin first


def _job(name: str, script: str, *, backoff_limit: int = 0, env: list[Obj] | None = None,
         pod: Obj | None = None, **spec: Any) -> Obj:
    container: Obj = {"name": "main", "image": "modeldeploy/test:none", "command": [PY, "-c", script]}
    if env:
        container["env"] = env
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"backoffLimit": backoff_limit, **spec,
                 "template": {"spec": {"restartPolicy": "Never", "containers": [container], **(pod or {})}}},
    }


def _create(cp: ControlPlane, namespace: str, job: Obj) -> Obj:
    return cp.api.create(f"/apis/batch/v1/namespaces/{namespace}/jobs", job)


def _get_job(cp: ControlPlane, namespace: str, name: str) -> Obj:
    return cp.api.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}")


def _condition(obj: Obj, kind: str) -> Obj | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or () if c["type"] == kind
                 and c["status"] == "True"), None)


def _finished(cp: ControlPlane, namespace: str, name: str, timeout: float = 90) -> Obj:
    """Waits for the Job's Complete or Failed condition; returns the Job."""
    def done() -> Obj | None:
        job = _get_job(cp, namespace, name)
        return job if _condition(job, "Complete") or _condition(job, "Failed") else None
    return wait_for(f"Job {name} to finish", done, timeout=timeout)


def _pods(cp: ControlPlane, namespace: str, job: str) -> list[Obj]:
    return cp.api.get(f"/api/v1/namespaces/{namespace}/pods",
                      query={"labelSelector": f"batch.kubernetes.io/job-name={job}"})["items"]


def _running_pod(cp: ControlPlane, namespace: str, job: str, timeout: float = 60) -> Obj:
    def running() -> Obj | None:
        return next((p for p in _pods(cp, namespace, job) if p["status"].get("phase") == "Running"), None)
    return wait_for(f"a Running pod of Job {job}", running, timeout=timeout)


def _pid_of(kubelet: Kubelet, namespace: str, pod: str) -> int:
    return wait_for(f"the process of {pod}", lambda: (kubelet.running_pids().get(f"{namespace}/{pod}") or [0])[0],
                    timeout=30)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_expand_is_kubernetes_expansion() -> None:
    env = {"A": "a", "EMPTY": ""}.get
    assert expand("$(A)-$(B)-$$(A)-$$-$(EMPTY)x-$(A", env) == "a-$(B)-$(A)-$-x-$(A"
    assert expand("cost $5 $", env) == "cost $5 $"


def test_job_runs_to_completion(control_plane: ControlPlane, kubelet: Kubelet, cluster_nodes: dict[str, Node],
                                namespace: str) -> None:
    script = "import os, sys; print('hello from', os.getcwd(), sys.argv[1:]); print(os.environ['PATH'])"
    job = _job("hello", script)
    job["spec"]["template"]["spec"]["containers"][0]["args"] = ["$(GREETING)", "$$(GREETING)"]
    job["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "GREETING", "value": "hi"}]
    _create(control_plane, namespace, job)
    finished = _finished(control_plane, namespace, "hello")
    assert _condition(finished, "Complete"), finished["status"]
    assert finished["status"]["succeeded"] == 1

    pod = wait_for("the pod's tracking finalizer removed by the Job controller",
                   lambda: next((p for p in _pods(control_plane, namespace, "hello")
                                 if not p["metadata"].get("finalizers")), None), timeout=30)
    assert pod["spec"]["nodeName"] == cluster_nodes["cpu"].name
    status = pod["status"]
    assert status["phase"] == "Succeeded"
    assert status["hostIP"] == status["podIP"] == "127.0.0.1"
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0 and terminated["reason"] == "Completed"
    assert terminated["startedAt"] <= terminated["finishedAt"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["PodScheduled"]["status"] == "True"  # the scheduler's, kept
    assert conditions["Initialized"]["status"] == "True"
    assert conditions["Ready"]["status"] == "False" and conditions["Ready"]["reason"] == "PodCompleted"

    output = kubelet.job_logs(namespace, "hello")
    assert f"hello from {kubelet.pods_dir / pod['metadata']['uid']} ['hi', '$(GREETING)']" in output
    assert output.splitlines()[1].split(os.pathsep)[0] == os.path.dirname(sys.executable)


def test_pod_is_running_while_its_process_runs(control_plane: ControlPlane, kubelet: Kubelet,
                                               namespace: str) -> None:
    _create(control_plane, namespace, _job("sleeper", "import time; time.sleep(600)"))
    pod = _running_pod(control_plane, namespace, "sleeper")
    status = pod["status"]
    state = status["containerStatuses"][0]
    assert state["state"]["running"]["startedAt"]
    assert state["ready"] is True and state["started"] is True
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {"PodScheduled": "True", "Initialized": "True", "PodReadyToStartContainers": "True",
                          "ContainersReady": "True", "Ready": "True"}
    assert _alive(_pid_of(kubelet, namespace, pod["metadata"]["name"]))
