"""Kueue: with a queue configured, Jobs are created suspended in its LocalQueue, and a suspended Job is told as
queued (docs/kueue.md). tests/cluster/test_kueue.py runs the same against Kueue's own controller manager."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from modeldeploy.controller.config import OperatorConfig, load
from modeldeploy.controller.jobs import LABEL_QUEUE, Owner, job_manifest
from modeldeploy.controller.queueing import queued
from modeldeploy.controller.reconcile import JobState, Observed, decide, job_state
from modeldeploy.planner import Task, plan
from modeldeploy.validation import load_resource
from specs import base

OWNER = Owner("cases", "team-a", "uid-1234", 3)


def convert_job(config: OperatorConfig) -> dict[str, Any]:
    task = next(task for task in plan(load_resource(base()).spec).tasks if task.kind == "convert")
    return job_of(task, config)


def job_of(task: Task, config: OperatorConfig) -> dict[str, Any]:
    spec = load_resource(base()).spec
    return job_manifest(OWNER, task, None, task.task_document("s3://a"), "u", spec.artifacts, config)


def test_with_a_queue_the_job_is_created_suspended_in_it() -> None:
    body = convert_job(load({"MODELDEPLOY_KUEUE_QUEUE": "conversions"}))
    assert body["spec"]["suspend"] is True
    assert body["metadata"]["labels"][LABEL_QUEUE] == "conversions"
    # Kueue reads the queue from the Job; its pods are not workloads of their own.
    assert LABEL_QUEUE not in body["spec"]["template"]["metadata"]["labels"]


def test_without_a_queue_the_job_runs_at_once() -> None:
    body = convert_job(OperatorConfig())
    assert "suspend" not in body["spec"]
    assert LABEL_QUEUE not in body["metadata"]["labels"]


def suspended_job(**labels: str) -> dict[str, Any]:
    return {"metadata": {"name": "cases-convert-0123456789", "namespace": "team-a", "labels": labels},
            "spec": {"suspend": True}, "status": {}}


def test_a_job_suspended_in_a_queue_is_queued_in_that_localqueue() -> None:
    job = suspended_job(**{LABEL_QUEUE: "conversions"})
    message = queued(job)
    assert message is not None
    assert message.startswith("queued in Kueue LocalQueue team-a/conversions: waiting for admission")
    assert "kubectl get workloads -n team-a" in message

    job["status"]["conditions"] = [{"type": "Suspended", "status": "True", "reason": "JobSuspended",
                                    "lastTransitionTime": "2026-12-07T20:00:00Z"}]
    assert (queued(job) or "").startswith("queued in Kueue LocalQueue team-a/conversions since 2026-12-07T20:00:00Z:")


def test_an_admitted_job_is_not_queued() -> None:
    job = suspended_job(**{LABEL_QUEUE: "conversions"})
    job["spec"]["suspend"] = False  # what Kueue writes when it admits the Job
    job["status"]["conditions"] = [{"type": "Suspended", "status": "False", "reason": "JobResumed"}]
    assert queued(job) is None
    assert queued({"metadata": {"name": "j"}, "spec": {}}) is None


def test_a_job_suspended_outside_any_queue_says_nothing_here_resumes_it() -> None:
    message = queued(suspended_job())
    assert message == "suspended (spec.suspend) and in no Kueue queue: nothing in modeldeploy resumes it"


def test_a_queued_job_leaves_its_stage_pending_until_kueue_admits_it() -> None:
    meta = {"name": "cases", "namespace": "team-a", "uid": "uid-1234", "generation": 3}
    now = "2026-12-07T20:00:00Z"
    result = plan(load_resource(base()).spec)
    created = decide(meta, result, Observed({}, {}, {}), 4, now, {})
    convert = next(task for task in created.create if task.kind == "convert")
    body = convert_job(load({"MODELDEPLOY_KUEUE_QUEUE": "conversions"}))
    waiting = job_state(body)
    assert waiting is not None and waiting.active and waiting.queued

    queued_decision = decide(meta, result, Observed({convert.key: waiting}, {}, {}), 4, now, created.status)
    stage = next(stage for stage in queued_decision.status["stages"] if stage["key"] == convert.key)
    assert (stage["phase"], stage["job"]) == ("Pending", body["metadata"]["name"])
    assert stage["message"].startswith("queued in Kueue LocalQueue team-a/conversions: waiting for admission")
    assert convert not in queued_decision.create  # its Job exists: waiting for admission is no reason for another
    conditions = {c["type"]: c for c in queued_decision.status["conditions"]}
    assert "convert queued in Kueue LocalQueue team-a/conversions" in conditions["Reconciling"]["message"]
    assert "waits for a node" not in conditions["Reconciling"]["message"]
    assert conditions["Stalled"]["status"] == "False"
    assert ("Normal", "Queued", f"convert: {stage['message']}") in queued_decision.events
    assert not [event for event in queued_decision.events if event[1] == "Unschedulable"]
    again = decide(meta, result, Observed({convert.key: waiting}, {}, {}), 4, now, queued_decision.status)
    assert not [event for event in again.events if event[1] == "Queued"]  # told once

    body["spec"]["suspend"] = False  # Kueue admitted it
    body["status"] = {"startTime": now, "active": 1}
    admitted = job_state(body)
    assert admitted is not None and admitted.queued is None
    running = decide(meta, result, Observed({convert.key: admitted}, {}, {}), 4, now, queued_decision.status)
    stage = next(stage for stage in running.status["stages"] if stage["key"] == convert.key)
    assert (stage["phase"], stage["message"]) == ("Running", None)


META = {"name": "cases", "namespace": "team-a", "uid": "uid-1234", "generation": 3}
NOW = "2026-12-07T20:00:00Z"


def reasons(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def queued_jobs(tasks: list[Task]) -> dict[str, JobState]:
    """The tasks' Jobs as the operator creates them with a queue: suspended, waiting for Kueue."""
    config = load({"MODELDEPLOY_KUEUE_QUEUE": "conversions"})
    jobs = {}
    for task in tasks:
        state = job_state(job_of(task, config))
        assert state is not None and state.queued
        jobs[task.key] = state
    return jobs


def test_a_deployment_whose_every_active_job_is_queued_is_reconciling_with_the_reason_queued() -> None:
    result = plan(load_resource(base()).spec)
    first = decide(META, result, Observed({}, {}, {}), 4, NOW, {})
    assert {task.kind for task in first.create} == {"convert", "prepare"}  # ready at once
    # created in this pass, not seen suspended yet: running as far as the operator knows
    assert reasons(first.status)["Reconciling"] == ("True", "Running")
    jobs = queued_jobs(first.create)

    waiting = decide(META, result, Observed(jobs, {}, {}), 4, NOW, first.status)
    assert waiting.create == [] and waiting.status["phase"] == "Pending"
    assert reasons(waiting.status) == {"Ready": ("False", "Queued"), "Reconciling": ("True", "Queued"),
                                       "Stalled": ("False", "NoFailures")}
    conditions = {c["type"]: c for c in waiting.status["conditions"]}
    assert conditions["Reconciling"]["message"] == conditions["Ready"]["message"]
    assert conditions["Reconciling"]["message"].startswith(
        f"0/{len(result.tasks)} tasks done; convert queued in Kueue LocalQueue team-a/conversions: ")
    assert conditions["Reconciling"]["message"].endswith(f" (and {len(jobs) - 1} more)")

    convert = first.create[0].key
    # Kueue admitted one Job: its pod runs, the deployment no longer only waits for Kueue
    admitted = {**jobs, convert: replace(jobs[convert], queued=None, start_time=NOW)}
    running = decide(META, result, Observed(admitted, {}, {}), 4, NOW, waiting.status)
    assert reasons(running.status)["Reconciling"] == ("True", "Running")
    assert reasons(running.status)["Ready"] == ("False", "Reconciling")
    # nor when no node takes the admitted Job's pod
    unplaced = {**jobs, convert: replace(jobs[convert], queued=None, unschedulable="Unschedulable: 0/1 nodes")}
    assert reasons(decide(META, result, Observed(unplaced, {}, {}), 4, NOW, waiting.status).status)["Reconciling"] \
        == ("True", "Running")


def test_a_failed_stage_beside_queued_ones_stalls_while_the_queued_wait() -> None:
    result = plan(load_resource(base()).spec)
    first = decide(META, result, Observed({}, {}, {}), 4, NOW, {})
    jobs = queued_jobs(first.create)
    convert = first.create[0].key
    jobs[convert] = replace(jobs[convert], active=False, failed=True, queued=None, reason="DeadlineExceeded",
                            message="too long")
    decision = decide(META, result, Observed(jobs, {}, {}), 4, NOW, first.status)
    assert reasons(decision.status) == {"Ready": ("False", "Queued"), "Reconciling": ("True", "Queued"),
                                        "Stalled": ("True", "StageFailed")}
