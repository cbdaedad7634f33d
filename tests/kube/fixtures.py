"""pytest fixtures for tests that need a Kubernetes API. A test module takes them in with

    pytest_plugins = ["kube.fixtures"]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from .apiserver import ApiServer
from .node_agent import NodeAgent

T = TypeVar("T")


@pytest.fixture
def apiserver() -> Iterator[ApiServer]:
    """A fresh API server with the ModelDeployment CRD and the `default` namespace."""
    with ApiServer() as server:
        yield server


@pytest.fixture
def node_agent(apiserver: ApiServer, tmp_path: Path) -> Iterator[NodeAgent]:
    """A node agent running the server's Jobs, two at a time; its logs and job directories are under tmp_path."""
    with NodeAgent(apiserver.kubeconfig, tmp_path / "node-agent") as agent:
        yield agent
    assert not agent.errors, agent.errors


def wait_for(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = "") -> T:
    """Poll until `condition()` returns something truthy, and return it."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)
    return result
