"""One real control plane per test session (started on first use), its nodes and their process kubelet, a
namespace per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.control_plane import ApiError, ControlPlane, Node, standard_nodes, wait_for
from cluster.kubelet import Kubelet

CRD = Path(__file__).resolve().parents[2] / "crds" / "modeldeploy.io_modeldeployments.yaml"

_started: list[ControlPlane] = []


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """Builds the binaries if the cache lacks them (a failed build fails the test), then starts
    etcd, kube-apiserver, kube-controller-manager and kube-scheduler on 127.0.0.1."""
    with ControlPlane() as cp:
        _started.append(cp)
        yield cp


@pytest.fixture(scope="session")
def crd(control_plane: ControlPlane) -> str:
    """The project's CRD, applied as generated and Established; its name."""
    return control_plane.apply_crd(CRD)


@pytest.fixture(scope="session")
def _cluster(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[dict[str, Node], Kubelet]]:
    nodes = standard_nodes(control_plane.api)
    workdir: Path = tmp_path_factory.mktemp("kubelet")
    kubelet = Kubelet(control_plane, [n.name for n in nodes.values()], workdir)
    try:
        for node in nodes.values():
            node.register()
        kubelet.start()
        for node in nodes.values():
            wait_for(f"node {node.name} Ready and untainted", node.is_ready, timeout=120)
        yield nodes, kubelet
    finally:
        kubelet.stop()
        for node in nodes.values():
            node.stop()
    assert not kubelet.errors, kubelet.errors


@pytest.fixture(scope="session")
def kubelet(_cluster: tuple[dict[str, Node], Kubelet]) -> Kubelet:
    """The process kubelet running every pod bound to the session's nodes (`cluster_nodes`); its files (a
    directory per pod, the container logs: `kubelet.logs(namespace, pod)`, `kubelet.job_logs(namespace, job)`)
    are under a session temporary directory."""
    return _cluster[1]


@pytest.fixture(scope="session")
def cluster_nodes(_cluster: tuple[dict[str, Node], Kubelet]) -> dict[str, Node]:
    """The session's nodes by key, registered and Ready (their Leases renewed), their pods run by `kubelet`:
    "cpu" (no devices, no taint); "ascend310p" (huawei.com/Ascend310P, label node.kubernetes.io/npu.chip.name=310P3,
    taint huawei.com/Ascend310P:NoSchedule); "ascend310" (huawei.com/Ascend310, chip name 310, taint
    huawei.com/Ascend310:NoSchedule); "mlu370" (cambricon.com/mlu370, taint cambricon.com/mlu:NoSchedule).
    DEVICES_PER_NODE (control_plane.py) devices each."""
    return _cluster[0]


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    """A fresh namespace, with the default ServiceAccount its pods need already created by the
    controller manager's serviceaccount controller."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    api = control_plane.api
    api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    wait_for(f"the default ServiceAccount of {name}",
             lambda: api.get(f"/api/v1/namespaces/{name}/serviceaccounts/default"), timeout=60)
    yield name
    try:  # the namespace controller and the kubelet finish it in the background
        api.delete(f"/api/v1/namespaces/{name}")
    except ApiError:
        pass


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for cp in _started:
        timings = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in cp.timings.items())
        terminalreporter.write_line(
            f"control plane {cp.versions.get('KUBE_VERSION')} (etcd {cp.versions.get('ETCD_VERSION')}), "
            f"ready after (from start): {timings}")
