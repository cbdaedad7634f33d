"""The objects the GitOps health checks are tested on, as the operator really writes them: the operator runs on the
real control plane through each situation and the ModelDeployment is read back (`kubectl get -o json`) at that moment.

Every situation of cluster/gitops_testdata.py but the one that needs Kueue (test_kueue.py captures it). The test
compares each fresh object with the committed one of
gitops/argocd/resource_customizations/modeldeploy.io/ModelDeployment/testdata (what the situation is about: the
conditions, the phase, whether the generation is observed, a stage running or waiting for a node, deletion), and runs
tests/gitops (health.lua under gopher-lua, kstatus) on the fresh objects too. With MODELDEPLOY_GITOPS_RECAPTURE=1 it
writes them over the committed testdata and health_test.yaml instead.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from scenarios import Operator, apply, condition, deployment, quickstart, wait_for

from cluster.gitops_testdata import (
    CAPTURED_WITH_KUEUE,
    HEALTH,
    Object,
    as_captured,
    check_with_go,
    compare_with_committed,
    observed,
    reason,
    running,
    waits_for_a_node,
)
from cluster.operator_env import EXAMPLES, Environment, Kube, running_operator

pytest_plugins = ["cluster.operator_fixtures"]

READY_SECONDS = 600
FINALIZER = "modeldeploy.io/finalizer"


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


def test_every_situation_is_captured(captured: dict[str, Object]) -> None:
    assert sorted(captured) == sorted(HEALTH.keys() - CAPTURED_WITH_KUEUE)
    assert FINALIZER in captured["deleting"]["metadata"]["finalizers"]
    waiting = condition(captured["waiting-for-a-node"], "Reconciling")["message"]
    assert "waits for a node: Unschedulable: " in waiting and "Insufficient cpu" in waiting, waiting
    assert "status" not in captured["not-yet-seen"]


def test_the_committed_objects_are_what_the_operator_writes(captured: dict[str, Object]) -> None:
    compare_with_committed(captured)


def test_the_health_check_and_kstatus_on_the_fresh_objects(captured: dict[str, Object], tmp_path: Path) -> None:
    check_with_go(captured, tmp_path)
