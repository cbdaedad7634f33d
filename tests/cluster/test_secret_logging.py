"""No log level of the operator prints a Secret's values.

`modeldeploy operator` runs against the real API server with a deployment whose artifacts.secretRef names a Secret
of S3 credentials: the operator reads the Secret, opens the store in moto's S3 with those credentials and creates
the first Job. Everything it printed is searched for the values, plain and in base64. moto records every request
it gets, so the test knows the store was opened with the Secret's credentials: only a read of the Secret could
have told the operator them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import kubernetes
import pytest
import yaml
from conftest import s3_server
from kubernetes.client.exceptions import ApiException
from modeldeploy.controller.kube import Api

from cluster.control_plane import ControlPlane, wait_for

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


@pytest.fixture(scope="module")
def recording_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """moto's S3 server, recording each request it gets (headers included) in a file."""
    recording = tmp_path_factory.mktemp("moto") / "requests.jsonl"
    for endpoint in s3_server(MOTO_ENABLE_RECORDING="true", MOTO_RECORDER_FILEPATH=str(recording)):
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="x",
                     region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield endpoint, recording


def signed_with_the_secret(recording: Path) -> bool:
    """Whether moto got a request signed with the Secret's key and carrying its session token."""
    if not recording.exists():
        return False
    for line in recording.read_text().splitlines():
        headers = {name.lower(): value for name, value in json.loads(line)["headers"].items()}
        if (f"Credential={CREDENTIALS['AWS_ACCESS_KEY_ID']}/" in headers.get("authorization", "")
                and headers.get("x-amz-security-token") == CREDENTIALS["AWS_SESSION_TOKEN"]):
            return True
    return False


def operator_output(control_plane: ControlPlane, namespace: str, level: list[str], s3: tuple[str, Path],
                    directory: Path) -> str:
    """Everything `modeldeploy operator`, started with the arguments `level`, printed from its start until it created
    the first Job of a deployment whose store it opened with the Secret's credentials."""
    endpoint, recording = s3
    log = directory / "operator.log"
    environment = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    environment |= {"KUBECONFIG": str(control_plane.kubeconfig), "MODELDEPLOY_S3_ENDPOINT": endpoint,
                    "MODELDEPLOY_METRICS_PORT": str(free_port()), "MODELDEPLOY_RESYNC_SECONDS": "1"}
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(SECRET))
    with log.open("wb") as output:
        operator = subprocess.Popen(
            [str(MODELDEPLOY), "operator", "--namespace", namespace,
             "--liveness", f"http://127.0.0.1:{free_port()}/healthz", *level],
            stdout=output, stderr=subprocess.STDOUT, env=environment,
        )
    try:
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(DEPLOYMENT))
        # The first Job is created after the store, opened with the Secret's credentials, was listed.
        jobs = f"/apis/batch/v1/namespaces/{namespace}/jobs"
        wait_for("the first Job", lambda: operator.poll() is None and control_plane.api.get(jobs)["items"],
                 timeout=120, interval=0.5)
        assert signed_with_the_secret(recording), "the store was not opened with the Secret's credentials"
    finally:
        operator.terminate()
        operator.wait(timeout=30)
    return log.read_text(errors="replace")


@pytest.mark.usefixtures("crd")
@pytest.mark.parametrize("level", list(LEVELS.values()), ids=list(LEVELS))
def test_the_operator_never_logs_a_secret(control_plane: ControlPlane, namespace: str,
                                          recording_s3: tuple[str, Path], level: list[str], tmp_path: Path) -> None:
    printed = operator_output(control_plane, namespace, level, recording_s3, tmp_path)
    assert "Traceback" not in printed, printed[-3000:]
    if level:
        assert " DEBUG " in printed or "[DEBUG" in printed, "the operator did not log at DEBUG"
    for key, value in CREDENTIALS.items():
        for form in forms(value):
            assert form not in printed, f"{key} is in the operator's output as {form!r}"


def test_the_secret_is_read_past_the_client_s_debug_log(control_plane: ControlPlane, namespace: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """The client logs the body of every answer it decodes at DEBUG; the Secret's answer is not decoded by it."""
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(SECRET))
    caplog.set_level(logging.DEBUG)
    with kubernetes.config.new_client_from_config(config_file=str(control_plane.kubeconfig)) as client:
        api = Api(client)
        assert asyncio.run(api.secret(namespace, "leak-check")) == CREDENTIALS
        with pytest.raises(ApiException) as missing:
            asyncio.run(api.secret(namespace, "nope"))
        assert missing.value.status == 404
        api.core.read_namespace(namespace)
        api.threads.shutdown()
    # What is decoded is logged (the API server answers compact JSON).
    assert "response body: " in caplog.text and f'"name":"{namespace}"' in caplog.text
    for key, value in CREDENTIALS.items():
        for form in forms(value):
            assert form not in caplog.text, f"{key} is in the client's log as {form!r}"
