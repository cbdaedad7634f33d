"""The operator's Job slots: maxJobs across every deployment, and who gets the next free one.

Free slots go first to the waiting deployments with no Job running (a new one waits for its first
Job behind no busy one), then to the busy ones, each group longest waiting first. A deployment
takes more than one slot only if one is left for each other one waiting; one left short waits,
where it was if it got nothing, else at the back (its turn is over).

Everything is kept as it changes, not recounted: the active Jobs from the JobIndex's running
total, those being created here, and the waiting deployments in two lists ordered by when they
joined, moved between the two when their first Job starts or their last one ends. A pass asks in
time independent of how many deployments there are but for a list insertion.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator

from modeldeploy.controller.informer import JobIndex
from modeldeploy.controller.reconcile import JobState

Deployment = tuple[str, str]  # (namespace, name)


class Slots:
    def __init__(self, jobs: JobIndex, max_jobs: int):
        self.jobs = jobs
        self.max_jobs = max_jobs
        self.launching: dict[Deployment, dict[str, JobState]] = {}  # created (or being created), not indexed yet
        self._launching_total = 0
        self._tickets = itertools.count()
        self._places: dict[Deployment, int] = {}  # waiting deployments, by the ticket they joined with
        self._idle: list[tuple[int, Deployment]] = []  # waiting with no Job running, by ticket
        self._busy: list[tuple[int, Deployment]] = []  # waiting with some

    def running(self, deployment: Deployment) -> int:
        """The deployment's active Jobs: those the index shows and those being created."""
        return len(self.jobs.active.get(deployment, ())) + len(self.launching.get(deployment, ()))

    def free(self) -> int:
        return self.max_jobs - self.jobs.active_total - self._launching_total

    def serving(self) -> Iterator[Deployment]:
        """The waiting deployments in the order free slots go to them."""
        for _, deployment in itertools.chain(self._idle, self._busy):
            yield deployment

    def join(self, deployment: Deployment) -> None:
        """The deployment is owed slots (a new one, or one left short); where it was if it waits already."""
        if deployment not in self._places:
            ticket = next(self._tickets)
            self._places[deployment] = ticket
            bisect.insort(self._group(deployment), (ticket, deployment))

    def leave(self, deployment: Deployment) -> None:
        ticket = self._places.pop(deployment, None)
        if ticket is not None:
            for group in (self._idle, self._busy):
                index = bisect.bisect_left(group, (ticket,))
                if index < len(group) and group[index][0] == ticket:
                    del group[index]
                    return

    def share(self, deployment: Deployment, wanted: int) -> int:
        """How many of the `wanted` new Jobs the deployment may start now; its place in the queue follows."""
        free = self.free()
        waits = deployment in self._places
        others = len(self._places) - waits
        granted = min(wanted, max(free - others, 1 if self._ahead(deployment) < free else 0))
        if granted == wanted:
            self.leave(deployment)
        elif granted or not waits:
            self.leave(deployment)
            self.join(deployment)
        return granted

    def launch(self, deployment: Deployment, state: JobState) -> None:
        """A Job the deployment is creating: its slot is taken until the index shows the Job, or creating it
        failed."""
        launching = self.launching.setdefault(deployment, {})
        if state.key not in launching:
            self._launching_total += 1
        launching[state.key] = state
        self.recount(deployment)

    def launched(self, deployment: Deployment, key: str) -> None:
        """The index shows the Job (or it was not created): no longer counted here."""
        launching = self.launching.get(deployment)
        if launching is not None and launching.pop(key, None) is not None:
            self._launching_total -= 1
            if not launching:
                del self.launching[deployment]
            self.recount(deployment)

    def forget(self, deployment: Deployment) -> None:
        """The deployment is gone: neither waiting nor creating anything."""
        self.leave(deployment)
        self._launching_total -= len(self.launching.pop(deployment, {}))

    def recount(self, deployment: Deployment) -> None:
        """The deployment's running Jobs changed: a waiting one moves between idle and busy if it must."""
        ticket = self._places.get(deployment)
        if ticket is None:
            return
        group = self._group(deployment)
        index = bisect.bisect_left(group, (ticket,))
        if index < len(group) and group[index][0] == ticket:
            return
        self.leave(deployment)
        self._places[deployment] = ticket
        bisect.insort(group, (ticket, deployment))

    def _group(self, deployment: Deployment) -> list[tuple[int, Deployment]]:
        return self._busy if self.running(deployment) else self._idle

    def _ahead(self, deployment: Deployment) -> int:
        """How many waiting deployments free slots go to before this one (as if it joined now, if it waits not)."""
        ticket = self._places.get(deployment)
        busy = bool(self.running(deployment))
        if ticket is None:
            return len(self._idle) + (len(self._busy) if busy else 0)
        if busy:
            return len(self._idle) + bisect.bisect_left(self._busy, (ticket,))
        return bisect.bisect_left(self._idle, (ticket,))
