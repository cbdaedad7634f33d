"""The operator under load: many ModelDeployments whose Jobs finish at once.

Run: python bench/operator_scale.py [--deployments 200] [--max-jobs 100]
Starts the test API server (tests/kube) and moto's S3 server, each in a process of its own, and
`modeldeploy operator`, then creates N ModelDeployments of 12 cells each (2 targets x 2
precisions x 3 batch sizes, every one with its own keys). An instant agent completes each Job as
soon as it appears: it commits the task's result manifest and marks the Job Complete. It writes
only what the operator reads (the manifest, and results.json for the report), so the S3 server's
time goes to the operator's requests. Prints the time from create to the first Job (p50, p99),
the time until every deployment is Ready, the operator's peak RSS, API requests per deployment
and duplicate Jobs.
Targets: first Job p50 under 2 s, peak RSS under 300 MB, no duplicates.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import boto3
import kubernetes
import urllib3

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))
from modeldeploy.manifest import commit
from modeldeploy.store import AlreadyExists, Store, open_store
from scenarios import EXAMPLES, Operator, free_port

GROUP, VERSION, PLURAL = "modeldeploy.io", "v1alpha1", "modeldeployments"
STORE = "s3://bench-artifacts/load"


def deployment(index: int) -> dict[str, Any]:
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
            "artifacts": {"uri": STORE, "secretRef": {"name": "s3-credentials"}},
        },
    }


class ApiServerProcess:
    """The test API server (`python -m kube.apiserver`) in a process of its own. In this one, the agent's threads
    would hold the GIL its event loop needs, and it would deliver watch events up to a second late: the operator
    would learn of its Jobs, and the agent see them, that much later than from a real API server."""

    def __enter__(self) -> Self:
        self.process = subprocess.Popen([sys.executable, "-m", "kube.apiserver"], cwd=TESTS, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdin is not None and self.process.stdout is not None
        self.stdin, self.stdout = self.process.stdin, self.process.stdout
        self.kubeconfig = Path(self.stdout.readline().strip())
        return self

    def __exit__(self, *_: object) -> None:
        self.stdin.close()
        self.process.wait(timeout=30)

    def requests(self) -> int:
        """How many requests it has served."""
        self.stdin.write("requests\n")
        self.stdin.flush()
        return int(self.stdout.readline())

    def api_client(self) -> kubernetes.client.ApiClient:
        return kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))

    def kubectl(self, *args: str) -> None:
        subprocess.run(["kubectl", f"--kubeconfig={self.kubeconfig}", *args], check=True, capture_output=True)


def follow(list_objects: Callable[..., Any], handle: Callable[[dict[str, Any]], None], stopping: threading.Event
           ) -> None:
    """Every event of a collection, as raw dicts, the watch resumed from the last resourceVersion seen as an informer
    does: what was seen is not listed again."""
    since: str | None = None
    while not stopping.is_set():
        try:
            options = {"resource_version": since} if since else {}
            for event in kubernetes.watch.Watch().stream(list_objects, timeout_seconds=5, deserialize=False, **options):
                since = event["object"]["metadata"]["resourceVersion"]
                handle(event)
        except (urllib3.exceptions.HTTPError, kubernetes.client.ApiException):
            continue  # a watch that ends early is started again from where it was


class Readiness:
    """The ModelDeployments whose Ready condition is True, from a watch: a list every second would have the API
    server copy and encode every deployment each time, competing with the operator's requests."""

    def __init__(self, server: ApiServerProcess):
        self.api = server.api_client()
        custom = kubernetes.client.CustomObjectsApi(self.api)
        deployments = functools.partial(custom.list_namespaced_custom_object, GROUP, VERSION, "default", PLURAL)
        self.ready: set[str] = set()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=follow, args=(deployments, self.note, self.stopping), daemon=True)

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
        self.api.close()


class InstantAgent:
    """Completes every Job as soon as it is seen: commits its result manifest, then marks it Complete."""

    def __init__(self, server: ApiServerProcess, endpoint: str):
        self.api = server.api_client()
        self.batch = kubernetes.client.BatchV1Api(self.api)
        self.endpoint = endpoint
        self.first_job: dict[str, float] = {}
        self.created: Counter[str] = Counter()
        self.errors: list[str] = []
        self.stores: dict[str, Store] = {}
        self.stores_lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=8)
        self.stopping = threading.Event()
        jobs = functools.partial(self.batch.list_namespaced_job, "default")
        self.thread = threading.Thread(target=follow, args=(jobs, self.note, self.stopping), daemon=True)

    def note(self, event: dict[str, Any]) -> None:
        job = event["object"]
        if event["type"] == "ADDED" and job["metadata"]["uid"] not in self.created:
            self.created[job["metadata"]["uid"]] += 1
            self.first_job.setdefault(job["metadata"]["labels"]["modeldeploy.io/deployment"], time.monotonic())
            self.pool.submit(self.finish, job)

    def finish(self, job: dict[str, Any]) -> None:
        try:
            self.complete(job)
        except Exception as error:  # noqa: BLE001 - a thread pool would swallow it
            self.errors.append(f"{job['metadata']['name']}: {error!r}")

    def store(self, uri: str) -> Store:
        """One client per store: a boto3 client costs more to make than the requests the agent sends."""
        with self.stores_lock:
            if uri not in self.stores:
                self.stores[uri] = open_store(uri, endpoint=self.endpoint)
            return self.stores[uri]

    def complete(self, job: dict[str, Any]) -> None:
        key = job["metadata"]["annotations"]["modeldeploy.io/task-key"]
        stage = job["metadata"]["labels"]["modeldeploy.io/stage"]
        with tempfile.TemporaryDirectory() as scratch:
            outputs = {}
            if stage == "report":
                outputs["results.json"] = Path(scratch) / "results.json"
                outputs["results.json"].write_text(json.dumps({"cells": [], "best": []}))
            metrics = {"accuracy": None, "performance": {"throughput": 1.0}, "artifact": {}}
            with contextlib.suppress(AlreadyExists):  # another deployment's Job did the same task: as the stage does
                commit(self.store(STORE), key, stage, outputs, datetime.now(UTC), metrics)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        status = {"succeeded": 1, "startTime": now, "completionTime": now, "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now},
            {"type": "Complete", "status": "True", "lastTransitionTime": now}]}
        self.batch.patch_namespaced_job_status(job["metadata"]["name"], "default", {"status": status})

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)
        self.pool.shutdown(wait=True)
        self.api.close()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(server: ApiServerProcess, agent: InstantAgent, operator: Operator, deployments: int, timeout: float,
            scratch: str) -> dict[str, Any]:
    time.sleep(3)  # the operator's start-up is not part of the measurement
    requests_before = server.requests()
    custom = kubernetes.client.CustomObjectsApi(agent.api)
    created: dict[str, float] = {}
    with Readiness(server) as readiness:
        start = time.monotonic()
        for index in range(deployments):
            body = deployment(index)
            custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, body)
            created[body["metadata"]["name"]] = time.monotonic()
        while len(readiness.ready) < deployments:
            if time.monotonic() - start > timeout:
                raise SystemExit(f"only {len(readiness.ready)} of {deployments} Ready after {timeout} s; "
                                 f"operator log: {scratch}/operator.log; agent errors: {agent.errors[:3]}")
            time.sleep(0.2)
        ready = time.monotonic() - start
    latencies = sorted(agent.first_job[name] - created[name] for name in created)
    jobs = json.loads(agent.batch.list_namespaced_job("default", _preload_content=False).data)["items"]
    tasks = Counter((job["metadata"]["labels"]["modeldeploy.io/deployment"],
                     job["metadata"]["annotations"]["modeldeploy.io/task-key"]) for job in jobs)
    return {
        "jobs": len(jobs),
        "p50": statistics.median(latencies),
        "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "ready": ready,
        "rss": peak_rss_mb(operator.process.pid),
        "requests": (server.requests() - requests_before) / deployments,
        "duplicates": sum(count - 1 for count in tasks.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=200)
    parser.add_argument("--max-jobs", type=int, default=100, help="the operator's maxJobs")
    parser.add_argument("--timeout", type=float, default=1800, help="give up after this many seconds")
    args = parser.parse_args()
    os.environ.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x", AWS_REGION="us-east-1")  # moto takes any
    port = free_port()
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    time.sleep(2)
    s3 = boto3.client("s3", endpoint_url=endpoint)
    for bucket in ("bench-models", "bench-artifacts"):
        s3.create_bucket(Bucket=bucket)
    scratch = tempfile.mkdtemp(prefix="operator-scale-")
    try:
        with ApiServerProcess() as server:
            server.kubectl("apply", "-f", str(EXAMPLES / "cluster" / "s3-credentials.yaml"))
            operator = Operator(server.kubeconfig, Path(scratch) / "operator.log", MODELDEPLOY_S3_ENDPOINT=endpoint,
                                MODELDEPLOY_MAX_JOBS=str(args.max_jobs), MODELDEPLOY_MAX_JOBS_PER_DEPLOYMENT="8",
                                MODELDEPLOY_RESYNC_SECONDS="30")  # the operator's default, not the tests' 3 s
            operator.start()
            agent = InstantAgent(server, endpoint)
            agent.start()
            try:
                result = measure(server, agent, operator, args.deployments, args.timeout, scratch)
            finally:
                agent.stop()
                operator.stop()
    finally:
        moto.terminate()
    print(f"{args.deployments} ModelDeployments x 12 cells ({result['jobs']} Jobs), Jobs finishing at once")
    print(f"create -> first Job: p50 {result['p50']:.2f} s, p99 {result['p99']:.2f} s (target p50 under 2 s)")
    print(f"create -> all Ready: {result['ready']:.1f} s")
    print(f"operator peak RSS: {result['rss']:.0f} MB (target under 300 MB)")
    print(f"API requests per deployment: {result['requests']:.0f}")
    print(f"duplicate Jobs: {result['duplicates']} (must be 0)")


if __name__ == "__main__":
    main()
