"""The real control plane, built from source by build.sh, does what the operator's tests will rely on:
it reports the stamped release, serves the project's CRD, keeps device nodes Ready on their Leases,
and the Job controller and the scheduler place a device Job's pod on the node with the device."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from cluster.control_plane import DEVICES_PER_NODE, ControlPlane, Node, wait_for

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
ASCEND = "huawei.com/Ascend310P"


def test_version_is_the_stamped_release(control_plane: ControlPlane) -> None:
    release = control_plane.versions["KUBE_VERSION"]
    minor = release.split(".")[1]
    out = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert out["clientVersion"]["gitVersion"] == release
    assert out["serverVersion"]["gitVersion"] == release
    assert (out["serverVersion"]["major"], out["serverVersion"]["minor"]) == ("1", minor)
    assert out["serverVersion"]["goVersion"] == control_plane.versions["GO_VERSION"]
    # What Helm and client libraries read, here through the admin kubeconfig as the operator's client loads it.
    client = kubernetes.config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    with client:
        assert kubernetes.client.VersionApi(client).get_code().git_version == release
    # The storage is the etcd release kubeadm pairs with this Kubernetes, and the API server uses it.
    assert control_plane.etcd_api.get("/version")["etcdserver"] == control_plane.versions["ETCD_VERSION"][1:]
    assert control_plane.kubectl("get", "--raw", "/readyz/etcd").stdout.strip() == "ok"


def test_authorization_is_rbac(control_plane: ControlPlane, namespace: str) -> None:
    """An identity without bindings is refused: RBAC is on, not AlwaysAllow."""
    def can(user: str, verb: str, resource: str, *more: str) -> str:
        return control_plane.kubectl("auth", "can-i", verb, resource, "-n", namespace, f"--as={user}", *more,
                                     check=False).stdout.strip()

    assert can("someone", "create", "jobs.batch") == "no"
    assert can("someone", "get", "pods") == "no"
    # The bootstrap roles the control plane's own identities run with.
    assert can("system:kube-scheduler", "create", "pods", "--subresource=binding") == "yes"
    assert can("system:kube-scheduler", "delete", "jobs.batch") == "no"
    assert can("system:serviceaccount:kube-system:job-controller", "create", "pods") == "yes"


def test_crd_is_established(control_plane: ControlPlane, namespace: str) -> None:
    crd = yaml.safe_load(CRD.read_text())
    name = control_plane.apply_crd(CRD)
    status = control_plane.api.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")["status"]
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Established"] == "True"
    assert conditions["NamesAccepted"] == "True"
    # Served: listing through the short name works in a namespace.
    short = crd["spec"]["names"]["shortNames"][0]
    listing = json.loads(control_plane.kubectl("get", short, "-n", namespace, "-o", "json").stdout)
    assert listing["items"] == []


def test_device_node_is_ready_on_its_lease(control_plane: ControlPlane, cluster_nodes: dict[str, Node]) -> None:
    """The session's Ascend 310P node as the Ascend device plugin leaves it: its devices in capacity and
    allocatable, the chip label, the taint."""
    ascend = cluster_nodes["ascend310p"]
    # The node lifecycle controller removes the not-ready taint that admission put on the new Node
    # once it sees Ready=True and a fresh Lease.
    started = time.monotonic()
    for node in cluster_nodes.values():
        wait_for(f"node {node.name} Ready and untainted", node.is_ready, timeout=90)
    ready_after = time.monotonic() - started
    got = ascend.get()
    assert got["status"]["capacity"][ASCEND] == str(DEVICES_PER_NODE)
    assert got["status"]["allocatable"][ASCEND] == str(DEVICES_PER_NODE)
    assert got["metadata"]["labels"]["node.kubernetes.io/npu.chip.name"] == "310P3"
    assert {"key": ASCEND, "value": "present", "effect": "NoSchedule"} in got["spec"]["taints"]

    lease_path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{ascend.name}"
    first = control_plane.api.get(lease_path)["spec"]["renewTime"]
    wait_for("a Lease renewal", lambda: control_plane.api.get(lease_path)["spec"]["renewTime"] != first,
             timeout=ascend.renew_every + 10)
    assert ascend.errors == []
    assert ready_after < 90


def _job(name: str, pod_spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", **pod_spec}}},
    }


def _scheduled_pod(control_plane: ControlPlane, namespace: str, job: str) -> dict[str, Any]:
    """Waits for the Job controller to create the Job's pod and the scheduler to bind it."""
    def bound() -> dict[str, Any] | None:
        pods = control_plane.api.get(f"/api/v1/namespaces/{namespace}/pods",
                                     query={"labelSelector": f"batch.kubernetes.io/job-name={job}"})["items"]
        return next((p for p in pods if p["spec"].get("nodeName")), None)
    return wait_for(f"the pod of Job {job} to be scheduled", bound, timeout=90)


def test_device_job_is_scheduled_to_the_device_node(control_plane: ControlPlane, namespace: str,
                                                    cluster_nodes: dict[str, Node]) -> None:
    ascend, cpu = cluster_nodes["ascend310p"], cluster_nodes["cpu"]
    jobs = f"/apis/batch/v1/namespaces/{namespace}/jobs"
    device_pod = {
        "nodeSelector": {"node.kubernetes.io/npu.chip.name": "310P3"},
        "tolerations": [{"key": ASCEND, "operator": "Exists", "effect": "NoSchedule"}],
        "containers": [{"name": "convert", "image": "modeldeploy/ascend:test", "command": ["true"],
                        "resources": {"limits": {ASCEND: "1"}, "requests": {ASCEND: "1"}}}],
    }
    control_plane.api.create(jobs, _job("convert-310p", device_pod))
    pod = _scheduled_pod(control_plane, namespace, "convert-310p")
    assert pod["spec"]["nodeName"] == ascend.name
    # Created by the real Job controller: owned by the Job and carrying its tracking finalizer.
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "Job"
    assert "batch.kubernetes.io/job-tracking" in pod["metadata"]["finalizers"]

    # A pod without the device's toleration stays off the tainted device node.
    cpu_pod = {"containers": [{"name": "plan", "image": "modeldeploy/cpu:test", "command": ["true"],
                               "resources": {"requests": {"cpu": "100m"}}}]}
    control_plane.api.create(jobs, _job("plan-cpu", cpu_pod))
    assert _scheduled_pod(control_plane, namespace, "plan-cpu")["spec"]["nodeName"] == cpu.name

    # More devices than any node has: the scheduler leaves it Pending and says why.
    greedy = json.loads(json.dumps(device_pod))
    too_many = str(DEVICES_PER_NODE + 1)
    greedy["containers"][0]["resources"] = {"limits": {ASCEND: too_many}, "requests": {ASCEND: too_many}}
    control_plane.api.create(jobs, _job("convert-too-big", greedy))

    def unschedulable() -> str | None:
        pods = control_plane.api.get(f"/api/v1/namespaces/{namespace}/pods",
                                     query={"labelSelector": "batch.kubernetes.io/job-name=convert-too-big"})["items"]
        for p in pods:
            for c in p["status"].get("conditions", []):
                if c["type"] == "PodScheduled" and c["status"] == "False" and c.get("reason") == "Unschedulable":
                    return c.get("message", "")
        return None
    message = wait_for("the oversized pod to be reported Unschedulable", unschedulable, timeout=90)
    assert f"Insufficient {ASCEND}" in message


@pytest.mark.parametrize("component,kill", [("kube-apiserver", False), ("kube-apiserver", True), ("etcd", True)])
def test_restart_keeps_state(control_plane: ControlPlane, namespace: str, component: str, kill: bool) -> None:
    """What the fault benchmarks will do: the API server stopped or killed, etcd killed, each
    brought back on the same data; the state survives and the API answers again."""
    name = f"kept-{component}-{'kill' if kill else 'term'}"
    control_plane.api.create(f"/api/v1/namespaces/{namespace}/configmaps",
                             {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
    seconds = control_plane.restart(component, kill=kill)
    got = wait_for("the API server to answer again",
                   lambda: control_plane.api.get(f"/api/v1/namespaces/{namespace}/configmaps/{name}"), timeout=60)
    assert got["data"] == {"k": "v"}
    assert seconds < 30


_ORPHAN = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from cluster.control_plane import ControlPlane
cp = ControlPlane(Path(sys.argv[2]), workdir=Path(sys.argv[3])).start()
print(json.dumps({n: c.process.pid for n, c in cp.components.items()}), flush=True)
time.sleep(600)
"""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has exited; only its parent's wait is missing


def test_children_die_with_the_process_that_started_them(control_plane: ControlPlane, tmp_path: Path) -> None:
    """A test run killed with SIGKILL leaves no etcd or API server behind (PR_SET_PDEATHSIG)."""
    assert control_plane.bin_dir is not None
    starter = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN, str(REPO / "tests"), str(control_plane.bin_dir), str(tmp_path / "cp")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert starter.stdout is not None
        pids = json.loads(starter.stdout.readline())
        assert set(pids) == set(ControlPlane.COMPONENTS)
        assert all(_running(pid) for pid in pids.values())
        starter.kill()
        starter.wait()
        wait_for("the orphaned control plane to die", lambda: not any(_running(p) for p in pids.values()),
                 timeout=10)
    finally:
        starter.kill()
        starter.wait()
