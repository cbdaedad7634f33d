"""pytest fixtures for tests that need a Kubernetes API. A test module takes them in with

    pytest_plugins = ["kube.fixtures"]
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .apiserver import ApiServer
from .node_agent import NodeAgent


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
