"""Kueue: with a queue configured, Jobs are created suspended in its LocalQueue, and a suspended Job is told as
queued (docs/kueue.md). tests/cluster/test_kueue.py runs the same against Kueue's own controller manager."""

from __future__ import annotations

from typing import Any

from modeldeploy.controller.config import OperatorConfig, load
from modeldeploy.controller.jobs import LABEL_QUEUE, Owner, job_manifest
from modeldeploy.controller.queueing import queued
from modeldeploy.planner import plan
from modeldeploy.validation import load_resource
from specs import base

OWNER = Owner("cases", "team-a", "uid-1234", 3)


def convert_job(config: OperatorConfig) -> dict[str, Any]:
    spec = load_resource(base()).spec
    task = next(task for task in plan(spec).tasks if task.kind == "convert")
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
