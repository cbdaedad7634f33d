"""Faults injected while ModelDeployments run on the local control plane, and what they must leave behind.

The machinery of bench/chaos.py (20 deployments, every fault) and tests/cluster/test_chaos.py (a few of each):

* `ChaosCluster`: a control plane of its own (tests/cluster/control_plane.py) whose API server writes an audit log
  of Job creations, two CPU nodes each run by its own process kubelet (so one can be lost), moto's S3 server behind
  an `S3Gate`, and `modeldeploy operator` as the ServiceAccount of examples/cluster/rbac.yaml.
* the faults: `kill_operator`, `restart("kube-apiserver" | "etcd")`, `s3_outage`, `lose_node`; each returns when
  the fault is over, with its own timeline.
* `Progress`: the deployments' status polled every second, to time the recovery after a fault.
* what is checked at the end: `duplicate_jobs` (Job names created more than once, from the audit log) and
  `verify_store` (every committed manifest's outputs read back from S3 against their sha256).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from modeldeploy.manifest import fetch, read_manifest, tasks_with_objects
from modeldeploy.store import ChecksumMismatch, NotFound, StoreError, open_store

from cluster.control_plane import ApiError, ControlPlane, ControlPlaneError, Node, free_port, wait_for
from cluster.kubelet import Kubelet
from cluster.operator_env import EXAMPLES, Environment, Kube, excused_refusals, running_operator

GROUP, VERSION, PLURAL = "modeldeploy.io", "v1alpha1", "modeldeployments"
SOURCES = "modeldeploy-examples"
ARTIFACTS = "modeldeploy-artifacts"
OUT_OF_SERVICE = "node.kubernetes.io/out-of-service"
UNREACHABLE = "node.kubernetes.io/unreachable"

AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  verbs: [create]
  resources: [{group: batch, resources: [jobs]}]
- level: None
"""

# The node lifecycle controller's timings, lowered from 50 s / 5 s / 300 s so that a lost node costs a bench
# about a minute: a Lease older than NODE_GRACE marks the node unreachable (NoExecute taint), and pods tolerate
# that taint for TOLERATION_SECONDS (the DefaultTolerationSeconds admission plugin's default toleration) before
# the taint eviction controller deletes them. The nodes renew their Leases every LEASE_RENEW seconds, so an API
# server or etcd restart (a few seconds) stays well within the grace period.
NODE_GRACE = "30s"
NODE_MONITOR_PERIOD = "2s"
TOLERATION_SECONDS = "10"
LEASE_RENEW = 2.0


def deployment(index: int, store: str, *, samples: int = 64) -> dict[str, Any]:
    """The quickstart's model and dataset, one CPU target at fp32 and int8, batch size 1: nine tasks (convert,
    prepare, reference, calibrate, two compiles, two evaluations, report), every key its own (the parity tolerance
    and the sample count differ per index, and every other key derives from those two)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": f"chaos-{index:02d}"},
        "spec": {
            "source": {
                "format": "pytorch", "architecture": "python:digits_cnn:DigitsCNN",
                "code": f"s3://{SOURCES}/quickstart/digits_cnn.py",
                "weights": f"s3://{SOURCES}/quickstart/digits_cnn.pt",
                "inputs": [{"name": "image", "shape": [-1, 1, 8, 8], "dtype": "float32"}],
                "outputs": ["logits"], "opset": 17,
                "parity": {"maxAbsDiff": round(0.001 + index * 1e-6, 9)},
            },
            "dataset": {"kind": "digits", "preprocess": {"scale": 0.0625, "mean": [0.5], "std": [0.5]},
                        "limit": samples + index},
            "calibration": {"samples": 32},
            "targets": [{"name": "ort", "backend": "onnxruntime", "precisions": ["fp32", "int8"],
                         "batchSizes": [1]}],
            "accuracy": {"reference": "source", "metric": "top1", "maxDrop": 0.05},
            "performance": {"warmup": 5, "iterations": 20},
            "artifacts": {"uri": store, "secretRef": {"name": "s3-credentials"}},
        },
    }


# --- S3 -------------------------------------------------------------------------------------------

class S3Gate:
    """A TCP relay on its own port in front of moto's S3 server: what the operator and the pods are given as the
    S3 endpoint. `close()` makes the endpoint behave as a server whose process stopped: the listening socket is
    closed, so new connections are refused (ECONNREFUSED), and every open connection is shut down, so requests in
    flight and idle keep-alive connections fail as the kernel ends a dead process's connections. `open()` listens
    on the same port again. moto keeps its objects in memory, so stopping its process would lose the data a real
    S3 server keeps on disk; behind the gate moto keeps them, and the clients see what a server that stopped and
    came back with its data shows them."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._pairs: dict[tuple[socket.socket, socket.socket], int] = {}  # (client, server) -> pumps running
        self._listener: socket.socket | None = None

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name="s3-gate", daemon=True).start()

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept
            listener.close()
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            for end in pair:
                # shutdown wakes the pumps blocked in recv (closing the descriptor would not); they close both ends
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def refuses(self) -> bool:
        """A connection to the endpoint is refused (checked from outside, as a client would find it)."""
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
        except ConnectionRefusedError:
            return True
        return False

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream), timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            pair = (client, server)
            with self._lock:
                self._pairs[pair] = 2
            if self._listener is not listener:  # closed meanwhile: this connection must not outlive the outage
                for end in pair:
                    with contextlib.suppress(OSError):
                        end.shutdown(socket.SHUT_RDWR)
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(pair, source, sink), daemon=True).start()

    def _pump(self, pair: tuple[socket.socket, socket.socket], source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)  # pass the end of one direction on; the other may still be busy
        except OSError:
            for end in pair:  # one end failed: end the other direction too
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
        with self._lock:
            self._pairs[pair] -= 1
            last = self._pairs[pair] == 0
            if last:
                del self._pairs[pair]
        if last:
            for end in pair:
                end.close()


def start_moto() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for("moto's S3 server", lambda: process.poll() is None and _listening(port), timeout=60)
    except ControlPlaneError:
        process.kill()
        raise
    return process, port


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


# --- the cluster ----------------------------------------------------------------------------------

@dataclass
class Fault:
    """One injected fault: when it began and ended (monotonic seconds), what happened, and the recovery."""

    kind: str
    began: float
    ended: float
    notes: list[str] = field(default_factory=list)
    recovery: float | None = None  # seconds from `ended` until progress; None: none seen within the bound
    idle: bool = False  # nothing was left to do when it ended

    @property
    def duration(self) -> float:
        return self.ended - self.began


class ChaosCluster:
    """Everything a chaos run needs, started in `__enter__` and stopped in `__exit__` (from the main thread: the
    control plane's children die with the thread that started them)."""

    def __init__(self, scratch: Path, *, nodes: int = 2, max_jobs: int = 6, fast_node_loss: bool = True) -> None:
        """`fast_node_loss`: the node lifecycle timings above instead of Kubernetes' defaults."""
        self.scratch = scratch
        self.audit_log = scratch / "audit.log"
        policy = scratch / "audit-policy.yaml"
        policy.write_text(AUDIT_POLICY)
        apiserver = [f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}"]
        controller_manager: list[str] = []
        if fast_node_loss:
            apiserver.append(f"--default-unreachable-toleration-seconds={TOLERATION_SECONDS}")
            controller_manager += [f"--node-monitor-grace-period={NODE_GRACE}",
                                   f"--node-monitor-period={NODE_MONITOR_PERIOD}"]
        self.cp = ControlPlane(extra_args={"kube-apiserver": apiserver,
                                           "kube-controller-manager": controller_manager})
        self.node_names = [f"cpu-{index + 1}" for index in range(nodes)]
        self.max_jobs = max_jobs
        self.nodes: dict[str, Node] = {}
        self.kubelets: dict[str, Kubelet] = {}
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Self:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _start(self) -> None:
        stack = self._stack
        moto, moto_port = start_moto()
        stack.callback(stop_process, moto)
        self.gate = S3Gate(moto_port)
        self.gate.open()
        stack.callback(self.gate.close)
        stack.enter_context(self.cp)
        for name in self.node_names:
            node = Node.cpu(self.cp.api, name, renew_every=LEASE_RENEW)
            node.register()
            stack.callback(node.stop)
            kubelet = Kubelet(self.cp, [name], self.scratch / "kubelet" / name)
            kubelet.start()
            stack.callback(kubelet.stop)
            self.nodes[name], self.kubelets[name] = node, kubelet
        for node in self.nodes.values():
            wait_for(f"node {node.name} Ready and untainted", node.is_ready, timeout=180)
        kube = Kube(self.cp.binary("kubectl"), self.cp.kubeconfig, "default")
        kube.install_crd()
        self.environment = Environment(kube, self.gate.endpoint, local=True, control_plane=self.cp)
        self.s3 = self.environment.create_buckets(SOURCES, ARTIFACTS)
        for name in ("digits_cnn.py", "digits_cnn.pt"):
            self.s3.upload_file(str(EXAMPLES / name), SOURCES, f"quickstart/{name}")
        operator_dir = self.scratch / "operator"
        operator_dir.mkdir()
        self.kube, self.operator = stack.enter_context(running_operator(
            self.environment, operator_dir, every_namespace=True, MODELDEPLOY_MAX_JOBS=str(self.max_jobs)))
        self.namespace = self.kube.namespace
        self.progress = Progress(self)
        stack.callback(self.progress.stop)
        self.progress.start()

    # Deployments.

    def create(self, document: dict[str, Any]) -> None:
        self.cp.api.create(f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{PLURAL}", document)

    def deployments(self) -> list[dict[str, Any]]:
        return self.cp.api.get(f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{PLURAL}", timeout=10)["items"]

    def pods(self) -> list[dict[str, Any]]:
        return self.cp.api.get(f"/api/v1/namespaces/{self.namespace}/pods", timeout=10)["items"]

    # Faults.

    def kill_operator(self) -> Fault:
        """SIGKILL, then a new operator process at once."""
        began = time.monotonic()
        self.operator.kill()
        baseline = self.progress.fresh()
        self.operator.start()
        fault = Fault("operator SIGKILL", began, time.monotonic())
        self.progress.measure(fault, baseline)
        return fault

    def restart(self, component: str, *, kill: bool) -> Fault:
        """A control plane component stopped (SIGTERM, or SIGKILL with `kill`) and started again with its data;
        refusals the operator logs while the restarted API server loads its RBAC roles are excused."""
        with excused_refusals(self.operator):
            began = time.monotonic()
            self.cp.restart(component, kill=kill, ready_timeout=300)
            baseline = self.progress.fresh()
            fault = Fault(f"{component} {'SIGKILL' if kill else 'SIGTERM'} and restart", began, time.monotonic())
            self.progress.measure(fault, baseline)
        return fault

    def s3_outage(self, seconds: float) -> Fault:
        began = time.monotonic()
        self.gate.close()
        refused = self.gate.refuses()
        time.sleep(max(0.0, seconds - (time.monotonic() - began)))
        self.gate.open()
        baseline = self.progress.fresh()
        fault = Fault(f"S3 endpoint closed {seconds:.0f} s", began, time.monotonic(),
                      [f"connections refused during the outage: {refused}"])
        self.progress.measure(fault, baseline)
        return fault

    def lose_node(self, timeout: float = 600) -> Fault:
        """The node running the most of our pods is lost: its kubelet stops (its containers killed, no status
        written, as at a power loss) and its Lease is no longer renewed. The node lifecycle controller marks it
        unreachable and taints it NoExecute; the taint eviction controller deletes its pods. Those stay
        Terminating, since nothing confirms their processes are gone, until the node is declared out of service
        (the out-of-service taint, Kubernetes' procedure for a node that shut down); the pod garbage collector
        then deletes them and the Job controller creates their replacements, which the scheduler places on the
        other node. The recovery is the time from the kubelet's stop until every Job that had a pod on the lost
        node has a pod running or finished elsewhere (or is complete)."""
        def running_on() -> Counter[str]:
            return Counter(p["spec"].get("nodeName") for p in self.pods()
                           if p["status"].get("phase") in ("Pending", "Running") and p["spec"].get("nodeName"))
        wait_for("pods running on a node to lose", lambda: running_on(), timeout=300, interval=1)
        victim = running_on().most_common(1)[0][0]
        jobs = {p["metadata"]["labels"].get("batch.kubernetes.io/job-name"): p["metadata"]["name"]
                for p in self.pods() if p["spec"].get("nodeName") == victim
                and p["status"].get("phase") in ("Pending", "Running")}
        began = time.monotonic()
        self.kubelets[victim].stop()
        self.nodes[victim].stop()
        notes = [f"lost {victim}, which ran {len(jobs)} pods ({', '.join(sorted(jobs.values()))})"]
        api = self.cp.api

        def step(what: str, check: Callable[[], Any]) -> None:
            wait_for(what, check, timeout=timeout, interval=1)
            notes.append(f"+{time.monotonic() - began:5.1f} s {what}")

        def tainted() -> bool:
            node = api.get(f"/api/v1/nodes/{victim}", timeout=10)
            return any(t["key"] == UNREACHABLE and t["effect"] == "NoExecute" for t in node["spec"].get("taints", []))

        def evicted() -> bool:
            return all(p["metadata"].get("deletionTimestamp") or p["status"].get("phase") in ("Succeeded", "Failed")
                       for p in self.pods() if p["metadata"]["name"] in jobs.values())
        step(f"{victim} tainted {UNREACHABLE}:NoExecute by the node lifecycle controller", tainted)
        step(f"its pods evicted (deleted) by the taint eviction controller after {TOLERATION_SECONDS} s", evicted)
        node = api.get(f"/api/v1/nodes/{victim}", timeout=10)
        taints = [*node["spec"].get("taints", []), {"key": OUT_OF_SERVICE, "value": "nodeshutdown",
                                                    "effect": "NoExecute"}]
        api.merge_patch(f"/api/v1/nodes/{victim}", {"spec": {"taints": taints}})
        notes.append(f"+{time.monotonic() - began:5.1f} s {victim} declared out of service ({OUT_OF_SERVICE} taint)")

        def replaced() -> bool:
            pods = self.pods()
            for job in jobs:
                body = api.get(f"/apis/batch/v1/namespaces/{self.namespace}/jobs/{job}", timeout=10)
                done = any(c["type"] in ("Complete", "Failed", "SuccessCriteriaMet") and c["status"] == "True"
                           for c in body["status"].get("conditions") or [])
                elsewhere = any(p["metadata"]["labels"].get("batch.kubernetes.io/job-name") == job
                                and p["spec"].get("nodeName") not in (None, victim)
                                and p["status"].get("phase") in ("Running", "Succeeded") for p in pods)
                if not (done or elsewhere):
                    return False
            return True
        step("every one of its Jobs running or done on another node", replaced)
        ended = time.monotonic()
        fault = Fault(f"node {victim} lost", began, ended, notes)
        fault.recovery = ended - began
        return fault

    # What it left behind.

    def duplicate_jobs(self) -> tuple[int, dict[str, int]]:
        """(Job names created, {name: creations} of those created more than once): successful creations (201) in
        the API server's audit log, which the restarted API server appends to."""
        names: Counter[str] = Counter()
        for line in self.audit_log.read_text().splitlines():
            event = json.loads(line)
            ref = event.get("objectRef") or {}
            if (event.get("verb") == "create" and event.get("stage") == "ResponseComplete"
                    and ref.get("resource") == "jobs" and not ref.get("subresource")
                    and (event.get("responseStatus") or {}).get("code") == 201
                    and ref.get("namespace") == self.namespace):
                names[ref["name"]] += 1
        return len(names), {name: n for name, n in names.items() if n > 1}

    def verify_store(self, deployments: list[dict[str, Any]]) -> StoreCheck:
        """Every manifest under the deployments' stores, each output fetched and checked against its sha256 (the
        project's own manifest code), and every stage the status calls Succeeded found committed."""
        check = StoreCheck()
        with tempfile.TemporaryDirectory() as scratch:
            for store_uri in sorted({d["spec"]["artifacts"]["uri"] for d in deployments}):
                store = open_store(store_uri, endpoint=self.gate.endpoint, region="us-east-1",
                                   credentials={"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"})
                for key in sorted(tasks_with_objects(store)):
                    manifest = read_manifest(store, key)
                    if manifest is None:
                        continue  # an attempt that never committed: no reader takes it for a result
                    check.manifests += 1
                    for name in manifest.outputs:
                        try:
                            fetch(store, manifest, name, Path(scratch) / "output")
                            check.outputs += 1
                        except (ChecksumMismatch, NotFound, StoreError) as error:
                            check.bad.append(f"{store_uri} task {key} output {name}: {error}")
                    check.committed.add(key)
        for body in deployments:
            for stage in (body.get("status") or {}).get("stages") or []:
                check.stages += 1
                if stage.get("phase") != "Succeeded":
                    check.lost.append(f"{body['metadata']['name']}: {stage['name']} is {stage.get('phase')}")
                elif stage.get("key") not in check.committed:
                    check.lost.append(f"{body['metadata']['name']}: {stage['name']} Succeeded without a manifest")
        return check


@dataclass
class StoreCheck:
    manifests: int = 0
    outputs: int = 0
    stages: int = 0
    committed: set[str] = field(default_factory=set)
    bad: list[str] = field(default_factory=list)  # outputs missing or whose sha256 does not match
    lost: list[str] = field(default_factory=list)  # stages not done, or done without a committed manifest


def stop_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --- progress -------------------------------------------------------------------------------------

RECOVERY = ("the time from the fault's end until a poll of the deployments (every second) first sees any change "
            "from their state read right after the fault ended: a stage of any deployment changing phase (a Job "
            "started, a stage done or failed) or a deployment becoming Ready. Only the operator writes these, so "
            "the operator is observing the cluster and the store again and work is moving. A fault after which "
            "nothing was left to do has no recovery to measure")
Snapshot = dict[str, tuple[bool, dict[str, str]]]  # deployment -> (Ready, {stage key: phase})


def snapshot(deployments: list[dict[str, Any]]) -> Snapshot:
    result: Snapshot = {}
    for body in deployments:
        status = body.get("status") or {}
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
        result[body["metadata"]["name"]] = (ready, {s.get("key", s["name"]): s.get("phase", "")
                                                    for s in status.get("stages") or []})
    return result


class Progress:
    """The deployments' Ready conditions and stage phases, polled every second, to measure RECOVERY."""

    def __init__(self, cluster: ChaosCluster, interval: float = 1.0) -> None:
        self.cluster = cluster
        self.interval = interval
        self.latest: tuple[float, Snapshot] = (time.monotonic(), {})
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="progress", daemon=True)
        self.errors = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=30)

    def _poll(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                state = snapshot(self.cluster.deployments())
            except (OSError, ApiError, ValueError, http.client.HTTPException):
                self.errors += 1  # the API server or etcd is restarting
                continue
            with self._changed:
                self.latest = (time.monotonic(), state)
                self._changed.notify_all()

    def fresh(self, timeout: float = 300) -> Snapshot:
        """The state read now, retried while the API server does not answer."""
        return wait_for("the deployments' status", lambda: [snapshot(self.cluster.deployments())],
                        timeout=timeout, interval=0.5)[0]

    def measure(self, fault: Fault, baseline: Snapshot, timeout: float = 300) -> None:
        if all(ready for ready, _ in baseline.values()):
            fault.idle = True
            return
        deadline = fault.ended + timeout
        with self._changed:
            while time.monotonic() < deadline:
                at, state = self.latest
                if at > fault.ended and state and state != baseline:
                    fault.recovery = at - fault.ended
                    return
                self._changed.wait(timeout=max(0.0, deadline - time.monotonic()))

    def all_ready(self) -> bool:
        _, state = self.latest
        return bool(state) and all(ready for ready, _ in state.values())
