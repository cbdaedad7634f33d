"""The operator for real: kubectl apply → Jobs run by the node agent → artifacts in moto's S3 → status.

One API server (kmock's emulator, extended in tests/kube), one node agent, one moto server and
the operator as a subprocess (`modeldeploy operator`), shared by the scenarios of
tests/scenarios.py, which run in order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from conftest import EXAMPLES
from kube.apiserver import ApiServer
from kube.node_agent import NodeAgent
from scenarios import SCENARIOS, Operator


@pytest.fixture(scope="module")
def cluster(moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServer, Operator, Any]]:
    workdir = tmp_path_factory.mktemp("cluster")
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, aws_access_key_id="x", aws_secret_access_key="x",
                      region_name="us-east-1")
    for bucket in ("modeldeploy-examples", "modeldeploy-artifacts"):
        s3.create_bucket(Bucket=bucket)
    for name in ("digits_cnn.py", "digits_cnn.pt"):
        s3.upload_file(str(EXAMPLES / name), "modeldeploy-examples", f"quickstart/{name}")
    with ApiServer() as server, NodeAgent(server.kubeconfig, workdir / "node") as agent:
        operator = Operator(server.kubeconfig, workdir / "operator.log", MODELDEPLOY_S3_ENDPOINT=moto_endpoint)
        operator.start()
        server.kubectl("apply", "-f", str(EXAMPLES / "cluster" / "s3-credentials.yaml"))
        try:
            yield server, operator, s3
        finally:
            operator.stop()
        assert not agent.errors, agent.errors


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[scenario.__name__ for scenario in SCENARIOS])
def test_scenario(scenario: Callable[..., None], cluster: tuple[ApiServer, Operator, Any]) -> None:
    scenario(*cluster)
