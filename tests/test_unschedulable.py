"""A Job whose pod the scheduler cannot place: its stage is Pending with the scheduler's reason, the conditions say
so, a Warning tells it once, and no second Job is created for it."""

from __future__ import annotations

from dataclasses import replace

from modeldeploy.controller.informer import PodIndex, owned_pod
from modeldeploy.controller.jobs import job_name
from modeldeploy.controller.reconcile import JobState, Observed, decide
from modeldeploy.planner import plan
from modeldeploy.validation import load_resource
from specs import base

META = {"name": "cases", "namespace": "team-a", "uid": "uid-1234", "generation": 3}
NOW = "2026-11-24T10:00:00Z"
NO_DEVICE = ("Unschedulable: 0/4 nodes are available: 1 Insufficient huawei.com/Ascend310P, 3 node(s) didn't match "
             "Pod's node affinity/selector.")


def test_a_job_whose_pod_no_node_takes_leaves_its_stage_pending_with_the_reason() -> None:
    result = plan(load_resource(base()).spec)
    created = decide(META, result, Observed({}, {}, {}), 4, NOW, {})
    convert = next(task for task in created.create if task.kind == "convert")
    running = JobState(job_name("cases", convert), convert.key, True, False, False, 3, NOW, None, None, None, 1)
    unplaced = replace(running, unschedulable=NO_DEVICE)

    waiting = decide(META, result, Observed({convert.key: unplaced}, {}, {}), 4, NOW, created.status)
    stage = next(stage for stage in waiting.status["stages"] if stage["key"] == convert.key)
    assert (stage["phase"], stage["job"], stage["message"]) == ("Pending", running.name, NO_DEVICE)
    assert convert not in waiting.create  # its Job exists: waiting for a node is not a reason for another
    conditions = {c["type"]: c for c in waiting.status["conditions"]}
    assert conditions["Reconciling"]["status"] == "True"
    assert f"convert waits for a node: {NO_DEVICE}" in conditions["Reconciling"]["message"]
    assert f"convert waits for a node: {NO_DEVICE}" in conditions["Ready"]["message"]
    assert conditions["Stalled"]["status"] == "False"  # it may yet be placed: not a failure
    assert ("Warning", "Unschedulable", f"convert: {NO_DEVICE}") in waiting.events

    again = decide(META, result, Observed({convert.key: unplaced}, {}, {}), 4, NOW, waiting.status)
    assert not [event for event in again.events if event[1] == "Unschedulable"]  # told once

    placed = decide(META, result, Observed({convert.key: running}, {}, {}), 4, NOW, waiting.status)
    stage = next(stage for stage in placed.status["stages"] if stage["key"] == convert.key)
    assert (stage["phase"], stage["message"]) == ("Running", None)
    assert "waits for a node" not in {c["type"]: c for c in placed.status["conditions"]}["Reconciling"]["message"]


def pod(uid: str, *, scheduled: bool, phase: str = "Pending") -> dict[str, object]:
    condition = ({"type": "PodScheduled", "status": "True"} if scheduled else
                 {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                  "message": NO_DEVICE.removeprefix("Unschedulable: ")})
    return {"metadata": {"uid": uid, "namespace": "team-a",
                         "labels": {"modeldeploy.io/deployment": "cases", "batch.kubernetes.io/job-name": "cases-x"}},
            "status": {"phase": phase, "conditions": [condition]}}


def test_the_pod_index_keeps_the_pods_that_wait_for_a_node() -> None:
    index = PodIndex()
    waiting = owned_pod(pod("p1", scheduled=False))
    assert waiting is not None and waiting.unschedulable == NO_DEVICE
    index.put(waiting)
    assert index.unschedulable(("team-a", "cases")) == {"cases-x": NO_DEVICE}
    placed = owned_pod(pod("p1", scheduled=True))
    assert placed is not None and placed.unschedulable is None
    assert index.put(placed) == waiting
    assert index.unschedulable(("team-a", "cases")) == {} and index.waiting == {}
    index.put(waiting)
    index.remove(waiting)
    assert index.waiting == {}
    assert owned_pod({"metadata": {"uid": "p2", "namespace": "team-a", "labels": {}}}) is None  # not a stage's
