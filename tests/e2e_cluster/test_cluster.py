"""The operator scenarios against a real cluster: the current kubeconfig, skipped unless asked for.

    MODELDEPLOY_E2E_CLUSTER=1                   run them
    MODELDEPLOY_E2E_S3_ENDPOINT=http://...      an S3 endpoint that this machine and the cluster's pods
                                                both reach (e.g. MinIO on a NodePort of a kind node)
    AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY   its credentials (put into the s3-credentials Secret)
    MODELDEPLOY_E2E_NAMESPACE=default           where the ModelDeployments go
    MODELDEPLOY_E2E_IMAGE=...                   the CPU job image the cluster can pull or has loaded

The operator runs on this machine against the cluster, as `modeldeploy operator`; the README's
"End-to-end on kind" section sets such a cluster up.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from scenarios import EXAMPLES, SCENARIOS, Operator

pytestmark = pytest.mark.skipif(os.environ.get("MODELDEPLOY_E2E_CLUSTER") != "1",
                                reason="set MODELDEPLOY_E2E_CLUSTER=1 to run against the current kubeconfig")
NAMESPACE = os.environ.get("MODELDEPLOY_E2E_NAMESPACE", "default")
REPO = Path(__file__).resolve().parents[2]


class KubectlCluster:
    """The cluster of the current kubeconfig, through kubectl, in one namespace."""

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["kubectl", "-n", NAMESPACE, *args], input=input, capture_output=True, text=True,
                                timeout=120, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr}")
        return result

    def get(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        result = self.kubectl("get", resource, name, "-o", "json", check=False)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def list(self, resource: str, namespace: str | None = None, label_selector: str = "") -> list[dict[str, Any]]:
        selector = ["-l", label_selector] if label_selector else []
        return json.loads(self.kubectl("get", resource, *selector, "-o", "json").stdout)["items"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KubectlCluster, Operator, Any]]:
    endpoint = os.environ["MODELDEPLOY_E2E_S3_ENDPOINT"]
    s3 = boto3.client("s3", endpoint_url=endpoint)
    for bucket in ("modeldeploy-examples", "modeldeploy-artifacts"):
        try:
            s3.create_bucket(Bucket=bucket)
        except s3.exceptions.BucketAlreadyOwnedByYou:
            pass
    for name in ("digits_cnn.py", "digits_cnn.pt"):
        s3.upload_file(str(EXAMPLES / name), "modeldeploy-examples", f"quickstart/{name}")
    kube = KubectlCluster()
    kube.kubectl("apply", "-f", str(REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"))
    secret = kube.kubectl("create", "secret", "generic", "s3-credentials", "--dry-run=client", "-o", "yaml",
                          f"--from-literal=AWS_ACCESS_KEY_ID={os.environ['AWS_ACCESS_KEY_ID']}",
                          f"--from-literal=AWS_SECRET_ACCESS_KEY={os.environ['AWS_SECRET_ACCESS_KEY']}").stdout
    kube.kubectl("apply", "-f", "-", input=secret)
    settings = {"MODELDEPLOY_S3_ENDPOINT": endpoint}
    if os.environ.get("MODELDEPLOY_E2E_IMAGE"):
        config = tmp_path_factory.mktemp("operator") / "config.yaml"
        config.write_text(json.dumps({"images": {"default": os.environ["MODELDEPLOY_E2E_IMAGE"]}}))
        settings["MODELDEPLOY_CONFIG"] = str(config)
    kubeconfig = Path(os.environ.get("KUBECONFIG", Path.home() / ".kube" / "config"))
    operator = Operator(kubeconfig, tmp_path_factory.mktemp("logs") / "operator.log", NAMESPACE, **settings)
    operator.start()
    try:
        yield kube, operator, s3
    finally:
        operator.stop()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[scenario.__name__ for scenario in SCENARIOS])
def test_scenario(scenario: Callable[..., None], cluster: tuple[KubectlCluster, Operator, Any]) -> None:
    scenario(*cluster)
