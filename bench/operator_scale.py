"""The operator under load on the real control plane: many ModelDeployments whose pods succeed at once.

Run: python bench/operator_scale.py [--deployments 200 1000] [--max-jobs N] [--timeout 3600] [--keep]
For each count N, two phases, each on a fresh control plane (etcd, kube-apiserver, kube-controller-manager and
kube-scheduler of tests/cluster) with one Node, moto's S3 server shared, and the same burst of N ModelDeployments
of 12 cells each (2 targets x 2 precisions x 3 batch sizes, each with its own keys):
1. bench/minimal_controller.py, which creates one Job per new ModelDeployment and nothing else.
2. `modeldeploy operator`, authenticated by a token of the ServiceAccount examples/cluster/rbac.yaml binds, with
   maxJobsPerDeployment 8 and, unless --max-jobs says otherwise, maxJobs 8 x N: the global cap can then never be
   what a first Job waits for (the minimal controller has none), so the latency compared is the operator's own. The
   real Job controller makes each Job's pod, the real scheduler binds it to the node, and bench/instant_pods.py
   succeeds it at once after leaving the task's outputs in the store.
Every figure but the readiness comes from the API server's audit log (a policy in this file: every request of the
two controllers, and every Job and ModelDeployment creation, at Metadata level): create -> first Job is the time
between the ModelDeployment's creation and its first Job's, both as the API server stored them; API requests per
deployment count the controller's requests from the first creation until all were Ready (the operator) or had
their Job (the minimal controller), or until --timeout; a duplicate Job is a second successful creation of a Job
name. docs/performance.md describes it and records its figures.
Goals (issue 16): the operator's first-Job p50 within 2x of the minimal controller's at 1000 deployments, peak
RSS under 300 MB, no duplicate Jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, Self

import boto3
import botocore.exceptions
import kubernetes

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from cluster.control_plane import ControlPlane, Node, free_port, wait_for, write_kubeconfig
from instant_pods import InstantPods, follow

GROUP, VERSION, PLURAL = "modeldeploy.io", "v1alpha1", "modeldeployments"
CRD = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
RBAC = REPO / "examples" / "cluster" / "rbac.yaml"
SECRET = REPO / "examples" / "cluster" / "s3-credentials.yaml"
MODELDEPLOY = Path(sys.executable).with_name("modeldeploy")
NAMESPACE = "bench"
NODE = "bench-node"
PER_DEPLOYMENT = 8  # the operator's maxJobsPerDeployment
OPERATOR_USER = "system:serviceaccount:modeldeploy-system:modeldeploy-operator"
MINIMAL_USER = "system:serviceaccount:modeldeploy-system:minimal-controller"
DEPLOYMENT_OF_JOB = re.compile(r"^(load-\d+)-")

AUDIT_POLICY = f"""\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  users: ["{OPERATOR_USER}", "{MINIMAL_USER}"]
- level: Metadata
  verbs: [create]
  resources: [{{group: batch, resources: [jobs]}}, {{group: {GROUP}, resources: [{PLURAL}]}}]
- level: None
"""

MINIMAL_RBAC = f"""\
apiVersion: v1
kind: ServiceAccount
metadata: {{name: minimal-controller, namespace: modeldeploy-system}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: minimal-controller}}
rules:
- {{apiGroups: [{GROUP}], resources: [{PLURAL}], verbs: [list, watch]}}
- {{apiGroups: [{GROUP}], resources: [{PLURAL}/finalizers], verbs: [update]}}
- {{apiGroups: [batch], resources: [jobs], verbs: [create]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: minimal-controller}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: minimal-controller}}
subjects: [{{kind: ServiceAccount, name: minimal-controller, namespace: modeldeploy-system}}]
"""

# The control plane's own clients are rate-limited to 20-50 requests/s by default: the Job controller and the
# scheduler would then pace the pods, and time to all Ready would measure their limits rather than the operator.
CONTROLLER_ARGS = ["--kube-api-qps=300", "--kube-api-burst=600"]


def deployment(index: int, store: str) -> dict[str, Any]:
    target = {"precisions": ["fp32", "int8"], "batchSizes": [1, 8, 32]}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": f"load-{index:04d}"},
        "spec": {
            "source": {"format": "onnx", "uri": "s3://bench-models/model.onnx",
                       "inputs": [{"name": "x", "shape": [-1, 3, 32, 32]}],
                       "parity": {"maxAbsDiff": 0.001 + index * 1e-9}},  # its own keys
            "dataset": {"kind": "synthetic", "limit": 64},
            "targets": [{"name": "openvino", "backend": "openvino", **target},
                        {"name": "onnxruntime", "backend": "onnxruntime", **target}],
            "artifacts": {"uri": store, "secretRef": {"name": "s3-credentials"}},
        },
    }


def timestamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


class Request(NamedTuple):
    """What the bench needs of one audit event (a whole event per line would take gigabytes at 1000 deployments)."""

    id: str
    stage: str
    verb: str
    user: str
    resource: str
    subresource: str
    name: str
    code: int
    received: float
    completed: float

    @classmethod
    def of(cls, event: dict[str, Any]) -> Request:
        reference = event.get("objectRef") or {}
        return cls(event["auditID"], event["stage"], event["verb"], event["user"]["username"],
                   reference.get("resource") or event["requestURI"].split("?")[0], reference.get("subresource", ""),
                   reference.get("name", ""), (event.get("responseStatus") or {}).get("code", 0),
                   timestamp(event["requestReceivedTimestamp"]), timestamp(event["stageTimestamp"]))


class AuditLog:
    """The API server's audit log, read as it grows (the API server is told never to rotate it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.events: list[Request] = []

    def read(self) -> list[Request]:
        if self.path.exists():
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
            complete = data[:data.rfind(b"\n") + 1]
            self.offset += len(complete)
            self.events.extend(Request.of(json.loads(line)) for line in complete.splitlines())
        return self.events

    def job_creations(self) -> list[Request]:
        return [e for e in self.read() if e.verb == "create" and e.stage == "ResponseComplete"
                and e.resource == "jobs" and not e.subresource and e.code == 201]


@dataclass
class Phase:
    """What one controller did with one burst of deployments."""

    controller: str
    deployments: int
    latencies: list[float] = field(default_factory=list)
    burst: float = 0.0
    done: float | None = None  # seconds from the first creation until all Ready (operator) or all with a Job
    ready: int = 0
    without_job: int = 0
    reactions: list[float] = field(default_factory=list)  # create -> the controller's first request on it
    cpu: float = float("nan")
    rss: float = float("nan")
    requests: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    jobs: int = 0
    duplicates: int = 0
    pod_errors: list[str] = field(default_factory=list)
    load: tuple[float, float] = (0.0, 0.0)
    loads: list[float] = field(default_factory=list)  # the 1-minute load average, sampled during the phase

    def p(self, quantile: float, of: str = "latencies") -> float:
        ordered = sorted(getattr(self, of))
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Bench:
    """One fresh control plane with the bench's node, the CRD, the namespace and the controller's identity."""

    def __init__(self, scratch: Path, controller: str) -> None:
        self.scratch = scratch
        self.controller = controller
        self.user = OPERATOR_USER if controller == "operator" else MINIMAL_USER
        policy = scratch / "audit-policy.yaml"
        policy.write_text(AUDIT_POLICY)
        self.audit = AuditLog(scratch / "audit.log")
        self.cp = ControlPlane(extra_args={
            "kube-apiserver": [f"--audit-policy-file={policy}", f"--audit-log-path={self.audit.path}",
                               "--audit-log-maxsize=1000000"],  # MB; the default, 100, rotates it mid-run
            "kube-controller-manager": [*CONTROLLER_ARGS, "--concurrent-job-syncs=20"],
            "kube-scheduler": CONTROLLER_ARGS,
        })

    def __enter__(self) -> Self:
        cp = self.cp.__enter__()
        try:
            self.node = Node(cp.api, NODE, resources={"cpu": "4000", "memory": "16Ti", "pods": "20000"})
            self.node.register()
            cp.apply_crd(CRD)
            cp.kubectl("create", "namespace", NAMESPACE)
            cp.kubectl("create", "namespace", "modeldeploy-system")
            cp.kubectl("apply", "-n", NAMESPACE, "-f", str(SECRET))
            if self.controller == "operator":
                cp.kubectl("apply", "-f", str(RBAC))
            else:
                cp.kubectl("apply", "-f", "-", input=MINIMAL_RBAC)
            account = self.user.rsplit(":", 1)[1]
            token = cp.kubectl("create", "token", account, "-n", "modeldeploy-system", "--duration=24h").stdout
            self.kubeconfig = write_kubeconfig(self.scratch / f"{self.controller}.kubeconfig", cp.server,
                                               cp.pki.ca_file, self.user, token=token.strip())
            wait_for("the bench's default ServiceAccount",
                     lambda: cp.api.get(f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/default"), timeout=60)
            wait_for(f"node {NODE} Ready", self.node.is_ready, timeout=120)
            self.api = kubernetes.config.new_client_from_config(config_file=str(cp.kubeconfig))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        if hasattr(self, "api"):
            self.api.close()
        if hasattr(self, "node"):
            self.node.stop()
        self.cp.stop()

    def watching(self) -> bool:
        """The controller watches ModelDeployments: it is ready for the burst."""
        return any(e.user == self.user and e.verb == "watch" and e.resource == PLURAL for e in self.audit.read())


class Readiness:
    """The ModelDeployments whose Ready condition is True, from a watch: a list every second would have the API
    server copy and encode every deployment each time, competing with the operator's requests."""

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        custom = kubernetes.client.CustomObjectsApi(api)
        self.ready: set[str] = set()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=follow, daemon=True, args=(
            custom.list_namespaced_custom_object, self.note, self.stopping),
            kwargs={"group": GROUP, "version": VERSION, "namespace": NAMESPACE, "plural": PLURAL})

    def note(self, event: dict[str, Any]) -> None:
        body = event["object"]
        conditions = (body.get("status") or {}).get("conditions") or []
        if event["type"] != "DELETED" and any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
            self.ready.add(body["metadata"]["name"])
        else:
            self.ready.discard(body["metadata"]["name"])

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)


def start_controller(bench: Bench, endpoint: str, max_jobs: int, log: Path) -> subprocess.Popen[bytes]:
    environment = {**os.environ, "KUBECONFIG": str(bench.kubeconfig)}
    if bench.controller == "operator":
        argv = [str(MODELDEPLOY), "operator", "--namespace", NAMESPACE, "--liveness",
                f"http://127.0.0.1:{free_port()}/healthz"]
        environment.update(MODELDEPLOY_S3_ENDPOINT=endpoint, MODELDEPLOY_MAX_JOBS=str(max_jobs),
                           MODELDEPLOY_MAX_JOBS_PER_DEPLOYMENT=str(PER_DEPLOYMENT), MODELDEPLOY_RESYNC_SECONDS="30",
                           MODELDEPLOY_METRICS_PORT=str(free_port()))
    else:
        argv = [sys.executable, str(Path(__file__).with_name("minimal_controller.py")), NAMESPACE]
    with log.open("ab") as handle:
        return subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=environment)


def run_phase(controller: str, count: int, endpoint: str, max_jobs: int, timeout: float, scratch: Path) -> Phase:
    phase = Phase(controller, count)
    store = f"s3://bench-artifacts/{uuid.uuid4().hex[:8]}"  # nothing done by an earlier run is found there
    with Bench(scratch, controller) as bench:
        log = scratch / f"{controller}.log"
        process = start_controller(bench, endpoint, max_jobs, log)
        pods = InstantPods(bench.api, NAMESPACE, [NODE], endpoint)
        pods.start()
        try:
            wait_for(f"the {controller} to watch ModelDeployments", lambda: process.poll() is None
                     and bench.watching(), timeout=120, interval=0.5)
            if process.poll() is not None:
                raise SystemExit(f"the {controller} exited {process.returncode}; its log: {log}")
            time.sleep(1)  # its other start-up requests are not part of the measurement
            custom = kubernetes.client.CustomObjectsApi(bench.api)
            load_before = os.getloadavg()[0]
            with Readiness(bench.api) as readiness:
                began, start = time.time(), time.monotonic()
                for index in range(count):
                    custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL,
                                                           deployment(index, store), _preload_content=False)
                phase.burst = time.monotonic() - start
                while not finished(phase, bench, readiness):
                    if process.poll() is not None:
                        raise SystemExit(f"the {controller} exited {process.returncode}; its log: {log}")
                    if time.monotonic() - start > timeout:  # the first Jobs can still be measured
                        break
                    phase.loads.append(os.getloadavg()[0])
                    time.sleep(0.5)
                else:
                    phase.done = time.monotonic() - start
                ended = time.time()
                phase.ready = len(readiness.ready)
            phase.rss = peak_rss_mb(process.pid)
            phase.cpu = cpu_seconds(process.pid)
            phase.load = (load_before, os.getloadavg()[0])
        finally:
            process.terminate()
            process.wait(timeout=60)
            pods.stop()
        phase.pod_errors = pods.errors
        measure(phase, bench, began, ended)
    return phase


def finished(phase: Phase, bench: Bench, readiness: Readiness) -> bool:
    if phase.controller == "operator":
        return len(readiness.ready) == phase.deployments
    return len({e.name for e in bench.audit.job_creations()}) == phase.deployments


def measure(phase: Phase, bench: Bench, began: float, ended: float) -> None:
    events = bench.audit.read()
    created = {e.name: e.completed for e in events
               if e.verb == "create" and e.stage == "ResponseComplete" and e.resource == PLURAL and e.code == 201}
    jobs = bench.audit.job_creations()
    first: dict[str, float] = {}
    for event in jobs:
        owner = DEPLOYMENT_OF_JOB.match(event.name)
        if owner:
            at = event.completed
            first[owner[1]] = min(at, first.get(owner[1], at))
    if len(created) != phase.deployments:
        raise SystemExit(f"{phase.controller}: {len(created)} of {phase.deployments} deployments created")
    # One still without a Job when the bench gave up counts with the time it had waited by then: a lower bound.
    phase.without_job = len(set(created) - set(first))
    phase.latencies = [first.get(name, ended) - created[name] for name in created]
    seen: dict[str, float] = {}
    for event in events:
        if event.user == bench.user and event.resource == PLURAL and event.name in created:
            seen[event.name] = min(event.received, seen.get(event.name, event.received))
    phase.reactions = [seen[name] - created[name] for name in seen]
    names = Counter(e.name for e in jobs)
    phase.jobs = len(names)
    phase.duplicates = sum(n - 1 for n in names.values())
    requests = {e.id: e for e in events if e.user == bench.user and began <= e.received <= ended}
    phase.requests = len(requests)
    phase.by_kind = Counter(
        " ".join(filter(None, [e.verb, e.resource, e.subresource])) for e in requests.values())


def report(count: int, operator: Phase, minimal: Phase) -> list[tuple[str, bool]]:
    print(f"\n{count} ModelDeployments x 12 cells, pods succeeding at once ({operator.jobs} Jobs for the operator)")
    for phase in (operator, minimal):
        print(f"  load average (1 min) during the {phase.controller}'s phase: {phase.load[0]:.1f} at the start, "
              f"median {phase.p(0.5, 'loads'):.1f}, max {phase.p(1.0, 'loads'):.1f}, {phase.load[1]:.1f} at the end")
    print(f"  {'':34}{'operator':>10}{'minimal':>10}{'ratio':>8}")
    for label, a, b in (("create -> first Job p50 (s)", operator.p50, minimal.p50),
                        ("create -> first Job p99 (s)", operator.p(0.99), minimal.p(0.99))):
        print(f"  {label:34}{a:10.2f}{b:10.2f}{a / b:8.1f}")
    print(f"  {'create -> its first request on it':34}{operator.p(0.5, 'reactions'):10.2f}{'-':>10}   (p50; p99 "
          f"{operator.p(0.99, 'reactions'):.2f} s)")
    if operator.without_job:
        print(f"  {operator.without_job} deployments had no Job yet when the bench gave up (counted with the time "
              "they had waited: the figures above are lower bounds)")
    print(f"  {'burst of creations (s)':34}{operator.burst:10.1f}{minimal.burst:10.1f}")
    done = [f"{p.done:10.1f}" if p.done is not None else f"{'timeout':>10}" for p in (operator, minimal)]
    print(f"  {'create -> all Ready / all Jobs (s)':34}{done[0]}{done[1]}")
    if operator.done is None:
        print(f"  the operator had {operator.ready} of {count} Ready when the bench gave up (--timeout)")
    print(f"  {'peak RSS (MB)':34}{operator.rss:10.0f}{minimal.rss:10.0f}")
    print(f"  {'CPU time (s)':34}{operator.cpu:10.1f}{minimal.cpu:10.1f}")
    print(f"  {'API requests per deployment':34}{operator.requests / count:10.1f}{minimal.requests / count:10.1f}")
    print(f"  {'duplicate Jobs':34}{operator.duplicates:10d}{minimal.duplicates:10d}")
    print("  the operator's requests: " + ", ".join(f"{kind} {n}" for kind, n in operator.by_kind.most_common(10)))
    for phase in (operator, minimal):
        if phase.pod_errors:
            print(f"  {phase.controller}: {len(phase.pod_errors)} pods not succeeded, e.g. {phase.pod_errors[:3]}")
    goals = [(f"{count}: operator peak RSS under 300 MB", operator.rss < 300),
             (f"{count}: no duplicate Jobs", operator.duplicates == 0),
             (f"{count}: every deployment Ready", operator.done is not None)]
    if count == 1000:
        goals.insert(0, (f"{count}: operator's first-Job p50 within 2x of the minimal controller's",
                         operator.p50 <= 2 * minimal.p50))
    return goals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, nargs="+", default=[200, 1000],
                        help="deployment counts, each run on fresh control planes (default: 200 1000)")
    parser.add_argument("--max-jobs", type=int, help=f"the operator's maxJobs (default: {PER_DEPLOYMENT} per "
                        "deployment, so that it never holds back a first Job)")
    parser.add_argument("--timeout", type=float, default=3600, help="give up on a phase after this many seconds")
    parser.add_argument("--keep", action="store_true", help="keep the logs and audit logs")
    args = parser.parse_args()
    os.environ.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x", AWS_REGION="us-east-1")  # moto takes any
    port = free_port()
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    scratch = Path(tempfile.mkdtemp(prefix="operator-scale-"))
    goals: list[tuple[str, bool]] = []
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; logs under {scratch}")
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint)
        for bucket in ("bench-models", "bench-artifacts"):
            for _ in range(100):  # moto's server takes a few seconds to start
                try:
                    s3.create_bucket(Bucket=bucket)
                    break
                except botocore.exceptions.EndpointConnectionError:
                    time.sleep(0.2)
        for count in args.deployments:
            phases = {}
            for controller in ("minimal", "operator"):
                directory = scratch / f"{count}-{controller}"
                directory.mkdir()
                max_jobs = args.max_jobs or PER_DEPLOYMENT * count
                if controller == "operator":
                    print(f"{count} deployments, operator: maxJobs {max_jobs}, maxJobsPerDeployment {PER_DEPLOYMENT}",
                          flush=True)
                phase = phases[controller] = run_phase(controller, count, endpoint, max_jobs, args.timeout, directory)
                print(f"{count} deployments, {controller}: first Job p50 {phase.p50:.2f} s, p99 {phase.p(0.99):.2f} s",
                      flush=True)
            goals += report(count, phases["operator"], phases["minimal"])
    finally:
        moto.terminate()
        moto.wait(timeout=30)
    print()
    for goal, met in goals:
        print(f"{'PASS' if met else 'FAIL'}  {goal}")
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
