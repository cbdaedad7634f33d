"""The operator's Job informer against the real API server: it lists, then follows every change from the listing's
resourceVersion; a watch the server ends is resumed from where it was (bookmarks keep that point fresh while
nothing of ours changes); a connection lost and regained resumes without losing a change; and a resourceVersion
the server no longer has (410 Gone, here after an API server restart while the informer was cut off) makes it list
again, which reports what it missed.

The informer reaches the API server through a TCP relay of this module (TLS passes through it untouched), so a
test can cut the informer off, as a network partition would, while it changes Jobs through its own connection.
The Jobs' pods never run (no node matches them); a test finishes one by writing its pod's status as a kubelet
would, and the real Job controller completes the Job.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Self

import kubernetes
import pytest
from kubernetes import client
from modeldeploy.controller import informer as informer_module
from modeldeploy.controller.informer import JobIndex, JobInformer, NewDeployments, OwnedJob
from modeldeploy.controller.jobs import ANNOTATION_KEY, ANNOTATION_TASK_URI, LABEL_DEPLOYMENT, MANAGED_BY
from specs import base

from cluster.control_plane import ApiError, ControlPlane, wait_for

Seen = list[tuple[str, str, bool]]  # (event, Job name, active)


def task_job(name: str, deployment: str, key: str, managed_by: str = MANAGED_BY) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": managed_by, LABEL_DEPLOYMENT: deployment},
                     "annotations": {ANNOTATION_KEY: key, ANNOTATION_TASK_URI: f"s3://artifacts/tasks/{key}/task.json"}},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "nodeSelector": {"modeldeploy.io/test-node": "none"},  # no node: the pod waits until a test finishes it
            "containers": [{"name": "stage", "image": "python:3.11"}]}}},
    }


class Relay:
    """A TCP relay on 127.0.0.1 to `upstream`; `cut()` drops every connection and refuses new ones until
    `restore()`, as a network partition between the client and the server would."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = threading.Event()
        self.open.set()
        self.connections: set[socket.socket] = set()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            if not self.open.is_set():
                downstream.close()
                continue
            upstream = socket.create_connection(self.upstream)
            with self.lock:
                self.connections |= {downstream, upstream}
            for source, sink in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.open.clear()
        with self.lock:
            for end in self.connections:
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
            self.connections.clear()

    def restore(self) -> None:
        self.open.set()

    def close(self) -> None:
        self.cut()
        self.listener.close()


class Calls:
    """The list and watch requests the informer makes, recorded around its own client: ("list", None) or
    ("watch", resourceVersion)."""

    def __init__(self, informer: JobInformer) -> None:
        self.made: list[tuple[str, str | None]] = []
        request = informer.batch.list_namespaced_job

        def recorded(namespace: str, **options: Any) -> Any:
            self.made.append(("watch", options["resource_version"]) if options.get("watch") else ("list", None))
            return request(namespace, **options)

        informer.batch.list_namespaced_job = recorded  # type: ignore[method-assign]

    def lists(self) -> int:
        return sum(kind == "list" for kind, _ in self.made)

    def watches(self) -> list[str]:
        return [version for kind, version in self.made if kind == "watch" and version is not None]


@pytest.fixture
def relay(control_plane: ControlPlane) -> Iterator[Relay]:
    port = int(control_plane.server.rsplit(":", 1)[1])
    relay = Relay(("127.0.0.1", port))
    yield relay
    relay.close()


@pytest.fixture
def kube(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    """The test's own client, straight to the API server."""
    with kubernetes.config.new_client_from_config(config_file=str(control_plane.kubeconfig)) as api:
        yield api


def informer_client(control_plane: ControlPlane, relay: Relay) -> client.ApiClient:
    """The admin's client, through the relay; the serving certificate names 127.0.0.1, so TLS verifies as before."""
    api = kubernetes.config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    api.configuration.host = f"https://127.0.0.1:{relay.port}"
    return api


async def until(condition: Callable[[], Any], what: str, timeout: float = 90, interval: float = 0.05) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await asyncio.to_thread(condition):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)


def finish(control_plane: ControlPlane, namespace: str, job: str) -> None:
    """What a kubelet reports when the Job's container exits 0: the real Job controller then completes the Job."""
    pods = f"/api/v1/namespaces/{namespace}/pods"
    pod = wait_for(f"the pod of {job}", lambda: control_plane.api.get(
        pods, query={"labelSelector": f"batch.kubernetes.io/job-name={job}"})["items"], timeout=60)[0]
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    control_plane.api.request("PATCH", f"{pods}/{pod['metadata']['name']}/status", {"status": {
        "phase": "Succeeded",
        "containerStatuses": [{"name": "stage", "image": "python:3.11", "imageID": "", "ready": False,
                               "restartCount": 0, "state": {"terminated": {
                                   "exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}}}],
    }}, content_type="application/merge-patch+json")


def subsequence(expected: Seen, seen: Seen) -> bool:
    events = iter(seen)
    return all(step in events for step in expected)


class Following:
    """An informer of one namespace, with what it told its listener and the requests it made."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.index = JobIndex()
        self.seen: Seen = []
        self.informer = JobInformer(api, [namespace], self.index, self._heard, asyncio.get_running_loop())
        self.calls = Calls(self.informer)

    def _heard(self, kind: str, job: OwnedJob) -> None:
        self.seen.append((kind, job.state.name, job.state.active))

    async def __aenter__(self) -> Self:
        self.informer.start()
        await asyncio.wait_for(self.informer.listed.wait(), timeout=30)
        await until(self.calls.watches, "the watch after the listing", timeout=30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.informer.stop()


def test_informer_lists_then_follows_creation_completion_and_deletion(
    control_plane: ControlPlane, namespace: str, relay: Relay, kube: client.ApiClient
) -> None:
    batch = client.BatchV1Api(kube)
    batch.create_namespaced_job(namespace, task_job("before", "mdep-a", "k0"))
    batch.create_namespaced_job(namespace, task_job("not-ours", "mdep-a", "k9", managed_by="someone-else"))
    deployment = (namespace, "mdep-a")

    async def follow() -> Following:
        async with Following(informer_client(control_plane, relay), namespace) as following:
            index = following.index
            assert index.active == {deployment: {"k0"}}  # listed before anything is planned
            listed_at = following.calls.made[0]
            await asyncio.to_thread(batch.create_namespaced_job, namespace, task_job("during", "mdep-a", "k1"))
            await until(lambda: index.active.get(deployment) == {"k0", "k1"}, "the new Job")
            await asyncio.to_thread(finish, control_plane, namespace, "during")
            await until(lambda: index.active.get(deployment) == {"k0"}, "the Job controller to complete the Job")
            assert index.states(deployment)["k1"].succeeded
            await asyncio.to_thread(batch.delete_namespaced_job, "before", namespace, propagation_policy="Background")
            await until(lambda: deployment not in index.active, "the deleted Job to free its slot")
            assert set(index.states(deployment)) == {"k1"}
            assert listed_at == ("list", None)
            assert following.calls.lists() == 1  # one listing, then one watch from its resourceVersion
        return following

    following = asyncio.run(follow())
    seen = following.seen
    # The real Job controller writes each Job's status several times (its pod created, ready counts, conditions):
    # those are MODIFIED events of their own between the steps that matter.
    assert seen[:2] == [("ADDED", "before", True), ("ADDED", "during", True)], seen
    assert subsequence([("MODIFIED", "during", False), ("DELETED", "before", True)], seen), seen
    assert all(name != "not-ours" for _, name, _ in seen)


def test_a_watch_the_server_ends_is_resumed_from_where_it_was_with_bookmarks_moving_that_point(
    control_plane: ControlPlane, namespace: str, relay: Relay, kube: client.ApiClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each watch asks the server to end it after WATCH_SECONDS (4 here); the next starts from the last
    resourceVersion seen, without listing again. While none of our Jobs changes, the server's bookmarks (which
    the informer asks for) still carry the resourceVersion forward: a Job changing in another namespace moves
    every Job watch's point past it."""
    monkeypatch.setattr(informer_module, "WATCH_SECONDS", 4)
    batch = client.BatchV1Api(kube)
    other = f"t-{uuid.uuid4().hex[:10]}"
    control_plane.api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                    "metadata": {"name": other}})
    deployment = (namespace, "mdep-b")

    async def follow() -> Following:
        async with Following(informer_client(control_plane, relay), namespace) as following:
            calls = following.calls
            for round_ in range(3):
                await _next_watch(calls)
                await asyncio.to_thread(batch.create_namespaced_job, namespace,
                                        task_job(f"round-{round_}", "mdep-b", f"k{round_}"))
                await _known(following, deployment, round_ + 1)
            # Nothing of ours changes now but what the Job controller writes of these; a Job of another namespace
            # changes. A watch resumed from a resourceVersion above any our Jobs ever had got it from a bookmark.
            await asyncio.to_thread(batch.create_namespaced_job, other, task_job("elsewhere", "mdep-x", "kx"))

            def resumed_from_a_bookmark() -> bool:
                ours = batch.list_namespaced_job(namespace).items
                return int(calls.watches()[-1]) > max(int(job.metadata.resource_version) for job in ours)

            await until(resumed_from_a_bookmark, "a watch resumed from a bookmark's resourceVersion", timeout=30,
                        interval=0.5)
            assert calls.lists() == 1
        return following

    try:
        following = asyncio.run(follow())
    finally:
        with contextlib.suppress(ApiError):
            control_plane.api.delete(f"/api/v1/namespaces/{other}")
    versions = [int(version) for version in following.calls.watches()]
    assert len(versions) >= 4 and versions == sorted(versions), versions
    assert [name for kind, name, _ in following.seen if kind == "ADDED"] == ["round-0", "round-1", "round-2"]


async def _next_watch(calls: Calls) -> None:
    watches = len(calls.watches())
    await until(lambda: len(calls.watches()) > watches, "the server to end the watch, and the next", timeout=30)


async def _known(following: Following, deployment: tuple[str, str], count: int) -> None:
    await until(lambda: len(following.index.states(deployment)) == count, f"{count} Jobs known")


def test_a_lost_connection_resumes_without_losing_a_change(
    control_plane: ControlPlane, namespace: str, relay: Relay, kube: client.ApiClient
) -> None:
    """Cut off, the informer retries; what changed meanwhile is still in the server's watch cache, so resuming
    from its resourceVersion brings every missed event, and no listing is needed."""
    batch = client.BatchV1Api(kube)
    batch.create_namespaced_job(namespace, task_job("kept", "mdep-c", "k0"))
    batch.create_namespaced_job(namespace, task_job("doomed", "mdep-c", "k1"))
    deployment = (namespace, "mdep-c")

    async def follow() -> Following:
        async with Following(informer_client(control_plane, relay), namespace) as following:
            relay.cut()
            await asyncio.to_thread(batch.delete_namespaced_job, "doomed", namespace, propagation_policy="Background")
            await asyncio.to_thread(batch.create_namespaced_job, namespace, task_job("newcomer", "mdep-c", "k2"))
            relay.restore()
            await until(lambda: set(following.index.states(deployment)) == {"k0", "k2"}, "the missed changes")
            assert following.calls.lists() == 1
        return following

    following = asyncio.run(follow())
    assert subsequence([("DELETED", "doomed", True), ("ADDED", "newcomer", True)], following.seen), following.seen


def test_a_resource_version_the_server_no_longer_has_is_gone_and_the_informer_lists_again(
    control_plane: ControlPlane, namespace: str, relay: Relay, kube: client.ApiClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Cut off while Jobs change, then the API server restarts: its new watch cache starts at the present, so the
    informer's resourceVersion (from before the changes) is too old. The server answers the resumed watch with an
    ERROR event, 410 Expired; the informer lists again and reports the Job deleted and the one created meanwhile."""
    caplog.set_level("INFO", logger=informer_module.__name__)
    batch = client.BatchV1Api(kube)
    batch.create_namespaced_job(namespace, task_job("kept", "mdep-d", "k0"))
    batch.create_namespaced_job(namespace, task_job("doomed", "mdep-d", "k1"))
    deployment = (namespace, "mdep-d")

    async def follow() -> Following:
        async with Following(informer_client(control_plane, relay), namespace) as following:
            held = following.calls.watches()[-1]
            relay.cut()
            await asyncio.to_thread(batch.delete_namespaced_job, "doomed", namespace, propagation_policy="Background")
            await asyncio.to_thread(batch.create_namespaced_job, namespace, task_job("newcomer", "mdep-d", "k2"))
            # From this thread, which lives as long as the control plane: a child of the control plane dies with the
            # thread that started it (PR_SET_PDEATHSIG), and a worker thread of asyncio ends with the loop.
            control_plane.restart("kube-apiserver")
            expired = await asyncio.to_thread(_watch_error, control_plane, namespace, held)
            assert (expired["code"], expired["reason"]) == (410, "Expired"), expired
            relay.restore()
            await until(lambda: set(following.index.states(deployment)) == {"k0", "k2"}, "the listing after 410",
                        timeout=120)
            assert following.calls.lists() == 2
        return following

    following = asyncio.run(follow())
    # The listing tells what it finds new, then what it no longer finds.
    assert following.seen[-2:] == [("ADDED", "newcomer", True), ("DELETED", "doomed", True)], following.seen
    assert f"the watch of Jobs in {namespace} expired (too old resource version: " in caplog.text


def _watch_error(control_plane: ControlPlane, namespace: str, version: str) -> dict[str, Any]:
    """The first event of a watch from `version`, as the server answers it (an ERROR event's Status)."""
    path = f"/apis/batch/v1/namespaces/{namespace}/jobs"
    query = {"watch": "true", "resourceVersion": version, "labelSelector": informer_module.SELECTOR,
             "timeoutSeconds": "5"}
    answer = wait_for("the API server to answer a watch",
                      lambda: control_plane.api.get(path, query=query, timeout=30), timeout=60)
    event = answer if isinstance(answer, dict) else json.loads(answer.splitlines()[0])
    assert event["type"] == "ERROR", event
    return event["object"]


def test_new_deployments_are_told_on_creation_and_deletion_not_on_status_writes(
    control_plane: ControlPlane, crd: str, namespace: str, kube: client.ApiClient
) -> None:
    custom = client.CustomObjectsApi(kube)
    group, version, plural = "modeldeploy.io", "v1alpha1", "modeldeployments"
    before = {**base(), "metadata": {"name": "before"}}
    custom.create_namespaced_custom_object(group, version, namespace, plural, before)

    async def follow() -> list[tuple[str, str, bool, str | None]]:
        seen: list[tuple[str, str, bool, str | None]] = []
        api = kubernetes.config.new_client_from_config(config_file=str(control_plane.kubeconfig))
        informer = NewDeployments(api, [namespace], lambda kind, body, prepared: seen.append(
            (kind, body["metadata"]["name"], bool(body.get("status")), prepared)), asyncio.get_running_loop(),
            prepare=lambda body: f"prepared {body['metadata']['name']} on {threading.current_thread().name}")
        informer.start()
        try:
            await asyncio.sleep(1)  # its listing, then its watch from now
            created = {**base(), "metadata": {"name": "created"}}
            await asyncio.to_thread(custom.create_namespaced_custom_object, group, version, namespace, plural,
                                    created)
            await until(lambda: seen, "the creation")
            await asyncio.to_thread(custom.patch_namespaced_custom_object_status, group, version, namespace, plural,
                                    "created", {"status": {"phase": "Running"}})
            await asyncio.to_thread(custom.delete_namespaced_custom_object, group, version, namespace, plural,
                                    "created")
            await until(lambda: len(seen) == 2, "the deletion")
        finally:
            informer.stop()
        return seen

    seen = asyncio.run(follow())
    # not the deployment that was there before, nor the status write; the deletion tells the last status; a creation
    # comes with what `prepare` made of it on the watch's own thread
    assert seen == [("ADDED", "created", False, f"prepared created on deployments-{namespace}"),
                    ("DELETED", "created", True, None)], seen
