"""What a new deployment's first Jobs wait for: the plan, made on the watch's thread, and their place on the
urgent lane of API calls, where each deployment's first Job goes before any deployment's other first Jobs."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from typing import Any

import pytest
from modeldeploy.backends import registry
from modeldeploy.controller.config import load
from modeldeploy.controller.handlers import _new_plan, _preload
from modeldeploy.controller.kube import FIRST, URGENT, Lane
from modeldeploy.planner import plan
from modeldeploy.validation import SpecError, load_resource
from specs import base


def test_the_urgent_lane_takes_first_jobs_before_the_others_in_the_order_they_came() -> None:
    lane = Lane(1, "test-lane")
    ran: list[str] = []
    started, release = threading.Event(), threading.Event()

    def call(name: str) -> Any:
        def run() -> str:
            ran.append(name)
            if name == "busy":
                started.set()
                release.wait(10)
            return name
        return run

    busy = lane.submit(call("busy"), URGENT)
    assert started.wait(10)  # the lane's one thread is taken: what comes next waits, and is ordered
    calls = [lane.submit(call(name), rank) for name, rank in
             (("second of a", URGENT), ("second of b", URGENT), ("first of c", FIRST), ("first of d", FIRST))]
    gone = lane.submit(call("first of e, given up"), FIRST)
    gone.cancel()
    release.set()
    assert [future.result(10) for future in (busy, *calls)] == ["busy", "second of a", "second of b", "first of c",
                                                                 "first of d"]
    assert ran == ["busy", "first of c", "first of d", "second of a", "second of b"]
    assert gone.cancelled()


def test_a_call_that_fails_on_the_lane_fails_its_caller() -> None:
    def fail() -> None:
        raise ValueError("refused")

    future: Future[None] = Lane(2, "test-lane").submit(fail, FIRST)
    with pytest.raises(ValueError, match="refused"):
        future.result(10)


def test_a_new_deployment_is_planned_on_the_watchs_thread_as_its_first_pass_would() -> None:
    body = {**base(), "metadata": {"name": "cases", "namespace": "team-a", "uid": "u1", "generation": 1}}
    planned = _new_plan(load(), body)
    assert not isinstance(planned, SpecError) and planned is not None
    spec, made = planned
    expected = load_resource(base()).spec
    assert spec == expected
    assert [task.key for task in made.tasks] == [task.key for task in plan(expected).tasks]


def test_an_invalid_new_deployment_is_planned_as_its_spec_error() -> None:
    body = base()
    body["spec"]["artifacts"] = {"uri": "file:///tmp/store"}
    planned = _new_plan(load(), {**body, "metadata": {"name": "cases", "namespace": "team-a", "uid": "u1"}})
    assert isinstance(planned, SpecError)
    assert "spec.artifacts.uri" in str(planned)


def test_a_new_deployment_the_watch_cannot_plan_is_left_to_its_first_pass(caplog: pytest.LogCaptureFixture
                                                                          ) -> None:
    with caplog.at_level(logging.ERROR):
        assert _new_plan(load(), {"metadata": {"name": "cases"}}) is None  # no spec: a bug, not a SpecError
    assert "its first pass plans it" in caplog.text


def test_the_operator_loads_the_backends_before_the_first_spec_is_planned() -> None:
    registry.cache_clear()
    _preload()
    assert registry.cache_info().misses == 1
    body = {**base(), "metadata": {"name": "cases", "namespace": "team-a", "uid": "u1", "generation": 1}}
    assert not isinstance(_new_plan(load(), body), SpecError)
    assert registry.cache_info().misses == 1  # the first plan, on the watch's thread, loaded nothing
