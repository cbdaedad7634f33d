"""Reading a deployment's results from its store, with caches for what cannot change.

A committed manifest is immutable, so it is read once per operator process. A task is read
only once its inputs are done (a task cannot be done before them), so a new deployment costs
a read per task it can start, not one per task of its plan; a task known not to be done is
read again only when its Job has finished. A task is not read either when one of its inputs
was computed while this operator watched (then only a Job of its own can have computed it), nor
when the store had nothing of it at its last listing, at most LISTING_SECONDS ago, and this
operator started no Job for it since: a brand-new deployment's first Jobs wait on no read. Were
such a task done meanwhile by someone else, its Job would find it committed and end at once. A
pass with such tasks to read waits, up to LISTING_WAIT_SECONDS, for a listing under way (the
operator's first one, in a burst of new deployments) rather than read them one by one.
Deployments that ask for the same manifest at the same time share one read. Everything is kept
by the store's identity (endpoint, bucket, prefix, credentials), never by its URI alone: a tenant
naming another's URI with its own endpoint or credentials reads its own store, not the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from modeldeploy.controller.reconcile import JobState, Observed
from modeldeploy.manifest import (
    Manifest,
    fetch_bytes,
    output_name,
    read_failure,
    read_manifest,
    task_document_name,
    tasks_with_objects,
)
from modeldeploy.planner import Plan, Task
from modeldeploy.store import Store

# Store requests in flight at once. Writes (deleting a deployment's artifacts) have threads of their own, so a
# large deletion never queues the reads of every other deployment; each store opening pools a connection per
# thread, so a request never waits for, nor drops, one.
READ_THREADS = 32
WRITE_THREADS = 4
STORE_CONNECTIONS = READ_THREADS + WRITE_THREADS
LISTING_SECONDS = 60  # how long a listing of a store's tasks stands for it
# How long a pass waits for a listing under way (a request per thousand tasks) before it reads one by one the tasks
# the listing would tell of: a burst of new deployments at a cold start then makes one request, not one per task.
LISTING_WAIT_SECONDS = 1.0
T = TypeVar("T")
Listing = frozenset[str] | None  # the keys of the tasks with objects in a store; None if it could not be listed

logger = logging.getLogger(__name__)


def _threads(count: int, name: str) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=count, thread_name_prefix=name)


@dataclass
class StoreCache:
    manifests: dict[tuple[str, str], Manifest] = field(default_factory=dict)
    not_done: set[tuple[str, str]] = field(default_factory=set)
    computed: set[tuple[str, str]] = field(default_factory=set)  # seen not done, then done: computed since
    reports: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    reading: dict[tuple[str, str], asyncio.Future[Manifest | None]] = field(default_factory=dict)
    listings: dict[str, tuple[asyncio.Future[Listing], float]] = field(default_factory=dict)  # with its expiry
    launched: set[str] = field(default_factory=set)  # task document URIs of the tasks this operator has Jobs for
    readers: ThreadPoolExecutor = field(default_factory=lambda: _threads(READ_THREADS, "store-read"))
    writers: ThreadPoolExecutor = field(default_factory=lambda: _threads(WRITE_THREADS, "store-write"))

    async def read(self, function: Callable[..., T], *args: Any) -> T:
        """A blocking store read, on the read threads every deployment shares."""
        return await asyncio.get_running_loop().run_in_executor(self.readers, function, *args)

    async def write(self, function: Callable[..., T], *args: Any) -> T:
        """A blocking store write (or delete), on the write threads every deployment shares."""
        return await asyncio.get_running_loop().run_in_executor(self.writers, function, *args)

    def launching(self, task_uri: str) -> None:
        """A Job of this operator computes the task: from now on it is read, whatever a listing said."""
        self.launched.add(task_uri)

    async def observe(self, store: Store, plan: Plan, jobs: Mapping[str, JobState]) -> Observed:
        listed = self._listing(store)
        patience = time.monotonic() + LISTING_WAIT_SECONDS
        asked: set[str] = set()
        while wave := [task for task in plan.tasks if task.key not in asked and self._worth_reading(store, task, jobs)]:
            asked.update(task.key for task in wave)
            told = any(self._listing_tells(store, task, jobs) for task in wave)
            listing = await _listed(listed, patience if told else None)
            unread = [task.key for task in wave if self._cannot_be_done(store, task, jobs, listing)]
            self.not_done.update((store.identity, key) for key in unread)
            wave_keys = [task.key for task in wave if task.key not in unread]
            manifests = await asyncio.gather(*(self._manifest(store, key, jobs.get(key)) for key in wave_keys))
            for key, manifest in zip(wave_keys, manifests, strict=True):
                known = (store.identity, key)
                if manifest is None:
                    self.not_done.add(known)
                else:
                    if known in self.not_done:
                        self.computed.add(known)
                        self.not_done.discard(known)
                    self.manifests[known] = manifest
        results = {
            task.key: self.manifests[(store.identity, task.key)]
            for task in plan.tasks
            if (store.identity, task.key) in self.manifests
        }
        # the failure records of failed Jobs, and of those retrying after a failed attempt
        failed = [key for key, job in jobs.items() if (job.failed or job.attempts > 1) and key not in results]
        failures = {
            key: failure
            for key, failure in zip(failed, await asyncio.gather(*(self.read(read_failure, store, key) for key in failed)),
                                    strict=True)
            if failure is not None
        }
        report = None
        if plan.report in results:
            report = self.reports.get((store.identity, plan.report))
            if report is None:
                report = json.loads(await self.read(fetch_bytes, store, results[plan.report], "results.json"))
                self.reports[(store.identity, plan.report)] = report
        report_uri = store.uri_of(output_name(results[plan.report], "report.html")) if plan.report in results else None
        return Observed(jobs, results, failures, report, report_uri)

    async def _manifest(self, store: Store, key: str, job: JobState | None) -> Manifest | None:
        """The task's manifest, read once for every deployment asking at the same time.

        A deployment whose own Job for the task has finished reads afresh: a read begun before the Job committed
        could miss its result.
        """
        known = (store.identity, key)
        pending = self.reading.get(known)
        if pending is None or (job is not None and not job.active):
            pending = asyncio.ensure_future(self.read(read_manifest, store, key))
            self.reading[known] = pending

            def forget(read: asyncio.Future[Manifest | None]) -> None:
                if self.reading.get(known) is read:
                    del self.reading[known]

            pending.add_done_callback(forget)
        return await asyncio.shield(pending)

    def _cannot_be_done(self, store: Store, task: Task, jobs: Mapping[str, JobState], listing: Listing) -> bool:
        """A task with no Job of its own, one input of which this operator saw being computed, is not done: no Job
        could compute it before that input was, and this operator's Jobs are the only ones to (a task another
        deployment's Job computes is claimed, and waited for). Nor is one the last listing found nothing of, if no
        Job of this operator computed it since. Its read is saved; were it done after all, its Job would find it
        committed and end at once."""
        if task.key in jobs:
            return False
        if listing is not None and task.key not in listing and self._listing_tells(store, task, jobs):
            return True
        return any((store.identity, key) in self.computed for key in task.inputs.values())

    def _listing_tells(self, store: Store, task: Task, jobs: Mapping[str, JobState]) -> bool:
        """Whether a listing that found nothing of the task tells it is not done: no Job of this operator has
        computed it since."""
        return task.key not in jobs and store.uri_of(task_document_name(task.key)) not in self.launched

    def _listing(self, store: Store) -> asyncio.Future[Listing]:
        """The store's listing at most LISTING_SECONDS old, begun anew if the last one is older."""
        now = time.monotonic()
        listed = self.listings.get(store.identity)
        if listed is None or listed[1] <= now:
            listed = self.listings[store.identity] = (asyncio.ensure_future(self.read(_list_tasks, store)),
                                                      now + LISTING_SECONDS)
        return listed[0]

    def _worth_reading(self, store: Store, task: Task, jobs: Mapping[str, JobState]) -> bool:
        known = (store.identity, task.key)
        if known in self.manifests:
            return False
        if known in self.not_done and (task.key not in jobs or jobs[task.key].active):
            return False
        return all((store.identity, key) in self.manifests for key in task.inputs.values())


async def _listed(listing: asyncio.Future[Listing], until: float | None) -> Listing:
    """The listing if it is back, or once back if that is before `until` (monotonic); else None."""
    if not listing.done() and until is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(listing), max(0.0, until - time.monotonic()))
    return listing.result() if listing.done() else None


def _list_tasks(store: Store) -> Listing:
    try:
        return frozenset(tasks_with_objects(store))
    except Exception as error:  # noqa: BLE001 - e.g. no s3:ListBucket: a listing only saves reads, so each is read
        logger.warning(f"cannot list the tasks in {store.uri}, so every task's result is read: {error}")
        return None
