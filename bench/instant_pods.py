"""Pods that succeed at once, for the benchmarks on the real control plane (tests/cluster).

`InstantPods` stands in for the kubelet of the bench's node(s): it watches the pods the scheduler bound there
and, for each, does what its stage would leave behind in the store (the task's result manifest, and results.json
for the report), then writes the pod's status as a kubelet writes that of a container that exited 0: phase
Succeeded, the container terminated with exit code 0. The real Job controller then marks the Job Complete. It
writes only what the operator reads, so the store's time goes to the operator's requests; a pod that carries no
task document (the minimal controller's) just succeeds.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes
import urllib3
from modeldeploy.manifest import TASK_ENVIRONMENT, commit
from modeldeploy.store import AlreadyExists, Store, open_store

Obj = dict[str, Any]


def follow(list_objects: Callable[..., Any], handle: Callable[[Obj], None], stopping: threading.Event,
           **options: Any) -> None:
    """Every event of a collection, as raw dicts, the watch resumed from the last resourceVersion seen as an
    informer does: what was seen is not listed again. A watch that expired (410) starts over from now."""
    since: str | None = None
    while not stopping.is_set():
        try:
            resume = {"resource_version": since} if since else {}
            for event in kubernetes.watch.Watch().stream(list_objects, timeout_seconds=5, deserialize=False,
                                                         allow_watch_bookmarks=True, **resume, **options):
                since = event["object"]["metadata"]["resourceVersion"]
                if event["type"] != "BOOKMARK":
                    handle(event)
        except kubernetes.client.ApiException as error:
            if error.status == 410:
                since = None
        except urllib3.exceptions.HTTPError:
            continue  # a watch that ends early is started again from where it was


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def task_document(pod: Obj) -> Obj | None:
    for container in pod["spec"]["containers"]:
        for variable in container.get("env") or ():
            if variable["name"] == TASK_ENVIRONMENT:
                return json.loads(variable["value"])
    return None


class InstantPods:
    """Succeeds every pod bound to one of `nodes` in `namespace`, `workers` at a time."""

    def __init__(self, api: kubernetes.client.ApiClient, namespace: str, nodes: Iterable[str], endpoint: str,
                 workers: int = 8) -> None:
        self.core = kubernetes.client.CoreV1Api(api)
        self.namespace = namespace
        self.nodes = set(nodes)
        self.endpoint = endpoint
        self.seen: set[str] = set()
        self.errors: list[str] = []
        self.stores: dict[str, Store] = {}
        self.stores_lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="instant-pod")
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=follow, daemon=True, name=f"pods-on-{node}", args=(
            self.core.list_namespaced_pod, self.note, self.stopping), kwargs={
            "namespace": namespace, "field_selector": f"spec.nodeName={node}"}) for node in self.nodes]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=10)
        self.pool.shutdown(wait=True, cancel_futures=True)

    def note(self, event: Obj) -> None:
        pod = event["object"]
        uid = pod["metadata"]["uid"]
        if (event["type"] == "DELETED" or uid in self.seen or pod["metadata"].get("deletionTimestamp")
                or pod["status"].get("phase") != "Pending"):
            return
        self.seen.add(uid)
        self.pool.submit(self.finish, pod)

    def finish(self, pod: Obj) -> None:
        try:
            document = task_document(pod)
            if document is not None:
                self.leave_outputs(document)
            self.succeed(pod)
        except Exception as error:  # noqa: BLE001 - a thread pool would swallow it
            self.errors.append(f"{pod['metadata']['name']}: {error!r}")

    def store(self, uri: str) -> Store:
        """One client per store: a boto3 client costs more to make than the requests sent through it."""
        with self.stores_lock:
            if uri not in self.stores:
                self.stores[uri] = open_store(uri, endpoint=self.endpoint)
            return self.stores[uri]

    def leave_outputs(self, document: Obj) -> None:
        stage = document["stage"]
        with tempfile.TemporaryDirectory() as scratch:
            outputs = {}
            if stage == "report":
                outputs["results.json"] = Path(scratch) / "results.json"
                outputs["results.json"].write_text(json.dumps({"cells": [], "best": []}))
            metrics = {"accuracy": None, "performance": {"throughput": 1.0}, "artifact": {}}
            with contextlib.suppress(AlreadyExists):  # another deployment's Job did the same task: as the stage does
                commit(self.store(document["store"]), document["key"], stage, outputs, datetime.now(UTC), metrics)

    def succeed(self, pod: Obj) -> None:
        """The status a kubelet writes for a pod whose one container exited 0."""
        now = _now()
        conditions = [
            {"type": "PodReadyToStartContainers", "status": "False", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "reason": "PodCompleted", "lastTransitionTime": now},
            {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now},
        ]
        containers = [{
            "name": container["name"], "image": container["image"], "imageID": "", "ready": False,
            "restartCount": 0, "started": False, "containerID": f"process://{pod['metadata']['uid']}",
            "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}},
        } for container in pod["spec"]["containers"]]
        status = {"phase": "Succeeded", "startTime": now, "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
                  "conditions": conditions, "containerStatuses": containers}
        try:
            self.core.patch_namespaced_pod_status(pod["metadata"]["name"], self.namespace, {"status": status},
                                                  _content_type="application/strategic-merge-patch+json")
        except kubernetes.client.ApiException as error:
            if error.status != 404:  # a pod deleted meanwhile has nothing left to succeed
                raise
