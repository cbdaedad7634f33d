"""The operator's Jobs, as one list-then-watch stream per namespace tells them (an informer).

kopf hands each watched object to a task of its own, and its watcher takes a turn of the event
loop for every new one: with Jobs created and finished by the hundred, the Jobs a busy operator
knew of lagged the API server by more than a second, and every finished Job held its slot that
long. Here a thread reads the stream and hands each change to the loop as it comes, so a
finished or deleted Job frees its slot at once. Deployments wait for the first listing before
they plan: a Job not listed yet would be created again.

The Jobs' pods are watched the same way (`PodInformer`), those not bound to a node only, keeping
those the scheduler could not place: a Job whose pod waits for a node (no free device, say) tells
nothing of it, and its deployment's status should.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from modeldeploy.controller.jobs import ANNOTATION_TASK_URI, LABEL_DEPLOYMENT, MANAGED_BY
from modeldeploy.controller.reconcile import JobState, job_state
from modeldeploy.spec import GROUP, PLURAL, VERSION

Deployment = tuple[str, str]  # (namespace, name)
SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"  # on our Jobs and, from their template, on their pods
LABEL_JOB_NAME = "batch.kubernetes.io/job-name"  # what the Job controller labels its pods with
# Only a pod no node was given can wait for one. The API server ends a pod's part in such a watch when it is bound
# (a DELETED event), so the informer hears of a pod twice (created, bound), not at each change of its life.
UNBOUND = "spec.nodeName="
WATCH_SECONDS = 300  # the API server ends each watch after this long; it is resumed from where it was
READ_TIMEOUT = WATCH_SECONDS + 10
RETRY_SECONDS = (1, 2, 5, 10, 30)
GONE = 410

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OwnedJob:
    """One of our Jobs: whose it is, what it tells about its task, the task document it runs."""

    uid: str
    deployment: Deployment
    state: JobState
    task_uri: str | None


def owned_job(job: Mapping[str, Any]) -> OwnedJob | None:
    """A Job as the index keeps it; None for one that is not a task's."""
    state = job_state(job)
    if state is None:
        return None
    metadata = job["metadata"]
    return OwnedJob(metadata["uid"], (metadata["namespace"], (metadata.get("labels") or {}).get(LABEL_DEPLOYMENT, "")),
                    state, (metadata.get("annotations") or {}).get(ANNOTATION_TASK_URI))


@dataclass
class JobIndex:
    """Our Jobs by deployment, and the task keys of the active ones (what slots are counted from), with their
    number across every deployment."""

    jobs: dict[Deployment, dict[str, OwnedJob]] = field(default_factory=dict)  # by uid
    active: dict[Deployment, set[str]] = field(default_factory=dict)
    active_total: int = 0

    def states(self, deployment: Deployment) -> dict[str, JobState]:
        """The deployment's Jobs by task key."""
        return {job.state.key: job.state for job in self.jobs.get(deployment, {}).values()}

    def put(self, job: OwnedJob) -> OwnedJob | None:
        """Keep the Job as it is now; what it was before, if known."""
        before = self.jobs.setdefault(job.deployment, {}).get(job.uid)
        self.jobs[job.deployment][job.uid] = job
        self._count(job.deployment)
        return before

    def remove(self, job: OwnedJob) -> OwnedJob | None:
        """Forget a deleted Job; what it was, if known."""
        jobs = self.jobs.get(job.deployment, {})
        before = jobs.pop(job.uid, None)
        if not jobs:
            self.jobs.pop(job.deployment, None)
        self._count(job.deployment)
        return before

    def replace(self, namespace: str | None, jobs: Iterable[OwnedJob]) -> None:
        """A namespace's Jobs (every namespace's, for None) as a new listing tells them."""
        for deployment in [d for d in self.jobs if namespace is None or d[0] == namespace]:
            del self.jobs[deployment]
            self.active_total -= len(self.active.pop(deployment, ()))
        for job in jobs:
            self.jobs.setdefault(job.deployment, {})[job.uid] = job
        for deployment in self.jobs:
            self._count(deployment)

    def _count(self, deployment: Deployment) -> None:
        keys = {job.state.key for job in self.jobs.get(deployment, {}).values() if job.state.active}
        self.active_total += len(keys) - len(self.active.get(deployment, ()))
        if keys:
            self.active[deployment] = keys
        else:
            self.active.pop(deployment, None)


@dataclass(frozen=True)
class OwnedPod:
    """One of our Jobs' pods, and why the scheduler does not place it (None: it is placed, or going)."""

    uid: str
    deployment: Deployment
    job: str
    unschedulable: str | None


def owned_pod(pod: Mapping[str, Any]) -> OwnedPod | None:
    metadata = pod["metadata"]
    labels = metadata.get("labels") or {}
    if LABEL_DEPLOYMENT not in labels or LABEL_JOB_NAME not in labels:
        return None
    status = pod.get("status") or {}
    scheduled = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), {})
    waiting = (scheduled.get("status") == "False" and status.get("phase", "Pending") == "Pending"
               and not metadata.get("deletionTimestamp"))
    reason = f"{scheduled.get('reason') or 'Unschedulable'}: {scheduled.get('message') or 'no node'}" if waiting else None
    return OwnedPod(metadata["uid"], (metadata["namespace"], labels[LABEL_DEPLOYMENT]), labels[LABEL_JOB_NAME], reason)


@dataclass
class PodIndex:
    """Our Jobs' pods that wait for a node, by deployment; the others are not kept."""

    waiting: dict[Deployment, dict[str, OwnedPod]] = field(default_factory=dict)  # by uid

    def unschedulable(self, deployment: Deployment) -> dict[str, str]:
        """Why the deployment's Jobs (by name) have a pod no node takes."""
        return {pod.job: pod.unschedulable for pod in self.waiting.get(deployment, {}).values() if pod.unschedulable}

    def put(self, pod: OwnedPod) -> OwnedPod | None:
        pods = self.waiting.setdefault(pod.deployment, {})
        before = pods.pop(pod.uid, None)
        if pod.unschedulable:
            pods[pod.uid] = pod
        elif not pods:
            del self.waiting[pod.deployment]
        return before

    def remove(self, pod: OwnedPod) -> OwnedPod | None:
        return self.put(replace(pod, unschedulable=None))

    def replace(self, namespace: str | None, pods: Iterable[OwnedPod]) -> None:
        for deployment in [d for d in self.waiting if namespace is None or d[0] == namespace]:
            del self.waiting[deployment]
        for pod in pods:
            self.put(pod)


Listener = Callable[[str, Any], None]  # (ADDED, MODIFIED or DELETED; the OwnedJob or OwnedPod)


class JobInformer:
    """Keeps a JobIndex up to date from the API, in threads of its own, telling `listener` (on the loop) of each
    change; `listed` is set once every namespace was listed."""

    WHAT = "Jobs"
    SELECTOR: str | None = SELECTOR

    def __init__(self, api: client.ApiClient, namespaces: Sequence[str], index: Any, listener: Listener,
                 loop: asyncio.AbstractEventLoop):
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)
        self.index = index
        self.listener = listener
        self.loop = loop
        self.listed = asyncio.Event()
        self.stopping = threading.Event()
        self._unlisted = set(namespaces or [None])
        self._streams: dict[str | None, Any] = {}
        self._threads = [threading.Thread(target=self._run, args=(namespace,), name=f"jobs-{namespace or 'all'}",
                                          daemon=True) for namespace in self._unlisted]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for response in list(self._streams.values()):
            with contextlib.suppress(AttributeError, OSError):  # closed already
                response.connection.sock.shutdown(socket.SHUT_RDWR)  # ends the read its thread is blocked in

    def _run(self, namespace: str | None) -> None:
        version: str | None = None
        failures = 0
        while not self.stopping.is_set():
            try:
                if version is None:
                    version = self._list(namespace)
                for event in self._watch(namespace, version):
                    failures = 0
                    version = event["object"]["metadata"]["resourceVersion"]
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        item = self._parse(event["object"])
                        if item is not None and self._tells(namespace, event["type"], item):
                            handed = self._handed(event["type"], item)
                            self.loop.call_soon_threadsafe(self._apply, event["type"], handed)
            except ApiException as error:
                if error.status == GONE:
                    logger.info(f"the watch of {self.WHAT} in {namespace or 'every namespace'} expired "
                                f"({error.reason}); listing again")
                    version = None  # too old to resume from: list again
                    continue
                failures = self._failed(namespace, error, failures)
            except Exception as error:  # noqa: BLE001 - the stream outlives any failure, as kopf's own watches do
                failures = self._failed(namespace, error, failures)

    def _failed(self, namespace: str | None, error: Exception, failures: int) -> int:
        if not self.stopping.is_set():
            delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
            logger.warning(f"watching {self.WHAT} in {namespace or 'every namespace'} failed ({error}); again in "
                           f"{delay} s")
            self.stopping.wait(delay)
        return failures + 1

    def _request(self, namespace: str | None, **options: Any) -> Any:
        if namespace is None:
            return self.batch.list_job_for_all_namespaces(**options)
        return self.batch.list_namespaced_job(namespace, **options)

    def _parse(self, item: Mapping[str, Any]) -> Any:
        return owned_job(item)

    def _tells(self, namespace: str | None, kind: str, item: Any) -> bool:
        """Whether a watched change is worth a turn of the loop (every change of a Job is)."""
        return True

    def _list(self, namespace: str | None) -> str:
        options = {"label_selector": self.SELECTOR, "_preload_content": False, "_request_timeout": READ_TIMEOUT}
        listing = json.loads(self._request(namespace, **options).data)
        items = [item for item in map(self._parse, listing.get("items") or []) if item is not None]
        self.loop.call_soon_threadsafe(self._relisted, namespace, items)
        return listing["metadata"]["resourceVersion"]

    def _watch(self, namespace: str | None, version: str) -> Iterator[dict[str, Any]]:
        options = {"label_selector": self.SELECTOR, "watch": True, "resource_version": version,
                   "allow_watch_bookmarks": True, "timeout_seconds": WATCH_SECONDS, "_preload_content": False,
                   "_request_timeout": READ_TIMEOUT}
        response = self._request(namespace, **options)
        self._streams[namespace] = response
        try:
            for line in iter_resp_lines(response):
                if not self._worth_decoding(line):
                    continue
                event = json.loads(line)
                if event["type"] == "ERROR":
                    status = event["object"]
                    raise ApiException(status=status.get("code"), reason=status.get("message"))
                yield event
        finally:
            self._streams.pop(namespace, None)
            response.close()
            response.release_conn()

    def _worth_decoding(self, line: str) -> bool:
        return True

    def _handed(self, kind: str, item: Any) -> Any:
        """What the loop is handed of a change it is told: the item, as parsed."""
        return item

    def _relisted(self, namespace: str | None, jobs: list[OwnedJob]) -> None:
        before = {job.uid: job for deployment, by_uid in self.index.jobs.items()
                  if namespace is None or deployment[0] == namespace for job in by_uid.values()}
        self.index.replace(namespace, jobs)
        now = {job.uid for job in jobs}
        for job in jobs:
            self.listener("ADDED" if job.uid not in before else "MODIFIED", job)
        for uid, job in before.items():
            if uid not in now:
                self.listener("DELETED", job)
        self._unlisted.discard(namespace)
        if not self._unlisted:
            self.listed.set()

    def _apply(self, kind: str, job: OwnedJob) -> None:
        if kind == "DELETED":
            self.index.remove(job)
        else:
            self.index.put(job)
        self.listener(kind, job)


class PodInformer(JobInformer):
    """Keeps a PodIndex of our Jobs' pods that wait for a node; tells `listener` when a pod starts or stops
    waiting. Only such changes take a turn of the loop: the thread drops those of pods that never waited."""

    WHAT = "pods"

    def __init__(self, api: client.ApiClient, namespaces: Sequence[str], index: PodIndex, listener: Listener,
                 loop: asyncio.AbstractEventLoop):
        super().__init__(api, namespaces, index, listener, loop)
        self._waiting: dict[str | None, set[str]] = {}  # per stream, read and written by its thread only
        for thread in self._threads:
            thread.name = thread.name.replace("jobs-", "pods-", 1)

    def _request(self, namespace: str | None, **options: Any) -> Any:
        options["field_selector"] = UNBOUND
        if namespace is None:
            return self.core.list_pod_for_all_namespaces(**options)
        return self.core.list_namespaced_pod(namespace, **options)

    def _parse(self, item: Mapping[str, Any]) -> Any:
        return owned_pod(item)

    def _tells(self, namespace: str | None, kind: str, item: Any) -> bool:
        waiting = self._waiting.setdefault(namespace, set())
        if item.unschedulable and kind != "DELETED":
            waiting.add(item.uid)
            return True
        if item.uid in waiting:
            waiting.discard(item.uid)
            return True
        return False

    def _list(self, namespace: str | None) -> str:
        options = {"label_selector": SELECTOR, "_preload_content": False, "_request_timeout": READ_TIMEOUT}
        listing = json.loads(self._request(namespace, **options).data)
        pods = [pod for pod in map(owned_pod, listing.get("items") or []) if pod is not None]
        self._waiting[namespace] = {pod.uid for pod in pods if pod.unschedulable}
        self.loop.call_soon_threadsafe(self._relisted, namespace, pods)
        return listing["metadata"]["resourceVersion"]

    def _relisted(self, namespace: str | None, pods: list[OwnedPod]) -> None:
        before = {pod.uid: pod for deployment, by_uid in self.index.waiting.items()
                  if namespace is None or deployment[0] == namespace for pod in by_uid.values()}
        self.index.replace(namespace, pods)
        now = {pod.uid: pod for pod in pods if pod.unschedulable}
        for pod in now.values():
            self.listener("ADDED" if pod.uid not in before else "MODIFIED", pod)
        for uid, pod in before.items():
            if uid not in now:
                self.listener("DELETED", pod)
        self._unlisted.discard(namespace)
        if not self._unlisted:
            self.listed.set()


class NewDeployments(JobInformer):
    """Tells `listener` of each ModelDeployment created (ADDED, with no status yet) or deleted (DELETED), straight
    from a watch of its own: kopf takes in the same event only after every other event of every deployment queued
    before it, and a new deployment's first Jobs need not wait for that. Changes (MODIFIED, most of the stream: each
    status write) are not even decoded. The watch starts from now: deployments that exist already are kopf's.

    The listener is told (kind, body, what `prepare` made of a created body on the watch's thread, else None): what
    a first pass needs of the spec alone is ready when the loop gets to it, not one more turn of the loop later."""

    WHAT = "ModelDeployments"
    SELECTOR = None
    SKIPPED = '{"type":"MODIFIED"'

    def __init__(self, api: client.ApiClient, namespaces: Sequence[str], listener: Callable[[str, Any, Any], None],
                 loop: asyncio.AbstractEventLoop, prepare: Callable[[Mapping[str, Any]], Any] = lambda body: None):
        super().__init__(api, namespaces, None, lambda kind, item: None, loop)
        self.told = listener
        self.prepare = prepare
        self.custom = client.CustomObjectsApi(api)
        for thread in self._threads:
            thread.name = thread.name.replace("jobs-", "deployments-", 1)

    def _request(self, namespace: str | None, **options: Any) -> Any:
        if namespace is None:
            return self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **options)
        return self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, **options)

    def _list(self, namespace: str | None) -> str:
        """Where the watch starts: now (a listing of one item is enough to learn the resourceVersion)."""
        options = {"limit": 1, "_preload_content": False, "_request_timeout": READ_TIMEOUT}
        return json.loads(self._request(namespace, **options).data)["metadata"]["resourceVersion"]

    def _worth_decoding(self, line: str) -> bool:
        return not line.startswith(self.SKIPPED)

    def _parse(self, item: Mapping[str, Any]) -> Any:
        return item

    def _tells(self, namespace: str | None, kind: str, item: Any) -> bool:
        return kind == "DELETED" or (kind == "ADDED" and not item.get("status")
                                     and not item["metadata"].get("deletionTimestamp"))

    def _handed(self, kind: str, item: Any) -> Any:
        return item, (self.prepare(item) if kind == "ADDED" else None)

    def _apply(self, kind: str, item: Any) -> None:
        self.told(kind, *item)
