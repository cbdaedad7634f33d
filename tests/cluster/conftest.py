"""One real control plane per test session (started on first use), a namespace per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from cluster.control_plane import ApiError, ControlPlane, wait_for

_started: list[ControlPlane] = []


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """Builds the binaries if the cache lacks them (a failed build fails the test), then starts
    etcd, kube-apiserver, kube-controller-manager and kube-scheduler on 127.0.0.1."""
    with ControlPlane() as cp:
        _started.append(cp)
        yield cp


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
    try:  # no kubelet confirms pod deletions here: the namespace goes once the session's cluster does
        api.delete(f"/api/v1/namespaces/{name}")
    except ApiError:
        pass


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for cp in _started:
        timings = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in cp.timings.items())
        terminalreporter.write_line(
            f"control plane {cp.versions.get('KUBE_VERSION')} (etcd {cp.versions.get('ETCD_VERSION')}), "
            f"ready after (from start): {timings}")
