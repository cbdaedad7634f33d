"""Leader election over a coordination.k8s.io/v1 Lease, so that of several operator replicas one reconciles.

The rules are client-go's leaderelection package (which controller-runtime uses):

* a replica takes the Lease when nobody holds it (it was never created, or its holder released it) or when
  its record has not changed for a whole lease duration, judged by this replica's own clock from the moment
  it first saw that record, so clocks of different machines never need to agree;
* every write carries the resourceVersion last read: of two replicas racing for a free Lease, the API server
  lets one write and answers the other 409 Conflict;
* the leader renews every retry period; when it has not renewed for the renew deadline (shorter than the
  lease duration, so it stops before anyone may take over), or finds another holder, leadership is lost and
  the process must stop at once;
* on a clean shutdown the leader releases the Lease (no holder, a one-second duration): the next replica
  takes it at its next try instead of a lease duration later.

docs/leader-election.md tells what this guarantees and what it does not.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

logger = logging.getLogger(__name__)

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# What a round against an unreachable, slow or refusing API server raises (a timeout is an OSError).
API_ERRORS = (ApiException, urllib3.exceptions.HTTPError, OSError)


@dataclass(frozen=True)
class Settings:
    namespace: str
    name: str
    identity: str
    lease_seconds: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_seconds:
            raise ValueError("the retry period must be shorter than the renew deadline, and that shorter than the "
                             "lease duration")


class Conflict(Exception):
    """The API server refused a write: the Lease changed since it was read (409), or was created meanwhile."""


class Leases:
    """The Lease calls, on the API client's own connection; objects as plain JSON dicts. Each call is bounded by
    `timeout` seconds, all of it (connecting, sending, the answer)."""

    def __init__(self, api: client.ApiClient):
        self.coordination = client.CoordinationV1Api(api)

    def get(self, namespace: str, name: str, timeout: float) -> dict[str, Any] | None:
        try:
            response = self.coordination.read_namespaced_lease(name, namespace, _preload_content=False,
                                                               _request_timeout=timeout)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return _json(response)

    def create(self, namespace: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        return self._write(self.coordination.create_namespaced_lease, timeout, namespace, body)

    def replace(self, namespace: str, name: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        return self._write(self.coordination.replace_namespaced_lease, timeout, name, namespace, body)

    @staticmethod
    def _write(call: Callable[..., Any], timeout: float, *args: Any) -> dict[str, Any]:
        try:
            return _json(call(*args, _preload_content=False, _request_timeout=timeout))
        except ApiException as error:
            if error.status == 409:
                raise Conflict(error.reason) from None
            raise


def _json(response: Any) -> dict[str, Any]:
    try:
        return json.loads(response.read())
    finally:
        response.release_conn()


def _micro_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Elector:
    """One replica's view of the Lease: `try_acquire_or_renew` and `release` are single rounds against the API
    server; `acquire` and `renew_until_lost` are the loops around them."""

    def __init__(self, settings: Settings, leases: Leases, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.leases = leases
        self.clock = clock
        self.holder: str | None = None  # as last read
        self._observed_version: str | None = None
        self._observed_at = 0.0

    @property
    def lease(self) -> str:
        return f"{self.settings.namespace}/{self.settings.name}"

    def try_acquire_or_renew(self, deadline: float | None = None) -> bool:
        """One round: True when this replica holds the Lease afterwards. A Lease another holds and renews, or a
        write that lost a race (Conflict), is False; other errors (API_ERRORS) propagate. Each request waits at
        most a retry period, and none goes on past `deadline` (a `clock` time): TimeoutError."""
        s = self.settings
        timeout = functools.partial(self._timeout, deadline)
        now = _now()
        current = self.leases.get(s.namespace, s.name, timeout())
        if current is None:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": s.name, "namespace": s.namespace},
                    "spec": self._record(now, acquired=now, transitions=0)}
            try:
                self._observe(self.leases.create(s.namespace, body, timeout()))
            except Conflict:
                return False
            logger.info("Leader election: created the Lease %s, held by %s", self.lease, s.identity)
            return True
        self._observe(current)
        spec = current.get("spec") or {}
        holder = spec.get("holderIdentity") or None
        if holder is not None and holder != s.identity and self.clock() < self._observed_at + s.lease_seconds:
            return False
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == s.identity:
            record = self._record(now, acquired=spec.get("acquireTime"), transitions=transitions)
        else:
            record = self._record(now, acquired=now, transitions=transitions + 1)
        body = {**current, "spec": record}
        try:
            self._observe(self.leases.replace(s.namespace, s.name, body, timeout()))
        except Conflict:
            return False
        if holder != s.identity:
            logger.info("Leader election: acquired the Lease %s as %s (previous holder: %s)", self.lease, s.identity,
                        holder or "none")
        return True

    def release(self) -> bool:
        """Gives up the Lease if this replica holds it: no holder, a one-second duration, as client-go's release
        writes. False when it was not held (or changed meanwhile)."""
        s = self.settings
        current = self.leases.get(s.namespace, s.name, s.retry_period)
        if current is None or (current.get("spec") or {}).get("holderIdentity") != s.identity:
            return False
        now = _now()
        spec = current["spec"]
        record = {"leaseDurationSeconds": 1, "acquireTime": _micro_time(now), "renewTime": _micro_time(now),
                  "leaseTransitions": int(spec.get("leaseTransitions") or 0)}
        try:
            self._observe(self.leases.replace(s.namespace, s.name, {**current, "spec": record}, s.retry_period))
        except Conflict:
            return False
        logger.info("Leader election: released the Lease %s", self.lease)
        return True

    def acquire(self, stop: threading.Event) -> bool:
        """Tries every retry period until this replica holds the Lease (True) or `stop` is set (False)."""
        waiting_for: str | None = ""
        while not stop.is_set():
            try:
                if self.try_acquire_or_renew():
                    return True
                if self.holder != waiting_for:
                    waiting_for = self.holder
                    logger.info("Leader election: the Lease %s is held by %s; %s waits", self.lease, self.holder,
                                self.settings.identity)
            except API_ERRORS as error:  # the API server unreachable or refusing: try again
                logger.warning("Leader election: could not read or write the Lease %s: %s", self.lease,
                               _reason(error))
            stop.wait(self.settings.retry_period)
        return False

    def renew_until_lost(self, stop: threading.Event) -> bool:
        """Renews every retry period. True as soon as leadership is lost: another holder is found, or no renewal
        succeeded within the renew deadline (counted from the start of the last successful request, so that this
        replica gives up before any other may take over); False once `stop` is set."""
        last_renewed = self.clock()
        while not stop.wait(self.settings.retry_period):
            started = self.clock()
            try:
                if self.try_acquire_or_renew(deadline=last_renewed + self.settings.renew_deadline):
                    last_renewed = started
                    continue
                if self.holder not in (None, self.settings.identity):
                    logger.error("Leader election: the Lease %s is now held by %s", self.lease, self.holder)
                    return True
            except API_ERRORS as error:
                logger.warning("Leader election: could not renew the Lease %s: %s", self.lease, _reason(error))
            if self.clock() - last_renewed >= self.settings.renew_deadline:
                logger.error("Leader election: the Lease %s was not renewed for %.0f s", self.lease,
                             self.settings.renew_deadline)
                return True
        return False

    def _timeout(self, deadline: float | None) -> float:
        if deadline is None:
            return self.settings.retry_period
        left = deadline - self.clock()
        if left <= 0:
            raise TimeoutError("the renew deadline has passed")
        return min(self.settings.retry_period, left)

    def _record(self, now: dt.datetime, *, acquired: dt.datetime | str | None, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.settings.identity,
            "leaseDurationSeconds": max(1, round(self.settings.lease_seconds)),
            "acquireTime": _micro_time(acquired) if isinstance(acquired, dt.datetime) else acquired,
            "renewTime": _micro_time(now),
            "leaseTransitions": transitions,
        }

    def _observe(self, lease: dict[str, Any]) -> None:
        version = lease["metadata"].get("resourceVersion")
        if version != self._observed_version:
            self._observed_version = version
            self._observed_at = self.clock()
        self.holder = (lease.get("spec") or {}).get("holderIdentity") or None


def _reason(error: BaseException) -> str:
    if isinstance(error, ApiException):
        return f"{error.status} {error.reason}"
    return str(error) or type(error).__name__


class Renewal:
    """The leader's renewal loop on a thread of its own: `on_lost` is called (from that thread) when leadership
    is lost; `stop()` ends the loop without calling it."""

    def __init__(self, elector: Elector, on_lost: Callable[[], None]):
        self._elector = elector
        self._on_lost = on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        if self._elector.renew_until_lost(self._stop):
            self._on_lost()


def identity(environ: dict[str, str] | None = None) -> str:
    """POD_NAME (the Downward API) or else the host name, and a suffix unique to this process: a replica
    restarted in the same pod is a new candidate, never mistaken for the holder it was before."""
    environ = os.environ if environ is None else environ
    return f"{environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:12]}"


def default_namespace(environ: dict[str, str] | None = None, account_file: Path = SERVICE_ACCOUNT_NAMESPACE
                      ) -> str | None:
    """POD_NAMESPACE, else the namespace of the in-cluster ServiceAccount; None when neither is there."""
    environ = os.environ if environ is None else environ
    if environ.get("POD_NAMESPACE"):
        return environ["POD_NAMESPACE"]
    try:
        return account_file.read_text().strip() or None
    except OSError:
        return None


class FollowerHealth:
    """The liveness endpoint while this replica waits for the Lease (kopf serves it once the replica leads):
    200 and what the replica waits for, on the same address and path kopf uses afterwards."""

    def __init__(self, url: str, elector: Elector):
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.port is None:
            raise ValueError(f"--liveness: {url!r} is not an http://HOST:PORT/PATH address")
        path = parts.path or "/"

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != path:
                    self.send_error(404)
                    return
                body = json.dumps({"leaderElection": {"leader": False, "lease": elector.lease,
                                                      "holder": elector.holder}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # a probe every few seconds is not worth a log line

        self._server = ThreadingHTTPServer((parts.hostname or "0.0.0.0", parts.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="follower-health", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
