"""No log level of the operator prints a Secret's values.

`modeldeploy operator` runs against the test API server with a deployment whose artifacts.secretRef names a
Secret of S3 credentials: the operator reads the Secret, opens the store in moto's S3 with those credentials
and creates the first Job. Everything it printed is searched for the values, plain and in base64.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import yaml
from kube.apiserver import ApiServer, wait_for
from kubernetes.client.exceptions import ApiException
from modeldeploy.controller.kube import Api

MODELDEPLOY = Path(sys.executable).with_name("modeldeploy")
BUCKET = "leak-check"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIALEAKCHECK7Q2Z9X4",
    "AWS_SECRET_ACCESS_KEY": "leak-check-secret/Zx81+qkWm3",
    "AWS_SESSION_TOKEN": "leak-check-session-token-5f0c9e",
}
SECRET = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "leak-check"}, "type": "Opaque",
          "data": {key: base64.b64encode(value.encode()).decode() for key, value in CREDENTIALS.items()}}
DEPLOYMENT = {
    "apiVersion": "modeldeploy.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "leak-check"},
    "spec": {
        "source": {"format": "onnx", "uri": f"s3://{BUCKET}/model.onnx",
                   "inputs": [{"name": "x", "shape": [-1, 4], "layout": "ND"}]},
        "targets": [{"name": "cpu", "backend": "onnxruntime", "precisions": ["fp32"], "batchSizes": [1]}],
        "artifacts": {"uri": f"s3://{BUCKET}/artifacts", "secretRef": {"name": "leak-check"}},
    },
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def forms(value: str) -> set[str]:
    """The value, and its base64 as a Secret's data and a JSON or Python dump of it would show it."""
    encoded = base64.b64encode(value.encode()).decode()
    return {value, encoded, encoded.rstrip("=")}


# Every log level of `modeldeploy operator`, as the arguments that set it.
LEVELS = {"info": [], "debug": ["--verbose"]}


def operator_output(level: list[str], moto_endpoint: str, directory: Path) -> str:
    """Everything `modeldeploy operator`, started with the arguments `level`, printed from its start until it created
    the first Job of a deployment whose store it opened with the Secret's credentials."""
    boto3.client("s3", endpoint_url=moto_endpoint, aws_access_key_id="x", aws_secret_access_key="x",
                 region_name="us-east-1").create_bucket(Bucket=BUCKET)
    log = directory / "operator.log"
    with ApiServer() as server:
        environment = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
        environment |= {"KUBECONFIG": str(server.kubeconfig), "MODELDEPLOY_S3_ENDPOINT": moto_endpoint,
                        "MODELDEPLOY_METRICS_PORT": str(free_port()), "MODELDEPLOY_RESYNC_SECONDS": "1"}
        server.kubectl("apply", "-f", "-", input=yaml.safe_dump(SECRET))
        with log.open("wb") as output:
            operator = subprocess.Popen(
                [str(MODELDEPLOY), "operator", "--namespace", "default",
                 "--liveness", f"http://127.0.0.1:{free_port()}/healthz", *level],
                stdout=output, stderr=subprocess.STDOUT, env=environment,
            )
        try:
            server.kubectl("apply", "-f", "-", input=yaml.safe_dump(DEPLOYMENT))
            # The first Job is created after the store, opened with the Secret's credentials, was listed.
            wait_for(lambda: server.list("jobs.batch", "default"), 60, interval=0.2, what="the first Job")
            assert server.emulator is not None
            assert [request for request in server.emulator._requests
                    if request.method == "GET" and str(request.url).endswith("/secrets/leak-check")
                    and not request.headers.get("User-Agent", "").startswith("kubectl")], "the Secret was not read"
        finally:
            operator.terminate()
            operator.wait(timeout=30)
    return log.read_text(errors="replace")


@pytest.mark.parametrize("level", list(LEVELS.values()), ids=list(LEVELS))
def test_the_operator_never_logs_a_secret(level: list[str], moto_endpoint: str, tmp_path: Path) -> None:
    printed = operator_output(level, moto_endpoint, tmp_path)
    assert "Traceback" not in printed, printed[-3000:]
    if level:
        assert " DEBUG " in printed or "[DEBUG" in printed, "the operator did not log at DEBUG"
    for key, value in CREDENTIALS.items():
        for form in forms(value):
            assert form not in printed, f"{key} is in the operator's output as {form!r}"


def test_the_secret_is_read_past_the_client_s_debug_log(caplog: pytest.LogCaptureFixture) -> None:
    """The client logs the body of every answer it decodes at DEBUG; the Secret's answer is not decoded by it."""
    caplog.set_level(logging.DEBUG)
    with ApiServer() as server:
        server.kubectl("apply", "-f", "-", input=yaml.safe_dump(SECRET))
        with server.api_client() as client:
            api = Api(client)
            assert asyncio.run(api.secret("default", "leak-check")) == CREDENTIALS
            with pytest.raises(ApiException) as missing:
                asyncio.run(api.secret("default", "nope"))
            assert missing.value.status == 404
            api.core.read_namespace("default")
            api.threads.shutdown()
    assert "response body: " in caplog.text and '"name": "default"' in caplog.text  # what is decoded is logged
    for key, value in CREDENTIALS.items():
        for form in forms(value):
            assert form not in caplog.text, f"{key} is in the client's log as {form!r}"
