"""The Kubernetes API edge: the few calls the operator makes, with 404/409 meaning done.

The `kubernetes` client blocks, so every call runs on a thread of the API's own, as many as
the client keeps connections: the event loop never waits on a socket, and no connection is
dropped for want of room in the pool. Urgent calls (a new deployment's first Jobs) have threads
of their own: they never queue behind the busy deployments' Jobs, which come eight at a time.
Among them each deployment's very first Job goes before the others' second and third: in a burst
of creations, a new deployment's first Job waits for no earlier one's other Jobs.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import itertools
import json
import queue
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from modeldeploy.spec import GROUP, PLURAL, VERSION

CONNECTIONS = 16
URGENT_CONNECTIONS = 8
T = TypeVar("T")


def connect() -> client.ApiClient:
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = CONNECTIONS + URGENT_CONNECTIONS
    return client.ApiClient(configuration)


class Lane:
    """Threads that take calls by rank, lowest first, then in the order they came."""

    def __init__(self, workers: int, name: str):
        self.workers = workers
        self.name = name
        self._calls: queue.PriorityQueue[tuple[int, int, Callable[[], Any], Future[Any]]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._threads: list[threading.Thread] = []

    def submit(self, function: Callable[[], T], rank: int) -> Future[T]:
        if not self._threads:
            self._threads = [threading.Thread(target=self._work, name=f"{self.name}_{index}", daemon=True)
                             for index in range(self.workers)]
            for thread in self._threads:
                thread.start()
        future: Future[T] = Future()
        self._calls.put((rank, next(self._order), function, future))
        return future

    def _work(self) -> None:
        while True:
            _, _, function, future = self._calls.get()
            if not future.set_running_or_notify_cancel():
                continue  # its caller gave up waiting
            try:
                future.set_result(function())
            except BaseException as error:  # noqa: BLE001 - the caller's to handle, as ThreadPoolExecutor's
                future.set_exception(error)


FIRST, URGENT = 0, 1  # ranks on the urgent lane: a deployment's first Job, its other first Jobs


class Api:
    def __init__(self, api: client.ApiClient):
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.threads = ThreadPoolExecutor(max_workers=CONNECTIONS, thread_name_prefix="kube-api")
        self.urgent = Lane(URGENT_CONNECTIONS, "kube-api-urgent")

    async def _call(self, function: Callable[..., T], *args: Any, rank: int | None = None, **kwargs: Any) -> T:
        """The call on an API thread: on the urgent lane, by its rank there, if it has one."""
        call = functools.partial(function, *args, **kwargs)
        if rank is None:
            return await asyncio.get_running_loop().run_in_executor(self.threads, call)
        return await asyncio.wrap_future(self.urgent.submit(call, rank))

    async def _send(self, function: Callable[..., Any], *args: Any, rank: int | None = None, **kwargs: Any) -> None:
        """A call whose answer the operator does not use: left undecoded, as decoding it costs more than the call."""

        def send() -> None:
            response = function(*args, _preload_content=False, **kwargs)
            response.read()
            response.release_conn()

        await self._call(send, rank=rank)

    async def create_job(self, manifest: Mapping[str, Any], rank: int | None = None) -> bool:
        """Create the Job, on the urgent lane with that rank if given; False when it exists already (a
        deterministic name: same task, same Job)."""
        try:
            await self._send(self.batch.create_namespaced_job, manifest["metadata"]["namespace"], manifest,
                             rank=rank)
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    async def delete_job(self, namespace: str, name: str) -> None:
        try:
            await self._send(self.batch.delete_namespaced_job, name, namespace, propagation_policy="Background")
        except ApiException as error:
            if error.status != 404:
                raise

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        await self._send(self.custom.patch_namespaced_custom_object_status, GROUP, VERSION, namespace, PLURAL, name,
                         {"status": status})

    async def secret(self, namespace: str, name: str) -> dict[str, str]:
        """The Secret's values. Its answer is read undecoded: the client logs every answer it decodes, at DEBUG."""

        def read() -> bytes:
            response = self.core.read_namespaced_secret(name, namespace, _preload_content=False)
            try:
                return response.read()
            finally:
                response.release_conn()

        data = json.loads(await self._call(read)).get("data") or {}
        return {key: base64.b64decode(value).decode() for key, value in data.items()}
