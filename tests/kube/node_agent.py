"""A test node agent: the Job controller and a kubelet in one, for the parts of batch/v1 Jobs the operator uses.

It watches Jobs through the API. A new Job (not started, not suspended) gets `status.startTime` and
`status.active: 1`; its pod template's first container (`command` + `args`, `env` with values and
Secret references) runs as a local process in a fresh temporary directory, with the directory of
`sys.executable` first on PATH. The exit code decides the Job's status the way the Job controller
would: success; a podFailurePolicy FailJob rule on exit codes; retries up to `backoffLimit`;
`activeDeadlineSeconds`. Status goes to the Job's `/status` subresource as a merge patch. A Job
deleted while it runs has its process killed. Pods are not modelled.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

Obj = dict[str, Any]

START_ERROR = 128  # what a container runtime reports for a container that could not start
DEFAULT_BACKOFF_LIMIT = 6
WATCH_SECONDS = 5  # each watch ends after this long and the agent lists again; bounds how long a stop can wait


class StartError(Exception):
    """The container cannot start: no command, or a Secret it needs is missing."""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(kind: str, reason: str, message: str) -> Obj:
    now = _now()
    return {"type": kind, "status": "True", "reason": reason, "message": message, "lastProbeTime": now,
            "lastTransitionTime": now}


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # its own session: children go too
        except ProcessLookupError:
            pass


def _fail_job_rule(spec: Mapping[str, Any], container: str, exit_code: int) -> int | None:
    """The index of the podFailurePolicy rule that fails the Job for this exit code, if the first match is FailJob."""
    for index, rule in enumerate((spec.get("podFailurePolicy") or {}).get("rules") or ()):
        exit_codes = rule.get("onExitCodes")
        if exit_codes is None or exit_codes.get("containerName") not in (None, container):
            continue  # onPodConditions rules: no pod conditions happen here
        if (exit_code in exit_codes.get("values", ())) == (exit_codes.get("operator") == "In"):
            return index if rule.get("action") == "FailJob" else None
    return None


def _verdict(spec: Mapping[str, Any], container: str, pod: str, exit_code: int | None, failed: int
             ) -> tuple[str, str] | None:
    """The reason and message that fail the Job after this failed attempt, or None to try again."""
    if exit_code is None:
        return "DeadlineExceeded", "Job was active longer than specified deadline"
    rule = _fail_job_rule(spec, container, exit_code)
    if rule is not None:
        return "PodFailurePolicy", (f"Container {container} for pod {pod} failed with exit code {exit_code} "
                                    f"matching FailJob rule at index {rule}")
    if failed > spec.get("backoffLimit", DEFAULT_BACKOFF_LIMIT):
        return "BackoffLimitExceeded", "Job has reached the specified backoff limit"
    return None


class NodeAgent:
    """Runs Jobs from the API server behind `kubeconfig`, at most `parallelism` at a time, with files under `workdir`."""

    def __init__(self, kubeconfig: Path, workdir: Path, parallelism: int = 2) -> None:
        self._api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        self._batch = kubernetes.client.BatchV1Api(self._api)
        self._core = kubernetes.client.CoreV1Api(self._api)
        self._logs = workdir / "logs"
        self._scratch = workdir / "jobs"
        self._executor = ThreadPoolExecutor(max_workers=parallelism, thread_name_prefix="node-agent-job")
        self._watch = kubernetes.watch.Watch()
        self._watcher = threading.Thread(target=self._watch_jobs, name="node-agent-watch", daemon=True)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._seen: set[str] = set()  # uids of the Jobs taken on
        self._deleted: set[str] = set()
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self.errors: list[BaseException] = []  # what went wrong inside the agent itself, for the fixture to assert

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
                 ) -> None:
        self.stop()

    def start(self) -> None:
        self._logs.mkdir(parents=True, exist_ok=True)
        self._scratch.mkdir(parents=True, exist_ok=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            running = list(self._processes.values())
        for process in running:
            _kill(process)
        deadline = time.monotonic() + WATCH_SECONDS + 5
        while self._watcher.is_alive() and time.monotonic() < deadline:
            self._watch.stop()  # again and again: a watch that starts after a stop() would run its full time
            self._watcher.join(timeout=0.1)
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._api.close()

    def log_path(self, name: str, namespace: str = "default") -> Path:
        """The output of every attempt of the Job, one after another."""
        return self._logs / f"{namespace}.{name}.log"

    # Watching

    def _watch_jobs(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    self._list_and_watch()
                except (ApiException, urllib3.exceptions.HTTPError, OSError) as error:  # list again
                    if not self._stopping.is_set():
                        log.warning("node agent: watching Jobs failed (%s); listing again", error)
                        self._stopping.wait(0.2)
        except Exception as error:
            log.exception("node agent: the Job watcher failed")
            self.errors.append(error)

    def _list_and_watch(self) -> None:
        listing = json.loads(self._batch.list_job_for_all_namespaces(_preload_content=False).data)
        live = {job["metadata"]["uid"] for job in listing["items"]}
        with self._lock:
            gone = [uid for uid in self._processes if uid not in live]
        for uid in gone:
            self._cancel(uid)
        for job in listing["items"]:
            self._consider(job)
        events = self._watch.stream(self._batch.list_job_for_all_namespaces, deserialize=False,
                                    resource_version=listing["metadata"]["resourceVersion"],
                                    timeout_seconds=WATCH_SECONDS)
        for event in events:
            if self._stopping.is_set():
                return
            if event["type"] == "DELETED":
                self._cancel(event["object"]["metadata"]["uid"])
            else:
                self._consider(event["object"])

    def _consider(self, job: Obj) -> None:
        meta, spec = job["metadata"], job["spec"]
        if (meta["uid"] in self._seen or meta.get("deletionTimestamp") or spec.get("suspend")
                or (job.get("status") or {}).get("startTime")):
            return
        self._seen.add(meta["uid"])
        self._executor.submit(self._run_reporting_errors, job)

    def _cancel(self, uid: str) -> None:
        with self._lock:
            self._deleted.add(uid)
            process = self._processes.get(uid)
        if process is not None:
            _kill(process)

    def _cancelled(self, uid: str) -> bool:
        return self._stopping.is_set() or uid in self._deleted

    # Running

    def _run_reporting_errors(self, job: Obj) -> None:
        try:
            self._run(job)
        except Exception as error:
            log.exception("node agent: running Job %s failed", job["metadata"]["name"])
            self.errors.append(error)

    def _run(self, job: Obj) -> None:
        meta, spec = job["metadata"], job["spec"]
        if self._cancelled(meta["uid"]) or not self._patch_status(job, {"startTime": _now(), "active": 1}):
            return
        container = spec["template"]["spec"]["containers"][0]
        deadline_seconds = spec.get("activeDeadlineSeconds")
        deadline = None if deadline_seconds is None else time.monotonic() + deadline_seconds
        failed = 0
        while True:
            exit_code = self._attempt(job, container, failed + 1, deadline)
            if self._cancelled(meta["uid"]):
                return
            if exit_code == 0:
                self._patch_status(job, {
                    "active": 0, "succeeded": 1, "completionTime": _now(),
                    "conditions": [_condition("SuccessCriteriaMet", "CompletionsReached",
                                              "Reached expected number of succeeded pods"),
                                   _condition("Complete", "CompletionsReached",
                                              "Reached expected number of succeeded pods")],
                })
                return
            failed += 1
            verdict = _verdict(spec, container["name"], f"{meta['namespace']}/{meta['name']}-{failed}", exit_code,
                               failed)
            if verdict is not None:
                self._fail(job, failed, *verdict)
                return
            if not self._patch_status(job, {"failed": failed}):
                return

    def _fail(self, job: Obj, failed: int, reason: str, message: str) -> None:
        self._patch_status(job, {"active": 0, "failed": failed, "conditions": [
            _condition("FailureTarget", reason, message), _condition("Failed", reason, message)]})

    def _attempt(self, job: Obj, container: Obj, number: int, deadline: float | None) -> int | None:
        """One pod's run: the exit code, or None when the deadline passed and the process was killed."""
        meta = job["metadata"]
        workdir = tempfile.mkdtemp(prefix=f"{meta['namespace']}.{meta['name']}.", dir=self._scratch)
        argv = [*container.get("command", ()), *container.get("args", ())]
        with self.log_path(meta["name"], meta["namespace"]).open("ab") as output:
            output.write(f"--- attempt {number}: {shlex.join(argv)} (in {workdir})\n".encode())
            output.flush()
            try:
                if not argv:
                    raise StartError("the container has no command")
                process = subprocess.Popen(argv, cwd=workdir, env=self._environment(meta["namespace"], container),
                                           stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                           start_new_session=True)
            except (OSError, StartError) as error:
                output.write(f"--- cannot start: {error}\n".encode())
                return START_ERROR
        with self._lock:
            self._processes[meta["uid"]] = process
        try:
            if self._cancelled(meta["uid"]):  # deleted between the check and the registration
                _kill(process)
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                _kill(process)
                process.wait()
                return None
        finally:
            with self._lock:
                del self._processes[meta["uid"]]

    def _environment(self, namespace: str, container: Obj) -> dict[str, str]:
        environment = {"PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", os.defpath)])}
        for variable in container.get("env") or ():
            source = variable.get("valueFrom")
            if source is None:
                environment[variable["name"]] = variable.get("value", "")
            elif "secretKeyRef" in source:
                value = self._secret_value(namespace, source["secretKeyRef"])
                if value is not None:
                    environment[variable["name"]] = value
        return environment

    def _secret_value(self, namespace: str, reference: Obj) -> str | None:
        try:
            data = self._core.read_namespaced_secret(reference["name"], namespace).data or {}
        except ApiException as error:
            if error.status != 404:
                raise
            data = {}
        if reference["key"] in data:
            return base64.b64decode(data[reference["key"]]).decode()
        if reference.get("optional"):
            return None
        raise StartError(f"key {reference['key']!r} of Secret {namespace}/{reference['name']} is not there")

    def _patch_status(self, job: Obj, status: Obj) -> bool:
        """False when the Job is gone."""
        try:
            self._batch.patch_namespaced_job_status(job["metadata"]["name"], job["metadata"]["namespace"],
                                                    {"status": status}, _content_type="application/merge-patch+json")
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True
