"""Level-based reconcile: from (spec, the Jobs that exist, the results in the store) to the next Jobs and the status.

Pure functions; `handlers` does the reading and writing. A task is Succeeded when its manifest
is in the store (whatever happened to its Job), Running while its Job is active, Failed when its
Job failed, Blocked when an input failed, and Pending otherwise: before its Job exists, or while
the scheduler finds no node for its Job's pod (the stage's message then says why, as the pod's
PodScheduled condition does) or while its Job is suspended, waiting in a Kueue queue (queueing.py).
Nothing here remembers anything between calls: the same inputs always give the same decision.
"""

from __future__ import annotations

import datetime
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from modeldeploy.controller.jobs import ANNOTATION_GENERATION, job_name, task_key_of
from modeldeploy.controller.queueing import queued
from modeldeploy.manifest import Failure, Manifest
from modeldeploy.planner import Plan, Task
from modeldeploy.spec import Accuracy, Figures, Performance, expected_figures
from modeldeploy.validation import FieldError

Phase = Literal["Pending", "Running", "Succeeded", "Failed", "Blocked"]
MAX_MESSAGE = 1024
STORE_UNAVAILABLE = "StoreUnavailable"


@dataclass(frozen=True, slots=True)  # one per Job: tens of thousands are kept
class JobState:
    name: str
    key: str
    active: bool
    succeeded: bool
    failed: bool
    generation: int
    start_time: str | None
    completion_time: str | None
    reason: str | None
    message: str | None
    attempts: int = 0  # the Job's pods that ran or run: more than one when a retriable failure was retried
    unschedulable: str | None = None  # why the scheduler places no pod of the active Job, e.g. no free device
    queued: str | None = None  # why the active Job does not run: suspended, waiting for Kueue (queueing.py)


def job_state(job: Mapping[str, Any]) -> JobState | None:
    """What a Job tells about its task; None for a Job that is not one of ours."""
    key = task_key_of(job)
    if key is None:
        return None
    status = job.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    failed = conditions.get("Failed")
    annotations = job.get("metadata", {}).get("annotations") or {}
    active = not ({"Complete", "Failed"} & conditions.keys())
    return JobState(
        name=job["metadata"]["name"],
        key=key,
        active=active,
        succeeded="Complete" in conditions,
        failed=failed is not None,
        generation=int(annotations.get(ANNOTATION_GENERATION, 0)),
        start_time=status.get("startTime"),
        completion_time=status.get("completionTime"),
        reason=failed.get("reason") if failed else None,
        message=failed.get("message") if failed else None,
        attempts=sum(int(status.get(count) or 0) for count in ("active", "succeeded", "failed")),
        queued=queued(job) if active else None,
    )


@dataclass(frozen=True)
class Observed:
    """What the handler read for one ModelDeployment."""

    jobs: Mapping[str, JobState]  # by task key
    results: Mapping[str, Manifest]  # committed tasks by key
    failures: Mapping[str, Failure]  # failure records of tasks whose Job failed
    report: Mapping[str, Any] | None = None  # results.json, once the report task is done
    report_uri: str | None = None


@dataclass(frozen=True)
class Decision:
    create: list[Task] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)  # Job names
    status: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    finished: list[tuple[str, str, float | None]] = field(default_factory=list)  # (stage kind, outcome, seconds)


@dataclass(frozen=True)
class _Stage:
    task: Task
    phase: Phase
    job: str | None = None
    start_time: str | None = None
    completion_time: str | None = None
    message: str | None = None
    attempts: int = 0
    queued: bool = False  # Pending because its Job is suspended (in a Kueue queue), not for want of a node


def decide(
    meta: Mapping[str, Any],
    plan: Plan,
    observed: Observed,
    slots: int,
    now: str,
    previous: Mapping[str, Any],
    running_elsewhere: Collection[str] = (),
) -> Decision:
    """The Jobs to create and delete and the whole status, for a valid spec.

    A task in `running_elsewhere` (keys another deployment's Job is computing in the same store) waits for
    that Job's result instead of computing it again.
    """
    generation = int(meta.get("generation") or 0)
    owner = meta["name"]
    stages: dict[str, _Stage] = {}
    delete = [state.name for key, state in observed.jobs.items() if key not in plan and state.active]
    create: list[Task] = []
    before = {stage.get("key"): stage for stage in previous.get("stages") or []}
    for task in plan.tasks:
        job = observed.jobs.get(task.key)
        if job is not None and job.failed and job.generation < generation:
            delete.append(job.name)  # a new generation retries what failed before it
            job = None
        stage = _stage(task, job, observed)
        written = before.get(task.key, {})
        if stage.phase == "Running" and stage.start_time is None and written.get("phase") == "Running":
            # A Job not started yet tells nothing new: the stage stays as written (and the status needs no write).
            stage = _Stage(task, "Running", stage.job, written.get("startTime"), message=written.get("message"),
                           attempts=written.get("attempts") or 0)
        if stage.phase == "Pending" and stage.job is None:
            inputs = [stages[key].phase for key in task.inputs.values()]
            if any(phase in ("Failed", "Blocked") for phase in inputs):
                stage = _Stage(task, "Blocked", message="an input failed")
            elif task.key in running_elsewhere:
                stage = _Stage(task, "Pending", message="computed by another ModelDeployment's Job")
            elif all(phase == "Succeeded" for phase in inputs) and len(create) < slots:
                create.append(task)
                stage = _Stage(task, "Running", job=job_name(owner, task), start_time=now, message="Job created")
        stages[task.key] = stage

    phase = _phase(plan, stages)
    status = {
        "observedGeneration": generation,
        "phase": phase,
        "conditions": _conditions(phase, plan, stages, observed, generation, now, previous),
        "stages": [_stage_status(stage) for stage in stages.values()],
        "results": _results(plan, stages, observed),
        "best": list((observed.report or {}).get("best", [])),
        "targets": _targets(plan, stages),
        "bestSummary": _best_summary(observed.report),
        "reportUri": observed.report_uri if stages[plan.report].phase == "Succeeded" else None,
    }
    return Decision(create, delete, status, _events(stages, previous, phase), _finished(stages, previous))


def invalid(meta: Mapping[str, Any], errors: Sequence[FieldError], now: str, previous: Mapping[str, Any],
            reason: Literal["InvalidSpec", "PolicyDenied"] = "InvalidSpec") -> Decision:
    """A spec the API server accepted but we cannot run (InvalidSpec), or may not (PolicyDenied: the installation's
    policy refuses it): Stalled naming the fields, no Jobs."""
    generation = int(meta.get("generation") or 0)
    message = _clip("; ".join(str(error) for error in errors))
    conditions = _merge_conditions(previous, generation, now, [
        ("Ready", "False", reason, message),
        ("Reconciling", "False", reason, "the spec must be fixed first"),
        ("Stalled", "True", reason, message),
    ])
    status = {"observedGeneration": generation, "phase": "Failed", "conditions": conditions, "stages": [],
              "results": [], "best": [], "targets": None, "bestSummary": None, "reportUri": None}
    events = []
    if _condition(previous, "Stalled").get("reason") != reason or previous.get("observedGeneration") != generation:
        events.append(("Warning", reason, message))
    return Decision(status=status, events=events)


def store_unavailable(meta: Mapping[str, Any], message: str, now: str, previous: Mapping[str, Any]) -> Decision:
    """The artifact store cannot be used (its Secret, its credentials, its bucket, its endpoint): Stalled naming it,
    the stages and results as last known, no Jobs. A Warning Event when the reason is new."""
    generation = int(meta.get("generation") or 0)
    message = _clip(message)
    conditions = _merge_conditions(previous, generation, now, [
        ("Ready", "False", STORE_UNAVAILABLE, message),
        ("Reconciling", "False", STORE_UNAVAILABLE, "waiting for the artifact store; retried with backoff"),
        ("Stalled", "True", STORE_UNAVAILABLE, message),
    ])
    status = {"stages": [], "results": [], "best": [], "targets": None, "bestSummary": None, "reportUri": None,
              **previous, "observedGeneration": generation, "phase": previous.get("phase") or "Pending",
              "conditions": conditions}
    events = []
    if _condition(previous, "Stalled").get("message") != message:
        events.append(("Warning", STORE_UNAVAILABLE, message))
    return Decision(status=status, events=events)


def _stage(task: Task, job: JobState | None, observed: Observed) -> _Stage:
    if task.key in observed.results:
        manifest = observed.results[task.key]
        return _Stage(task, "Succeeded", job.name if job else None, timestamp(manifest.started_at),
                      timestamp(manifest.finished_at), attempts=job.attempts if job else 0)
    if job is None:
        return _Stage(task, "Pending")
    if job.active and job.queued:
        return _Stage(task, "Pending", job.name, job.start_time, message=_clip(job.queued), attempts=job.attempts,
                      queued=True)
    if job.active and job.unschedulable:
        return _Stage(task, "Pending", job.name, job.start_time, message=_clip(job.unschedulable),
                      attempts=job.attempts)
    if job.active:
        retried = f"attempt {job.attempts}; the last failed: {_failed_because(task, job, observed)}"
        return _Stage(task, "Running", job.name, job.start_time, message=_clip(retried) if job.attempts > 1 else None,
                      attempts=job.attempts)
    message = _failed_because(task, job, observed)
    if job.attempts > 1:
        message += f" (after {job.attempts} attempts)"
    return _Stage(task, "Failed", job.name, job.start_time, job.completion_time, _clip(message), job.attempts)


def _failed_because(task: Task, job: JobState, observed: Observed) -> str:
    """Why the task's Job failed (or its last attempt did): the stage's own failure record, else the Job's."""
    failure = observed.failures.get(task.key)
    if failure is not None:
        return f"{failure.reason}: {failure.message}"
    if job.failed:
        return f"{job.reason or 'Failed'}: {job.message or 'the Job failed before the stage could report why'}"
    if job.active:
        return "the pod ended before the stage could report why"
    return "JobSucceededWithoutResult: the Job completed but wrote no result manifest"


def _phase(plan: Plan, stages: Mapping[str, _Stage]) -> str:
    phases = {stage.phase for stage in stages.values()}
    if stages[plan.report].phase == "Succeeded":
        return "Succeeded"
    if phases & {"Failed", "Blocked"} and not phases & {"Running", "Pending"}:
        return "Failed"
    if phases <= {"Pending"}:
        return "Pending"
    return "Running"


def _conditions(
    phase: str, plan: Plan, stages: Mapping[str, _Stage], observed: Observed, generation: int, now: str,
    previous: Mapping[str, Any],
) -> list[dict[str, Any]]:
    failed = [stage for stage in stages.values() if stage.phase == "Failed"]
    done = sum(stage.phase == "Succeeded" for stage in stages.values())
    progress = f"{done}/{len(stages)} tasks done"
    queued = _all_queued(stages)
    unplaced = [stage for stage in stages.values() if stage.phase == "Pending" and stage.job]
    if unplaced:
        why = unplaced[0].message if unplaced[0].queued else f"waits for a node: {unplaced[0].message}"
        progress = _clip(f"{progress}; {unplaced[0].task.name} {why}"
                         + (f" (and {len(unplaced) - 1} more)" if len(unplaced) > 1 else ""))
    if phase == "Succeeded":
        ready = ("True", "Succeeded", f"{len(plan.cells)} cells measured; {_best_summary(observed.report) or 'no cell passed the gate'}")
    elif phase == "Failed":
        ready = ("False", "StageFailed", progress)
    else:
        ready = ("False", "Queued" if queued else "Reconciling", progress)
    stalled = (
        ("True", "StageFailed", _clip(f"{failed[0].task.name}: {failed[0].message}"
                                      + (f" (and {len(failed) - 1} more failed)" if len(failed) > 1 else "")))
        if failed else ("False", "NoFailures", "no stage failed")
    )
    reconciling = (("True", "Queued" if queued else "Running", progress) if phase in ("Pending", "Running")
                   else ("False", phase, progress))
    return _merge_conditions(previous, generation, now, [
        ("Ready", *ready), ("Reconciling", *reconciling), ("Stalled", *stalled),
    ])


def _all_queued(stages: Mapping[str, _Stage]) -> bool:
    """Whether the deployment waits for Kueue alone: it has active Jobs and every one is suspended in a queue, so none
    runs a pod or waits for a node (Reconciling's reason Queued, which Argo CD's health check shows as Suspended)."""
    active = [stage for stage in stages.values() if stage.job and stage.phase in ("Pending", "Running")]
    return bool(active) and all(stage.queued for stage in active)


def _merge_conditions(
    previous: Mapping[str, Any], generation: int, now: str, wanted: Sequence[tuple[str, str, str, str]]
) -> list[dict[str, Any]]:
    """Conditions with lastTransitionTime kept from before unless the status flipped."""
    result = []
    for kind, value, reason, message in wanted:
        before = _condition(previous, kind)
        changed = before.get("status") != value
        result.append({
            "type": kind,
            "status": value,
            "reason": reason,
            "message": message,
            "lastTransitionTime": now if changed or "lastTransitionTime" not in before else before["lastTransitionTime"],
            "observedGeneration": generation,
        })
    return result


def _condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


def _stage_status(stage: _Stage) -> dict[str, Any]:
    return {
        "name": stage.task.name, "kind": stage.task.kind, "key": stage.task.key,
        "phase": "Skipped" if stage.phase == "Blocked" else stage.phase,
        "job": stage.job, "startTime": stage.start_time, "completionTime": stage.completion_time,
        "message": stage.message, "attempts": stage.attempts or None,
    }


def _results(plan: Plan, stages: Mapping[str, _Stage], observed: Observed) -> list[dict[str, Any]]:
    """The report's cells once it is done; until then each evaluated cell as it finishes, with its ratios to the
    figures the spec expects of it."""
    if observed.report is not None and stages[plan.report].phase == "Succeeded":
        return list(observed.report.get("cells", []))
    report = plan.task(plan.report).config
    gate = Accuracy.model_validate(report["accuracy"]) if report.get("accuracy") else None
    speed = Performance.model_validate(report["performance"]) if report.get("performance") else None
    cells = []
    for cell in plan.cells:
        manifest = observed.results.get(cell.evaluate)
        if manifest is None:
            continue
        metrics = manifest.metrics
        accuracy = metrics.get("accuracy") or {}
        performance = metrics.get("performance") or {}
        artifact = metrics.get("artifact") or {}
        expected = expected_figures(gate, speed, cell.target, cell.precision, cell.batch_size)
        measured = Figures(top1=accuracy.get("top1"), top5=accuracy.get("top5"), throughput=performance.get("throughput"))
        figures = {name: figure.model_dump(mode="json", exclude_none=True)
                   for name, figure in (("expected", expected), ("ratio", measured.ratios(expected))) if figure}
        cells.append({
            "target": cell.target, "backend": metrics.get("backend"), "device": metrics.get("device"),
            "precision": cell.precision, "batchSize": cell.batch_size,
            "top1": accuracy.get("top1"), "top5": accuracy.get("top5"),
            "throughput": performance.get("throughput"), "latencyMs": performance.get("latencyMs"),
            "artifact": artifact.get("uri"), "sha256": artifact.get("sha256"), **figures, "gate": "NotEvaluated",
            **({"throughputCovers": performance["throughputCovers"]} if performance.get("throughputCovers") else {}),
        })
    return cells


def _targets(plan: Plan, stages: Mapping[str, _Stage]) -> str:
    targets: dict[str, bool] = {}
    for cell in plan.cells:
        targets[cell.target] = targets.get(cell.target, True) and stages[cell.evaluate].phase == "Succeeded"
    return f"{sum(targets.values())}/{len(targets)}"


def _best_summary(report: Mapping[str, Any] | None) -> str | None:
    best = (report or {}).get("best") or []
    if not best:
        return None
    return ", ".join(f"{b['target']}: {b['precision']} bs{b['batchSize']} {b['throughput']:.0f}/s" for b in best)


def _events(stages: Mapping[str, _Stage], previous: Mapping[str, Any], phase: str) -> list[tuple[str, str, str]]:
    """What to tell in Events: a stage kind (convert, compile, evaluate, ...) that starts Jobs after none ran, one
    whose Jobs wait in a Kueue queue after none waited, and one whose tasks have all succeeded; every stage that
    failed or waits for a node; the deployment's success.
    Normal Events go by stage kind, not by task: one per task would be two API writes per Job."""
    before = {stage.get("key"): stage.get("phase") for stage in previous.get("stages") or []}
    waited = {stage.get("key") for stage in previous.get("stages") or []
              if stage.get("phase") == "Pending" and stage.get("job")}
    events = []
    by_kind: dict[str, list[_Stage]] = {}
    for stage in stages.values():
        by_kind.setdefault(stage.task.kind, []).append(stage)
    for kind, of_kind in by_kind.items():
        started = [stage for stage in of_kind if stage.phase == "Running" and stage.message == "Job created"
                   and before.get(stage.task.key) != "Running"]
        if started and not any(before.get(stage.task.key) == "Running" for stage in of_kind):
            more = f" and {len(started) - 1} more" if len(started) > 1 else ""
            events.append(("Normal", "StageStarted", f"{started[0].task.name}: Job {started[0].job}{more}"))
        queued = [stage for stage in of_kind if stage.queued and stage.task.key not in waited]
        if queued and not any(stage.task.key in waited for stage in of_kind):
            more = f" (and {len(queued) - 1} more)" if len(queued) > 1 else ""
            events.append(("Normal", "Queued", _clip(f"{queued[0].task.name}: {queued[0].message}{more}")))
        if (all(stage.phase == "Succeeded" for stage in of_kind)
                and any(stage.task.key in before and before[stage.task.key] != "Succeeded" for stage in of_kind)):
            events.append(("Normal", "StageSucceeded", f"{kind}: {len(of_kind)} succeeded"))
    for key, stage in stages.items():
        if before.get(key) == stage.phase:
            continue
        if stage.phase == "Failed":
            events.append(("Warning", "StageFailed", _clip(f"{stage.task.name}: {stage.message}")))
        elif stage.phase == "Pending" and stage.job and not stage.queued:
            events.append(("Warning", "Unschedulable", _clip(f"{stage.task.name}: {stage.message}")))
    if phase == "Succeeded" and previous.get("phase") != "Succeeded":
        events.append(("Normal", "Succeeded", "every cell is measured and the report is written"))
    return events


def _finished(stages: Mapping[str, _Stage], previous: Mapping[str, Any]) -> list[tuple[str, str, float | None]]:
    """Stages that finished since the previous status, with their Job's wall time when known."""
    before = {stage.get("key"): stage.get("phase") for stage in previous.get("stages") or []}
    finished = []
    for key, stage in stages.items():
        if stage.phase in ("Succeeded", "Failed") and before.get(key) in ("Pending", "Running"):
            seconds = None
            if stage.start_time and stage.completion_time:
                seconds = (_parse(stage.completion_time) - _parse(stage.start_time)).total_seconds()
            finished.append((stage.task.kind, stage.phase.lower(), seconds))
    return finished


def _parse(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


def timestamp(value: datetime.datetime) -> str:
    """A Kubernetes timestamp (RFC 3339, seconds, UTC)."""
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."
