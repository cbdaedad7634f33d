"""Reading a deployment's results from its store, with caches for what cannot change.

A committed manifest is immutable, so it is read once per operator process. A task known not
to be done is read again only when its Job has finished, or when the plan first shows it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from modeldeploy.controller.reconcile import JobState, Observed
from modeldeploy.manifest import Manifest, fetch_bytes, output_name, read_failure, read_manifest
from modeldeploy.planner import Plan
from modeldeploy.store import Store


PARALLEL_READS = 8


@dataclass
class StoreCache:
    manifests: dict[tuple[str, str], Manifest] = field(default_factory=dict)
    not_done: set[tuple[str, str]] = field(default_factory=set)
    reports: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def observe(self, store: Store, plan: Plan, jobs: Mapping[str, JobState]) -> Observed:
        unknown = [
            task.key
            for task in plan.tasks
            if (store.uri, task.key) not in self.manifests
            and not ((store.uri, task.key) in self.not_done and (task.key not in jobs or jobs[task.key].active))
        ]
        # One request per unknown task, several at a time: a new deployment's first pass reads them all.
        with ThreadPoolExecutor(max_workers=PARALLEL_READS) as pool:
            for key, manifest in zip(unknown, pool.map(lambda key: read_manifest(store, key), unknown), strict=True):
                if manifest is None:
                    self.not_done.add((store.uri, key))
                else:
                    self.not_done.discard((store.uri, key))
                    self.manifests[(store.uri, key)] = manifest
        results = {
            task.key: self.manifests[(store.uri, task.key)]
            for task in plan.tasks
            if (store.uri, task.key) in self.manifests
        }
        failures = {}
        for key, job in jobs.items():
            if job.failed and key not in results and (failure := read_failure(store, key)) is not None:
                failures[key] = failure
        report = None
        if plan.report in results:
            report = self.reports.get((store.uri, plan.report))
            if report is None:
                report = json.loads(fetch_bytes(store, results[plan.report], "results.json"))
                self.reports[(store.uri, plan.report)] = report
        return Observed(jobs, results, failures, report, store.uri_of(output_name(plan.report, "report.html")))
