"""Tenants sharing one operator: what it caches of one store never answers for another."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
from conftest import s3_server
from modeldeploy.controller.observe import StoreCache
from modeldeploy.manifest import commit
from modeldeploy.planner import plan
from modeldeploy.store import access_problem, open_store
from modeldeploy.validation import load_resource
from specs import base


@pytest.fixture(scope="module")
def attackers_endpoint() -> Iterator[str]:
    """A second S3 server: one a tenant runs, and names as its deployment's artifacts.endpoint."""
    yield from s3_server()


@pytest.fixture(scope="module")
def checking_endpoint() -> Iterator[str]:
    """An S3 server that checks credentials, as every real one does (moto's IAM checks, on from the first call)."""
    yield from s3_server(INITIAL_NO_AUTH_ACTION_COUNT="0")


def test_results_planted_in_another_endpoint_under_the_victims_uri_are_not_the_victims(
    bucket: str, moto_endpoint: str, attackers_endpoint: str, tmp_path: Path
) -> None:
    """An attacker's deployment names the victim's artifacts.uri and its own artifacts.endpoint, and commits a
    manifest for every task of the victim's plan there (`modeldeploy plan` computes the keys)."""
    boto3.client("s3", endpoint_url=attackers_endpoint).create_bucket(Bucket=bucket)
    uri = f"s3://{bucket}/victim"
    victims_plan = plan(load_resource(base()).spec)
    forged = tmp_path / "results.json"
    forged.write_text('{"cells": []}')
    attackers_store = open_store(uri, endpoint=attackers_endpoint)
    for task in victims_plan.tasks:
        commit(attackers_store, task.key, task.kind, {"results.json": forged}, datetime.now(UTC))
    victims_store = open_store(uri, endpoint=moto_endpoint)
    cache = StoreCache()

    async def both() -> tuple[int, int]:
        attackers = await cache.observe(attackers_store, victims_plan, {})
        while attackers.results.keys() != {task.key for task in victims_plan.tasks}:
            attackers = await cache.observe(attackers_store, victims_plan, {})
        victims = await cache.observe(victims_store, victims_plan, {})
        return len(attackers.results), len(victims.results)

    assert asyncio.run(both()) == (len(victims_plan.tasks), 0)


def test_the_same_uri_with_other_credentials_is_another_store(moto_endpoint: str) -> None:
    def store(key_id: str, secret: str):
        return open_store("s3://shared/prefix", endpoint=moto_endpoint,
                          credentials={"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret})

    assert store("team-a", "a-secret").identity == store("team-a", "a-secret").identity
    assert store("team-a", "a-secret").identity != store("team-a", "guessed").identity
    assert store("team-a", "a-secret").identity != store("team-b", "b-secret").identity
    assert "a-secret" not in store("team-a", "a-secret").identity
    assert open_store("s3://shared/prefix", endpoint=moto_endpoint).identity != store("team-a", "a-secret").identity


def test_wrong_credentials_are_named_with_the_store_and_never_quoted(checking_endpoint: str) -> None:
    store = open_store("s3://team-a/results", endpoint=checking_endpoint,
                       credentials={"AWS_ACCESS_KEY_ID": "AKIAWRONG", "AWS_SECRET_ACCESS_KEY": "wrong-secret-value"})
    with pytest.raises(Exception) as refused:
        store.get_bytes("tasks/x/manifest.json")
    problem = access_problem(store.uri, refused.value)
    assert problem == ("s3://team-a/results: the server answered 403 InvalidAccessKeyId (the access key is unknown "
                       "to the server: check the credentials)")
