"""The testdata of the GitOps health checks (gitops/argocd/resource_customizations/modeldeploy.io/ModelDeployment):
objects the operator wrote on a real control plane, one file per situation, and what Argo CD's health check must
say of each (HEALTH).

tests/cluster/test_gitops_status.py captures every situation but `queued`, which needs Kueue's own controller
manager and is captured by tests/cluster/test_kueue.py. Both compare their fresh objects with the committed ones
(`compare_with_committed`: what the situation is about, not names and times) and run tests/gitops (health.lua under
gopher-lua, kstatus) on them (`check_with_go`). With MODELDEPLOY_GITOPS_RECAPTURE=1 the fresh objects are written
over the committed ones, and health_test.yaml again for all.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from gitops_checks import MODEL_DEPLOYMENT, go_test
from scenarios import condition

Object = dict[str, Any]
QUEUED_IN_KUEUE = "queued in Kueue "  # how a stage whose Job waits in a Kueue queue begins its message
CAPTURED_WITH_KUEUE = frozenset({"queued"})  # by tests/cluster/test_kueue.py


def observed(body: Object) -> bool:
    return (body.get("status") or {}).get("observedGeneration") == body["metadata"].get("generation")


def reason(body: Object, kind: str) -> str:
    return condition(body, kind).get("reason", "")


def stages(body: Object) -> list[Object]:
    return (body.get("status") or {}).get("stages") or []


def _waiting_with_a_job(body: Object, in_a_queue: bool) -> bool:
    return any(stage["phase"] == "Pending" and stage.get("job")
               and (stage.get("message") or "").startswith(QUEUED_IN_KUEUE) == in_a_queue for stage in stages(body))


def waits_for_a_node(body: Object) -> bool:
    return _waiting_with_a_job(body, in_a_queue=False)


def waits_in_a_queue(body: Object) -> bool:
    return _waiting_with_a_job(body, in_a_queue=True)


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
        "stageQueued": waits_in_a_queue(body),
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
    "queued": ("Suspended", lambda body: condition(body, "Reconciling")["message"]),
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


def committed() -> dict[str, Object]:
    """The committed objects, by situation."""
    return {path.stem: yaml.safe_load(path.read_text()) for path in (MODEL_DEPLOYMENT / "testdata").glob("*.yaml")}


def write_tree(directory: Path, objects: Mapping[str, Object]) -> None:
    """health_test.yaml and testdata/ in Argo CD's layout, for these objects."""
    (directory / "testdata").mkdir(parents=True, exist_ok=True)
    tests = []
    for situation, body in sorted(objects.items()):
        path = f"testdata/{situation}.yaml"
        (directory / path).write_text(yaml.safe_dump(body, sort_keys=False))
        status, message = HEALTH[situation]
        tests.append({"healthStatus": {"status": status, "message": message(body)}, "inputPath": path})
    header = ("# Generated by tests/cluster/test_gitops_status.py and test_kueue.py (MODELDEPLOY_GITOPS_RECAPTURE=1) from\n"
              "# objects the operator wrote on a real control plane; the expected health of each situation is HEALTH\n"
              "# of tests/cluster/gitops_testdata.py.\n")
    (directory / "health_test.yaml").write_text(header + yaml.safe_dump({"tests": tests}, sort_keys=False))


def compare_with_committed(captured: Mapping[str, Object]) -> None:
    """Each fresh object is what its committed one is about; every situation of HEALTH is committed, and no other.
    With MODELDEPLOY_GITOPS_RECAPTURE=1 the fresh objects are written over the committed ones first (and objects of
    situations no longer in HEALTH removed)."""
    if os.environ.get("MODELDEPLOY_GITOPS_RECAPTURE") == "1":
        for path in (MODEL_DEPLOYMENT / "testdata").glob("*.yaml"):
            if path.stem not in HEALTH:
                path.unlink()
        write_tree(MODEL_DEPLOYMENT, {**committed(), **captured})
    objects = committed()
    assert sorted(objects) == sorted(HEALTH)
    for situation, body in captured.items():
        assert features(objects[situation]) == features(body), situation


def check_with_go(captured: Mapping[str, Object], scratch: Path) -> None:
    """tests/gitops on a tree of health.lua and the committed objects, the fresh ones in place of theirs."""
    tree = scratch / "resource_customizations"
    directory = tree / "modeldeploy.io" / "ModelDeployment"
    directory.mkdir(parents=True)
    shutil.copy(MODEL_DEPLOYMENT / "health.lua", directory / "health.lua")
    write_tree(directory, {**committed(), **captured})
    result = go_test(tree)
    assert result.returncode == 0, f"go test failed:\n{result.stdout}\n{result.stderr}"
