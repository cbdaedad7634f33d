"""kopf handlers: thin glue between the API, the store and the pure reconcile.

One daemon per ModelDeployment is the only status writer. It reconciles, then sleeps until a
Job of its deployment changes (the Job index wakes it), its spec changes, or the resync period
passes, so reacting to a finished Job takes moments, not a timer period.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

import kopf

from modeldeploy.controller import config as operator_config
from modeldeploy.controller import metrics
from modeldeploy.controller.jobs import LABEL_DEPLOYMENT, MANAGED_BY, Owner, job_manifest
from modeldeploy.controller.kube import Api, connect
from modeldeploy.controller.observe import StoreCache
from modeldeploy.controller.reconcile import Decision, JobState, decide, invalid, job_state, timestamp
from modeldeploy.manifest import write_task
from modeldeploy.planner import Plan, plan
from modeldeploy.spec import API_VERSION, GROUP, KIND, PLURAL, VERSION, ModelDeploymentSpec
from modeldeploy.store import Store, open_store
from modeldeploy.validation import FieldError, SpecError, load_resource

REMOTE_SCHEMES = ("s3", "http", "https")
STORE_SECONDS = 60


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 310
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 30
    settings.posting.reporting_component = "modeldeploy-operator"
    settings.execution.max_workers = 16
    memo.config = operator_config.load()
    memo.api = Api(connect())
    memo.stores = StoreCache()
    memo.wakeups = {}
    memo.plans = {}
    memo.open_stores = {}
    memo.phases = {}
    memo.slots = asyncio.Lock()
    metrics.serve(memo.config.metrics_port)


@kopf.index("batch", "v1", "jobs", labels={"app.kubernetes.io/managed-by": MANAGED_BY})
async def owned_jobs(namespace: str, labels: Mapping[str, str], body: kopf.Body, memo: kopf.Memo, **_: Any) -> Any:
    owner = labels.get(LABEL_DEPLOYMENT)
    _wake(memo, namespace, owner)
    state = job_state(body)
    return {(namespace, owner): state} if state is not None else None


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def spec_changed(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    _wake(memo, namespace, name)


def _deletes_artifacts(spec: kopf.Spec, **_: Any) -> bool:
    return (spec.get("artifacts") or {}).get("onDelete") == "Delete"


@kopf.on.delete(GROUP, VERSION, PLURAL, when=_deletes_artifacts, retries=3, backoff=10)
async def delete_artifacts(body: kopf.Body, namespace: str, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    """artifacts.onDelete: Delete removes the results of this deployment's tasks (a shared store keeps the rest)."""
    try:
        spec = _validated(body, memo.config)
    except SpecError:
        return  # an invalid spec never ran a task
    store = await asyncio.to_thread(_store, spec, namespace, memo)
    removed = 0
    for task in plan(spec).tasks:
        removed += await asyncio.to_thread(store.delete_prefix, f"tasks/{task.key}")
    logger.info(f"deleted {removed} artifact objects from {store.uri}")


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=10)
async def pipeline(
    name: str, namespace: str, body: kopf.Body, memo: kopf.Memo, owned_jobs: kopf.Index, stopped: kopf.DaemonStopped,
    logger: Any, **_: Any,
) -> None:
    wakeup = memo.wakeups.setdefault((namespace, name), asyncio.Event())
    try:
        while not stopped:
            wakeup.clear()
            try:
                await reconcile(body, memo, owned_jobs, logger)
                metrics.RECONCILES.labels("ok").inc()
            except Exception:  # noqa: BLE001 - the loop keeps going: the next pass starts from the facts again
                metrics.RECONCILES.labels("error").inc()
                logger.exception("reconcile failed; retrying")
            await _sleep(wakeup, stopped, memo.config.resync_seconds)
    finally:
        memo.wakeups.pop((namespace, name), None)
        uid = body["metadata"]["uid"]
        for key in [key for key in memo.plans if key[0] == uid]:
            del memo.plans[key]
        memo.phases.pop((namespace, name), None)
        metrics.count_phases(memo.phases)


async def reconcile(body: kopf.Body, memo: kopf.Memo, owned_jobs: kopf.Index, logger: Any) -> None:
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    previous = dict(body.get("status") or {})
    now = timestamp(datetime.datetime.now(datetime.UTC))
    jobs: dict[str, JobState] = {state.key: state for state in owned_jobs.get((namespace, name), [])}
    planned = _planned(body, memo)
    if isinstance(planned, SpecError):
        decision = invalid(meta, planned.errors, now, previous)
    else:
        spec, pipeline_plan = planned
        store = await asyncio.to_thread(_store, spec, namespace, memo)
        observed = await asyncio.to_thread(memo.stores.observe, store, pipeline_plan, jobs)
        async with memo.slots:
            decision = decide(meta, pipeline_plan, observed, _free_slots(memo, owned_jobs, jobs), now, previous)
            await _start(decision, spec, store, body, memo, logger)
    for job in decision.delete:
        await asyncio.to_thread(memo.api.delete_job, namespace, job)
    if _changed(previous, decision.status):
        await asyncio.to_thread(memo.api.patch_status, namespace, name, decision.status)
    _report(decision, body)
    memo.phases[(namespace, name)] = decision.status["phase"]
    metrics.count_phases(memo.phases)


def _planned(body: kopf.Body, memo: kopf.Memo) -> tuple[ModelDeploymentSpec, Plan] | SpecError:
    """The validated spec and its plan, computed once per generation of the spec."""
    meta = body["metadata"]
    key = (meta["uid"], meta.get("generation"))
    if key not in memo.plans:
        try:
            spec = _validated(body, memo.config)
            memo.plans[key] = (spec, plan(spec))
        except SpecError as error:
            memo.plans[key] = error
    return memo.plans[key]


def _validated(body: kopf.Body, config: operator_config.OperatorConfig) -> ModelDeploymentSpec:
    """The spec, with the checks `modeldeploy validate` makes plus what only a cluster needs."""
    document = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": body["metadata"]["name"]},
                "spec": dict(body["spec"])}
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
    return spec


def _store(spec: ModelDeploymentSpec, namespace: str, memo: kopf.Memo) -> Store:
    """The deployment's store, with credentials from its Secret, reused for STORE_SECONDS (so rotation lands)."""
    config = memo.config
    artifacts = spec.artifacts
    secret = artifacts.secret_ref.name if artifacts and artifacts.secret_ref else config.default_secret
    uri = artifacts.uri if artifacts else config.default_store
    endpoint = (artifacts.endpoint if artifacts else None) or config.s3_endpoint
    region = (artifacts.region if artifacts else None) or config.s3_region
    key = (namespace, uri, secret, endpoint, region)
    cached = memo.open_stores.get(key)
    if cached is not None and cached[1] > time.monotonic():
        return cached[0]
    credentials = memo.api.secret(namespace, secret) if secret else None
    store = open_store(uri, endpoint=endpoint, region=region, credentials=credentials)
    memo.open_stores[key] = (store, time.monotonic() + STORE_SECONDS)
    return store


def _free_slots(memo: kopf.Memo, owned_jobs: kopf.Index, jobs: Mapping[str, JobState]) -> int:
    config = memo.config
    everywhere = sum(state.active for states in owned_jobs.values() for state in states)
    here = sum(state.active for state in jobs.values())
    return max(0, min(config.max_jobs - everywhere, config.max_jobs_per_deployment - here))


async def _start(decision: Decision, spec: ModelDeploymentSpec, store: Store, body: kopf.Body, memo: kopf.Memo,
                 logger: Any) -> None:
    meta = body["metadata"]
    owner = Owner(meta["name"], meta["namespace"], meta["uid"], int(meta.get("generation") or 0))
    targets = {target.name: target for target in spec.targets}
    for task in decision.create:
        task_uri = await asyncio.to_thread(write_task, store, task.task_document(store.uri))
        manifest = job_manifest(owner, task, targets.get(task.target or ""), task_uri, spec.artifacts, memo.config)
        if await asyncio.to_thread(memo.api.create_job, manifest):
            metrics.JOBS_CREATED.labels(task.kind).inc()
            logger.info(f"created Job {manifest['metadata']['name']} for {task.name}")


def _changed(previous: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    return any(previous.get(key) != value for key, value in status.items() if value is not None) or any(
        previous.get(key) is not None for key, value in status.items() if value is None
    )


def _report(decision: Decision, body: kopf.Body) -> None:
    for kind, reason, message in decision.events:
        kopf.event(body, type=kind, reason=reason, message=message)
    for stage, outcome, seconds in decision.finished:
        metrics.STAGES_FINISHED.labels(stage, outcome).inc()
        if seconds is not None:
            metrics.STAGE_SECONDS.labels(stage).observe(seconds)


def _wake(memo: kopf.Memo, namespace: str, name: str | None) -> None:
    event = memo.get("wakeups", {}).get((namespace, name))
    if event is not None:
        event.set()


async def _sleep(wakeup: asyncio.Event, stopped: kopf.DaemonStopped, seconds: float) -> None:
    waiters = [asyncio.ensure_future(wakeup.wait()), asyncio.ensure_future(stopped.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
