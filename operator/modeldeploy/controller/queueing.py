"""Jobs that wait in a Kueue queue: what a stage's status says while its Job is suspended.

With `kueueQueue` set, every Job is created with `spec.suspend: true` and the
`kueue.x-k8s.io/queue-name` label (jobs.py). Kueue admits it by setting `suspend` to false when its
ClusterQueue has quota for it, and may suspend it again to evict it (preemption). The operator
never changes `suspend`: until Kueue lets the Job run, its stage is Pending with the message of
`queued`, as a stage whose pod no node takes is Pending with the scheduler's reason. While every active Job of a
deployment waits so, its Reconciling (still True) and Ready conditions have the reason `Queued` (reconcile.py), which
Argo CD's health check shows as Suspended.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modeldeploy.controller.jobs import LABEL_QUEUE


def queued(job: Mapping[str, Any]) -> str | None:
    """Why an active Job does not run because it is suspended; None when it is not suspended."""
    if not (job.get("spec") or {}).get("suspend"):
        return None
    metadata = job.get("metadata") or {}
    queue = (metadata.get("labels") or {}).get(LABEL_QUEUE)
    since = _suspended_since(job)
    when = f" since {since}" if since else ""
    if queue:
        return (f"queued in Kueue LocalQueue {metadata.get('namespace')}/{queue}{when}: waiting for admission "
                f"(the Job's Workload says why: kubectl get workloads -n {metadata.get('namespace')})")
    return f"suspended (spec.suspend){when} and in no Kueue queue: nothing in modeldeploy resumes it"


def _suspended_since(job: Mapping[str, Any]) -> str | None:
    """When the Job controller recorded the suspension (its Suspended condition), if it has yet."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Suspended" and condition.get("status") == "True":
            return condition.get("lastTransitionTime")
    return None
