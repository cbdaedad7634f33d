"""Ascend and MLU targets through the operator: kubectl apply → Jobs placed for the device → stand-in
tools → status.

The test API server, node agent and moto are those of tests/test_operator.py. The installation's
placement for the ascend and magicmind backends sets PATH and PYTHONPATH to the stand-ins
(tests/ascend_toolchain, tests/magicmind_toolchain), as the vendor images' environment would; a
target's placement.env picks the chip or card the emulated node has (ASCEND_STANDIN_CHIP,
MAGICMIND_STANDIN_CARDS) or an ATC failure to inject (ATC_STANDIN_FAIL).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from conftest import EXAMPLES
from kube.apiserver import ApiServer, wait_for
from kube.node_agent import NodeAgent
from scenarios import Operator, apply, condition, deployment, jobs_of, quickstart, ready
from seed_fixtures import MODELS, scaled_down, upload_model, upload_seed_inputs

TESTS = Path(__file__).resolve().parent
READY_SECONDS = 600
NPU = {"name": "npu", "backend": "ascend", "device": "Ascend310P3"}
MLU = {"name": "mlu", "backend": "magicmind", "device": "MLU370-X4"}
EMULATED_NODE = {"ascend": ("ASCEND_STANDIN_CHIP", lambda device: device.removeprefix("Ascend")),
                 "magicmind": ("MAGICMIND_STANDIN_CARDS", lambda device: device)}


def image_environment(toolchain: Path) -> dict[str, str]:
    path = os.pathsep.join([str(toolchain / "bin"), str(Path(sys.executable).parent), os.defpath])
    return {"PATH": path, "PYTHONPATH": str(toolchain)}


@pytest.fixture(scope="module")
def cluster(moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServer, Any]]:
    workdir = tmp_path_factory.mktemp("npu-cluster")
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, aws_access_key_id="x", aws_secret_access_key="x",
                      region_name="us-east-1")
    upload_seed_inputs(s3)
    s3.create_bucket(Bucket="modeldeploy-examples")
    for name in ("digits_cnn.py", "digits_cnn.pt"):
        s3.upload_file(str(EXAMPLES / name), "modeldeploy-examples", f"quickstart/{name}")
    config = workdir / "operator.yaml"
    config.write_text(yaml.safe_dump({
        "placement": {"ascend": {"env": image_environment(TESTS / "ascend_toolchain")},
                      "magicmind": {"env": image_environment(TESTS / "magicmind_toolchain")}},
        "maxJobsPerDeployment": 2,
        # what a spec sets to pick the emulated chip or card, or to make the atc stand-in fail
        "policy": {"envNames": ["ASCEND_STANDIN_*", "MAGICMIND_STANDIN_*", "ATC_STANDIN_*"]},
    }))
    with ApiServer() as server, NodeAgent(server.kubeconfig, workdir / "node") as agent:
        operator = Operator(server.kubeconfig, workdir / "operator.log", MODELDEPLOY_S3_ENDPOINT=moto_endpoint,
                            MODELDEPLOY_CONFIG=str(config))
        operator.start()
        server.kubectl("apply", "-f", str(EXAMPLES / "cluster" / "s3-credentials.yaml"))
        try:
            yield server, s3
        finally:
            operator.stop()
        assert not agent.errors, agent.errors


def digits_on(name: str, target: dict[str, Any]) -> dict[str, Any]:
    return quickstart(**{"metadata.name": name, "spec.targets": [target],
                         "spec.performance": {"warmup": 2, "iterations": 10}})


def test_an_ascend_target_reaches_ready_with_evaluation_on_the_npu_node(cluster: tuple[ApiServer, Any]) -> None:
    server, _ = cluster
    apply(server, digits_on("digits-npu", {**NPU, "precisions": ["fp16", "int8"], "batchSizes": [1, 8]}))
    body = wait_for(lambda: ready(server, "digits-npu"), READY_SECONDS, interval=1, what="digits-npu Ready")
    results = body["status"]["results"]
    assert len(results) == 4 and all(cell["top1"] > 0.9 and cell["throughput"] > 0 for cell in results)
    assert {cell["gate"] for cell in results} == {"Passed"}
    jobs = {job["metadata"]["labels"]["modeldeploy.io/stage"]: job for job in jobs_of(server, "digits-npu")}
    for stage, on_npu in (("calibrate", False), ("compile", False), ("evaluate", True)):
        pod = jobs[stage]["spec"]["template"]["spec"]
        limits = pod["containers"][0]["resources"]["limits"]
        assert ("huawei.com/Ascend310P" in limits) == on_npu, stage
        assert (pod.get("nodeSelector") == {"node.kubernetes.io/npu.chip.name": "310P3"}) == on_npu, stage


def test_an_atc_error_stalls_with_its_code_and_message(cluster: tuple[ApiServer, Any]) -> None:
    server, _ = cluster
    # batch 2: a compile no other deployment has done (placement does not enter task keys)
    target = {**NPU, "precisions": ["fp16"], "batchSizes": [2], "placement": {"env": {"ATC_STANDIN_FAIL": "E10001"}}}
    apply(server, digits_on("atc-fails", target))
    body = wait_for(lambda: (b := deployment(server, "atc-fails")) and (b.get("status") or {}).get("phase") == "Failed"
                    and b, READY_SECONDS, interval=1, what="atc-fails to settle")
    stalled = condition(body, "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "StageFailed"
    assert stalled["message"].startswith("compile npu/fp16/bs2: CompileRejected: atc failed (exit 255): E10001: Value")
    stages = {stage["name"]: stage["phase"] for stage in body["status"]["stages"]}
    assert stages["evaluate npu/fp16/bs2"] == "Skipped"


def test_an_mlu_target_builds_and_evaluates_on_the_mlu_node(cluster: tuple[ApiServer, Any]) -> None:
    server, _ = cluster
    target = {**MLU, "precisions": ["fp16", "int8"], "batchSizes": [4],
              "placement": {"env": {"MAGICMIND_STANDIN_CARDS": "MLU370-X4"}}}
    apply(server, digits_on("digits-mlu", target))
    body = wait_for(lambda: ready(server, "digits-mlu"), READY_SECONDS, interval=1, what="digits-mlu Ready")
    results = body["status"]["results"]
    assert len(results) == 2 and all(cell["top1"] > 0.9 and cell["throughput"] > 0 for cell in results)
    jobs = {job["metadata"]["labels"]["modeldeploy.io/stage"]: job for job in jobs_of(server, "digits-mlu")}
    assert "calibrate" not in jobs  # MagicMind calibrates on the MLU while it builds
    for stage in ("compile", "evaluate"):
        pod = jobs[stage]["spec"]["template"]["spec"]
        assert pod["containers"][0]["resources"]["limits"]["cambricon.com/mlu370"] == 1, stage
        assert {"key": "cambricon.com/mlu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]


@pytest.mark.parametrize("seed", sorted(MODELS))
def test_the_guides_specs_reach_ready(seed: str, cluster: tuple[ApiServer, Any]) -> None:
    server, s3 = cluster
    upload_model(s3, seed)
    document = scaled_down(seed)
    for target in document["spec"]["targets"]:
        variable, value = EMULATED_NODE[target["backend"]]
        target["placement"] = {"env": {variable: value(target["device"])}}
    apply(server, document)
    name = document["metadata"]["name"]
    body = wait_for(lambda: ready(server, name), READY_SECONDS, interval=2, what=f"{name} Ready")
    cells = body["status"]["results"]
    assert cells and all(cell["top1"] is not None and cell["throughput"] > 0 for cell in cells)
    assert all(cell["artifact"].endswith(("/model.om", "/model.mm")) for cell in cells)
    server.kubectl("delete", "mdep", name, "--timeout=60s")
