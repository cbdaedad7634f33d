"""Ascend and MLU targets through the operator on the real control plane: `kubectl apply` → Jobs the scheduler
places by extended resource, node label and taint onto the session's device nodes → the stand-in tools run by the
process kubelet → status.

The operator watches one namespace, as the ServiceAccount of examples/cluster/rbac-namespaced.yaml (a Role). The
installation's placement for the ascend and magicmind backends sets PATH and PYTHONPATH to the stand-ins
(tests/ascend_toolchain, tests/magicmind_toolchain), as the vendor images' environment would; a target's
placement.env picks the chip or card the node emulates (ASCEND_STANDIN_CHIP, MAGICMIND_STANDIN_CARDS) or an ATC
failure to inject (ATC_STANDIN_FAIL, ATC_STANDIN_FAIL_ONCE).
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scenarios import Operator, apply, condition, deployment, jobs_of, quickstart, ready, wait_for
from seed_fixtures import MODELS, scaled_down, upload_model, upload_seed_inputs

from cluster.operator_env import EXAMPLES, SERVICE_ACCOUNT, Environment, Kube, running_operator, whoami

pytest_plugins = ["cluster.operator_fixtures"]

TESTS = Path(__file__).resolve().parents[1]
READY_SECONDS = 600
SEED_READY_SECONDS = 1200  # the guides' models, scaled down, are still ImageNet networks: minutes on a busy machine
BACKOFF_LIMIT = 2
NPU = {"name": "npu", "backend": "ascend", "device": "Ascend310P3"}
MLU = {"name": "mlu", "backend": "magicmind", "device": "MLU370-X4"}
EMULATED_NODE = {"ascend": ("ASCEND_STANDIN_CHIP", lambda device: device.removeprefix("Ascend")),
                 "magicmind": ("MAGICMIND_STANDIN_CARDS", lambda device: device)}
NODE_OF = {"huawei.com/Ascend310P": "ascend310p-1", "huawei.com/Ascend310": "ascend310-1",
           "cambricon.com/mlu370": "mlu370-1"}
CPU_NODE = "cpu-1"


def image_environment(toolchain: Path) -> dict[str, str]:
    path = os.pathsep.join([str(toolchain / "bin"), str(Path(sys.executable).parent), os.defpath])
    return {"PATH": path, "PYTHONPATH": str(toolchain)}


@pytest.fixture(scope="module")
def cluster(environment: Environment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Kube, Operator,
                                                                                                  Any]]:
    assert environment.local, "the device nodes are the local control plane's"
    s3 = environment.create_buckets("modeldeploy-examples")
    upload_seed_inputs(s3)
    for name in ("digits_cnn.py", "digits_cnn.pt"):
        s3.upload_file(str(EXAMPLES / name), "modeldeploy-examples", f"quickstart/{name}")
    config = {
        "placement": {"ascend": {"env": image_environment(TESTS / "ascend_toolchain")},
                      "magicmind": {"env": image_environment(TESTS / "magicmind_toolchain")}},
        "maxJobsPerDeployment": 2,
        "jobs": {"backoffLimit": BACKOFF_LIMIT},
        # what a spec sets to pick the emulated chip or card, or to make the atc stand-in fail
        "policy": {"envNames": ["ASCEND_STANDIN_*", "MAGICMIND_STANDIN_*", "ATC_STANDIN_*"]},
    }
    with running_operator(environment, tmp_path_factory.mktemp("operator"), every_namespace=False,
                          config=config) as (kube, operator):
        yield kube, operator, s3


def digits_on(name: str, target: dict[str, Any]) -> dict[str, Any]:
    return quickstart(**{"metadata.name": name, "spec.targets": [target],
                         "spec.performance": {"warmup": 2, "iterations": 10}})


def pods_of(kube: Kube, job: str) -> list[dict[str, Any]]:
    return kube.list("pods", kube.namespace, f"batch.kubernetes.io/job-name={job}")


def assert_placed_by_resource(kube: Kube, name: str) -> set[str]:
    """Every pod of the deployment's Jobs ran on the node with the device its container asks for, or on the CPU
    node when it asks for none; the nodes used."""
    nodes = set()
    for job in jobs_of(kube, name):
        limits = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        devices = [resource for resource in limits if resource in NODE_OF]
        expected = NODE_OF[devices[0]] if devices else CPU_NODE
        pods = pods_of(kube, job["metadata"]["name"])
        assert pods, job["metadata"]["name"]
        for pod in pods:
            assert pod["spec"]["nodeName"] == expected, (job["metadata"]["name"], pod["spec"]["nodeName"])
            nodes.add(pod["spec"]["nodeName"])
    return nodes


def test_the_operator_runs_as_the_namespaced_service_account(cluster: tuple[Kube, Operator, Any]) -> None:
    kube, operator, _ = cluster
    user = whoami(operator.environment["KUBECONFIG"], kube.kubectl_binary)
    assert user == f"system:serviceaccount:{kube.namespace}:{SERVICE_ACCOUNT}"
    assert kube.get("roles.rbac.authorization.k8s.io", kube.namespace, SERVICE_ACCOUNT) is not None

    def can(*args: str) -> str:
        return kube.kubectl("auth", "can-i", *args, f"--as={user}", check=False).stdout.strip()

    assert can("list", "jobs.batch") == "yes"
    assert can("list", "jobs.batch", "--all-namespaces") == "no"  # nothing outside its namespace
    assert can("list", "namespaces") == "no" and can("list", "customresourcedefinitions") == "no"


def test_an_ascend_target_reaches_ready_with_evaluation_on_the_npu_node(cluster: tuple[Kube, Operator, Any]) -> None:
    kube, _, _ = cluster
    apply(kube, digits_on("digits-npu", {**NPU, "precisions": ["fp16", "int8"], "batchSizes": [1, 8]}))
    body = wait_for(lambda: ready(kube, "digits-npu"), READY_SECONDS, interval=1, what="digits-npu Ready")
    results = body["status"]["results"]
    assert len(results) == 4 and all(cell["top1"] > 0.9 and cell["throughput"] > 0 for cell in results)
    assert {cell["gate"] for cell in results} == {"Passed"}
    jobs = {job["metadata"]["labels"]["modeldeploy.io/stage"]: job for job in jobs_of(kube, "digits-npu")}
    for stage, on_npu in (("calibrate", False), ("compile", False), ("evaluate", True)):
        pod = jobs[stage]["spec"]["template"]["spec"]
        limits = pod["containers"][0]["resources"]["limits"]
        assert ("huawei.com/Ascend310P" in limits) == on_npu, stage
        assert (pod.get("nodeSelector") == {"node.kubernetes.io/npu.chip.name": "310P3"}) == on_npu, stage
    assert assert_placed_by_resource(kube, "digits-npu") == {CPU_NODE, "ascend310p-1"}


def test_an_atc_error_fails_its_job_at_once_through_the_pod_failure_policy(cluster: tuple[Kube, Operator, Any]
                                                                            ) -> None:
    kube, _, _ = cluster
    # batch 2: a compile no other deployment has done (placement does not enter task keys)
    target = {**NPU, "precisions": ["fp16"], "batchSizes": [2], "placement": {"env": {"ATC_STANDIN_FAIL": "E10001"}}}
    apply(kube, digits_on("atc-fails", target))
    body = wait_for(lambda: (b := deployment(kube, "atc-fails")) and (b.get("status") or {}).get("phase") == "Failed"
                    and b, READY_SECONDS, interval=1, what="atc-fails to settle")
    stalled = condition(body, "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "StageFailed"
    assert stalled["message"].startswith("compile npu/fp16/bs2: CompileRejected: atc failed (exit 255): E10001: Value")
    stages = {stage["name"]: stage for stage in body["status"]["stages"]}
    assert stages["evaluate npu/fp16/bs2"]["phase"] == "Skipped"
    compile_job = kube.get("jobs.batch", kube.namespace, stages["compile npu/fp16/bs2"]["job"])
    assert compile_job is not None
    failed = condition(compile_job, "Failed")
    assert failed["reason"] == "PodFailurePolicy" and "exit code 3" in failed["message"]
    assert compile_job["status"]["failed"] == 1 and len(pods_of(kube, compile_job["metadata"]["name"])) == 1


def test_a_transient_atc_error_is_retried_up_to_the_backoff_limit(cluster: tuple[Kube, Operator, Any]) -> None:
    kube, _, _ = cluster
    # E19999, an internal error: the toolchain's fault (exit 1), which the Job controller retries
    target = {**NPU, "precisions": ["fp16"], "batchSizes": [3], "placement": {"env": {"ATC_STANDIN_FAIL": "E19999"}}}
    apply(kube, digits_on("atc-flaky", target))
    body = wait_for(lambda: (b := deployment(kube, "atc-flaky")) and (b.get("status") or {}).get("phase") == "Failed"
                    and b, READY_SECONDS, interval=1, what="atc-flaky to settle")
    stage = next(stage for stage in body["status"]["stages"] if stage["name"] == "compile npu/fp16/bs3")
    assert stage["message"].startswith("CompileFailed: ") and stage["message"].endswith(
        f"(after {BACKOFF_LIMIT + 1} attempts)")
    compile_job = kube.get("jobs.batch", kube.namespace, stage["job"])
    assert compile_job is not None and condition(compile_job, "Failed")["reason"] == "BackoffLimitExceeded"
    pods = pods_of(kube, stage["job"])
    assert len(pods) == BACKOFF_LIMIT + 1 and {pod["status"]["phase"] for pod in pods} == {"Failed"}
    assert {pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] for pod in pods} == {1}


def test_a_transient_atc_error_that_passes_on_the_retry_reaches_ready(cluster: tuple[Kube, Operator, Any],
                                                                      tmp_path: Path) -> None:
    kube, _, _ = cluster
    once = tmp_path / f"failed-once-{uuid.uuid4().hex[:6]}"  # the pods are processes of this machine
    target = {**NPU, "precisions": ["fp16"], "batchSizes": [5],
              "placement": {"env": {"ATC_STANDIN_FAIL": "E19999", "ATC_STANDIN_FAIL_ONCE": str(once)}}}
    apply(kube, digits_on("atc-once", target))
    body = wait_for(lambda: ready(kube, "atc-once"), READY_SECONDS, interval=1, what="atc-once Ready")
    stage = next(stage for stage in body["status"]["stages"] if stage["name"] == "compile npu/fp16/bs5")
    assert stage["phase"] == "Succeeded" and stage["attempts"] == 2
    phases = sorted(pod["status"]["phase"] for pod in pods_of(kube, stage["job"]))
    assert phases == ["Failed", "Succeeded"]


def test_an_mlu_target_builds_and_evaluates_on_the_mlu_node(cluster: tuple[Kube, Operator, Any]) -> None:
    kube, _, _ = cluster
    target = {**MLU, "precisions": ["fp16", "int8"], "batchSizes": [4],
              "placement": {"env": {"MAGICMIND_STANDIN_CARDS": "MLU370-X4"}}}
    apply(kube, digits_on("digits-mlu", target))
    body = wait_for(lambda: ready(kube, "digits-mlu"), READY_SECONDS, interval=1, what="digits-mlu Ready")
    results = body["status"]["results"]
    assert len(results) == 2 and all(cell["top1"] > 0.9 and cell["throughput"] > 0 for cell in results)
    jobs = {job["metadata"]["labels"]["modeldeploy.io/stage"]: job for job in jobs_of(kube, "digits-mlu")}
    assert "calibrate" not in jobs  # MagicMind calibrates on the MLU while it builds
    for stage in ("compile", "evaluate"):
        pod = jobs[stage]["spec"]["template"]["spec"]
        assert pod["containers"][0]["resources"]["limits"]["cambricon.com/mlu370"] == "1", stage  # quantities are strings
        assert {"key": "cambricon.com/mlu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert "mlu370-1" in assert_placed_by_resource(kube, "digits-mlu")


def device_holder(count: int) -> dict[str, Any]:
    """A pod that takes `count` of the Ascend 310P node's devices and keeps them."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "holds-the-npus"},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                     "nodeSelector": {"node.kubernetes.io/npu.chip.name": "310P3"},
                     "tolerations": [{"key": "huawei.com/Ascend310P", "operator": "Exists", "effect": "NoSchedule"}],
                     "containers": [{"name": "hold", "image": "busybox", "command": ["sleep", "3600"],
                                     "resources": {"limits": {"huawei.com/Ascend310P": count}}}]}}


def test_with_no_free_device_the_stage_waits_pending_and_the_status_says_why(cluster: tuple[Kube, Operator, Any]
                                                                              ) -> None:
    kube, _, _ = cluster
    node = kube.get("nodes", None, NODE_OF["huawei.com/Ascend310P"])
    assert node is not None
    devices = int(node["status"]["allocatable"]["huawei.com/Ascend310P"])
    apply(kube, device_holder(devices))
    wait_for(lambda: (kube.get("pods", kube.namespace, "holds-the-npus") or {}).get("status", {}).get("phase")
             == "Running", 120, what="the pod holding every NPU to run")
    try:
        apply(kube, digits_on("no-free-npu", {**NPU, "precisions": ["fp16"], "batchSizes": [6]}))

        def waiting() -> dict[str, Any] | None:
            body = deployment(kube, "no-free-npu")
            stages = (body.get("status") or {}).get("stages") or []
            return body if any(stage["phase"] == "Pending" and stage.get("job") for stage in stages) else None

        body = wait_for(waiting, READY_SECONDS, interval=1, what="a stage waiting for a node")
        stage = next(stage for stage in body["status"]["stages"] if stage["phase"] == "Pending" and stage.get("job"))
        assert stage["name"] == "evaluate npu/fp16/bs6"
        assert re.match(r"Unschedulable: 0/\d+ nodes are available: ", stage["message"]), stage["message"]
        assert "Insufficient huawei.com/Ascend310P" in stage["message"]
        reconciling = condition(body, "Reconciling")
        assert reconciling["status"] == "True" and "evaluate npu/fp16/bs6 waits for a node: Unschedulable: " in (
            reconciling["message"])
        assert condition(body, "Stalled")["status"] == "False"
        pod = pods_of(kube, stage["job"])[0]
        assert pod["status"]["phase"] == "Pending" and not pod["spec"].get("nodeName")
        wait_for(lambda: any(event.get("reason") == "Unschedulable" and event["involvedObject"]["name"] == "no-free-npu"
                             for event in kube.list("events", kube.namespace)), 30, what="the Unschedulable Event")
    finally:
        kube.kubectl("delete", "pod", "holds-the-npus", "--wait=false")
    body = wait_for(lambda: ready(kube, "no-free-npu"), READY_SECONDS, interval=1, what="no-free-npu Ready")
    assert assert_placed_by_resource(kube, "no-free-npu") == {CPU_NODE, "ascend310p-1"}


@pytest.mark.parametrize("seed", sorted(MODELS))
def test_the_guides_specs_reach_ready(seed: str, cluster: tuple[Kube, Operator, Any]) -> None:
    kube, _, s3 = cluster
    upload_model(s3, seed)
    document = scaled_down(seed)
    for target in document["spec"]["targets"]:
        variable, value = EMULATED_NODE[target["backend"]]
        target["placement"] = {"env": {variable: value(target["device"])}}
    apply(kube, document)
    name = document["metadata"]["name"]
    try:
        body = wait_for(lambda: ready(kube, name), SEED_READY_SECONDS, interval=2, what=f"{name} Ready")
    except AssertionError:
        status = deployment(kube, name).get("status") or {}
        raise AssertionError(f"{name} not Ready: {status.get('conditions')}\n" + "\n".join(
            f"{stage['name']}: {stage['phase']} {stage.get('message') or ''}" for stage in status.get("stages") or []
        )) from None
    cells = body["status"]["results"]
    assert cells and all(cell["top1"] is not None and cell["throughput"] > 0 for cell in cells)
    assert all(cell["artifact"].endswith(("/model.om", "/model.mm")) for cell in cells)
    assert_placed_by_resource(kube, name)
    kube.kubectl("delete", "mdep", name, "--timeout=60s")
