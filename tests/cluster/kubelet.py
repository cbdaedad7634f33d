"""A process kubelet: runs the pods the real scheduler binds to our Nodes as local processes.

    kubelet = Kubelet(control_plane, ["cpu-1", "ascend310p-1"], workdir)
    kubelet.start()
    ...
    kubelet.logs(namespace, pod_name)
    kubelet.stop()

For each node it lists and watches the pods bound to it (`fieldSelector=spec.nodeName=<node>`), with the
credentials a kubelet has (system:node:<node>, so the Node authorizer decides which Secrets and ConfigMaps it
may read). Each pod's containers run as processes: command and args with Kubernetes' $(VAR) expansion, the
environment built as the kubelet builds it (envFrom, env values, secretKeyRef, configMapKeyRef, fieldRef,
resourceFieldRef), workingDir, a fresh directory per pod, the directory of sys.executable first on PATH
(the job images' entrypoints are the virtualenv's console scripts). Status goes through pods/status as a
kubelet writes it; the Job controller, the garbage collector and the scheduler do everything else.

Every container process runs under a small shim that is its process group's leader: the shim gets SIGHUP
when the kubelet's thread that started it dies (PR_SET_PDEATHSIG) and then kills its whole group, so a
killed test run leaves no pod processes behind. What it does not do is listed in README.md.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import decimal
import http.client
import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self

from cluster.control_plane import Api, ApiError, ControlPlane, Watch

log = logging.getLogger(__name__)

Obj = dict[str, Any]

HOST_IP = "127.0.0.1"  # every node is this machine; pods share its network, so their IP is the host's
WATCH_SECONDS = 300
DEFAULT_GRACE_SECONDS = 30
CONFIG_RETRY_SECONDS = (1, 2, 4, 8, 10)  # waits between attempts to build a container's environment
START_ERROR_EXIT_CODE = 128  # what containerd reports for a container whose process could not start
TERMINAL = ("Succeeded", "Failed")
FORBIDDEN_RETRY_SECONDS = 30

# The shim: started with the container's spec on stdin, it execs the container's process in a child and
# waits for it, exiting with its code (128 + the signal for a killed one, as container runtimes report).
# SIGTERM and SIGINT sent to the group are for the container; the shim lives on to report its exit.
_SHIM = r"""
import ctypes, json, os, signal, sys
spec = json.load(sys.stdin)
ctypes.CDLL(None).prctl(1, int(signal.SIGHUP), 0, 0, 0)
if os.getppid() != spec["kubelet"]:
    os._exit(137)
def orphaned(*_):
    os.killpg(0, signal.SIGKILL)
signal.signal(signal.SIGHUP, orphaned)
signal.signal(signal.SIGTERM, lambda *_: None)
signal.signal(signal.SIGINT, lambda *_: None)
null = os.open(os.devnull, os.O_RDONLY)
os.dup2(null, 0)
pid = os.fork()
if pid == 0:
    try:
        os.chdir(spec["cwd"])
        os.execve(spec["path"], spec["argv"], spec["env"])
    except OSError as error:
        os.write(2, f"exec {spec['path']}: {error}\n".encode())
    os._exit(127)
while True:
    try:
        _, status = os.waitpid(pid, 0)
        break
    except InterruptedError:
        continue
code = os.waitstatus_to_exitcode(status)
os._exit(128 - code if code < 0 else code)
"""


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: str) -> float:
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()


# --- the kubelet's environment rules ----------------------------------------------------------------

def expand(text: str, mapping: Callable[[str], str | None]) -> str:
    """Kubernetes' $(VAR) expansion (third_party/forked/golang/expansion): $(NAME) is replaced when NAME is
    defined and left as written when not, $$ is a literal $, and anything else is kept."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            rest = text[cursor + 1:]
            if rest[0] == "$":
                read, advance = "$", 1
            elif rest[0] == "(":
                close = rest.find(")", 1)
                if close == -1:
                    read, advance = "$(", 1
                else:
                    name = rest[1:close]
                    value = mapping(name)
                    read, advance = (f"$({name})" if value is None else value), close + 1
            else:
                read, advance = "$" + rest[0], 1
            out.append(read)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + text[checkpoint:]


class ConfigError(Exception):
    """The container's configuration cannot be built (CreateContainerConfigError); the kubelet retries."""


_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[KMGTPE]i?|[numkMGTPE]?)$")
_SUFFIX = {"": 1, "n": decimal.Decimal("1e-9"), "u": decimal.Decimal("1e-6"), "m": decimal.Decimal("1e-3"),
           "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def quantity(value: str | float) -> decimal.Decimal:
    match = _QUANTITY.match(str(value).strip())
    if match is None:
        raise ConfigError(f"invalid quantity {value!r}")
    number, suffix = match.groups()
    if suffix[:1] in ("e", "E"):
        return decimal.Decimal(number + suffix)
    return decimal.Decimal(number) * decimal.Decimal(_SUFFIX[suffix])


# --- the kubelet ----------------------------------------------------------------------------------

class Kubelet:
    """Runs the pods bound to `nodes` (Node names registered in `control_plane`), with its files (a directory
    per pod, the container logs) under `workdir`. `errors` collects what went wrong inside the kubelet
    itself, for a fixture to assert empty."""

    def __init__(self, control_plane: ControlPlane, nodes: Sequence[str], workdir: Path) -> None:
        self.nodes = list(nodes)
        self.workdir = Path(workdir)
        self.pods_dir = self.workdir / "pods"
        self.logs_dir = self.workdir / "logs"
        self._apis = {node: control_plane.node_api(node) for node in self.nodes}
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._workers: dict[str, PodWorker] = {}  # uid -> the pod's worker while its containers are managed
        self._finished: dict[str, str] = {}  # uid -> node, pods whose final status is written
        self._pods: dict[tuple[str, str], Obj] = {}  # (namespace, name) -> metadata of every pod run here
        self._watches: dict[str, Watch] = {}
        self._threads: list[threading.Thread] = []
        self._deleter = ThreadPoolExecutor(max_workers=2, thread_name_prefix="kubelet-delete")
        self.errors: list[BaseException] = []
        self.relists = 0  # lists of pods after the first, per node: after a 410 or a broken watch

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Self:
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            thread = threading.Thread(target=self._watch_node, args=(node,), name=f"kubelet-{node}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Kills every container (SIGKILL to its group) and stops watching, writing no status: a node whose
        kubelet dies."""
        self._stopping.set()
        for watch in list(self._watches.values()):
            watch.close()
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            worker.gone()
        for worker in workers:
            worker.join(timeout=10)
        for thread in self._threads:
            thread.join(timeout=10)
        self._deleter.shutdown(wait=True, cancel_futures=True)

    # Logs

    def log_path(self, namespace: str, pod: str, container: str | None = None) -> Path:
        """The file holding the container's stdout and stderr (the pod's only or first container by default)."""
        if container is None:
            meta = self._pods.get((namespace, pod))
            if meta is None:
                raise KeyError(f"no pod {namespace}/{pod} ran on this kubelet")
            container = meta["containers"][0]
        return self.logs_dir / namespace / pod / f"{container}.log"

    def logs(self, namespace: str, pod: str, container: str | None = None) -> str:
        path = self.log_path(namespace, pod, container)
        return path.read_text(errors="replace") if path.exists() else ""

    def pods_of_job(self, namespace: str, job: str) -> list[str]:
        """The names of the Job's pods this kubelet ran, in the order it took them on."""
        return [name for (ns, name), meta in list(self._pods.items())
                if ns == namespace and meta["labels"].get("batch.kubernetes.io/job-name") == job]

    def job_logs(self, namespace: str, job: str) -> str:
        """The output of every pod of the Job, one after the other."""
        return "".join(self.logs(namespace, pod) for pod in self.pods_of_job(namespace, job))

    def evict(self, namespace: str, pod: str, message: str = "The node was low on resource: memory. ",
              grace: int = 0) -> None:
        """What the eviction manager does under node pressure: stops the pod's containers (SIGKILL with the
        default grace period 0), and marks the pod Failed, reason Evicted, with a DisruptionTarget condition
        (reason TerminationByKubelet). The pod is not deleted."""
        with self._lock:
            worker = next((w for w in self._workers.values() if w.key == f"{namespace}/{pod}"), None)
        if worker is None:
            raise KeyError(f"pod {namespace}/{pod} is not running on this kubelet")
        worker.evict(message, grace)

    def running_pids(self) -> dict[str, list[int]]:
        """namespace/name -> the process ids of the pod's running containers (the shims, group leaders)."""
        with self._lock:
            workers = list(self._workers.values())
        return {w.key: pids for w in workers if (pids := w.pids())}

    # Watching

    def _watch_node(self, node: str) -> None:
        api = self._apis[node]
        selector = {"fieldSelector": f"spec.nodeName={node}"}
        version: str | None = None
        first = True
        while not self._stopping.is_set():
            try:
                if version is None:
                    listing = api.get("/api/v1/pods", query=selector)
                    if not first:
                        self.relists += 1
                    first = False
                    version = listing["metadata"]["resourceVersion"]
                    self._sync(node, listing["items"])
                watch = api.watch("/api/v1/pods", {**selector, "resourceVersion": version,
                                                   "allowWatchBookmarks": "true",
                                                   "timeoutSeconds": str(WATCH_SECONDS)},
                                  timeout=WATCH_SECONDS + 30)
                self._watches[node] = watch
                if self._stopping.is_set():
                    return
                for event in watch:
                    kind, obj = event["type"], event["object"]
                    if kind == "ERROR":
                        if obj.get("code") != 410:
                            log.warning("kubelet %s: watch error %s; listing again", node, obj.get("message"))
                        version = None  # 410 Gone: the version is compacted away, list again
                        break
                    version = obj["metadata"]["resourceVersion"]
                    if kind == "DELETED":
                        self._deleted(obj["metadata"]["uid"])
                    elif kind in ("ADDED", "MODIFIED"):
                        self._update(node, obj)
            except ApiError as error:
                if error.status == 410:
                    version = None
                elif not self._stopping.is_set():
                    log.warning("kubelet %s: %s; listing again", node, error)
                    version = None
                    self._stopping.wait(0.5)
            except (OSError, http.client.HTTPException, ValueError) as error:
                # The API server is restarting or closed the stream: watch again from the last version seen
                # (a 410 then sends us to a new list).
                if not self._stopping.is_set():
                    log.info("kubelet %s: watch broke (%s); watching again", node, error)
                    self._stopping.wait(0.5)
            except Exception as error:
                log.exception("kubelet %s: the watch loop failed", node)
                self.errors.append(error)
                self._stopping.wait(1)

    def _sync(self, node: str, pods: Iterable[Obj]) -> None:
        pods = list(pods)
        live = {pod["metadata"]["uid"] for pod in pods}
        with self._lock:
            vanished = [uid for uid, w in self._workers.items() if w.node == node and uid not in live]
            vanished += [uid for uid, n in self._finished.items() if n == node and uid not in live]
        for uid in vanished:
            self._deleted(uid)
        for pod in pods:
            self._update(node, pod)

    def _update(self, node: str, pod: Obj) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        with self._lock:
            worker = self._workers.get(uid)
            if worker is not None:
                worker.update(pod)
                return
            if uid not in self._finished:
                if (pod.get("status") or {}).get("phase") not in TERMINAL:
                    worker = PodWorker(self, node, pod)
                    self._workers[uid] = worker
                    self._pods[(meta["namespace"], meta["name"])] = {
                        "labels": meta.get("labels") or {},
                        "containers": [c["name"] for c in pod["spec"]["containers"]]}
                    worker.start()
                    return
                self._finished[uid] = node
        if meta.get("deletionTimestamp"):
            self._remove(node, pod)

    def _deleted(self, uid: str) -> None:
        """The pod is gone from the API server: kill whatever still runs for it, without a status."""
        with self._lock:
            worker = self._workers.get(uid)
            self._finished.pop(uid, None)
        if worker is not None:
            worker.gone()

    def _worker_done(self, worker: PodWorker, pod: Obj) -> None:
        with self._lock:
            self._workers.pop(worker.uid, None)
            self._finished[worker.uid] = worker.node
        if pod["metadata"].get("deletionTimestamp") and not worker.is_gone:
            self._remove(worker.node, pod)

    def _remove(self, node: str, pod: Obj) -> None:
        """A pod being deleted whose containers are all stopped and whose final status is written: delete it
        for good (grace period 0), as the kubelet's status manager does."""
        if self._stopping.is_set():
            return
        meta = pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                "preconditions": {"uid": meta["uid"]}}

        def delete() -> None:
            self.call(node, lambda api: api.delete(path, body))
        with contextlib.suppress(RuntimeError):  # shut down: the node is going away
            self._deleter.submit(self._reporting(delete))

    def _reporting(self, action: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                action()
            except Exception as error:
                log.exception("kubelet: background action failed")
                self.errors.append(error)
        return run

    def call(self, node: str, request: Callable[[Api], Any]) -> Any:
        """One request as the node, retried while the API server is unreachable or unavailable (and for a while
        when it refuses); None when the object is gone (404, or a uid precondition that no longer holds) or the
        kubelet stops."""
        delay = 0.2
        forbidden_since: float | None = None
        while not self._stopping.is_set():
            try:
                return request(self._apis[node])
            except ApiError as error:
                if error.status in (404, 409):
                    return None
                if error.status == 403:
                    # The Node authorizer learns of a pod's binding and references from its own informers: right
                    # after a pod is bound, or while a restarted API server syncs them, it may still refuse.
                    forbidden_since = forbidden_since or time.monotonic()
                    if time.monotonic() - forbidden_since > FORBIDDEN_RETRY_SECONDS:
                        raise
                elif error.status not in (429, 500, 502, 503, 504):
                    raise
            except (OSError, http.client.HTTPException):
                pass
            self._stopping.wait(delay)
            delay = min(delay * 2, 2)
        return None

    def api(self, node: str) -> Api:
        return self._apis[node]


class _Container:
    """One container's process and what its status reports."""

    def __init__(self, spec: Obj) -> None:
        self.spec = spec
        self.name: str = spec["name"]
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at: str | None = None
        self.finished_at: str | None = None
        self.exit_code: int | None = None
        self.reason = ""
        self.message = ""
        self.waiting: tuple[str, str] = ("ContainerCreating", "")
        self.restart_count = 0
        self.last_state: Obj = {}
        self.restart_at: float | None = None  # when a container in back-off is started again

    @property
    def running(self) -> bool:
        return self.process is not None and self.exit_code is None

    def terminated(self) -> Obj:
        terminated = {"exitCode": self.exit_code, "reason": self.reason, "startedAt": self.started_at,
                      "finishedAt": self.finished_at}
        if self.message:
            terminated["message"] = self.message
        return terminated

    def state(self) -> Obj:
        if self.exit_code is not None:
            return {"terminated": self.terminated(), "running": None, "waiting": None}
        if self.process is not None:
            return {"running": {"startedAt": self.started_at}, "waiting": None, "terminated": None}
        reason, message = self.waiting
        waiting = {"reason": reason, **({"message": message} if message else {})}
        return {"waiting": waiting, "running": None, "terminated": None}

    def back_off(self, seconds: int, pod: str) -> None:
        """The container exited and is to be started again after `seconds` (restartPolicy OnFailure/Always)."""
        self.last_state = {"terminated": self.terminated()}
        self.restart_count += 1
        self.process = None
        self.exit_code = self.started_at = self.finished_at = None
        self.reason = self.message = ""
        self.waiting = ("CrashLoopBackOff", f"back-off {seconds}s restarting failed container={self.name} pod={pod}")
        self.restart_at = time.time() + seconds

    def give_up_restart(self) -> None:
        """The pod is stopping while the container waits in back-off: it ends as it last exited."""
        last = self.last_state.get("terminated") or {}
        self.restart_at = None
        self.exit_code = last.get("exitCode", 137)
        self.reason, self.message = last.get("reason", "Error"), last.get("message", "")
        self.started_at, self.finished_at = last.get("startedAt"), last.get("finishedAt")

    def status(self, node: str, uid: str) -> Obj:
        status = {"name": self.name, "image": self.spec.get("image", ""), "imageID": "",
                  "ready": self.running, "started": self.running, "restartCount": self.restart_count,
                  "state": self.state(), "lastState": self.last_state}
        if self.process is not None:
            status["containerID"] = f"process://{node}/{uid}/{self.name}/{self.restart_count}"
        return status


class PodWorker:
    """The life of one pod on the node, in its own thread: environment, processes, status, deletion."""

    def __init__(self, kubelet: Kubelet, node: str, pod: Obj) -> None:
        self.kubelet = kubelet
        self.node = node
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.key = f"{self.namespace}/{self.name}"
        self.containers = [_Container(c) for c in pod["spec"]["containers"]]
        self._changed = threading.Event()
        self._gone = threading.Event()
        self._conditions: dict[str, Obj] = {}
        self._eviction: tuple[int, str, str] | None = None
        self._thread = threading.Thread(target=self._run, name=f"pod-{self.key}", daemon=True)
        self.start_time: str | None = None

    # Called from the watch threads.

    def start(self) -> None:
        self._thread.start()

    def update(self, pod: Obj) -> None:
        self.pod = pod
        self._changed.set()

    def gone(self) -> None:
        self._gone.set()
        for container in self.containers:
            self._signal(container, signal.SIGKILL)
        self._changed.set()

    def evict(self, message: str, grace: int) -> None:
        self._eviction = (grace, "Evicted", message)
        self._changed.set()

    @property
    def is_gone(self) -> bool:
        return self._gone.is_set() or self.kubelet._stopping.is_set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def pids(self) -> list[int]:
        return [c.process.pid for c in self.containers if c.process is not None and c.exit_code is None]

    # The pod's thread.

    def _run(self) -> None:
        try:
            self._live()
        except Exception as error:
            log.exception("kubelet: pod %s failed", self.key)
            self.kubelet.errors.append(error)
        finally:
            for container in self.containers:
                self._signal(container, signal.SIGKILL)
            for container in self.containers:
                if container.process is not None:
                    container.process.wait()
            self.kubelet._worker_done(self, self.pod)

    def _live(self) -> None:
        status = self.pod.get("status") or {}
        if status.get("phase") == "Running" or any(
                "running" in (s.get("state") or {}) or "terminated" in (s.get("state") or {})
                for s in status.get("containerStatuses") or ()):
            # Started by an earlier kubelet whose processes are gone with it.
            for container in self.containers:
                container.exit_code, container.reason = 137, "ContainerStatusUnknown"
                container.message = "The container could not be located when the pod was terminated"
            self._final()
            return
        self.start_time = status.get("startTime") or _now()
        if not self._patch(self._status("Pending")):
            return
        if self.pod["spec"].get("initContainers"):
            for container in self.containers:
                container.waiting = ("CreateContainerConfigError",
                                     "init containers are not supported by the process kubelet")
            self._patch(self._status("Pending"))
            self._wait_until_deleted()
            return

        specs = self._configure()
        if specs is None:
            return
        for container, spec in zip(self.containers, specs, strict=True):
            self._launch(container, spec)
        if any(c.exit_code is None for c in self.containers) and not self._patch(self._status("Running")):
            return
        self._supervise()

    def _wait_until_deleted(self) -> None:
        while not self.is_gone:
            if self.pod["metadata"].get("deletionTimestamp"):
                self._final()
                return
            self._changed.wait()
            self._changed.clear()

    def _deadline(self) -> float | None:
        seconds = self.pod["spec"].get("activeDeadlineSeconds")
        if seconds is None or self.start_time is None:
            return None
        return _parse_time(self.start_time) + seconds

    def _configure(self) -> list[Obj] | None:
        """Each container's process spec, retrying while a referenced Secret or ConfigMap is missing (the pod
        stays Pending with CreateContainerConfigError, as with a real kubelet); None when the pod ended first."""
        attempt = 0
        while True:
            if self.is_gone:
                return None
            if self.pod["metadata"].get("deletionTimestamp"):
                self._final()
                return None
            if self._eviction is not None:
                _, reason, message = self._eviction
                self._final(reason=reason, message=message, condition={
                    "type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet",
                    "message": message, "lastProbeTime": None, "lastTransitionTime": _now()})
                return None
            deadline = self._deadline()
            if deadline is not None and time.time() >= deadline:
                self._final(reason="DeadlineExceeded",
                            message="Pod was active on the node longer than the specified deadline")
                return None
            try:
                return [self._process_spec(c.spec) for c in self.containers]
            except ConfigError as error:
                for container in self.containers:
                    container.waiting = ("CreateContainerConfigError", str(error))
                if not self._patch(self._status("Pending")):
                    return None
            wait = CONFIG_RETRY_SECONDS[min(attempt, len(CONFIG_RETRY_SECONDS) - 1)]
            if deadline is not None:
                wait = max(0.0, min(wait, deadline - time.time()))
            attempt += 1
            self._changed.wait(wait)
            self._changed.clear()

    def _launch(self, container: _Container, spec: Obj) -> None:
        log_path = self.kubelet.logs_dir / self.namespace / self.name / f"{container.name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        container.started_at = _now()
        if "error" in spec:
            container.exit_code, container.reason, container.message = START_ERROR_EXIT_CODE, "StartError", spec[
                "error"]
            container.finished_at = container.started_at
            return
        with log_path.open("ab") as output:
            process = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _SHIM], stdin=subprocess.PIPE, stdout=output,
                stderr=subprocess.STDOUT, cwd=spec["cwd"], env={"PATH": os.defpath},
                start_new_session=True)
        assert process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            process.stdin.write(json.dumps({**spec, "kubelet": os.getpid()}).encode())
            process.stdin.close()
        container.process = process

        def wait() -> None:
            code = process.wait()
            code = 128 - code if code < 0 else code
            container.finished_at = _now()
            container.reason = "Completed" if code == 0 else "Error"
            container.exit_code = code  # last: the pod's thread takes a set exit code as a finished container
            self._changed.set()
        threading.Thread(target=wait, name=f"wait-{self.key}-{container.name}", daemon=True).start()

    def _signal(self, container: _Container, sig: signal.Signals) -> None:
        process = container.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, sig)

    def _restarts(self, container: _Container) -> bool:
        policy = self.pod["spec"].get("restartPolicy", "Always")
        return policy == "Always" or (policy == "OnFailure" and container.exit_code != 0)

    def _supervise(self) -> None:
        """Waits for the containers to exit (starting them again as restartPolicy says), for the pod's deletion,
        its active deadline or its eviction."""
        kill_at: float | None = None
        reason = message = None
        disruption: Obj | None = None
        reported = {c.name: (c.exit_code, c.restart_count, c.waiting) for c in self.containers}
        while True:
            if self.is_gone:
                return
            now = time.time()
            if kill_at is None:
                for container in self.containers:
                    if container.exit_code is not None and self._restarts(container):
                        container.back_off(min(10 * 2 ** container.restart_count, 300),
                                           f"{self.name}_{self.namespace}({self.uid})")
                    if container.restart_at is not None and now >= container.restart_at:
                        container.restart_at = None
                        try:
                            self._launch(container, self._process_spec(container.spec))
                        except ConfigError as error:
                            container.waiting = ("CreateContainerConfigError", str(error))
                            container.restart_at = now + CONFIG_RETRY_SECONDS[-1]
            if all(c.exit_code is not None for c in self.containers):
                break
            state = {c.name: (c.exit_code, c.restart_count, c.waiting) for c in self.containers}
            if state != reported:
                reported = state
                if not self._patch(self._status("Running")):
                    return
            if kill_at is None:
                deleting = self.pod["metadata"].get("deletionTimestamp")
                deadline = self._deadline()
                if deleting:
                    grace = self.pod["metadata"].get("deletionGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
                elif self._eviction is not None:
                    grace, reason, message = self._eviction
                    disruption = {"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet",
                                  "message": message, "lastProbeTime": None, "lastTransitionTime": _now()}
                elif deadline is not None and now >= deadline:
                    grace = self.pod["spec"].get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
                    reason, message = "DeadlineExceeded", "Pod was active on the node longer than the specified deadline"
                else:
                    grace = None
                if grace is not None:
                    kill_at = now + grace
                    for container in self.containers:
                        if container.process is None and container.exit_code is None:
                            container.give_up_restart()
                        self._signal(container, signal.SIGTERM if grace > 0 else signal.SIGKILL)
                    continue
            elif now >= kill_at:
                for container in self.containers:
                    self._signal(container, signal.SIGKILL)
                kill_at = math.inf
            wake = [t for t in (kill_at, self._deadline(), *(c.restart_at for c in self.containers))
                    if t is not None and t > now and t != math.inf]
            self._changed.wait(min(wake) - now if wake else None)
            self._changed.clear()
        self._final(reason=reason, message=message, condition=disruption)

    def _final(self, reason: str | None = None, message: str | None = None, condition: Obj | None = None) -> None:
        for container in self.containers:
            if container.exit_code is None and container.last_state:
                container.give_up_restart()
            if container.exit_code is None:  # never started
                container.exit_code, container.reason = 137, "ContainerStatusUnknown"
                container.message = "The container could not be located when the pod was terminated"
                container.started_at = container.finished_at = None
        phase = "Succeeded" if all(c.exit_code == 0 for c in self.containers) and reason is None else "Failed"
        status = self._status(phase)
        if condition is not None:
            status["conditions"].append(condition)
        if reason:
            status["reason"], status["message"] = reason, message
        self._patch(status)

    # Status.

    def _condition(self, kind: str, value: bool, reason: str | None = None) -> Obj:
        text = "True" if value else "False"
        previous = self._conditions.get(kind)
        changed = previous is None or previous["status"] != text
        condition = {"type": kind, "status": text, "lastProbeTime": None,
                     "lastTransitionTime": _now() if changed else previous["lastTransitionTime"],
                     "reason": reason, "message": None}
        self._conditions[kind] = condition
        return condition

    def _status(self, phase: str) -> Obj:
        terminal = phase in TERMINAL
        running = phase == "Running" and all(c.running for c in self.containers)
        not_ready = "PodCompleted" if terminal else (None if running else "ContainersNotReady")
        return {
            "phase": phase,
            "hostIP": HOST_IP, "hostIPs": [{"ip": HOST_IP}],
            "podIP": HOST_IP, "podIPs": [{"ip": HOST_IP}],
            "startTime": self.start_time,
            "conditions": [
                self._condition("PodReadyToStartContainers", not terminal),
                self._condition("Initialized", True),
                self._condition("ContainersReady", running, not_ready),
                self._condition("Ready", running, not_ready),
            ],
            "containerStatuses": [c.status(self.node, self.uid) for c in self.containers],
        }

    def _patch(self, status: Obj) -> bool:
        """Writes the pod's status; False when the pod is gone."""
        path = f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status"
        body = {"metadata": {"uid": self.uid}, "status": status}
        if self.is_gone:
            return False
        return self.kubelet.call(self.node, lambda api: api.strategic_patch(path, body)) is not None

    # The container's process.

    def _lookup(self, kind: str, name: str) -> Obj | None:
        """A Secret or ConfigMap of the pod's namespace, as the node may read it; None when it does not exist.
        A refusal that outlasts the Node authorizer's catching up is reported like a missing object."""
        plural = "secrets" if kind == "Secret" else "configmaps"
        path = f"/api/v1/namespaces/{self.namespace}/{plural}/{name}"
        try:
            got = self.kubelet.call(self.node, lambda api: api.get(path))
        except ApiError as error:
            if error.status == 403:
                raise ConfigError(f"{kind.lower()}s \"{name}\" is forbidden: {error.reason}") from None
            raise
        if got is None:
            return None
        data = dict(got.get("data") or {})
        if kind == "Secret":
            data = {k: base64.b64decode(v).decode(errors="replace") for k, v in data.items()}
        return data

    def _source(self, kind: str, name: str, optional: bool) -> Obj | None:
        data = self._lookup(kind, name)
        if data is None and not optional:
            raise ConfigError(f"{kind.lower()} \"{name}\" not found")
        return data

    def _key(self, kind: str, reference: Obj) -> str | None:
        optional = bool(reference.get("optional"))
        data = self._source(kind, reference["name"], optional)
        if data is None:
            return None
        key = reference["key"]
        if key not in data:
            if optional:
                return None
            raise ConfigError(f"couldn't find key {key} in {kind} {self.namespace}/{reference['name']}")
        return data[key]

    def _field(self, path: str) -> str:
        pod = self.pod
        meta = pod["metadata"]
        for prefix, mapping in (("metadata.labels", "labels"), ("metadata.annotations", "annotations")):
            match = re.fullmatch(re.escape(prefix) + r"\['(.+)'\]", path)
            if match:
                return (meta.get(mapping) or {}).get(match.group(1), "")
        values = {
            "metadata.name": meta["name"], "metadata.namespace": meta["namespace"], "metadata.uid": meta["uid"],
            "spec.nodeName": self.node, "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
            "status.hostIP": HOST_IP, "status.hostIPs": HOST_IP, "status.podIP": HOST_IP,
            "status.podIPs": HOST_IP,
        }
        if path not in values:
            raise ConfigError(f"unsupported fieldRef fieldPath {path!r}")
        return values[path]

    def _resource(self, container: Obj, reference: Obj) -> str:
        """resourceFieldRef: the container's limit or request, defaulting to the node's allocatable for a
        missing limit, divided by the divisor and rounded up, as the kubelet's downward API does."""
        name = reference["resource"]
        kind, _, resource = name.partition(".")
        if reference.get("containerName") not in (None, container["name"]):
            container = next(c for c in self.pod["spec"]["containers"] if c["name"] == reference["containerName"])
        values = (container.get("resources") or {}).get("limits" if kind == "limits" else "requests") or {}
        if resource in values:
            amount = quantity(values[resource])
        elif kind == "limits":
            node = self.kubelet.call(self.node, lambda api: api.get(f"/api/v1/nodes/{self.node}")) or {}
            allocatable = (node.get("status") or {}).get("allocatable") or {}
            if resource not in allocatable:
                raise ConfigError(f"unsupported resourceFieldRef {name!r}")
            amount = quantity(allocatable[resource])
        else:
            amount = decimal.Decimal(0)
        divisor = quantity(reference.get("divisor") or "1")
        return str(math.ceil(amount / divisor))

    def _environment(self, container: Obj) -> dict[str, str]:
        environment: dict[str, str] = {}
        for source in container.get("envFrom") or ():
            prefix = source.get("prefix", "")
            for kind, field in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if field in source:
                    reference = source[field]
                    data = self._source(kind, reference["name"], bool(reference.get("optional")))
                    for key, value in (data or {}).items():
                        environment[prefix + key] = value
        for variable in container.get("env") or ():
            name = variable["name"]
            source = variable.get("valueFrom")
            if source is None:
                environment[name] = expand(variable.get("value", ""), environment.get)
                continue
            value: str | None
            if "secretKeyRef" in source:
                value = self._key("Secret", source["secretKeyRef"])
            elif "configMapKeyRef" in source:
                value = self._key("ConfigMap", source["configMapKeyRef"])
            elif "fieldRef" in source:
                value = self._field(source["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in source:
                value = self._resource(container, source["resourceFieldRef"])
            else:
                raise ConfigError(f"unsupported valueFrom of {name}: {sorted(source)}")
            if value is not None:
                environment[name] = value
        return environment

    def _process_spec(self, container: Obj) -> Obj:
        """What the shim runs: the executable, argv, environment and working directory; or the StartError a
        container runtime would report."""
        environment = self._environment(container)
        command = [expand(part, environment.get) for part in container.get("command") or ()]
        args = [expand(part, environment.get) for part in container.get("args") or ()]
        argv = command + args
        sandbox = self.kubelet.pods_dir / self.uid
        sandbox.mkdir(parents=True, exist_ok=True)
        env = {"PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", os.defpath)]),
               "HOSTNAME": self.name, "HOME": str(sandbox)}
        env.update(environment)
        cwd = container.get("workingDir") or str(sandbox)
        prefix = "failed to create containerd task: OCI runtime create failed: unable to start container process: "
        if not argv:
            return {"error": prefix + "no command: the process kubelet has no image entrypoint to fall back on"}
        if not os.path.isdir(cwd):
            return {"error": prefix + f"chdir to cwd ({cwd!r}) set in config.json failed: no such file or directory"}
        if "/" in argv[0]:
            path = os.path.join(cwd, argv[0])
            found = path if os.path.isfile(path) and os.access(path, os.X_OK) else None
        else:
            found = shutil.which(argv[0], path=env["PATH"])
        if found is None:
            return {"error": prefix + f"exec: {argv[0]!r}: executable file not found in $PATH"}
        return {"path": found, "argv": argv, "env": env, "cwd": cwd}
