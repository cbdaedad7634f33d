"""The process kubelet under the real control plane: the real Job controller, scheduler and garbage collector
act on the pods it runs, and what the operator's Jobs need reaches the process."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cluster.control_plane import (
    ASCEND310,
    ASCEND310P,
    ASCEND_CHIP_LABEL,
    DEVICES_PER_NODE,
    MLU370,
    MLU_TAINT,
    ApiError,
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


def _pod(name: str, script: str | None = None, *, command: list[str] | None = None, **spec: Any) -> Obj:
    container: Obj = {"name": "main", "image": "modeldeploy/test:none",
                      "command": command if command is not None else [PY, "-c", script or ""]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "containers": [container], **spec}}


def _get_pod(cp: ControlPlane, namespace: str, name: str) -> Obj | None:
    try:
        return cp.api.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
    except ApiError as error:
        if error.status == 404:
            return None
        raise


def _terminal_pod(cp: ControlPlane, namespace: str, name: str, timeout: float = 60) -> Obj:
    def terminal() -> Obj | None:
        pod = _get_pod(cp, namespace, name)
        return pod if pod and pod["status"].get("phase") in ("Succeeded", "Failed") else None
    return wait_for(f"pod {name} to end", terminal, timeout=timeout)


def test_environment_from_secret_configmap_and_fields(control_plane: ControlPlane, kubelet: Kubelet,
                                                      cluster_nodes: dict[str, Node], namespace: str) -> None:
    api = control_plane.api
    api.create(f"/api/v1/namespaces/{namespace}/secrets", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "store"},
        "data": {"AWS_ACCESS_KEY_ID": base64.b64encode(b"key-1").decode(),
                 "AWS_SECRET_ACCESS_KEY": base64.b64encode(b"s3cr3t").decode()}})
    api.create(f"/api/v1/namespaces/{namespace}/configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
        "data": {"region": "eu-1", "LEVEL": "debug"}})
    env = [
        {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "store", "key": "AWS_ACCESS_KEY_ID"}}},
        {"name": "AWS_SESSION_TOKEN", "valueFrom": {"secretKeyRef": {"name": "store", "key": "AWS_SESSION_TOKEN",
                                                                     "optional": True}}},
        {"name": "REGION", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "region"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "JOB", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}}},
        {"name": "MEMORY_MI", "valueFrom": {"resourceFieldRef": {"resource": "requests.memory", "divisor": "1Mi"}}},
        {"name": "WHERE", "value": "$(NODE)/$(POD)"},
    ]
    script = ("import json, os; keys = ['AWS_ACCESS_KEY_ID', 'AWS_SESSION_TOKEN', 'REGION', 'POD', 'NS', 'NODE', "
              "'IP', 'JOB', 'MEMORY_MI', 'WHERE', 'CFG_LEVEL', 'HOSTNAME']; "
              "print(json.dumps({k: os.environ.get(k) for k in keys}))")
    job = _job("env", script, env=env)
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["envFrom"] = [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}]
    container["resources"] = {"requests": {"memory": "64Mi", "cpu": "100m"}}
    _create(control_plane, namespace, job)
    assert _condition(_finished(control_plane, namespace, "env"), "Complete")
    [pod] = kubelet.pods_of_job(namespace, "env")
    got = json.loads(kubelet.logs(namespace, pod))
    assert got == {"AWS_ACCESS_KEY_ID": "key-1", "AWS_SESSION_TOKEN": None, "REGION": "eu-1", "POD": pod,
                   "NS": namespace, "NODE": cluster_nodes["cpu"].name, "IP": "127.0.0.1", "JOB": "env",
                   "MEMORY_MI": "64", "WHERE": f"{cluster_nodes['cpu'].name}/{pod}", "CFG_LEVEL": "debug",
                   "HOSTNAME": pod}
    # The process got the Secret's value; the pod's status and the container's log hold no other secret.
    assert "s3cr3t" not in kubelet.logs(namespace, pod)
    assert "s3cr3t" not in json.dumps(_get_pod(control_plane, namespace, pod))


def test_missing_secret_waits_in_create_container_config_error(control_plane: ControlPlane, kubelet: Kubelet,
                                                               namespace: str) -> None:
    """As a real kubelet: the pod stays Pending, its container waiting with CreateContainerConfigError, and
    starts once the Secret is there."""
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "late", "key": "token"}}}]
    _create(control_plane, namespace, _job("late", "import os; print('token', os.environ['TOKEN'])", env=env))

    def waiting() -> Obj | None:
        for pod in _pods(control_plane, namespace, "late"):
            for status in pod["status"].get("containerStatuses") or ():
                state = status["state"].get("waiting") or {}
                if state.get("reason") == "CreateContainerConfigError":
                    return pod | {"waiting": state}
        return None
    pod = wait_for("CreateContainerConfigError", waiting, timeout=60)
    assert pod["waiting"]["message"] == 'secret "late" not found'
    assert pod["status"]["phase"] == "Pending"
    assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "False"

    control_plane.api.create(f"/api/v1/namespaces/{namespace}/secrets", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "late"}, "stringData": {"other": "x"}})
    message = f"couldn't find key token in Secret {namespace}/late"
    wait_for("the missing key reported", lambda: (waiting() or {}).get("waiting", {}).get("message") == message,
             timeout=60)
    control_plane.api.merge_patch(f"/api/v1/namespaces/{namespace}/secrets/late", {"stringData": {"token": "t-1"}})
    assert _condition(_finished(control_plane, namespace, "late"), "Complete")
    assert "token t-1" in kubelet.job_logs(namespace, "late")


def test_exit_code_3_fails_the_job_through_pod_failure_policy(control_plane: ControlPlane, kubelet: Kubelet,
                                                              namespace: str) -> None:
    policy = {"rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [3]}},
    ]}
    _create(control_plane, namespace, _job("rejected", "import sys; print('bad input'); sys.exit(3)",
                                           backoff_limit=6, podFailurePolicy=policy))
    job = _finished(control_plane, namespace, "rejected")
    failed = _condition(job, "Failed")
    assert failed and failed["reason"] == "PodFailurePolicy", job["status"]
    assert "exit code 3" in failed["message"]
    assert job["status"]["failed"] == 1  # at once, despite backoffLimit 6
    [pod] = _pods(control_plane, namespace, "rejected")
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (pod["status"]["phase"], terminated["exitCode"], terminated["reason"]) == ("Failed", 3, "Error")


def test_transient_failure_is_retried_up_to_backoff_limit(control_plane: ControlPlane, kubelet: Kubelet,
                                                          namespace: str) -> None:
    _create(control_plane, namespace, _job("flaky", "import sys; print('transient'); sys.exit(1)", backoff_limit=2))
    job = _finished(control_plane, namespace, "flaky", timeout=180)  # the Job controller waits 10 s, then 20 s
    failed = _condition(job, "Failed")
    assert failed and failed["reason"] == "BackoffLimitExceeded", job["status"]
    assert job["status"]["failed"] == 3
    pods = _pods(control_plane, namespace, "flaky")
    assert len(pods) == 3 and all(p["status"]["phase"] == "Failed" for p in pods)
    assert len(kubelet.pods_of_job(namespace, "flaky")) == 3
    assert kubelet.job_logs(namespace, "flaky").count("transient") == 3


def test_job_active_deadline_kills_the_process(control_plane: ControlPlane, kubelet: Kubelet,
                                               namespace: str) -> None:
    _create(control_plane, namespace, _job("slow", "import time; print('started', flush=True); time.sleep(600)",
                                           activeDeadlineSeconds=3))
    pod = _running_pod(control_plane, namespace, "slow")
    pid = _pid_of(kubelet, namespace, pod["metadata"]["name"])
    job = _finished(control_plane, namespace, "slow")
    failed = _condition(job, "Failed")
    assert failed and failed["reason"] == "DeadlineExceeded", job["status"]
    wait_for("the process killed", lambda: not _alive(pid), timeout=30)
    # The Job controller deleted the pod; the kubelet stopped it, wrote its status and removed it.
    wait_for("the pod removed", lambda: not _pods(control_plane, namespace, "slow"), timeout=60)


def test_pod_active_deadline(control_plane: ControlPlane, kubelet: Kubelet, namespace: str) -> None:
    control_plane.api.create(f"/api/v1/namespaces/{namespace}/pods",
                             _pod("bounded", "import time; time.sleep(600)", activeDeadlineSeconds=2))
    pid = _pid_of(kubelet, namespace, "bounded")
    pod = _terminal_pod(control_plane, namespace, "bounded")
    assert (pod["status"]["phase"], pod["status"]["reason"]) == ("Failed", "DeadlineExceeded")
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 128 + signal.SIGTERM
    assert not _alive(pid)


def test_ttl_after_finished_deletes_the_job(control_plane: ControlPlane, kubelet: Kubelet, namespace: str) -> None:
    _create(control_plane, namespace, _job("short-lived", "print('done')", ttlSecondsAfterFinished=1))
    wait_for("the finished Job deleted by the TTL controller",
             lambda: not any(j["metadata"]["name"] == "short-lived" for j in control_plane.api.get(
                 f"/apis/batch/v1/namespaces/{namespace}/jobs")["items"]), timeout=90)
    wait_for("its pod deleted by the garbage collector", lambda: not _pods(control_plane, namespace, "short-lived"),
             timeout=60)
    assert "done" in kubelet.job_logs(namespace, "short-lived")


def test_unknown_command_is_a_start_error(control_plane: ControlPlane, kubelet: Kubelet, namespace: str) -> None:
    control_plane.api.create(f"/api/v1/namespaces/{namespace}/pods",
                             _pod("nothing", command=["modeldeploy-no-such-entrypoint"]))
    pod = _terminal_pod(control_plane, namespace, "nothing")
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (pod["status"]["phase"], terminated["exitCode"], terminated["reason"]) == ("Failed", 128, "StartError")
    assert "executable file not found in $PATH" in terminated["message"]


def test_deleted_pod_gets_sigterm_then_sigkill(control_plane: ControlPlane, kubelet: Kubelet,
                                               namespace: str) -> None:
    script = ("import signal, time\n"
              "signal.signal(signal.SIGTERM, lambda *_: print('SIGTERM ignored', flush=True))\n"
              "print('ready', flush=True)\n"
              "while True: time.sleep(1)\n")
    control_plane.api.create(f"/api/v1/namespaces/{namespace}/pods",
                             _pod("stubborn", script, terminationGracePeriodSeconds=2))
    pid = _pid_of(kubelet, namespace, "stubborn")
    wait_for("the handler installed", lambda: "ready" in kubelet.logs(namespace, "stubborn"), timeout=30)
    started = time.monotonic()
    control_plane.api.delete(f"/api/v1/namespaces/{namespace}/pods/stubborn")
    wait_for("the pod removed by the kubelet", lambda: _get_pod(control_plane, namespace, "stubborn") is None,
             timeout=30)
    assert time.monotonic() - started >= 2
    assert not _alive(pid)
    assert "SIGTERM ignored" in kubelet.logs(namespace, "stubborn")


# --- scheduling onto the device nodes ---------------------------------------------------------------------

DEVICE_POD = {
    ASCEND310P: {"nodeSelector": {ASCEND_CHIP_LABEL: "310P3"},
                 "tolerations": [{"key": ASCEND310P, "operator": "Exists", "effect": "NoSchedule"}]},
    ASCEND310: {"nodeSelector": {ASCEND_CHIP_LABEL: "310"},
                "tolerations": [{"key": ASCEND310, "operator": "Exists", "effect": "NoSchedule"}]},
    MLU370: {"tolerations": [{"key": MLU_TAINT, "operator": "Exists", "effect": "NoSchedule"}]},
}
NODE_OF = {ASCEND310P: "ascend310p", ASCEND310: "ascend310", MLU370: "mlu370"}


def _device_job(name: str, resource: str | None, script: str, **spec: Any) -> Obj:
    job = _job(name, script, pod=dict(DEVICE_POD.get(resource or "", {})), **spec)
    if resource is not None:
        job["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {resource: "1"}}
    return job


@pytest.mark.parametrize("resource", [None, ASCEND310P, ASCEND310, MLU370])
def test_pods_are_scheduled_by_device(control_plane: ControlPlane, kubelet: Kubelet, cluster_nodes: dict[str, Node],
                                      namespace: str, resource: str | None) -> None:
    """A device pod lands on the node with its device; a CPU pod on the CPU node (the device nodes are tainted)."""
    env = [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
    _create(control_plane, namespace, _device_job("placed", resource, "import os; print('on', os.environ['NODE'])",
                                                  env=env))
    assert _condition(_finished(control_plane, namespace, "placed"), "Complete")
    node = cluster_nodes[NODE_OF.get(resource or "", "cpu")].name
    [pod] = _pods(control_plane, namespace, "placed")
    assert pod["spec"]["nodeName"] == node
    assert f"on {node}" in kubelet.job_logs(namespace, "placed")


def _devices_in_use(cp: ControlPlane, node: str, resource: str) -> int:
    pods = cp.api.get("/api/v1/pods", query={"fieldSelector": f"spec.nodeName={node}"})["items"]
    return sum(int(c.get("resources", {}).get("limits", {}).get(resource, 0))
               for p in pods if p["status"].get("phase") not in ("Succeeded", "Failed")
               for c in p["spec"]["containers"])


def test_no_free_device_leaves_the_pod_pending_until_one_is_freed(
        control_plane: ControlPlane, kubelet: Kubelet, cluster_nodes: dict[str, Node], namespace: str) -> None:
    """Every chip taken: the next device pod stays Pending, Unschedulable. Deleting the Job holding the chips
    (propagationPolicy Background) removes its pods through the garbage collector, the kubelet kills their
    processes, and the waiting pod is scheduled and runs."""
    node = cluster_nodes["ascend310p"].name
    wait_for("the 310P node's chips free of earlier tests' pods",
             lambda: _devices_in_use(control_plane, node, ASCEND310P) == 0, timeout=90)
    _create(control_plane, namespace, _device_job("holders", ASCEND310P, "import time; time.sleep(600)",
                                                  parallelism=DEVICES_PER_NODE, completions=DEVICES_PER_NODE))

    def all_running() -> list[Obj] | None:
        pods = [p for p in _pods(control_plane, namespace, "holders") if p["status"].get("phase") == "Running"]
        return pods if len(pods) == DEVICES_PER_NODE else None
    holders = wait_for("every chip taken", all_running, timeout=90)
    assert {p["spec"]["nodeName"] for p in holders} == {node}
    pids = [_pid_of(kubelet, namespace, p["metadata"]["name"]) for p in holders]

    _create(control_plane, namespace, _device_job("waiting", ASCEND310P, "print('got a chip')"))

    def unschedulable() -> str | None:
        for pod in _pods(control_plane, namespace, "waiting"):
            for c in pod["status"].get("conditions") or ():
                if c["type"] == "PodScheduled" and c["status"] == "False" and c.get("reason") == "Unschedulable":
                    return c.get("message", "")
        return None
    message = wait_for("the next pod reported Unschedulable", unschedulable, timeout=60)
    assert f"Insufficient {ASCEND310P}" in message
    [pending] = _pods(control_plane, namespace, "waiting")
    assert pending["status"]["phase"] == "Pending" and not pending["spec"].get("nodeName")

    control_plane.api.delete(f"/apis/batch/v1/namespaces/{namespace}/jobs/holders",
                             {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"})
    wait_for("the holders' pods deleted by the garbage collector",
             lambda: not _pods(control_plane, namespace, "holders"), timeout=90)
    assert not any(_alive(pid) for pid in pids)
    assert _condition(_finished(control_plane, namespace, "waiting"), "Complete")
    [placed] = _pods(control_plane, namespace, "waiting")
    assert placed["spec"]["nodeName"] == node
    assert "got a chip" in kubelet.job_logs(namespace, "waiting")


# --- the API server going away ------------------------------------------------------------------------

def test_api_server_restart_is_survived(control_plane: ControlPlane, kubelet: Kubelet, namespace: str) -> None:
    """A pod that ends while the API server is down gets its status once it is back, and pods created afterwards
    run. A write the kubelet's watches did not see comes first, so the restarted API server's watch cache starts
    past the versions they hold: each resumption gets 410 Gone and the kubelet lists that node's pods again."""
    _create(control_plane, namespace, _job("across", "import time; time.sleep(3); print('finished')"))
    _running_pod(control_plane, namespace, "across")
    relists = kubelet.relists
    control_plane.api.create(f"/api/v1/namespaces/{namespace}/configmaps",
                             {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a-later-revision"}})
    control_plane.restart("kube-apiserver")
    assert _condition(_finished(control_plane, namespace, "across"), "Complete")
    assert "finished" in kubelet.job_logs(namespace, "across")
    _create(control_plane, namespace, _job("after", "print('after the restart')"))
    assert _condition(_finished(control_plane, namespace, "after"), "Complete")
    assert "after the restart" in kubelet.job_logs(namespace, "after")
    assert kubelet.relists >= relists + len(kubelet.nodes)


_ONCE = ("import pathlib, sys, time\n"
         "marker = pathlib.Path(sys.argv[1])\n"
         "if marker.exists():\n"
         "    print('second run'); sys.exit(0)\n"
         "marker.touch(); print('first run', flush=True)\n")


def test_eviction_is_a_disruption_the_job_ignores(control_plane: ControlPlane, kubelet: Kubelet, namespace: str,
                                                  tmp_path: Path) -> None:
    """The kubelet's eviction under node pressure: the pod Failed, reason Evicted, with DisruptionTarget, which the
    operator's podFailurePolicy Ignore rule keeps from counting against backoffLimit 0: the Job runs it again."""
    policy = {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                        {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [3]}}]}
    job = _job("evicted", _ONCE + "time.sleep(600)\n", podFailurePolicy=policy)
    job["spec"]["template"]["spec"]["containers"][0]["args"] = [str(tmp_path / "marker")]
    _create(control_plane, namespace, job)
    first = _running_pod(control_plane, namespace, "evicted")["metadata"]["name"]
    pid = _pid_of(kubelet, namespace, first)
    wait_for("the first run", lambda: "first run" in kubelet.logs(namespace, first), timeout=30)
    kubelet.evict(namespace, first)
    job = _finished(control_plane, namespace, "evicted")
    assert _condition(job, "Complete"), job["status"]
    assert job["status"].get("failed", 0) == 0  # ignored, not counted
    assert not _alive(pid)
    evicted = _get_pod(control_plane, namespace, first)
    assert evicted is not None
    assert (evicted["status"]["phase"], evicted["status"]["reason"]) == ("Failed", "Evicted")
    disruption = next(c for c in evicted["status"]["conditions"] if c["type"] == "DisruptionTarget")
    assert (disruption["status"], disruption["reason"]) == ("True", "TerminationByKubelet")
    assert evicted["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 128 + signal.SIGKILL
    assert "second run" in kubelet.job_logs(namespace, "evicted")


def test_restart_policy_on_failure_restarts_in_place(control_plane: ControlPlane, kubelet: Kubelet, namespace: str,
                                                     tmp_path: Path) -> None:
    pod = _pod("again", _ONCE + "sys.exit(1)\n", restartPolicy="OnFailure")
    pod["spec"]["containers"][0]["args"] = [str(tmp_path / "marker")]
    control_plane.api.create(f"/api/v1/namespaces/{namespace}/pods", pod)

    def backing_off() -> Obj | None:
        got = _get_pod(control_plane, namespace, "again")
        status = ((got or {}).get("status", {}).get("containerStatuses") or [{}])[0]
        return got if status.get("state", {}).get("waiting", {}).get("reason") == "CrashLoopBackOff" else None
    waiting = wait_for("the container in back-off", backing_off, timeout=30)
    assert waiting["status"]["phase"] == "Running"
    done = _terminal_pod(control_plane, namespace, "again", timeout=60)  # after the kubelet's first 10 s back-off
    status = done["status"]["containerStatuses"][0]
    assert done["status"]["phase"] == "Succeeded"
    assert status["restartCount"] == 1
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert status["state"]["terminated"]["exitCode"] == 0
    assert kubelet.logs(namespace, "again").splitlines() == ["first run", "second run"]


_ORPHANED_KUBELET = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from cluster.control_plane import Api
from cluster.kubelet import Kubelet
server, ca, cert, key, node, workdir = sys.argv[2:]

class Credentials:
    def node_api(self, name):
        return Api(server, Path(ca), (Path(cert), Path(key)))

kubelet = Kubelet(Credentials(), [node], Path(workdir)).start()
print("started", flush=True)
time.sleep(600)
"""


def test_pod_processes_die_with_the_kubelet(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> None:
    """A test run killed with SIGKILL leaves no pod process behind, nor any process the pod started."""
    node = f"orphan-{namespace}"
    cert, key = control_plane.pki.issue(f"kubelet-{node}", f"system:node:{node}", organizations=["system:nodes"],
                                        client=True)
    script = ("import subprocess, sys, time\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
              "print('pids', child.pid, flush=True)\n"
              "time.sleep(600)\n")
    pod = _pod("left", script)
    pod["spec"]["nodeName"] = node  # bound directly: this node is the orphaned kubelet's alone
    control_plane.api.create(f"/api/v1/namespaces/{namespace}/pods", pod)
    starter = subprocess.Popen(
        [sys.executable, "-c", _ORPHANED_KUBELET, str(Path(__file__).resolve().parents[1]), control_plane.server,
         str(control_plane.pki.ca_file), str(cert), str(key), node, str(tmp_path / "kubelet")],
        stdout=subprocess.PIPE, text=True)
    try:
        log = tmp_path / "kubelet" / "logs" / namespace / "left" / "main.log"
        line = wait_for("the pod's process and its child", lambda: log.exists() and next(
            (x for x in log.read_text().splitlines() if x.startswith("pids ")), None), timeout=60)
        child = int(line.split()[1])
        shim = _shim_of(child)
        running = wait_for("the pod Running", lambda: (_get_pod(control_plane, namespace, "left") or {}).get(
            "status", {}).get("phase") == "Running", timeout=30)
        assert running and _alive(child) and _alive(shim)
        starter.kill()
        starter.wait()
        wait_for("the pod's processes to die", lambda: not _alive(child) and not _alive(shim), timeout=10)
    finally:
        starter.kill()
        starter.wait()
        control_plane.api.delete(f"/api/v1/namespaces/{namespace}/pods/left", {"gracePeriodSeconds": 0})


def _shim_of(pid: int) -> int:
    """The process group leader of `pid`: the kubelet's shim of the container."""
    return os.getpgid(pid)
