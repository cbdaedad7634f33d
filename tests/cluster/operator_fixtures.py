"""The `environment` fixture: where the operator's scenarios run. A test module takes it in with

    pytest_plugins = ["cluster.operator_fixtures"]
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.operator_env import Environment, Kube, outside


@pytest.fixture(scope="session")
def environment(request: pytest.FixtureRequest) -> Iterator[Environment]:
    """The local control plane with its nodes and process kubelet and moto's S3 server; with
    MODELDEPLOY_E2E_CLUSTER=1 the cluster of KUBECONFIG and the S3 endpoint MODELDEPLOY_E2E_S3_ENDPOINT
    (which this machine and the cluster's pods both reach), its credentials in AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY, and the CPU job image the cluster can pull or has loaded in MODELDEPLOY_E2E_IMAGE."""
    if outside():
        kubeconfig = Path(os.environ.get("KUBECONFIG", Path.home() / ".kube" / "config"))
        image = os.environ.get("MODELDEPLOY_E2E_IMAGE")
        env = Environment(Kube("kubectl", kubeconfig, "default"), os.environ["MODELDEPLOY_E2E_S3_ENDPOINT"],
                          local=False, operator_config={"images": {"default": image}} if image else {})
    else:
        control_plane = request.getfixturevalue("control_plane")
        request.getfixturevalue("kubelet")  # the nodes, Ready, and the kubelet that runs their pods
        env = Environment(Kube(control_plane.binary("kubectl"), control_plane.kubeconfig, "default"),
                          request.getfixturevalue("moto_endpoint"), local=True, control_plane=control_plane)
    env.kube.install_crd()
    yield env
