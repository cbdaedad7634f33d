"""The operator's pure parts: Job manifests and the reconcile decision."""

from __future__ import annotations

import asyncio
import math
import threading
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from modeldeploy.controller import observe
from modeldeploy.controller.config import OperatorConfig, load
from modeldeploy.controller.handlers import STATUS_SECONDS, Status, Turns, _retry_seconds
from modeldeploy.controller.informer import JobIndex, OwnedJob
from modeldeploy.controller.jobs import Owner, job_manifest, job_name
from modeldeploy.controller.observe import StoreCache
from modeldeploy.controller.reconcile import (
    JobState,
    Observed,
    decide,
    invalid,
    job_state,
    store_unavailable,
)
from modeldeploy.controller.slots import Slots
from modeldeploy.images import cpu_jobs_image
from modeldeploy.manifest import (
    Failure,
    Manifest,
    TaskDocument,
    commit,
    manifest_name,
    new_attempt,
    task_document_name,
)
from modeldeploy.planner import Plan, plan
from modeldeploy.store import FileStore
from modeldeploy.validation import FieldError, load_resource
from specs import base

OWNER = Owner("cases", "team-a", "uid-1234", 3)
META = {"name": "cases", "namespace": "team-a", "uid": "uid-1234", "generation": 3}
NOW = "2026-11-24T10:00:00Z"


def the_plan() -> tuple[Any, Plan]:
    spec = load_resource(base()).spec
    return spec, plan(spec)


def task_named(result: Plan, name: str) -> Any:
    return next(task for task in result.tasks if task.name == name)


def manifest(key: str, metrics: dict[str, Any] | None = None) -> Manifest:
    now = datetime.now(UTC)
    return Manifest(key=key, stage="x", attempt=new_attempt(), outputs={}, metrics=metrics or {}, started_at=now, finished_at=now)


def job(key: str, *, active: bool = False, succeeded: bool = False, failed: bool = False, generation: int = 3,
        reason: str | None = None) -> JobState:
    return JobState(f"job-{key[:6]}", key, active, succeeded, failed, generation, NOW, None if active else NOW,
                    reason, "the pod was evicted" if reason else None)


# ---------------------------------------------------------------- Job manifests


def test_job_manifest_runs_the_stage_command_with_job_conventions() -> None:
    spec, result = the_plan()
    task = task_named(result, "compile cpu/int8/bs8")
    body = job_manifest(OWNER, task, spec.targets[0], task.task_document("s3://artifacts/cases"),
                        "s3://artifacts/cases/tasks/k/task.json", spec.artifacts, OperatorConfig())
    meta, job_spec = body["metadata"], body["spec"]
    assert meta["name"] == job_name("cases", task) and len(meta["name"]) <= 63
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "modeldeploy-operator"
    assert meta["labels"]["modeldeploy.io/deployment"] == "cases" and meta["labels"]["modeldeploy.io/stage"] == "compile"
    assert meta["annotations"]["modeldeploy.io/task-key"] == task.key
    assert meta["ownerReferences"] == [{"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment",
                                        "name": "cases", "uid": "uid-1234", "controller": True,
                                        "blockOwnerDeletion": True}]
    assert job_spec["backoffLimit"] == 2 and job_spec["ttlSecondsAfterFinished"] == 86400
    assert job_spec["activeDeadlineSeconds"] == 21600
    assert {"action": "FailJob", "onExitCodes": {"containerName": "stage", "operator": "In", "values": [3]}} in \
        job_spec["podFailurePolicy"]["rules"]
    pod = job_spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["command"] == ["modeldeploy-stage"]
    document = next(e["value"] for e in container["env"] if e["name"] == "MODELDEPLOY_TASK")
    assert TaskDocument.model_validate_json(document) == task.task_document("s3://artifacts/cases")
    assert meta["annotations"]["modeldeploy.io/task-uri"] == "s3://artifacts/cases/tasks/k/task.json"
    assert container["image"] == cpu_jobs_image()
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert "huawei.com/Ascend310P" not in container["resources"]["limits"]
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
    assert secrets == {"AWS_ACCESS_KEY_ID": "s3-credentials", "AWS_SECRET_ACCESS_KEY": "s3-credentials",
                       "AWS_SESSION_TOKEN": "s3-credentials"}
    assert all("value" not in e or "SECRET" not in e["name"] for e in container["env"])


def test_only_device_stages_request_the_device() -> None:
    spec, result = the_plan()
    npu = spec.targets[2]
    evaluate_task = task_named(result, "evaluate npu/fp16/bs4")
    compile_task = task_named(result, "compile npu/fp16/bs4")
    evaluate = job_manifest(OWNER, evaluate_task, npu, evaluate_task.task_document("s3://a"), "u", spec.artifacts,
                            OperatorConfig())
    compile_ = job_manifest(OWNER, compile_task, npu, compile_task.task_document("s3://a"), "u", spec.artifacts,
                            OperatorConfig())
    pod = evaluate["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["huawei.com/Ascend310P"] == 1
    assert pod["nodeSelector"] == {"node.kubernetes.io/npu.chip.name": "310P3"}
    assert {"key": "huawei.com/Ascend310P", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert "runAsNonRoot" not in pod["securityContext"]
    assert "huawei.com/Ascend310P" not in compile_["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "nodeSelector" not in compile_["spec"]["template"]["spec"]


def test_an_evaluation_on_several_chips_requests_them_all() -> None:
    spec, result = the_plan()
    npu = spec.targets[2].model_copy(update={"options": {**spec.targets[2].options, "devices": 4}})
    evaluate_task = task_named(result, "evaluate npu/fp16/bs4")
    compile_task = task_named(result, "compile npu/fp16/bs4")
    for task, chips in ((evaluate_task, 4), (compile_task, None)):
        job = job_manifest(OWNER, task, npu, task.task_document("s3://a"), "u", spec.artifacts, OperatorConfig())
        assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"].get("huawei.com/Ascend310P") == chips


def test_placement_layers_installation_then_target_and_config_extras() -> None:
    doc = base()
    doc["spec"]["targets"][2]["placement"] = {"nodeSelector": {"pool": "inference"},
                                              "resources": {"limits": {"memory": "32Gi"}},
                                              "env": {"ASCEND_GLOBAL_LOG_LEVEL": "1"}}
    spec = load_resource(doc).spec
    result = plan(spec)
    config = OperatorConfig.model_validate({
        "placement": {"ascend": {"nodeSelector": {"pool": "npu", "zone": "a"},
                                 "tolerations": [{"key": "dedicated", "operator": "Exists"}],
                                 "env": {"ASCEND_GLOBAL_LOG_LEVEL": "3", "HTTPS_PROXY": "http://proxy:3128"}}},
        "images": {"ascend": "registry.local/ascend-jobs:1"},
        "kueueQueue": "npu-queue", "schedulerName": "volcano",
    })
    task = task_named(result, "evaluate npu/fp16/bs4")
    body = job_manifest(OWNER, task, spec.targets[2], task.task_document("s3://a"), "u", spec.artifacts, config)
    pod = body["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"node.kubernetes.io/npu.chip.name": "310P3", "pool": "inference", "zone": "a"}
    assert {"key": "dedicated", "operator": "Exists"} in pod["tolerations"]
    assert pod["containers"][0]["resources"]["limits"]["memory"] == "32Gi"
    values = {e["name"]: e["value"] for e in pod["containers"][0]["env"] if "value" in e}
    assert values["ASCEND_GLOBAL_LOG_LEVEL"] == "1" and values["HTTPS_PROXY"] == "http://proxy:3128"
    assert pod["containers"][0]["image"] == "registry.local/ascend-jobs:1"
    assert pod["schedulerName"] == "volcano"
    assert body["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "npu-queue"


def test_config_from_environment_over_file(tmp_path: Any) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("maxJobs: 7\ndefaultStore: s3://from-file\nimages: {default: my/jobs:1}\n")
    config = load({"MODELDEPLOY_CONFIG": str(path), "MODELDEPLOY_DEFAULT_STORE": "s3://from-env",
                   "MODELDEPLOY_NAMESPACES": "a, b"})
    assert (config.max_jobs, config.default_store, config.namespaces) == (7, "s3://from-env", ["a", "b"])
    assert config.image(None) == "my/jobs:1"


# ---------------------------------------------------------------- reconcile


def test_a_new_deployment_starts_the_tasks_without_inputs() -> None:
    _, result = the_plan()
    decision = decide(META, result, Observed({}, {}, {}), slots=4, now=NOW, previous={})
    assert {task.kind for task in decision.create} == {"convert", "prepare"}
    status = decision.status
    assert status["observedGeneration"] == 3 and status["phase"] == "Running"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "False" and conditions["Reconciling"]["status"] == "True"
    assert conditions["Stalled"]["status"] == "False"
    assert all(c["observedGeneration"] == 3 and c["lastTransitionTime"] == NOW for c in conditions.values())
    assert ("Normal", "StageStarted", f"convert: Job {job_name('cases', decision.create[0])}") in decision.events


def test_normal_events_tell_a_stage_kind_starting_and_succeeding_not_each_task() -> None:
    _, result = the_plan()
    first = decide(META, result, Observed({}, {}, {}), slots=100, now=NOW, previous={})
    started = [event for event in first.events if event[1] == "StageStarted"]
    assert len(started) == len({task.kind for task in first.create}) == 2  # convert, prepare
    done = [task for task in result.tasks if task.kind in ("convert", "prepare")]
    jobs = {task.key: job(task.key, succeeded=True) for task in done}
    second = decide(META, result, Observed(jobs, {task.key: manifest(task.key) for task in done}, {}), 100, NOW,
                    first.status)
    kinds = {task.kind for task in second.create}
    assert len(kinds) > 1 and len(second.create) > len(kinds)
    assert len([event for event in second.events if event[1] == "StageStarted"]) == len(kinds)
    succeeded = {event[2] for event in second.events if event[1] == "StageSucceeded"}
    prepared = sum(task.kind == "prepare" for task in done)
    assert succeeded == {"convert: 1 succeeded", f"prepare: {prepared} succeeded"}
    running = {task.key: job(task.key, active=True) for task in second.create}
    third = decide(META, result, Observed(jobs | running, {task.key: manifest(task.key) for task in done}, {}), 100,
                   NOW, second.status)
    assert third.events == []  # the same stages still running: nothing new to tell


def test_a_task_another_deployment_computes_waits_for_its_result() -> None:
    _, result = the_plan()
    convert = next(task for task in result.tasks if task.kind == "convert")
    decision = decide(META, result, Observed({}, {}, {}), slots=4, now=NOW, previous={},
                      running_elsewhere={convert.key})
    assert {task.kind for task in decision.create} == {"prepare"}
    stage = next(stage for stage in decision.status["stages"] if stage["key"] == convert.key)
    assert stage["phase"] == "Pending" and stage["message"] == "computed by another ModelDeployment's Job"


def test_slots_limit_how_many_jobs_start() -> None:
    _, result = the_plan()
    assert len(decide(META, result, Observed({}, {}, {}), slots=1, now=NOW, previous={}).create) == 1
    assert decide(META, result, Observed({}, {}, {}), slots=0, now=NOW, previous={}).create == []


def test_running_and_finished_jobs_advance_the_pipeline() -> None:
    _, result = the_plan()
    convert = task_named(result, "convert")
    prepare = [t for t in result.tasks if t.kind == "prepare"]
    observed = Observed({convert.key: job(convert.key, succeeded=True)},
                        {convert.key: manifest(convert.key)} | {t.key: manifest(t.key) for t in prepare}, {})
    decision = decide(META, result, observed, slots=100, now=NOW, previous={})
    created = {task.kind for task in decision.create}
    assert created == {"calibrate", "compile", "evaluate"}  # compiles of fp precisions, calibrations, the reference
    assert all(set(task.inputs.values()) <= observed.results.keys() for task in decision.create)


def test_a_failed_stage_stalls_its_cells_while_the_others_go_on() -> None:
    _, result = the_plan()
    done = [t for t in result.tasks if t.kind in ("convert", "prepare")]
    calibrate = task_named(result, "calibrate cpu/int8")
    failure = Failure(key=calibrate.key, stage="calibrate", reason="CalibrationFailed",
                      message="NNCF could not quantize the model", failed_at=datetime.now(UTC))
    observed = Observed({calibrate.key: job(calibrate.key, failed=True, reason="PodFailurePolicy")},
                        {t.key: manifest(t.key) for t in done}, {calibrate.key: failure})
    decision = decide(META, result, observed, slots=100, now=NOW, previous={})
    stages = {s["name"]: s for s in decision.status["stages"]}
    assert stages["calibrate cpu/int8"]["phase"] == "Failed"
    assert stages["calibrate cpu/int8"]["message"] == "CalibrationFailed: NNCF could not quantize the model"
    assert stages["compile cpu/int8/bs8"]["phase"] == "Skipped"
    assert not any(task.name.startswith("compile cpu/int8") for task in decision.create)
    assert any(task.name == "compile cpu/fp32/bs8" for task in decision.create)
    conditions = {c["type"]: c for c in decision.status["conditions"]}
    assert conditions["Stalled"]["status"] == "True" and conditions["Stalled"]["reason"] == "StageFailed"
    assert conditions["Stalled"]["message"].startswith("calibrate cpu/int8: CalibrationFailed")
    assert conditions["Reconciling"]["status"] == "True" and decision.status["phase"] == "Running"
    assert ("Warning", "StageFailed", "calibrate cpu/int8: CalibrationFailed: NNCF could not quantize the model") \
        in decision.events


def test_a_job_that_failed_before_the_stage_ran_gives_the_jobs_reason() -> None:
    _, result = the_plan()
    convert = task_named(result, "convert")
    observed = Observed({convert.key: job(convert.key, failed=True, reason="DeadlineExceeded")}, {}, {})
    stages = {s["name"]: s for s in decide(META, result, observed, 4, NOW, {}).status["stages"]}
    assert stages["convert"]["message"] == "DeadlineExceeded: the pod was evicted"


def test_everything_done_is_ready_with_results_and_report() -> None:
    _, result = the_plan()
    report = {"cells": [{"target": "cpu", "precision": "int8", "batchSize": 8, "gate": "Passed"}],
              "best": [{"target": "cpu", "precision": "int8", "batchSize": 8, "throughput": 1234.5, "top1": 0.9}]}
    observed = Observed({}, {t.key: manifest(t.key) for t in result.tasks}, {}, report, "s3://a/report.html")
    decision = decide(META, result, observed, 4, NOW, {"phase": "Running"})
    status = decision.status
    assert status["phase"] == "Succeeded" and decision.create == []
    assert {c["type"]: c["status"] for c in status["conditions"]} == {"Ready": "True", "Reconciling": "False",
                                                                     "Stalled": "False"}
    assert status["results"] == report["cells"] and status["best"] == report["best"]
    assert status["bestSummary"] == "cpu: int8 bs8 1234/s" and status["reportUri"] == "s3://a/report.html"
    assert status["targets"] == "4/4"
    assert ("Normal", "Succeeded", "every cell is measured and the report is written") in decision.events


def test_cells_appear_in_status_as_they_are_evaluated() -> None:
    _, result = the_plan()
    cell = result.cells[0]
    metrics = {"backend": "openvino", "accuracy": {"top1": 0.91, "top5": 0.99},
               "performance": {"throughput": 321.0, "latencyMs": {"p50": 3.0}},
               "artifact": {"uri": "s3://a/m.xml", "sha256": "f" * 64}}
    observed = Observed({}, {cell.evaluate: manifest(cell.evaluate, metrics)}, {})
    (row,) = decide(META, result, observed, 4, NOW, {}).status["results"]
    assert (row["target"], row["precision"], row["batchSize"], row["top1"], row["throughput"]) == \
        (cell.target, cell.precision, cell.batch_size, 0.91, 321.0)
    assert row["gate"] == "NotEvaluated" and row["sha256"] == "f" * 64


def test_jobs_of_an_old_plan_are_deleted_and_old_failures_retried() -> None:
    _, result = the_plan()
    convert = task_named(result, "convert")
    stale = "e" * 64
    observed = Observed({stale: job(stale, active=True),
                         convert.key: job(convert.key, failed=True, generation=2, reason="BackoffLimitExceeded")},
                        {}, {})
    decision = decide(META, result, observed, 4, NOW, {})
    assert set(decision.delete) == {f"job-{stale[:6]}", f"job-{convert.key[:6]}"}
    assert convert in decision.create


def test_transition_times_only_move_when_a_condition_flips() -> None:
    _, result = the_plan()
    first = decide(META, result, Observed({}, {}, {}), 4, NOW, {}).status
    later = decide(META, result, Observed({}, {}, {}), 4, "2026-11-24T11:00:00Z", first).status
    assert [c["lastTransitionTime"] for c in later["conditions"]] == [NOW, NOW, NOW]


def test_an_invalid_spec_stalls_without_jobs_and_warns_once() -> None:
    errors = [FieldError("spec.source.weights", "digits.pt is not reachable from Jobs; use s3:// or https://")]
    decision = invalid(META, errors, NOW, {})
    conditions = {c["type"]: c for c in decision.status["conditions"]}
    assert conditions["Stalled"]["reason"] == "InvalidSpec" and conditions["Stalled"]["status"] == "True"
    assert "spec.source.weights: digits.pt is not reachable" in conditions["Stalled"]["message"]
    assert decision.create == [] and decision.status["phase"] == "Failed"
    assert [e[1] for e in decision.events] == ["InvalidSpec"]
    assert invalid(META, errors, NOW, decision.status).events == []


def test_a_job_not_started_yet_leaves_its_stage_as_written() -> None:
    _, result = the_plan()
    created = decide(META, result, Observed({}, {}, {}), 4, NOW, {})
    convert = created.create[0]
    pending = JobState(job_name("cases", convert), convert.key, True, False, False, 3, None, None, None, None)
    later = decide(META, result, Observed({convert.key: pending}, {}, {}), 4, "2026-11-24T10:05:00Z", created.status)
    stage = next(stage for stage in later.status["stages"] if stage["key"] == convert.key)
    assert (stage["phase"], stage["startTime"], stage["message"]) == ("Running", NOW, "Job created")
    started = job(convert.key, active=True)
    running = decide(META, result, Observed({convert.key: started}, {}, {}), 4, NOW, later.status)
    stage = next(stage for stage in running.status["stages"] if stage["key"] == convert.key)
    assert (stage["startTime"], stage["message"]) == (started.start_time, None)


def slots(free: int, waiting: list[str], running: tuple[str, ...] = ()) -> Slots:
    """Slots with `free` of them free, the deployments `running` one Job each, `waiting` joined in that order."""
    index = JobIndex()
    for name in running:
        index.put(owned(f"uid-{name}", job(f"key-{name}", active=True), deployment=name))
    result = Slots(index, max_jobs=free + len(running))
    for name in waiting:
        result.join(("ns", name))
    return result


def share(name: str, wanted: int, free: int, waiting: list[str], running: tuple[str, ...] = ()
          ) -> tuple[int, list[str]]:
    """What the deployment is granted, and the waiting deployments after, in the order slots go to them."""
    queue = slots(free, waiting, running)
    granted = queue.share(("ns", name), wanted)
    return granted, [deployment for _, deployment in queue.serving()]


def test_slots_go_first_to_the_deployments_that_waited_for_them() -> None:
    assert share("new", wanted=2, free=5, waiting=[]) == (2, [])
    assert share("busy", wanted=4, free=3, waiting=["a", "b"]) == (1, ["a", "b", "busy"])  # one each for a and b
    assert share("busy", wanted=4, free=1, waiting=["a", "b"]) == (0, ["a", "b", "busy"])
    assert share("b", wanted=4, free=1, waiting=["a", "b", "c"]) == (0, ["a", "b", "c"])  # keeps its place
    assert share("a", wanted=4, free=3, waiting=["a", "b", "c"]) == (1, ["b", "c", "a"])  # served: to the back
    assert share("a", wanted=2, free=3, waiting=["a", "b"]) == (2, ["b"])
    assert share("c", wanted=2, free=1, waiting=["a", "b", "c"]) == (0, ["a", "b", "c"])
    assert share("a", wanted=0, free=0, waiting=["a", "b"]) == (0, ["b"])  # nothing to start: waits for nothing


def test_slots_go_to_deployments_with_no_job_running_before_busy_ones() -> None:
    running = ("busy", "also-busy")
    assert share("new", wanted=1, free=1, waiting=["busy", "also-busy", "new"], running=running) == (
        1, ["busy", "also-busy"])
    assert share("busy", wanted=3, free=1, waiting=["busy", "new"], running=running) == (0, ["new", "busy"])
    assert share("busy", wanted=3, free=2, waiting=["busy", "new"], running=running) == (1, ["new", "busy"])
    assert share("newer", wanted=2, free=1, waiting=["busy"], running=running) == (1, ["newer", "busy"])
    assert share("also-busy", wanted=1, free=1, waiting=["busy"], running=running) == (0, ["busy", "also-busy"])
    queue = slots(0, ["busy", "a", "also-busy", "b"], running)
    assert [name for _, name in queue.serving()] == ["a", "b", "busy", "also-busy"]


def test_a_waiting_deployment_moves_between_idle_and_busy_at_its_place_as_its_jobs_start_and_end() -> None:
    queue = slots(2, ["a", "b", "c"])
    assert queue.free() == 2
    queue.launch(("ns", "a"), job("k1", active=True))  # being created: counted, and a is busy now
    assert queue.free() == 1 and queue.running(("ns", "a")) == 1
    assert [name for _, name in queue.serving()] == ["b", "c", "a"]
    queue.jobs.put(owned("u1", job("k1", active=True)))  # the index shows it: counted there, not twice
    queue.launched(("ns", "a"), "k1")
    assert queue.free() == 1 and queue.launching == {}
    queue.jobs.put(owned("u1", job("k1", succeeded=True)))  # its only Job ended: back before the later ones
    queue.recount(("ns", "a"))
    assert queue.free() == 2 and [name for _, name in queue.serving()] == ["a", "b", "c"]
    queue.launch(("ns", "b"), job("k2", active=True))
    queue.forget(("ns", "b"))  # deleted: neither waiting nor holding the slot of a Job it never created
    assert queue.free() == 2 and [name for _, name in queue.serving()] == ["a", "c"]


def test_a_status_is_written_at_once_when_its_phase_or_conditions_change_else_at_most_every_few_seconds() -> None:
    _, result = the_plan()
    first = decide(META, result, Observed({}, {}, {}), 4, NOW, {}).status
    assert Status(first).due() == 0  # never written
    status = Status(first, written=first, written_at=100.0)
    assert status.due() == math.inf
    convert = task_named(result, "convert")
    progress = decide(META, result, Observed({convert.key: job(convert.key, active=True)}, {}, {}), 4, NOW,
                      first).status
    assert progress["stages"] != first["stages"] and progress["phase"] == first["phase"]
    status.decided = progress
    assert status.due() == 100.0 + STATUS_SECONDS  # a stage's progress waits for the next write
    failed = decide(META, result, Observed({convert.key: job(convert.key, failed=True)}, {}, {}), 4, NOW,
                    progress).status
    status.decided = failed
    assert status.due() == 0  # Stalled flipped: written at once


def owned(uid: str, state: JobState, deployment: str = "a") -> OwnedJob:
    return OwnedJob(uid, ("ns", deployment), state, f"s3://artifacts/tasks/{state.key}/task.json")


def test_job_index_counts_active_jobs_and_forgets_deleted_ones_at_once() -> None:
    index = JobIndex()
    index.put(owned("u1", job("k1", active=True)))
    index.put(owned("u2", job("k2", active=True)))
    assert index.active == {("ns", "a"): {"k1", "k2"}} and index.active_total == 2
    before = index.put(owned("u1", job("k1", succeeded=True)))
    assert before is not None and before.state.active
    assert index.active == {("ns", "a"): {"k2"}} and index.active_total == 1
    assert index.states(("ns", "a"))["k1"].succeeded
    index.remove(owned("u2", job("k2", active=True)))  # deleted while it ran: its slot is free
    assert index.active == {} and index.active_total == 0
    assert set(index.states(("ns", "a"))) == {"k1"}
    index.remove(owned("u1", job("k1", succeeded=True)))
    assert index.jobs == {} and index.states(("ns", "a")) == {}


def test_job_index_relisted_keeps_only_the_listed_jobs_of_that_namespace() -> None:
    index = JobIndex()
    index.put(owned("u1", job("k1", active=True)))
    index.put(OwnedJob("u9", ("other", "b"), job("k9", active=True), None))
    index.replace("ns", [owned("u3", job("k3", active=True), deployment="c")])
    assert index.active == {("ns", "c"): {"k3"}, ("other", "b"): {"k9"}} and index.active_total == 2
    index.replace(None, [])
    assert index.jobs == {} and index.active == {} and index.active_total == 0


def test_turns_let_a_limited_number_of_passes_run_first_passes_first_and_pass_on_cancelled_turns() -> None:
    async def run() -> tuple[list[str], int]:
        turns = Turns(2)
        order: list[str] = []
        release = asyncio.Event()

        async def reconcile(name: str, first: bool, hold: bool = False) -> None:
            async with turns.turn(first):
                order.append(name)
                if hold:
                    await release.wait()

        busy = [asyncio.create_task(reconcile(name, False, hold=True)) for name in ("busy-1", "busy-2")]
        await asyncio.sleep(0)
        waiting = [asyncio.create_task(reconcile("busy-3", False)), asyncio.create_task(reconcile("new", True))]
        gone = asyncio.create_task(reconcile("deleted", True))
        await asyncio.sleep(0)
        assert order == ["busy-1", "busy-2"]  # no more than two at once
        gone.cancel()  # a daemon stopped while it waited: its place in the queue goes
        release.set()
        await asyncio.gather(*busy, *waiting)
        assert gone.cancelled()
        return order, turns.running

    order, running = asyncio.run(run())
    assert order == ["busy-1", "busy-2", "new", "busy-3"]
    assert running == 0


class ReadCounting(FileStore):
    def __init__(self, root: Path):
        super().__init__(root)
        self.read: list[str] = []

    def get_bytes(self, name: str) -> bytes:
        self.read.append(name)
        return super().get_bytes(name)


class Unlistable(ReadCounting):
    def folders(self, prefix: str) -> set[str]:
        raise PermissionError("no s3:ListBucket")


def committed(store: FileStore, result: Plan, tmp_path: Path, kinds: set[str]) -> None:
    output = tmp_path / "results.json"
    output.write_text('{"cells": [], "best": []}')
    for task in result.tasks:
        if task.kind in kinds:
            commit(store, task.key, task.kind, {output.name: output}, datetime.now(UTC))


def test_a_new_deployment_reads_only_the_tasks_it_can_start(tmp_path: Path) -> None:
    _, result = the_plan()
    store = Unlistable(tmp_path / "store")  # no listing tells that its tasks are not done
    observed = asyncio.run(StoreCache().observe(store, result, {}))
    assert observed.results == {}
    assert sorted(store.read) == sorted(manifest_name(task.key) for task in result.tasks if not task.inputs)


def test_results_done_before_are_found_down_the_whole_plan(tmp_path: Path) -> None:
    _, result = the_plan()
    store = ReadCounting(tmp_path / "store")
    committed(store, result, tmp_path, {task.kind for task in result.tasks})
    cache = StoreCache()
    observed = asyncio.run(cache.observe(store, result, {}))
    assert observed.results.keys() == {task.key for task in result.tasks}
    assert observed.report == {"cells": [], "best": []}
    store.read.clear()
    asyncio.run(cache.observe(store, result, {}))
    assert store.read == []  # a committed manifest is read once


def test_a_task_not_done_is_read_again_once_its_job_finished(tmp_path: Path) -> None:
    _, result = the_plan()
    store = ReadCounting(tmp_path / "store")
    cache = StoreCache()
    convert = task_named(result, "convert")
    asyncio.run(cache.observe(store, result, {convert.key: job(convert.key, active=True)}))
    committed(store, result, tmp_path, {"convert"})
    store.read.clear()
    asyncio.run(cache.observe(store, result, {convert.key: job(convert.key, active=True)}))
    assert store.read == []
    jobs = {convert.key: job(convert.key, succeeded=True)}
    observed = asyncio.run(cache.observe(store, result, jobs))
    assert convert.key in observed.results
    # What convert unblocked cannot be done before convert was: known not done without a read.
    assert store.read == [manifest_name(convert.key)]
    unblocked = next(task for task in result.tasks if set(task.inputs.values()) == {convert.key})
    commit(store, unblocked.key, unblocked.kind, {}, datetime.now(UTC))
    store.read.clear()
    observed = asyncio.run(cache.observe(store, result, jobs | {unblocked.key: job(unblocked.key, succeeded=True)}))
    assert unblocked.key in observed.results
    assert store.read[0] == manifest_name(unblocked.key)


def another_plan(classes: int) -> Plan:
    """Another deployment's plan: every key but the data's differs."""
    doc = base()
    doc["spec"]["source"]["numClasses"] = classes
    return plan(load_resource(doc).spec)


def test_a_task_the_store_had_nothing_of_is_not_read_unless_a_job_of_the_operator_computed_it(tmp_path: Path
                                                                                             ) -> None:
    _, first = the_plan()
    second, third = another_plan(100), another_plan(50)
    store = ReadCounting(tmp_path / "store")
    convert = task_named(third, "convert")

    async def three_deployments() -> None:
        cache = StoreCache()
        await cache.observe(store, first, {})  # lists the store's tasks
        assert (await cache.observe(store, second, {})).results == {}
        assert store.read == []  # the listing found nothing of its first tasks
        cache.launching(store.uri_of(task_document_name(convert.key)))  # a Job of the operator computed it since
        committed(store, third, tmp_path, {"convert"})
        assert convert.key in (await cache.observe(store, third, {})).results
        assert store.read == [manifest_name(convert.key)]

    asyncio.run(three_deployments())


def test_a_store_that_cannot_be_listed_is_read_task_by_task(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                            ) -> None:
    _, result = the_plan()
    store = Unlistable(tmp_path / "store")

    async def twice() -> None:
        cache = StoreCache()
        await cache.observe(store, result, {})
        while not all(listing.done() for listing, _ in cache.listings.values()):
            await asyncio.sleep(0.01)
        store.read.clear()
        await StoreCache(listings=cache.listings).observe(store, result, {})

    asyncio.run(twice())
    assert sorted(store.read) == sorted(manifest_name(task.key) for task in result.tasks if not task.inputs)
    assert "cannot list the tasks in" in caplog.text and "no s3:ListBucket" in caplog.text


class ListedWhenReleased(ReadCounting):
    """Lists the store only once released, counting its listings."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.listings = 0
        self.released = threading.Event()

    def folders(self, prefix: str) -> set[str]:
        self.listings += 1
        self.released.wait(timeout=30)
        return super().folders(prefix)


def test_new_deployments_at_a_cold_start_wait_for_the_first_listing_rather_than_read_task_by_task(tmp_path: Path
                                                                                                 ) -> None:
    plans = [the_plan()[1], another_plan(100), another_plan(50)]
    store = ListedWhenReleased(tmp_path / "store")
    committed(store, plans[2], tmp_path, {"convert"})  # done by an earlier operator: the listing shows it

    async def a_burst() -> list[Observed]:
        cache = StoreCache()
        passes = [asyncio.ensure_future(cache.observe(store, result, {})) for result in plans]
        await asyncio.sleep(0.2)
        assert not any(map(asyncio.Future.done, passes))  # they wait for the listing under way
        store.released.set()
        return await asyncio.gather(*passes)

    observed = asyncio.run(a_burst())
    assert store.listings == 1
    convert = task_named(plans[2], "convert")
    assert store.read[0] == manifest_name(convert.key)  # the only task the listing found is read
    assert all(not name.startswith("tasks/") or name.startswith(f"tasks/{convert.key}/") for name in store.read)
    assert [set(o.results) for o in observed] == [set(), set(), {convert.key}]


def test_a_pass_reads_task_by_task_when_the_listing_is_not_back_in_time(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _, result = the_plan()
    store = ListedWhenReleased(tmp_path / "store")
    starting = [task for task in result.tasks if not task.inputs]
    monkeypatch.setattr(observe, "LISTING_WAIT_SECONDS", 0.1)

    async def listing_held() -> None:
        cache = StoreCache()
        try:
            began = asyncio.get_running_loop().time()
            await cache.observe(store, result, {})
            assert asyncio.get_running_loop().time() - began < 5
            assert sorted(store.read) == sorted(manifest_name(task.key) for task in starting)
            store.read.clear()
            # A pass whose tasks all have Jobs has nothing a listing would tell: it reads them without waiting.
            monkeypatch.setattr(observe, "LISTING_WAIT_SECONDS", 30)
            jobs = {task.key: job(task.key, active=True) for task in starting}
            await asyncio.wait_for(StoreCache(listings=cache.listings).observe(store, result, jobs), 5)
            assert sorted(store.read) == sorted(manifest_name(task.key) for task in starting)
        finally:
            store.released.set()

    asyncio.run(listing_held())


class AnswersHeld(Unlistable):
    """Reads the store at once, but while holding, answers only when released: reads that began before a write."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.holding = True
        self.released = threading.Event()

    def get_bytes(self, name: str) -> bytes:
        held = self.holding
        try:
            return super().get_bytes(name)
        finally:
            if held:
                self.released.wait(timeout=30)


def test_deployments_asking_at_once_share_one_read_unless_their_job_just_finished(tmp_path: Path) -> None:
    _, result = the_plan()
    store = AnswersHeld(tmp_path / "store")
    convert = task_named(result, "convert")
    starting = [task.key for task in result.tasks if not task.inputs]
    unblocked = [task.key for task in result.tasks if set(task.inputs.values()) == {convert.key}]

    async def asking_at_once() -> list[Observed]:
        cache = StoreCache()
        first = [asyncio.ensure_future(cache.observe(store, result, {})) for _ in range(5)]
        while len(store.read) < len(starting):
            await asyncio.sleep(0.01)
        committed(store, result, tmp_path, {"convert"})  # its Job committed convert after the reads above began
        store.holding = False
        finished = asyncio.ensure_future(cache.observe(store, result, {convert.key: job(convert.key, succeeded=True)}))
        while len(store.read) < len(starting) + 1:
            await asyncio.sleep(0.01)
        store.released.set()
        return await asyncio.gather(*first, finished)

    *_, after = asyncio.run(asking_at_once())
    reads = Counter(store.read)
    assert reads[manifest_name(convert.key)] == 2  # once for all five, once afresh for the one whose Job finished
    assert all(reads[manifest_name(key)] == 1 for key in starting if key != convert.key)
    assert set(reads) <= {manifest_name(key) for key in [*starting, *unblocked]}
    assert convert.key in after.results


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ([{"type": "Complete", "status": "True"}], (False, True, False)),
        ([{"type": "Failed", "status": "True", "reason": "PodFailurePolicy"}], (False, False, True)),
        ([], (True, False, False)),
    ],
)
def test_job_state_from_conditions(conditions: list[dict[str, str]], expected: tuple[bool, bool, bool]) -> None:
    body = {"metadata": {"name": "j", "annotations": {"modeldeploy.io/task-key": "k", "modeldeploy.io/generation": "2"}},
            "status": {"conditions": conditions}}
    state = job_state(body)
    assert state is not None and (state.active, state.succeeded, state.failed) == expected and state.generation == 2
    assert job_state({"metadata": {"name": "other"}}) is None


def test_a_store_that_cannot_be_used_stalls_keeping_what_was_known_and_warns_once_per_problem() -> None:
    _, result = the_plan()
    convert = task_named(result, "convert")
    known = decide(META, result, Observed({}, {convert.key: manifest(convert.key)}, {}), 4, NOW, {}).status
    problem = "s3://artifacts/cases: the server answered 403 InvalidAccessKeyId (check the credentials)"

    first = store_unavailable(META, problem, NOW, known)
    stalled = next(c for c in first.status["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"], stalled["message"]) == ("True", "StoreUnavailable", problem)
    assert first.status["stages"] == known["stages"] and first.create == []
    assert first.events == [("Warning", "StoreUnavailable", problem)]
    assert store_unavailable(META, problem, NOW, first.status).events == []
    assert store_unavailable(META, "another problem", NOW, first.status).events != []


def test_passes_that_cannot_use_the_store_back_off_up_to_five_minutes() -> None:
    assert [_retry_seconds(30, failed) for failed in range(6)] == [30, 30, 60, 120, 240, 300]
    assert _retry_seconds(3, 100) == 300


def test_a_retried_stage_shows_its_attempts_and_why_the_last_one_failed() -> None:
    _, result = the_plan()
    convert = task_named(result, "convert")
    failure = Failure(key=convert.key, stage="convert", reason="SourceUnreachable", retriable=True,
                      message="s3://models/w.pth: the server answered 503", failed_at=datetime.now(UTC))
    annotations = {"modeldeploy.io/task-key": convert.key, "modeldeploy.io/generation": "3"}
    body = {"metadata": {"name": "j", "annotations": annotations}, "status": {"active": 1, "failed": 1}}
    retrying = job_state(body)
    assert retrying is not None and retrying.attempts == 2 and retrying.active

    status = decide(META, result, Observed({convert.key: retrying}, {}, {convert.key: failure}), 4, NOW, {}).status
    stage = next(stage for stage in status["stages"] if stage["key"] == convert.key)
    assert (stage["phase"], stage["attempts"]) == ("Running", 2)
    assert stage["message"] == "attempt 2; the last failed: SourceUnreachable: s3://models/w.pth: the server answered 503"

    gave_up = replace(retrying, active=False, failed=True, attempts=3)
    status = decide(META, result, Observed({convert.key: gave_up}, {}, {convert.key: failure}), 4, NOW, {}).status
    stage = next(stage for stage in status["stages"] if stage["key"] == convert.key)
    assert (stage["phase"], stage["attempts"]) == ("Failed", 3)
    assert stage["message"].endswith("the server answered 503 (after 3 attempts)")
