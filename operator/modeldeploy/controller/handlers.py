"""kopf handlers: thin glue between the API, the store and the pure reconcile.

One daemon per ModelDeployment is the only status writer. A new deployment's first pass runs as
soon as the operator's own watch (`informer.NewDeployments`) sees its creation, before kopf gets to
it, its spec validated and planned on that watch's thread already; the daemon takes over from
there. The daemon reconciles, then sleeps until it is woken — by a Job of its deployment
finishing or going (the informer tells), by a new generation of its spec, by a slot freeing up
while it waits for one — or the resync period passes, so reacting to a finished Job takes
moments, not a timer period. A pass reads and decides in its turn, at most RECONCILE_WORKERS at
once, deployments with no Job yet first; it creates its Jobs after the turn, as its slots are
reserved by then, and its status is written when due (below).

Slots (maxJobs across every deployment, `slots.Slots`) go first to the waiting deployments with no
Job running, then to the busy ones: a new deployment, or one short of slots, joins a queue, and
each free slot wakes the deployment it goes to unless that one is about to decide anyway.

A pass's status is written at once when the phase, a condition or the generation changes, else at
most every STATUS_SECONDS: a stage's progress (its Job created, started, done) is coalesced into
fewer writes, each of which kopf would also take in again as a watch event.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import datetime
import functools
import gc
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from modeldeploy import backends
from modeldeploy.controller import config as operator_config
from modeldeploy.controller import metrics
from modeldeploy.controller.informer import (
    JobIndex,
    JobInformer,
    NewDeployments,
    OwnedJob,
    OwnedPod,
    PodIndex,
    PodInformer,
)
from modeldeploy.controller.jobs import (
    Owner,
    job_manifest,
    job_name,
)
from modeldeploy.controller.kube import FIRST, URGENT, Api, connect
from modeldeploy.controller.observe import STORE_CONNECTIONS, StoreCache
from modeldeploy.controller.reconcile import (
    Decision,
    JobState,
    Observed,
    decide,
    invalid,
    store_unavailable,
    timestamp,
)
from modeldeploy.controller.slots import Slots
from modeldeploy.manifest import task_document_name
from modeldeploy.planner import Plan, Task, plan
from modeldeploy.policy import violations
from modeldeploy.spec import API_VERSION, GROUP, KIND, PLURAL, VERSION, ModelDeployment, ModelDeploymentSpec, Target
from modeldeploy.store import Store, access_problem, load_s3_model, open_store
from modeldeploy.validation import FieldError, SpecError, load_resource, semantic_errors

REMOTE_SCHEMES = ("s3", "http", "https")
RECONCILE_WORKERS = 8  # passes wait on the store: more at once only queue there, and slow the loop
STORE_SECONDS = 60
MAX_BACKOFF_SECONDS = 300
STATUS_SECONDS = 5.0

Deployment = tuple[str, str]  # (namespace, name)

logger = logging.getLogger(__name__)


class SpecDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's, without deep-copying the status first only to drop it: kopf builds this on every event, and the
    status, with a row per stage and per cell, is most of the object."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        without_status = kopf.Body({key: value for key, value in body.items() if key != "status"})
        return super().build(body=without_status, extra_fields=extra_fields)


@dataclass
class Status:
    """A deployment's status as last decided, and the one last written (the same object once written)."""

    decided: dict[str, Any]
    written: dict[str, Any] | None = None
    written_at: float = -math.inf
    not_before: float = 0.0  # after a failed write, when to try again

    def due(self) -> float:
        """The monotonic time by which the decided status is to be written; infinity once it is."""
        if self.written is self.decided:
            return math.inf
        if self.written is None or _summary(self.written) != _summary(self.decided):
            return self.not_before
        return max(self.not_before, self.written_at + STATUS_SECONDS)


def _summary(status: Mapping[str, Any]) -> tuple[Any, ...]:
    """What of a status is written without delay when it changes."""
    return (status.get("observedGeneration"), status.get("phase"),
            tuple((c.get("type"), c.get("status"), c.get("reason")) for c in status.get("conditions") or ()))


class Turns:
    """At most `limit` passes reading and deciding at once, as controller-runtime's MaxConcurrentReconciles, and
    deployments with no Job yet first: a new deployment is planned while busy ones wait for their next pass, and
    passes that wait cost the event loop nothing, so kopf takes in new deployments sooner."""

    def __init__(self, limit: int):
        self.limit = limit
        self.running = 0
        self.queues: tuple[deque[asyncio.Future[None]], deque[asyncio.Future[None]]] = (deque(), deque())

    @contextlib.asynccontextmanager
    async def turn(self, first: bool) -> AsyncIterator[None]:
        if self.running < self.limit and not any(self.queues):
            self.running += 1
        else:
            queue = self.queues[0 if first else 1]
            waiter = asyncio.get_running_loop().create_future()
            queue.append(waiter)
            try:
                await waiter  # the turn is handed over: `running` counts it still
            except asyncio.CancelledError:
                if waiter.cancelled():
                    queue.remove(waiter)
                else:
                    self._next()
                raise
        try:
            yield
        finally:
            self._next()

    def _next(self) -> None:
        for queue in self.queues:
            if queue:
                queue.popleft().set_result(None)
                return
        self.running -= 1


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = SpecDiffBaseStorage(prefix=GROUP)
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 310
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 30
    settings.posting.reporting_component = "modeldeploy-operator"
    # Events are what reconcile decides to tell (StageStarted, StageFailed, ...); routine log lines stay in the log.
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = 16
    memo.config = operator_config.load()
    memo.api = Api(connect())
    memo.jobs = JobIndex()
    # The namespaces `modeldeploy operator` runs kopf with; run by the kopf CLI, those of the configuration.
    namespaces = memo.namespaces if "namespaces" in memo else memo.config.namespaces
    if namespaces:
        # Namespaces and CRDs are cluster-wide: an operator of some namespaces has no business reading them (kopf
        # would only fall back, warning, where RBAC refuses them); it finds its resource by discovery, at start.
        settings.scanning.disabled = True
    memo.informer = JobInformer(connect(), namespaces, memo.jobs, functools.partial(_job_changed, memo),
                                asyncio.get_running_loop())
    memo.informer.start()
    memo.pods = PodIndex()
    memo.pod_informer = PodInformer(connect(), namespaces, memo.pods, functools.partial(_pod_changed, memo),
                                    asyncio.get_running_loop())
    memo.pod_informer.start()
    memo.stores = StoreCache()
    _preload()
    memo.wakeups = {}
    memo.plans = {}
    # Validation is CPU-bound: on threads of their own, specs would only share the GIL and all finish late.
    memo.planning = ThreadPoolExecutor(max_workers=1, thread_name_prefix="planning")
    memo.open_stores = {}
    memo.phases = {}
    memo.statuses = {}  # each deployment's Status: newer than its body until the watch brings it
    memo.turns = Turns(RECONCILE_WORKERS)
    memo.slots = Slots(memo.jobs, memo.config.max_jobs)
    memo.deciding = set()  # deployments whose pass has yet to take its slots: no slot needs to wake them
    memo.claimed = {}  # task document URI -> the deployment whose Job computes that task in that store
    memo.deferred = {}  # task document URI -> deployments waiting for that Job's result
    memo.passing = {}  # a lock per deployment: its daemon's passes and the first one never overlap
    memo.first_passes = {}  # uids of the deployments whose first pass ran before their daemon, the latest kept
    memo.untold = {}  # the Events of first passes, which the daemon posts (kopf posts only from its own tasks)
    memo.new_deployments = NewDeployments(connect(), namespaces, functools.partial(_deployment_seen, memo),
                                          asyncio.get_running_loop(), functools.partial(_new_plan, memo.config))
    memo.new_deployments.start()
    metrics.serve(memo.config.metrics_port)
    # What start-up loaded (kopf, the clients' API models, botocore's S3 model) lives as long as the process:
    # frozen, full collections no longer rescan it (at 200 deployments: 1.1 s of them in a run, not 2.6 s).
    gc.collect()
    gc.freeze()


def _preload() -> None:
    """What the first store and the first spec would otherwise load on first use: botocore's S3 model, and the
    backends' entry points, which the first validation would load on the watch's thread while a burst's next
    deployments waited behind it, so long that kopf's daemons got to them first."""
    load_s3_model()
    backends.registry()


@kopf.on.cleanup()
async def stop_informer(memo: kopf.Memo, **_: Any) -> None:
    memo.informer.stop()
    memo.pod_informer.stop()
    memo.new_deployments.stop()


FIRST_PASSES_KEPT = 10_000  # enough to tell a watch's replay of a creation from a new one


def _new_plan(config: operator_config.OperatorConfig, body: Mapping[str, Any]
              ) -> tuple[ModelDeploymentSpec, Plan] | SpecError | None:
    """A created deployment's validated spec and plan, made on the thread of the watch that saw it (the body is
    that thread's own, just decoded); None if that failed, and the first pass plans it itself."""
    try:
        return _validated_plan(body, config)
    except Exception:
        logger.exception("planning a new ModelDeployment on the watch's thread failed; its first pass plans it")
        return None


def _deployment_seen(memo: kopf.Memo, kind: str, body: dict[str, Any],
                     planned: tuple[ModelDeploymentSpec, Plan] | SpecError | None) -> None:
    """A ModelDeployment was created: its first pass runs now, not when kopf gets to its daemon (which takes over
    from there), with its plan if the watch made it; or one was deleted: what a first pass kept of it goes, unless
    its daemon runs (it cleans up)."""
    metadata = body["metadata"]
    deployment, uid = (metadata["namespace"], metadata["name"]), metadata["uid"]
    if kind == "DELETED":
        if deployment not in memo.wakeups:
            _forget(memo, deployment, uid)
        return
    if uid in memo.first_passes or deployment in memo.wakeups or not memo.informer.listed.is_set():
        return
    memo.first_passes[uid] = None
    if len(memo.first_passes) > FIRST_PASSES_KEPT:
        del memo.first_passes[next(iter(memo.first_passes))]
    if planned is not None:
        memo.plans[(uid, metadata.get("generation"))] = planned
    memo.slots.join(deployment)  # owed a slot from its creation on
    memo.deciding.add(deployment)
    asyncio.ensure_future(_first_pass(memo, deployment, body))


class _DeploymentLogger(logging.LoggerAdapter[logging.Logger]):
    """This module's logger, each message naming the deployment (a first pass has no kopf logger of its own)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['namespace']}/{self.extra['name']}] {msg}", kwargs


async def _first_pass(memo: kopf.Memo, deployment: Deployment, body: dict[str, Any]) -> None:
    logger = _DeploymentLogger(logging.getLogger(__name__), {"namespace": deployment[0], "name": deployment[1]})
    try:
        decided = await _pass(memo, deployment, body, logger, tell=False)
        metrics.RECONCILES.labels("store-unavailable" if decided.back_off else "ok").inc()
    except Exception:  # its daemon's passes go on from the facts
        memo.slots.leave(deployment)
        metrics.RECONCILES.labels("error").inc()
        logger.exception("the first pass failed; the next one retries")


async def _pass(memo: kopf.Memo, deployment: Deployment, body: Mapping[str, Any], logger: Any, tell: bool = True
                ) -> Decided:
    """One pass: read and decide in a turn, then carry it out. Never two at once for one deployment."""
    lock = memo.passing.setdefault(deployment, asyncio.Lock())
    async with lock:
        memo.deciding.add(deployment)
        try:
            async with memo.turns.turn(first=not _jobs(memo, deployment)):
                decided = await reconcile(body, memo)
            await carry_out(decided, body, memo, logger, tell)
        finally:
            memo.deciding.discard(deployment)
    return decided


def _forget(memo: kopf.Memo, deployment: Deployment, uid: str) -> None:
    """What the operator keeps of a deployment that is gone."""
    memo.passing.pop(deployment, None)
    memo.untold.pop(deployment, None)
    memo.deciding.discard(deployment)
    memo.slots.forget(deployment)
    memo.statuses.pop(deployment, None)
    for task_uri in [uri for uri, claimer in memo.claimed.items() if claimer == deployment]:
        del memo.claimed[task_uri]
    for key in [key for key in memo.plans if key[0] == uid]:
        del memo.plans[key]
    metrics.phase_changed(memo.phases.pop(deployment, None), None)


def _pod_changed(memo: kopf.Memo, kind: str, pod: OwnedPod) -> None:
    """A pod of one of our Jobs started or stopped waiting for a node: its stage's status says so."""
    _wake(memo, pod.deployment)


def _job_changed(memo: kopf.Memo, kind: str, job: OwnedJob) -> None:
    """One of our Jobs was created, changed or deleted: one that ends (or goes) frees a slot and may unblock stages."""
    deployment, state = job.deployment, job.state
    memo.slots.launched(deployment, state.key)
    memo.slots.recount(deployment)
    if job.task_uri:
        memo.stores.launching(job.task_uri)
    if job.task_uri and state.active and kind != "DELETED":
        memo.claimed.setdefault(job.task_uri, deployment)
        return
    if job.task_uri and memo.claimed.get(job.task_uri) == deployment:
        del memo.claimed[job.task_uri]
    for waiting in memo.deferred.pop(job.task_uri, ()):
        _wake(memo, waiting)
    _wake(memo, deployment)
    _wake_next_waiting(memo)


def _new_generation(namespace: str, name: str, meta: kopf.Meta, memo: kopf.Memo, **_: Any) -> bool:
    """A spec whose generation the deployment's status was not written for (yet)."""
    status = memo.statuses.get((namespace, name))
    return status is not None and status.decided.get("observedGeneration") != meta.get("generation")


@kopf.on.event(GROUP, VERSION, PLURAL, when=_new_generation)
async def spec_changed(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    _wake(memo, (namespace, name))


def _deletes_artifacts(spec: kopf.Spec, **_: Any) -> bool:
    return (spec.get("artifacts") or {}).get("onDelete") == "Delete"


@kopf.index(GROUP, VERSION, PLURAL)
def deployments_by_store(body: kopf.Body, **_: Any) -> dict[str | None, dict[str, Any]]:
    """Every ModelDeployment's metadata and spec by its artifacts.uri (None: the default store); kopf fills it
    before any handler runs, so a deletion knows the others that may share its tasks. Not the status: with a row
    per stage and per cell it is most of the object, and the index would keep one of every deployment."""
    metadata = body["metadata"]
    kept = {key: metadata.get(key) for key in ("uid", "name", "namespace", "generation", "deletionTimestamp")}
    return {(body["spec"].get("artifacts") or {}).get("uri"): {"metadata": kept, "spec": body["spec"]}}


@kopf.on.delete(GROUP, VERSION, PLURAL, when=_deletes_artifacts, retries=3, backoff=10)
async def delete_artifacts(body: kopf.Body, namespace: str, memo: kopf.Memo, logger: Any,
                           deployments_by_store: kopf.Index[str | None, dict[str, Any]], **_: Any) -> None:
    """artifacts.onDelete: Delete removes the results of this deployment's tasks that no other deployment of the
    same store plans (convert, prepare and the reference are shared by every deployment of one model and data)."""
    try:
        spec = _validated(body, memo.config)
    except SpecError:
        return  # an invalid spec never ran a task
    store = await _store(spec, namespace, memo)
    uid = body["metadata"]["uid"]
    others = [other for other in deployments_by_store.get(spec.artifacts.uri if spec.artifacts else None, [])
              if other["metadata"]["uid"] != uid and not other["metadata"].get("deletionTimestamp")]
    kept = await _keys_planned_in(store, others, memo)
    removed, tasks = 0, [task for task in plan(spec).tasks if task.key not in kept]
    for task in tasks:
        removed += await memo.stores.write(store.delete_prefix, f"tasks/{task.key}")
    logger.info(f"deleted {removed} artifact objects of {len(tasks)} tasks from {store.uri}; kept "
                f"{len(plan(spec).tasks) - len(tasks)} tasks that other ModelDeployments plan")


async def _keys_planned_in(store: Store, deployments: list[dict[str, Any]], memo: kopf.Memo) -> set[str]:
    """The task keys the deployments plan in that store (the same identity: URI, endpoint and credentials); those
    of a deployment whose store cannot be opened now are kept too, as it may be the same."""
    keys: set[str] = set()
    for other in deployments:
        planned = await _planned(dict(other["metadata"]), other, memo)
        if isinstance(planned, SpecError):
            continue
        other_spec, other_plan = planned
        try:
            same = (await _store(other_spec, other["metadata"]["namespace"], memo)).identity == store.identity
        except Exception:  # noqa: BLE001 - e.g. its Secret is gone: deleting less is the safe side
            same = True
        if same:
            keys.update(task.key for task in other_plan.tasks)
    return keys


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=10)
async def pipeline(
    name: str, namespace: str, body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, logger: Any, **_: Any,
) -> None:
    deployment = (namespace, name)
    wakeup = memo.wakeups.setdefault(deployment, asyncio.Event())
    memo.slots.join(deployment)  # owed a slot from the start: deployments that are busy already wait for it
    memo.deciding.add(deployment)
    try:
        while not memo.informer.listed.is_set() and not stopped:  # a Job not listed yet would be created again
            await _sleep(memo.informer.listed, stopped, memo.config.resync_seconds)
        failed_passes = 0
        next_pass = 0.0
        while not stopped:
            if wakeup.is_set() or time.monotonic() >= next_pass:
                wakeup.clear()
                try:
                    decided = await _pass(memo, deployment, body, logger)
                    failed_passes = failed_passes + 1 if decided.back_off else 0
                    metrics.RECONCILES.labels("store-unavailable" if decided.back_off else "ok").inc()
                except Exception:  # the loop keeps going: the next pass starts from the facts again
                    memo.slots.leave(deployment)  # a pass that failed keeps no place in the queue for slots
                    failed_passes += 1
                    metrics.RECONCILES.labels("error").inc()
                    logger.exception("reconcile failed; retrying")
                next_pass = time.monotonic() + _retry_seconds(memo.config.resync_seconds, failed_passes)
            _tell(memo.untold.pop(deployment, ()), body)
            status = memo.statuses.get(deployment)
            if status is not None and status.due() <= time.monotonic():
                try:
                    await _write_status(memo, deployment, status)
                except Exception:
                    failed_passes += 1
                    status.not_before = next_pass = time.monotonic() + _retry_seconds(memo.config.resync_seconds,
                                                                                     failed_passes)
                    logger.exception("writing the status failed; retrying")
            due = min(next_pass, status.due() if status is not None else math.inf)
            await _sleep(wakeup, stopped, max(0.0, due - time.monotonic()))
    finally:
        memo.wakeups.pop(deployment, None)
        _forget(memo, deployment, body["metadata"]["uid"])


@dataclass(frozen=True)
class Decided:
    """A pass's decision, its slots reserved, and what carrying it out needs."""

    meta: Mapping[str, Any]
    previous: Mapping[str, Any]
    decision: Decision
    spec: ModelDeploymentSpec | None = None
    store: Store | None = None
    back_off: bool = False  # the pass could not use the store: the next one waits longer each time
    first: bool = False  # the deployment had no Job: its first ones are urgent


class StoreUnavailable(Exception):
    """The deployment's artifact store cannot be used: its Secret, credentials, bucket or endpoint."""


async def reconcile(body: kopf.Body, memo: kopf.Memo) -> Decided:
    """Read and decide, reserving the slots of the Jobs to create: the part of a pass that takes a turn."""
    meta = dict(body["metadata"])  # one moment's metadata: the live body changes under the awaits below
    deployment = (meta["namespace"], meta["name"])
    status = memo.statuses.get(deployment)
    previous = status.decided if status is not None else dict(body.get("status") or {})
    now = timestamp(datetime.datetime.now(datetime.UTC))
    planned = await _planned(meta, body, memo)
    if isinstance(planned, SpecError):
        memo.slots.leave(deployment)
        reason = "PolicyDenied" if isinstance(planned, PolicyDenied) else "InvalidSpec"
        return Decided(meta, previous, invalid(meta, planned.errors, now, previous, reason))
    spec, pipeline_plan = planned
    try:
        store = await _store(spec, deployment[0], memo)
        try:
            observed = await memo.stores.observe(store, pipeline_plan, _jobs(memo, deployment))
        except Exception as error:
            if (problem := access_problem(store.uri, error)) is None:
                raise
            raise StoreUnavailable(problem) from None
    except StoreUnavailable as error:
        memo.slots.leave(deployment)
        return Decided(meta, previous, store_unavailable(meta, str(error), now, previous), back_off=True)
    return Decided(meta, previous, _decide_within_slots(meta, pipeline_plan, observed, store, memo, now, previous),
                   spec, store, first=not observed.jobs)


async def carry_out(decided: Decided, body: Mapping[str, Any], memo: kopf.Memo, logger: Any, tell: bool = True
                    ) -> None:
    """Create and delete the Jobs, tell the Events (or keep them for the daemon to), and keep the status decided
    (the daemon writes it when it is due). After the turn: the next pass reads and decides while this one waits
    on the API."""
    meta, decision = decided.meta, decided.decision
    deployment = (meta["namespace"], meta["name"])
    if decided.spec is not None and decided.store is not None:
        await _start(decision, decided.spec, decided.store, meta, memo, logger, urgent=decided.first)
    await asyncio.gather(*(memo.api.delete_job(deployment[0], job) for job in decision.delete))
    status = memo.statuses.get(deployment)
    if status is None:
        status = memo.statuses[deployment] = Status(decision.status, decided.previous if decided.previous else None)
    if _changed(status.decided, decision.status):
        status.decided = decision.status
    if tell:
        _tell(decision.events, body)
    else:
        memo.untold.setdefault(deployment, []).extend(decision.events)
    _count_finished(decision)
    metrics.phase_changed(memo.phases.get(deployment), decision.status["phase"])
    memo.phases[deployment] = decision.status["phase"]


async def _write_status(memo: kopf.Memo, deployment: Deployment, status: Status) -> None:
    decided = status.decided
    if status.written is None or _changed(status.written, decided):
        await memo.api.patch_status(*deployment, decided)
    status.written, status.written_at = decided, time.monotonic()


async def _planned(meta: Mapping[str, Any], body: Mapping[str, Any], memo: kopf.Memo
                   ) -> tuple[ModelDeploymentSpec, Plan] | SpecError:
    """The validated spec and its plan, computed once per generation of the spec, off the event loop.

    Called before any await of the pass, so the spec copied here is the one of `meta`'s generation.
    """
    key = (meta["uid"], meta.get("generation"))
    if key not in memo.plans:
        snapshot = {"metadata": meta, "spec": copy.deepcopy(dict(body["spec"]))}
        memo.plans[key] = await asyncio.get_running_loop().run_in_executor(memo.planning, _validated_plan, snapshot,
                                                                            memo.config)
    return memo.plans[key]


def _validated_plan(
    body: Mapping[str, Any], config: operator_config.OperatorConfig
) -> tuple[ModelDeploymentSpec, Plan] | SpecError:
    try:
        spec = _validated(body, config)
    except SpecError as error:
        return error
    return spec, plan(spec)


class PolicyDenied(SpecError):
    """A spec the installation's policy refuses (docs/policy.md)."""


def _validated(body: Mapping[str, Any], config: operator_config.OperatorConfig) -> ModelDeploymentSpec:
    """The spec, with the checks the API server cannot make: the typed model, those that need Python, those that
    need a cluster, and the installation's policy (PolicyDenied).

    The CRD's own rules (CEL, list uniqueness) held when the API server admitted the object, and evaluating them
    again would cost more than everything else a new deployment needs; a spec that fails a check here gets the
    whole list of its problems, those rules' included, as `modeldeploy validate` reports them.
    """
    document = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": body["metadata"]["name"]},
                "spec": dict(body["spec"])}
    try:
        spec: ModelDeploymentSpec | None = ModelDeployment.model_validate(document).spec
    except ValidationError:
        spec = None
    if spec is None or semantic_errors(spec):
        spec = load_resource(document).spec
    errors = []
    store = spec.artifacts.uri if spec.artifacts else config.default_store
    if store is None:
        errors.append(FieldError("spec.artifacts", "no artifact store: set spec.artifacts.uri (or the operator's "
                                                   "defaultStore)"))
    elif urlparse(store).scheme != "s3":
        errors.append(FieldError("spec.artifacts.uri", f"{store} is not reachable from Jobs; use s3://bucket/prefix"))
    locations = {"spec.source.weights": spec.source.weights, "spec.source.uri": spec.source.uri,
                 "spec.source.code": spec.source.code}
    if spec.dataset is not None:
        locations |= {"spec.dataset.uri": spec.dataset.uri, "spec.dataset.labels": spec.dataset.labels}
    for path, uri in locations.items():
        if uri is not None and urlparse(uri).scheme not in REMOTE_SCHEMES:
            errors.append(FieldError(path, f"{uri} is not reachable from Jobs; use s3:// or https://"))
    if errors:
        raise SpecError(errors)
    if denied := violations(spec, config.policy):
        raise PolicyDenied(denied)
    return spec


async def _store(spec: ModelDeploymentSpec, namespace: str, memo: kopf.Memo) -> Store:
    """The deployment's store, with credentials from its Secret, reused for STORE_SECONDS (so rotation lands).

    Deployments that need the same store at once share one opening of it (one Secret read, one client).
    """
    config = memo.config
    artifacts = spec.artifacts
    secret = artifacts.secret_ref.name if artifacts and artifacts.secret_ref else config.default_secret
    uri = artifacts.uri if artifacts else config.default_store
    endpoint = (artifacts.endpoint if artifacts else None) or config.s3_endpoint
    region = (artifacts.region if artifacts else None) or config.s3_region
    key = (namespace, uri, secret, endpoint, region)
    opening = memo.open_stores.get(key)
    if opening is None or opening[1] <= time.monotonic():
        opening = (asyncio.ensure_future(_open_store(memo, namespace, uri, secret, endpoint, region)),
                   time.monotonic() + STORE_SECONDS)
        memo.open_stores[key] = opening
    try:
        return await asyncio.shield(opening[0])
    except Exception:
        if memo.open_stores.get(key) is opening:
            del memo.open_stores[key]  # the next pass tries again
        raise


async def _open_store(memo: kopf.Memo, namespace: str, uri: str, secret: str | None, endpoint: str | None,
                      region: str | None) -> Store:
    credentials = None
    if secret:
        try:
            credentials = await memo.api.secret(namespace, secret)
        except ApiException as error:
            raise StoreUnavailable(f"{uri}: the Secret {namespace}/{secret} with its credentials cannot be read "
                                   f"({error.status} {error.reason})") from None
        missing = [key for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not credentials.get(key)]
        if missing:
            raise StoreUnavailable(f"{uri}: the Secret {namespace}/{secret} has no {' and no '.join(missing)}")
    return await asyncio.to_thread(open_store, uri, endpoint=endpoint, region=region, credentials=credentials,
                                   connections=STORE_CONNECTIONS)


def _jobs(memo: kopf.Memo, deployment: Deployment) -> dict[str, JobState]:
    """The deployment's Jobs by task key: those the index shows (with why a pod of theirs waits for a node) and
    those it created since."""
    states = memo.jobs.states(deployment)
    for job, reason in memo.pods.unschedulable(deployment).items():
        for key, state in states.items():
            if state.name == job and state.active:
                states[key] = dataclasses.replace(state, unschedulable=reason)
    return states | memo.slots.launching.get(deployment, {})


def _decide_within_slots(
    meta: Mapping[str, Any], pipeline_plan: Plan, observed: Observed, store: Store, memo: kopf.Memo,
    now: str, previous: Mapping[str, Any],
) -> Decision:
    """The decision, with no more new Jobs than the deployment's share of the free slots, which it reserves.

    No await from the count of free slots to the reservation, so two deployments never take the same slot,
    nor start the same task in the same store: one computes it, the others wait for its result.
    """
    deployment = (meta["namespace"], meta["name"])
    memo.deciding.discard(deployment)
    uris = {task.key: store.uri_of(task_document_name(task.key)) for task in pipeline_plan.tasks}
    elsewhere = {key for key, uri in uris.items() if _computed_elsewhere(memo, uri, key, deployment)}
    for key in elsewhere:
        memo.deferred.setdefault(uris[key], set()).add(deployment)
    here = sum(state.active for state in observed.jobs.values())
    own = max(0, memo.config.max_jobs_per_deployment - here)
    decision = decide(meta, pipeline_plan, observed, own, now, previous, elsewhere)
    granted = memo.slots.share(deployment, len(decision.create))
    if granted < len(decision.create):
        decision = decide(meta, pipeline_plan, observed, granted, now, previous, elsewhere)
    for task in decision.create:
        memo.slots.launch(deployment, _launching(meta, task))
        memo.claimed[uris[task.key]] = deployment
        memo.stores.launching(uris[task.key])
    _wake_served(memo, but=deployment)
    return decision


def _computed_elsewhere(memo: kopf.Memo, task_uri: str, key: str, deployment: Deployment) -> bool:
    """Another deployment's active Job computes this task in this store (its claim is checked against its Jobs)."""
    claimer = memo.claimed.get(task_uri)
    if claimer is None or claimer == deployment:
        return False
    state = _jobs(memo, claimer).get(key)
    return state is not None and state.active


def _launching(meta: Mapping[str, Any], task: Task) -> JobState:
    """A Job as the index will show it once created: active, not started yet."""
    return JobState(name=job_name(meta["name"], task), key=task.key, active=True, succeeded=False, failed=False,
                    generation=int(meta.get("generation") or 0), start_time=None, completion_time=None, reason=None,
                    message=None)


async def _start(decision: Decision, spec: ModelDeploymentSpec, store: Store, meta: Mapping[str, Any],
                 memo: kopf.Memo, logger: Any, urgent: bool = False) -> None:
    owner = Owner(meta["name"], meta["namespace"], meta["uid"], int(meta.get("generation") or 0))
    targets = {target.name: target for target in spec.targets}
    outcomes = await asyncio.gather(
        *(_launch(task, owner, spec, targets.get(task.target or ""), store, memo, logger,
                  (FIRST if index == 0 else URGENT) if urgent else None)
          for index, task in enumerate(decision.create)),
        return_exceptions=True,
    )
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


async def _launch(task: Task, owner: Owner, spec: ModelDeploymentSpec, target: Target | None, store: Store,
                  memo: kopf.Memo, logger: Any, rank: int | None) -> None:
    """Create the Job, its task document in it, on the urgent lane with that rank if given (kube.Lane); a Job not
    created (failed, or there already) frees its slot."""
    task_uri = store.uri_of(task_document_name(task.key))
    created = False
    try:
        manifest = job_manifest(owner, task, target, task.task_document(store.uri), task_uri, spec.artifacts,
                                memo.config)
        created = await memo.api.create_job(manifest, rank=rank)
    finally:
        if not created:
            memo.slots.launched((owner.namespace, owner.name), task.key)
            if memo.claimed.get(task_uri) == (owner.namespace, owner.name):
                del memo.claimed[task_uri]
    if created:
        metrics.JOBS_CREATED.labels(task.kind).inc()
        logger.debug(f"created Job {manifest['metadata']['name']} for {task.name}")  # the StageStarted Event tells


def _changed(previous: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    return any(previous.get(key) != value for key, value in status.items() if value is not None) or any(
        previous.get(key) is not None for key, value in status.items() if value is None
    )


def _tell(events: Iterable[tuple[str, str, str]], body: Mapping[str, Any]) -> None:
    for kind, reason, message in events:
        kopf.event(body, type=kind, reason=reason, message=message)


def _count_finished(decision: Decision) -> None:
    for stage, outcome, seconds in decision.finished:
        metrics.STAGES_FINISHED.labels(stage, outcome).inc()
        if seconds is not None:
            metrics.STAGE_SECONDS.labels(stage).observe(seconds)


def _wake(memo: kopf.Memo, deployment: Deployment) -> None:
    event = memo.wakeups.get(deployment)
    if event is not None:
        event.set()


def _wake_next_waiting(memo: kopf.Memo) -> None:
    """A slot came free: wake the deployment it goes to, if that one is not woken yet nor about to decide."""
    for deployment in memo.slots.serving():
        wakeup = memo.wakeups.get(deployment)
        if wakeup is not None and not wakeup.is_set() and deployment not in memo.deciding:
            wakeup.set()
            return


def _wake_served(memo: kopf.Memo, but: Deployment) -> None:
    """Wake the waiting deployments the free slots go to (only those: the others would find none for them), but
    those about to decide anyway."""
    for deployment in itertools.islice(memo.slots.serving(), max(0, memo.slots.free())):
        if deployment != but and deployment not in memo.deciding:
            _wake(memo, deployment)


def _retry_seconds(resync_seconds: float, failed_passes: int) -> float:
    """The resync period, doubled for each pass in a row that failed, up to MAX_BACKOFF_SECONDS."""
    if not failed_passes:
        return resync_seconds
    return min(resync_seconds * 2 ** min(failed_passes - 1, 16), max(MAX_BACKOFF_SECONDS, resync_seconds))


async def _sleep(wakeup: asyncio.Event, stopped: kopf.DaemonStopped, seconds: float) -> None:
    waiters = [asyncio.ensure_future(wakeup.wait()), asyncio.ensure_future(stopped.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
