"""The objects the GitOps health checks are tested on, as the operator really writes them: the operator runs on the
real control plane through each situation and the ModelDeployment is read back (`kubectl get -o json`) at that moment.

The test compares each fresh object with the committed one of
gitops/argocd/resource_customizations/modeldeploy.io/ModelDeployment/testdata (what the situation is about: the
conditions, the phase, whether the generation is observed, a stage running or waiting for a node, deletion), and runs
tests/gitops (health.lua under gopher-lua, kstatus) on the fresh objects too. With MODELDEPLOY_GITOPS_RECAPTURE=1 it
writes them over the committed testdata and health_test.yaml instead.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from gitops_checks import MODEL_DEPLOYMENT, go_test
from scenarios import Operator, apply, condition, deployment, quickstart, wait_for

from cluster.operator_env import EXAMPLES, Environment, Kube, running_operator

pytest_plugins = ["cluster.operator_fixtures"]

READY_SECONDS = 600
FINALIZER = "modeldeploy.io/finalizer"
Object = dict[str, Any]


def small(name: str, **changes: Any) -> Object:
    """One cell (convert, prepare, the reference, one evaluation, the report) in a store prefix of its own, so that
    its Jobs run rather than finding results of earlier runs; artifacts removed on deletion (a finalizer)."""
    return quickstart(**{
        "metadata.name": name,
        "spec.artifacts.uri": f"s3://modeldeploy-artifacts/gitops-{uuid.uuid4().hex[:8]}",
        "spec.artifacts.onDelete": "Delete",
        "spec.targets": [{"name": "ort", "backend": "onnxruntime", "precisions": ["fp32"], "batchSizes": [1]}],
        "spec.performance": {"warmup": 2, "iterations": 10},
        **changes,
    })


def reason(body: Object, kind: str) -> str:
    return condition(body, kind).get("reason", "")


def observed(body: Object) -> bool:
    return (body.get("status") or {}).get("observedGeneration") == body["metadata"].get("generation")


def stages(body: Object) -> list[Object]:
    return (body.get("status") or {}).get("stages") or []


def waits_for_a_node(body: Object) -> bool:
    return any(stage["phase"] == "Pending" and stage.get("job") for stage in stages(body))


def running(body: Object) -> bool:
    return (observed(body) and condition(body, "Reconciling").get("status") == "True"
            and any(stage["phase"] == "Running" for stage in stages(body)) and not waits_for_a_node(body))


def features(body: Object) -> Object:
    """What a situation is about, to compare a fresh capture with the committed one."""
    status = body.get("status") or {}
    return {
        "conditions": [(c["type"], c["status"], c["reason"]) for c in status.get("conditions") or []],
        "phase": status.get("phase"),
        "status": bool(status),
        "generationObserved": observed(body),
        "deleting": "deletionTimestamp" in body["metadata"],
        "finalizers": body["metadata"].get("finalizers"),
        "running": running(body),  # not whether some stage runs while another waits: that is timing
        "stageWaitingForANode": waits_for_a_node(body),
    }


def said(body: Object, kind: str) -> str:
    found = condition(body, kind)
    return f"{found['reason']}: {found['message']}" if found.get("message") else found["reason"]


def lag(body: Object) -> str:
    message = f"Waiting for the operator to observe generation {body['metadata']['generation']}"
    last = (body.get("status") or {}).get("observedGeneration")
    return message if last is None else f"{message} (it last observed {last})"


# Argo CD's health of each situation: the status, and the message from the object's own fields.
HEALTH: dict[str, tuple[str, Callable[[Object], str]]] = {
    "ready": ("Healthy", lambda body: condition(body, "Ready")["message"]),
    "running": ("Progressing", lambda body: condition(body, "Reconciling")["message"]),
    "waiting-for-a-node": ("Progressing", lambda body: condition(body, "Reconciling")["message"]),
    "new-generation": ("Progressing", lag),
    "not-yet-seen": ("Progressing", lag),
    "stalled-invalid-spec": ("Degraded", lambda body: said(body, "Stalled")),
    "stalled-policy-denied": ("Degraded", lambda body: said(body, "Stalled")),
    "stalled-store-unavailable": ("Degraded", lambda body: said(body, "Stalled")),
    "stalled-stage-failed": ("Degraded", lambda body: said(body, "Stalled")),
    "deleting": ("Progressing", lambda body: "Pending deletion: waiting for the finalizers "
                 + ", ".join(body["metadata"]["finalizers"])),
}


def as_captured(body: Object) -> Object:
    """The object as `kubectl get -o yaml` shows it, without managedFields and kubectl's last-applied annotation."""
    body = json.loads(json.dumps(body))
    metadata = body["metadata"]
    metadata.pop("managedFields", None)
    annotations = metadata.get("annotations") or {}
    annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    if not annotations:
        metadata.pop("annotations", None)
    return body


def capture(kube: Kube, operator: Operator) -> dict[str, Object]:
    """Each situation's object, by the name of its testdata file."""
    captured: dict[str, Object] = {}

    def take(situation: str, name: str, check: Callable[[Object], bool], timeout: float = READY_SECONDS) -> Object:
        body = wait_for(lambda: (b := deployment(kube, name)) and check(b) and b, timeout, interval=0.5,
                        what=f"{name}: {situation}")
        captured[situation] = as_captured(body)
        return body

    # more CPUs than any node has (16): the target's first Job waits for a node, after the shared stages ran
    apply(kube, small("no-node", **{"spec.targets": [{
        "name": "ort", "backend": "onnxruntime", "precisions": ["fp32"], "batchSizes": [1],
        "placement": {"resources": {"requests": {"cpu": "64"}}}}]}))
    take("running", "no-node", running)
    apply(kube, small("invalid-spec", **{"spec.source.weights": "digits_cnn.pt", "spec.artifacts.onDelete": "Retain"}))
    apply(kube, small("no-secret", **{"spec.artifacts.secretRef": {"name": "not-there"},
                                      "spec.artifacts.onDelete": "Retain"}))
    apply(kube, small("tolerates-all", **{"spec.artifacts.onDelete": "Retain", "spec.targets": [{
        "name": "ort", "backend": "onnxruntime", "precisions": ["fp32"], "batchSizes": [1],
        "placement": {"tolerations": [{"operator": "Exists"}]}}]}))  # onto every tainted node: the policy refuses
    apply(kube, small("converted"))
    apply(kube, small("small-data", **{  # batch size 8 of 6 samples fails in its evaluation
        "spec.dataset.limit": 6, "spec.calibration.samples": 4,
        "spec.targets": [{"name": "ort", "backend": "onnxruntime", "precisions": ["fp32"], "batchSizes": [4, 8]}]}))

    take("stalled-invalid-spec", "invalid-spec", lambda b: observed(b) and reason(b, "Stalled") == "InvalidSpec", 60)
    take("stalled-policy-denied", "tolerates-all", lambda b: observed(b) and reason(b, "Stalled") == "PolicyDenied", 60)
    take("stalled-store-unavailable", "no-secret",
         lambda b: observed(b) and reason(b, "Stalled") == "StoreUnavailable", 60)
    take("waiting-for-a-node", "no-node", lambda b: observed(b) and waits_for_a_node(b))
    take("stalled-stage-failed", "small-data",
         lambda b: observed(b) and (b.get("status") or {}).get("phase") == "Failed")
    ready = take("ready", "converted",
                 lambda b: observed(b) and condition(b, "Ready").get("status") == "True")

    operator.stop()  # what an Argo CD or Flux sync sees before the operator's next pass, held still
    try:
        kube.kubectl("patch", "mdep", "converted", "--type=merge", "-p",
                     json.dumps({"spec": {"performance": {"warmup": 2, "iterations": 12}}}))
        take("new-generation", "converted",
             lambda b: b["metadata"]["generation"] == ready["metadata"]["generation"] + 1, 30)
        apply(kube, small("not-yet-seen"))
        take("not-yet-seen", "not-yet-seen", lambda b: True, 30)
        kube.kubectl("delete", "mdep", "no-node", "--wait=false")
        take("deleting", "no-node", lambda b: "deletionTimestamp" in b["metadata"], 30)
    finally:
        operator.start()
    return captured


@pytest.fixture(scope="module")
def captured(environment: Environment, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Object]:
    s3 = environment.create_buckets("modeldeploy-examples", "modeldeploy-artifacts")
    for name in ("digits_cnn.py", "digits_cnn.pt"):
        s3.upload_file(str(EXAMPLES / name), "modeldeploy-examples", f"quickstart/{name}")
    with running_operator(environment, tmp_path_factory.mktemp("operator"), every_namespace=True) as (kube, operator):
        return capture(kube, operator)


def write_tree(directory: Path, objects: dict[str, Object]) -> None:
    """health.lua, health_test.yaml and testdata/ in Argo CD's layout, for these objects."""
    (directory / "testdata").mkdir(parents=True, exist_ok=True)
    tests = []
    for situation, body in sorted(objects.items()):
        path = f"testdata/{situation}.yaml"
        (directory / path).write_text(yaml.safe_dump(body, sort_keys=False))
        status, message = HEALTH[situation]
        tests.append({"healthStatus": {"status": status, "message": message(body)}, "inputPath": path})
    header = ("# Generated by tests/cluster/test_gitops_status.py (MODELDEPLOY_GITOPS_RECAPTURE=1) from objects the\n"
              "# operator wrote on a real control plane; the expected health of each situation is in HEALTH there.\n")
    (directory / "health_test.yaml").write_text(header + yaml.safe_dump({"tests": tests}, sort_keys=False))


def test_every_situation_is_captured(captured: dict[str, Object]) -> None:
    assert sorted(captured) == sorted(HEALTH)
    assert FINALIZER in captured["deleting"]["metadata"]["finalizers"]
    waiting = condition(captured["waiting-for-a-node"], "Reconciling")["message"]
    assert "waits for a node: Unschedulable: " in waiting and "Insufficient cpu" in waiting, waiting
    assert "status" not in captured["not-yet-seen"]


def test_the_committed_objects_are_what_the_operator_writes(captured: dict[str, Object]) -> None:
    if os.environ.get("MODELDEPLOY_GITOPS_RECAPTURE") == "1":
        shutil.rmtree(MODEL_DEPLOYMENT / "testdata", ignore_errors=True)
        write_tree(MODEL_DEPLOYMENT, captured)
    committed = {path.stem: yaml.safe_load(path.read_text()) for path in (MODEL_DEPLOYMENT / "testdata").glob("*.yaml")}
    assert sorted(committed) == sorted(captured)
    for situation, body in captured.items():
        assert features(committed[situation]) == features(body), situation


def test_the_health_check_and_kstatus_on_the_fresh_objects(captured: dict[str, Object], tmp_path: Path) -> None:
    tree = tmp_path / "resource_customizations"
    directory = tree / "modeldeploy.io" / "ModelDeployment"
    directory.mkdir(parents=True)
    shutil.copy(MODEL_DEPLOYMENT / "health.lua", directory / "health.lua")
    write_tree(directory, captured)
    result = go_test(tree)
    assert result.returncode == 0, f"go test failed:\n{result.stdout}\n{result.stderr}"
