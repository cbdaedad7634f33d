"""The test Kubernetes API server and node agent (tests/kube/), checked with kubectl, the kubernetes client and kopf."""

from __future__ import annotations

import base64
import copy
import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kmock
import kopf
import pytest
import yaml
from conftest import EXAMPLES
from kopf.testing import KopfRunner
from kube.apiserver import ApiServer, wait_for
from kube.node_agent import NodeAgent
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

pytest_plugins = ["kube.fixtures"]

QUICKSTART = EXAMPLES / "quickstart.yaml"
MDEP = ("modeldeploy.io", "v1alpha1", "default", "modeldeployments")
# The operator's own policy: exit code 3 means the inputs are at fault, so retrying cannot help.
FAIL_ON_3 = {"rules": [
    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
    {"action": "FailJob", "onExitCodes": {"containerName": "stage", "operator": "In", "values": [3]}},
]}


def _job(name: str, code: str = "pass", labels: dict[str, str] | None = None, env: list[dict[str, Any]] | None = None,
         owners: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    container = {"name": "stage", "image": "python:3.11", "command": ["python", "-c", code], "env": env or []}
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "labels": labels or {}, "ownerReferences": owners or []},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [container]}}, **spec},
    }


def _owner(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": meta["name"], "uid": meta["uid"]}


def _create_jobs(server: ApiServer, *jobs: dict[str, Any]) -> None:
    with server.api_client() as api:
        for job in jobs:
            client.BatchV1Api(api).create_namespaced_job("default", job)


def _finished(server: ApiServer, name: str) -> dict[str, Any] | None:
    """The Job's status once it has a Complete or Failed condition."""
    status = (server.get("jobs", "default", name) or {}).get("status") or {}
    return status if {"Complete", "Failed"} & {c["type"] for c in status.get("conditions", ())} else None


def _conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {condition["type"]: condition for condition in status["conditions"]}


def _rows(table: str) -> list[list[str]]:
    return [line.split() for line in table.splitlines()]


# The API server


def test_kubectl_apply_get_and_generation(apiserver: ApiServer) -> None:
    assert "created" in apiserver.kubectl("apply", "-f", str(QUICKSTART)).stdout

    table = _rows(apiserver.kubectl("get", "mdep").stdout)
    assert table[0] == ["NAME", "PHASE", "TARGETS", "BEST", "AGE"]
    assert table[1][0] == "quickstart"
    listing = json.loads(apiserver.kubectl(
        "get", "--raw", "/apis/modeldeploy.io/v1alpha1/namespaces/default/modeldeployments").stdout)
    assert listing["kind"] == "ModelDeploymentList"
    assert listing["apiVersion"] == "modeldeploy.io/v1alpha1"
    assert listing["metadata"]["resourceVersion"]
    created = json.loads(apiserver.kubectl("get", "modeldeployments.modeldeploy.io", "quickstart", "-o", "json").stdout)
    assert created["metadata"]["generation"] == 1
    assert created["metadata"]["uid"] and created["metadata"]["creationTimestamp"]

    assert "unchanged" in apiserver.kubectl("apply", "-f", str(QUICKSTART)).stdout
    assert apiserver.get("mdep", "default", "quickstart") == created

    edited = yaml.safe_load(QUICKSTART.read_text())
    edited["spec"]["calibration"]["samples"] = 64
    assert "configured" in apiserver.kubectl("apply", "-f", "-", input=yaml.safe_dump(edited)).stdout
    stored = apiserver.get("mdep", "default", "quickstart")
    assert stored is not None
    assert stored["spec"]["calibration"]["samples"] == 64
    assert stored["metadata"]["generation"] == 2
    assert int(stored["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])


def test_status_subresource_is_isolated(apiserver: ApiServer) -> None:
    apiserver.kubectl("apply", "-f", str(QUICKSTART))
    with apiserver.api_client() as api:
        custom = client.CustomObjectsApi(api)
        on_status = custom.patch_namespaced_custom_object_status(
            *MDEP, "quickstart", {"status": {"phase": "Running"}, "spec": {"calibration": {"samples": 1}}})
        assert on_status["status"] == {"phase": "Running"}
        assert on_status["spec"]["calibration"]["samples"] == 128
        assert on_status["metadata"]["generation"] == 1

        on_main = custom.patch_namespaced_custom_object(
            *MDEP, "quickstart", {"status": {"phase": "Hacked"}, "metadata": {"labels": {"team": "a"}}})
        assert on_main["status"] == {"phase": "Running"}
        assert on_main["metadata"]["labels"] == {"team": "a"}
        assert on_main["metadata"]["generation"] == 1
        no_op = custom.patch_namespaced_custom_object(*MDEP, "quickstart", {"status": {"phase": "Hacked"}})
        assert no_op["metadata"]["resourceVersion"] == on_main["metadata"]["resourceVersion"]

        stale = copy.deepcopy(on_status)
        stale["status"] = {"phase": "Stale"}
        with pytest.raises(ApiException) as conflict:
            custom.replace_namespaced_custom_object_status(*MDEP, "quickstart", stale)
        assert conflict.value.status == 409
        current = copy.deepcopy(no_op)
        current["status"] = {"phase": "Succeeded", "targets": "2/2", "bestSummary": "openvino/int8/b32",
                             "conditions": [{"type": "Ready", "status": "True", "reason": "Measured"}]}
        replaced = custom.replace_namespaced_custom_object_status(*MDEP, "quickstart", current)
        assert replaced["status"] == current["status"]
        assert replaced["metadata"]["generation"] == 1

    wide = _rows(apiserver.kubectl("get", "mdep", "-o", "wide").stdout)
    assert wide[0] == ["NAME", "PHASE", "TARGETS", "BEST", "READY", "REASON", "AGE"]
    assert wide[1][:6] == ["quickstart", "Succeeded", "2/2", "openvino/int8/b32", "True", "Measured"]
    apiserver.kubectl("patch", "mdep", "quickstart", "--type=json",
                      "-p", '[{"op": "replace", "path": "/spec/calibration/samples", "value": 32}]')
    assert (apiserver.get("mdep", "default", "quickstart") or {})["metadata"]["generation"] == 2


def test_kmock_reactions_intercept_requests_before_they_take_effect(apiserver: ApiServer) -> None:
    apiserver.kubectl("apply", "-f", str(QUICKSTART))
    assert apiserver.emulator is not None
    status = kmock.resource("modeldeploy.io", "v1alpha1", "modeldeployments"), kmock.subresource("status")
    conflict_once = apiserver.emulator["patch", *status][:1] << 409
    with apiserver.api_client() as api:
        custom = client.CustomObjectsApi(api)
        with pytest.raises(ApiException) as conflict:
            custom.patch_namespaced_custom_object_status(*MDEP, "quickstart", {"status": {"phase": "Lost"}})
        assert conflict.value.status == 409
        assert "status" not in (apiserver.get("mdep", "default", "quickstart") or {})
        custom.patch_namespaced_custom_object_status(*MDEP, "quickstart", {"status": {"phase": "Running"}})
    assert len(list(conflict_once)) == 1
    assert (apiserver.get("mdep", "default", "quickstart") or {})["status"] == {"phase": "Running"}


def test_kubectl_follows_watches(apiserver: ApiServer) -> None:
    apiserver.kubectl("apply", "-f", str(QUICKSTART))
    command = apiserver.kubectl_command("get", "mdep", "--watch")
    with ThreadPoolExecutor(max_workers=2) as pool, subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as get:
        output = get.stdout
        assert output is not None

        def line() -> list[str]:
            return pool.submit(output.readline).result(timeout=10).split()

        try:
            assert line() == ["NAME", "PHASE", "TARGETS", "BEST", "AGE"]
            assert line()[0] == "quickstart"
            waiting = pool.submit(apiserver.kubectl, "wait", "--for=jsonpath={.status.phase}=Ready",
                                  "mdep/quickstart", "--timeout=20s")
            assert apiserver.emulator is not None
            wait_for(lambda: len(list(apiserver.emulator[kmock.action.WATCH])) == 2, what="kubectl wait to watch")
            apiserver.kubectl("patch", "mdep", "quickstart", "--subresource=status", "--type=merge",
                              "-p", '{"status": {"phase": "Ready"}}')
            assert line()[:2] == ["quickstart", "Ready"]
            assert "condition met" in waiting.result(timeout=20).stdout
        finally:
            get.terminate()


def test_delete_honours_finalizers_then_collects_owned_jobs(apiserver: ApiServer) -> None:
    apiserver.kubectl("apply", "-f", str(QUICKSTART))
    apiserver.kubectl("patch", "mdep", "quickstart", "--type=merge", "-p", '{"metadata": {"finalizers": ["test/hold"]}}')
    owner = apiserver.get("mdep", "default", "quickstart")
    assert owner is not None
    with apiserver.api_client() as api:
        anchor = client.CoreV1Api(api).create_namespaced_secret("default", {"metadata": {"name": "anchor"}})
        other_owner = {"apiVersion": "v1", "kind": "Secret", "name": "anchor", "uid": anchor.metadata.uid}
    _create_jobs(apiserver, _job("owned", owners=[_owner(owner)]), _job("unowned"),
                 _job("co-owned", owners=[_owner(owner), other_owner]))

    apiserver.kubectl("delete", "mdep", "quickstart", "--wait=false")
    terminating = apiserver.get("mdep", "default", "quickstart")
    assert terminating is not None
    assert terminating["metadata"]["deletionTimestamp"]
    assert apiserver.get("jobs", "default", "owned") is not None

    apiserver.kubectl("patch", "mdep", "quickstart", "--type=merge", "-p", '{"metadata": {"finalizers": null}}')
    assert apiserver.get("mdep", "default", "quickstart") is None
    assert apiserver.get("jobs", "default", "owned") is None
    assert {job["metadata"]["name"] for job in apiserver.list("jobs", "default")} == {"unowned", "co-owned"}


def test_label_and_field_selectors_on_list_and_watch(apiserver: ApiServer) -> None:
    _create_jobs(apiserver, _job("a", labels={"stage": "convert", "owner": "x"}),
                 _job("b", labels={"stage": "evaluate", "owner": "x"}), _job("c", labels={"stage": "convert"}))
    with apiserver.api_client() as api:
        batch = client.BatchV1Api(api)

        def names(**selectors: str) -> list[str]:
            return [job.metadata.name for job in batch.list_namespaced_job("default", **selectors).items]

        assert names(label_selector="stage=convert,owner=x") == ["a"]
        assert names(label_selector="stage!=convert") == ["b"]
        assert names(field_selector="metadata.name=c") == ["c"]
        assert apiserver.kubectl("get", "jobs", "-l", "owner==x", "-o", "name").stdout.split() == [
            "job.batch/a", "job.batch/b"]

        since = batch.list_namespaced_job("default").metadata.resource_version
        for name in ("c", "b", "a"):
            batch.patch_namespaced_job(name, "default", {"metadata": {"annotations": {"touched": "yes"}}})
        events = watch.Watch().stream(batch.list_namespaced_job, "default", label_selector="stage=convert",
                                      resource_version=since, deserialize=False)
        seen = [(event["type"], event["object"]["metadata"]["name"]) for _, event in zip(range(2), events)]
        assert seen == [("MODIFIED", "c"), ("MODIFIED", "a")]


def test_events_namespaces_and_secrets(apiserver: ApiServer) -> None:
    with apiserver.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespaced_event("default", {
            "metadata": {"generateName": "quickstart."}, "type": "Normal", "reason": "Planned", "message": "3 tasks",
            "involvedObject": {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment",
                               "name": "quickstart", "namespace": "default"},
        })
        [event] = core.list_namespaced_event("default").items
        assert event.metadata.name.startswith("quickstart.")
        assert event.message == "3 tasks"

        since = core.list_namespace().metadata.resource_version
        core.create_namespaced_secret("team-a", {"metadata": {"name": "store"}, "stringData": {"key": "value"}})
        assert [ns.metadata.name for ns in core.list_namespace().items] == ["default", "team-a"]
        namespaces = watch.Watch().stream(core.list_namespace, resource_version=since, deserialize=False)
        assert [(event["type"], event["object"]["metadata"]["name"]) for _, event in zip(range(1), namespaces)] == [
            ("ADDED", "team-a")]
        assert core.read_namespaced_secret("store", "team-a").data == {"key": base64.b64encode(b"value").decode()}
    assert apiserver.kubectl("get", "namespaces", "-o", "name").stdout.split() == [
        "namespace/default", "namespace/team-a"]


def test_a_crd_written_through_the_api_is_served(apiserver: ApiServer) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
                 "versions": [{"name": "v1", "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": {"type": "object"}}}]},
    }
    apiserver.kubectl("apply", "-f", "-", input=json.dumps(crd))
    apiserver.kubectl("wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=10s")
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1}}
    apiserver.kubectl("apply", "-f", "-", input=json.dumps(widget))
    assert _rows(apiserver.kubectl("get", "widgets").stdout)[0] == ["NAME", "AGE"]
    assert (apiserver.get("widgets.example.com", "default", "w") or {})["spec"] == {"size": 1}


# The node agent


def test_node_agent_runs_a_job_to_completion(apiserver: ApiServer, node_agent: NodeAgent) -> None:
    code = "import os, sys; print('hello', os.environ['GREETING']); print(sys.executable)"
    _create_jobs(apiserver, _job("hello", code, env=[{"name": "GREETING", "value": "world"}]))
    status = wait_for(lambda: _finished(apiserver, "hello"))
    assert status["succeeded"] == 1
    assert status["active"] == 0
    assert status["startTime"] <= status["completionTime"]
    assert list(_conditions(status)) == ["SuccessCriteriaMet", "Complete"]
    assert all(c["status"] == "True" and c["lastTransitionTime"] for c in status["conditions"])
    output = node_agent.log_path("hello").read_text()
    assert "hello world" in output
    assert sys.executable in output  # `python` resolves to this interpreter


@pytest.mark.parametrize(("code", "spec", "reason", "attempts"), [
    pytest.param("raise SystemExit(3)", {"podFailurePolicy": FAIL_ON_3, "backoffLimit": 6}, "PodFailurePolicy", 1,
                 id="fail-job-rule"),
    pytest.param("raise SystemExit(1)", {"podFailurePolicy": FAIL_ON_3, "backoffLimit": 1}, "BackoffLimitExceeded", 2,
                 id="backoff-limit"),
    pytest.param("import time; time.sleep(30)", {"activeDeadlineSeconds": 1}, "DeadlineExceeded", 1, id="deadline"),
])
def test_node_agent_fails_jobs_as_the_job_controller_does(
    apiserver: ApiServer, node_agent: NodeAgent, code: str, spec: dict[str, Any], reason: str, attempts: int
) -> None:
    _create_jobs(apiserver, _job("failing", code, **spec))
    status = wait_for(lambda: _finished(apiserver, "failing"))
    assert list(_conditions(status)) == ["FailureTarget", "Failed"]
    assert _conditions(status)["Failed"]["reason"] == reason
    assert status["failed"] == attempts
    assert status["active"] == 0
    assert "completionTime" not in status
    assert node_agent.log_path("failing").read_text().count("--- attempt") == attempts


def test_node_agent_retries_until_success(apiserver: ApiServer, node_agent: NodeAgent, tmp_path: Path) -> None:
    code = ("import os, pathlib; marker = pathlib.Path(os.environ['MARKER']); first = not marker.exists(); "
            "marker.touch(); raise SystemExit(1 if first else 0)")
    _create_jobs(apiserver, _job("flaky", code, env=[{"name": "MARKER", "value": str(tmp_path / "tried")}],
                                 backoffLimit=2))
    status = wait_for(lambda: _finished(apiserver, "flaky"))
    assert "Complete" in _conditions(status)
    assert (status["failed"], status["succeeded"]) == (1, 1)


def test_node_agent_reads_env_from_secrets(apiserver: ApiServer, node_agent: NodeAgent) -> None:
    with apiserver.api_client() as api:
        client.CoreV1Api(api).create_namespaced_secret(
            "default", {"metadata": {"name": "store"}, "stringData": {"AWS_ACCESS_KEY_ID": "key-1"}})

    def from_secret(name: str, secret: str = "store", optional: bool = False) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": name, "optional": optional}}}

    code = "import os; print('id', os.environ['AWS_ACCESS_KEY_ID'], os.environ.get('AWS_SESSION_TOKEN'))"
    _create_jobs(apiserver,
                 _job("with-secret", code, env=[from_secret("AWS_ACCESS_KEY_ID"),
                                                from_secret("AWS_SESSION_TOKEN", optional=True)]),
                 _job("without-secret", env=[from_secret("AWS_ACCESS_KEY_ID", secret="absent")], backoffLimit=0))
    assert "Complete" in _conditions(wait_for(lambda: _finished(apiserver, "with-secret")))
    assert "id key-1 None" in node_agent.log_path("with-secret").read_text()
    assert "Failed" in _conditions(wait_for(lambda: _finished(apiserver, "without-secret")))
    assert "cannot start" in node_agent.log_path("without-secret").read_text()


def test_node_agent_limits_parallelism_and_kills_deleted_jobs(apiserver: ApiServer, tmp_path: Path) -> None:
    with NodeAgent(apiserver.kubeconfig, tmp_path / "agent", parallelism=1) as agent:
        _create_jobs(apiserver, _job("long", "import os, time; print('pid', os.getpid(), flush=True); time.sleep(60)"),
                     _job("next"))
        log = agent.log_path("long")
        pid = int(wait_for(lambda: log.exists() and re.search(r"pid (\d+)", log.read_text()))[1])
        assert "startTime" not in ((apiserver.get("jobs", "default", "next") or {}).get("status") or {})

        apiserver.kubectl("delete", "job", "long")
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), what="the deleted Job's process to end")
        assert "Complete" in _conditions(wait_for(lambda: _finished(apiserver, "next")))
    assert not agent.errors


# kopf against the server

HANDLERS = '''
import kopf


@kopf.on.login()
def login(**kwargs):
    return kopf.login_with_kubeconfig(**kwargs)


@kopf.on.create("modeldeploy.io", "v1alpha1", "modeldeployments")
def created(body, patch, **_):
    patch.status["phase"] = "Seen"
    kopf.info(body, reason="Seen", message="seen by the smoke test")


@kopf.on.delete("modeldeploy.io", "v1alpha1", "modeldeployments")
def deleted(**_):
    pass
'''


@pytest.mark.parametrize("scope", ["--all-namespaces", "--namespace=default"])
def test_kopf_discovers_watches_and_patches_status(
    apiserver: ApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scope: str
) -> None:
    module = tmp_path / "kube_testbed_handlers.py"
    module.write_text(HANDLERS)
    monkeypatch.setenv("KUBECONFIG", str(apiserver.kubeconfig))
    previous = kopf.get_default_registry()
    try:
        with KopfRunner(["run", "--standalone", scope, "--verbose", str(module)], registry=kopf.OperatorRegistry(),
                        timeout=30) as runner:
            apiserver.kubectl("apply", "-f", str(QUICKSTART))
            seen = wait_for(lambda: ((apiserver.get("mdep", "default", "quickstart") or {}).get("status") or {})
                            .get("phase") == "Seen", what="kopf to patch the status")
            stored = apiserver.get("mdep", "default", "quickstart")
            assert seen and stored is not None
            assert stored["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]
            assert stored["metadata"]["generation"] == 1
            wait_for(lambda: [event for event in apiserver.list("events", "default") if event["reason"] == "Seen"],
                     what="kopf to post an Event")
            apiserver.kubectl("delete", "mdep", "quickstart", "--timeout=20s")  # waits for kopf's finalizer
            assert apiserver.get("mdep", "default", "quickstart") is None
    finally:
        kopf.set_default_registry(previous)
        sys.modules.pop("kube_testbed_handlers", None)
    assert runner.exit_code == 0
    assert "Handler 'created' succeeded." in runner.output
    assert "Handler 'deleted' succeeded." in runner.output
    assert "inconsisten" not in runner.output  # kopf checks that its patches took effect


def test_the_server_in_a_process_of_its_own_counts_requests_and_stops_with_stdin() -> None:
    process = subprocess.Popen([sys.executable, "-m", "kube.apiserver"], cwd=Path(__file__).parent,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdin is not None and process.stdout is not None
    try:
        kubeconfig = process.stdout.readline().strip()
        listed = subprocess.run(["kubectl", f"--kubeconfig={kubeconfig}", "get", "namespaces", "-o", "name"],
                                capture_output=True, text=True, timeout=60, check=True)
        assert listed.stdout.split() == ["namespace/default"]
        process.stdin.write("requests\n")
        process.stdin.flush()
        assert int(process.stdout.readline()) >= 1
    finally:
        process.stdin.close()
        assert process.wait(timeout=30) == 0
    assert not Path(kubeconfig).exists()
