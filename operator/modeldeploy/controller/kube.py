"""The Kubernetes API edge: the few calls the operator makes, with 404/409 meaning done.

The `kubernetes` client blocks, so every call runs on a thread of the API's own, as many as
the client keeps connections: the event loop never waits on a socket, and no connection is
dropped for want of room in the pool. Urgent calls (a new deployment's first Jobs) have threads
of their own: they never queue behind the busy deployments' Jobs, which come eight at a time.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from modeldeploy.spec import GROUP, PLURAL, VERSION

CONNECTIONS = 16
URGENT_CONNECTIONS = 4
T = TypeVar("T")


def connect() -> client.ApiClient:
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = CONNECTIONS + URGENT_CONNECTIONS
    return client.ApiClient(configuration)


class Api:
    def __init__(self, api: client.ApiClient):
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.threads = ThreadPoolExecutor(max_workers=CONNECTIONS, thread_name_prefix="kube-api")
        self.urgent = ThreadPoolExecutor(max_workers=URGENT_CONNECTIONS, thread_name_prefix="kube-api-urgent")

    async def _call(self, function: Callable[..., T], *args: Any, urgent: bool = False, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.urgent if urgent else self.threads,
                                                                functools.partial(function, *args, **kwargs))

    async def _send(self, function: Callable[..., Any], *args: Any, urgent: bool = False, **kwargs: Any) -> None:
        """A call whose answer the operator does not use: left undecoded, as decoding it costs more than the call."""

        def send() -> None:
            response = function(*args, _preload_content=False, **kwargs)
            response.read()
            response.release_conn()

        await self._call(send, urgent=urgent)

    async def create_job(self, manifest: Mapping[str, Any], urgent: bool = False) -> bool:
        """Create the Job; False when it exists already (a deterministic name: same task, same Job)."""
        try:
            await self._send(self.batch.create_namespaced_job, manifest["metadata"]["namespace"], manifest,
                             urgent=urgent)
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
