"""The local executor: runs a plan's tasks as subprocesses through the stage entrypoint.

The same command a Job runs (`python -m modeldeploy_jobs.entrypoint TASK_URI`, where a Job has
the document itself in its environment), in dependency order, N at a time, against a `file://`
or `s3://` store. Tasks whose manifest exists are done already; a failed task stops only the
tasks that depend on it. Ctrl-C terminates the running stages (they never write a manifest
half-way), a runner killed outright takes them with it, and a re-run resumes where this one
stopped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlparse

from modeldeploy.children import die_with_parent
from modeldeploy.manifest import fetch, output_name, read_failure, read_manifest, write_task
from modeldeploy.planner import Plan, Task
from modeldeploy.spec import ModelDeployment
from modeldeploy.store import Store, sha256_file

STAGE_COMMAND = [sys.executable, "-m", "modeldeploy_jobs.entrypoint"]
POLL_SECONDS = 0.05
TERMINATE_GRACE_SECONDS = 10


def localize(resource: ModelDeployment, base: Path) -> ModelDeployment:
    """Source and dataset paths resolved against the spec file's folder, as absolute file:// URIs.

    A local weights or model file also gets its sha256 pinned (unless the spec pins one), so
    retraining the model changes the plan's keys.
    """
    spec = resource.spec

    def resolve(uri: str | None) -> str | None:
        if uri is None or urlparse(uri).scheme not in ("", "file"):
            return uri
        path = Path(urlparse(uri).path if uri.startswith("file:") else uri)
        return (base / path).resolve().as_uri() if not path.is_absolute() else path.as_uri()

    source = spec.source.model_copy(
        update={"weights": resolve(spec.source.weights), "uri": resolve(spec.source.uri), "code": resolve(spec.source.code)}
    )
    model_file = source.weights or source.uri
    if source.sha256 is None and model_file and model_file.startswith("file:"):
        path = Path(urlparse(model_file).path)
        if path.is_file():
            source = source.model_copy(update={"sha256": sha256_file(path)})
    dataset = spec.dataset
    if dataset is not None:
        dataset = dataset.model_copy(update={"uri": resolve(dataset.uri), "labels": resolve(dataset.labels)})
    return resource.model_copy(update={"spec": spec.model_copy(update={"source": source, "dataset": dataset})})


@dataclass
class Outcome:
    done: set[str] = field(default_factory=set)
    cached: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)  # key -> reason
    blocked: set[str] = field(default_factory=set)
    interrupted: bool = False

    @property
    def succeeded(self) -> bool:
        return not (self.failed or self.blocked or self.interrupted)


@dataclass
class _Running:
    task: Task
    process: subprocess.Popen[bytes]
    started: float
    log: Path


class Runner:
    def __init__(self, plan: Plan, store: Store, jobs: int, logs: Path, out: TextIO, env: Mapping[str, str]):
        self.plan, self.store, self.jobs, self.logs, self.out = plan, store, jobs, logs, out
        self.env = dict(env)
        self.start = time.monotonic()
        self.running: dict[str, _Running] = {}

    def say(self, status: str, text: str) -> None:
        print(f"[{time.monotonic() - self.start:7.1f}s] {status:<7} {text}", file=self.out, flush=True)

    def run(self) -> Outcome:
        outcome = Outcome()
        for task in self.plan.tasks:
            if read_manifest(self.store, task.key) is not None:
                outcome.cached.add(task.key)
        pending = [task for task in self.plan.tasks if task.key not in outcome.cached]
        self.say("plan", f"{len(self.plan.tasks)} tasks: {len(outcome.cached)} done before, {len(pending)} to run, "
                         f"{self.jobs} at a time; store {self.store.uri}")
        self.logs.mkdir(parents=True, exist_ok=True)
        try:
            self._loop(pending, outcome)
        except KeyboardInterrupt:
            outcome.interrupted = True
            self._terminate_all()
            self.say("stopped", "interrupted; finished tasks are kept, run again to resume")
        return outcome

    def _loop(self, pending: list[Task], outcome: Outcome) -> None:
        finished = outcome.cached | outcome.done
        while pending or self.running:
            # Everything else first: measurements run alone, so they wait until the rest is idle.
            for task in sorted(pending, key=_measures_speed):
                if any(key in outcome.failed or key in outcome.blocked for key in task.inputs.values()):
                    pending.remove(task)
                    outcome.blocked.add(task.key)
                    self.say("skip", f"{task.name}: an input failed")
                elif self._may_start(task) and all(key in finished for key in task.inputs.values()):
                    pending.remove(task)
                    self._launch(task)
            for key, running in list(self.running.items()):
                code = running.process.poll()
                if code is None:
                    continue
                del self.running[key]
                elapsed = time.monotonic() - running.started
                if code == 0:
                    outcome.done.add(key)
                    finished.add(key)
                    self.say("done", f"{running.task.name} ({elapsed:.1f}s)")
                else:
                    failure = read_failure(self.store, key)
                    reason = f"{failure.reason}: {failure.message}" if failure else f"exit code {code}"
                    outcome.failed[key] = reason
                    self.say("FAILED", f"{running.task.name}: {reason} (log: {running.log})")
            time.sleep(POLL_SECONDS)

    def _may_start(self, task: Task) -> bool:
        """N tasks at a time, but a speed measurement runs alone: neighbours would skew its numbers."""
        if any(_measures_speed(running.task) for running in self.running.values()):
            return False
        if _measures_speed(task):
            return not self.running
        return len(self.running) < self.jobs

    def _launch(self, task: Task) -> None:
        uri = write_task(self.store, task.task_document(self.store.uri))
        log = self.logs / f"{task.kind}-{task.short_key}.log"
        with log.open("wb") as handle:
            process = subprocess.Popen(
                [*STAGE_COMMAND, uri], stdout=handle, stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - the runner starts no thread
            )
        self.running[task.key] = _Running(task, process, time.monotonic(), log)
        self.say("start", task.name)

    def _terminate_all(self) -> None:
        for running in self.running.values():
            _signal_group(running.process, signal.SIGTERM)
        deadline = time.monotonic() + TERMINATE_GRACE_SECONDS
        for running in self.running.values():
            try:
                running.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(running.process, signal.SIGKILL)
                running.process.wait()
        self.running.clear()


def _measures_speed(task: Task) -> bool:
    return task.kind == "evaluate" and task.config.get("role") != "reference"


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def results(store: Store, plan: Plan, destination: Path) -> dict[str, Any] | None:
    """The report's results.json, when the report task is done."""
    manifest = read_manifest(store, plan.report)
    if manifest is None:
        return None
    return json.loads(fetch(store, manifest, "results.json", destination / "results.json").read_text())


def report_uri(store: Store, plan: Plan) -> str | None:
    """Where the report task's report.html is, when the report task is done."""
    manifest = read_manifest(store, plan.report)
    return None if manifest is None else store.uri_of(output_name(manifest, "report.html"))


def render_results(results: Mapping[str, Any]) -> str:
    """The report's cells as a table; a column of throughput against the expected figure when the spec has one."""
    with_speed_ratio = any((cell.get("expected") or {}).get("throughput") is not None for cell in results["cells"])
    header = ["TARGET", "PRECISION", "BATCH", "TOP1", "TOP5", "DROP", "SAMPLES/S", "P50 MS", "P99 MS", "GATE"]
    if with_speed_ratio:
        header.insert(7, "VS EXPECTED")
    rows = [tuple(header)]
    for cell in results["cells"]:
        latency = cell.get("latencyMs") or {}
        row = [
            cell["target"], cell["precision"], str(cell["batchSize"]), _percent(cell.get("top1")),
            _percent(cell.get("top5")), _percent(cell.get("drop")), _number(cell.get("throughput"), "{:.1f}"),
            _number(latency.get("p50"), "{:.3f}"), _number(latency.get("p99"), "{:.3f}"), cell.get("gate", ""),
        ]
        if with_speed_ratio:
            row.insert(7, _number((cell.get("ratio") or {}).get("throughput"), "{:.2f}x"))
        rows.append(tuple(row))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ["  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    reference = results.get("reference") or {}
    if reference.get("top1") is not None:
        lines.append(f"reference ({reference.get('source')}): top1 {_percent(reference['top1'])}"
                     + (f", top5 {_percent(reference['top5'])}" if reference.get("top5") is not None else ""))
    for cell in results["cells"]:
        if cell.get("gateMessage"):
            lines.append(f"{cell['target']}/{cell['precision']}/bs{cell['batchSize']} {cell.get('gate', '')}: "
                         f"{cell['gateMessage']}")
    for best in results.get("best", []):
        accuracy = f", top1 {_percent(best['top1'])}" if best.get("top1") is not None else ""
        lines.append(f"best on {best['target']}: {best['precision']} at batch {best['batchSize']}, "
                     f"{best['throughput']:.1f} samples/s{accuracy}")
    return "\n".join(lines)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def _number(value: float | None, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)
