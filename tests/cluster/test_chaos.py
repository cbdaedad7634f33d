"""bench/chaos.py made small: three deployments run for real (process kubelet, moto's S3) on a control plane of
their own while the operator is killed three times, the API server restarts and the S3 endpoint is closed for a
few seconds; every deployment still becomes Ready, no Job is created twice, and every committed manifest's
outputs read back from S3 match their sha256.

The moments are drawn from a fixed seed. Every wait is bounded: a fault after which nothing moves for
RECOVERY_SECONDS, or deployments not Ready within READY_SECONDS, fail the test with what was seen.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator

import boto3
import botocore.config
import botocore.exceptions
import pytest

from cluster.chaos import ARTIFACTS, ChaosCluster, Fault, S3Gate, deployment, start_moto, stop_process

SEED = 16
DEPLOYMENTS = 3
READY_SECONDS = 900
S3_OUTAGE_SECONDS = 5


def test_the_s3_gate_acts_as_a_stopped_server_that_comes_back_with_its_data() -> None:
    moto, port = start_moto()
    gate = S3Gate(port)
    try:
        gate.open()
        s3 = boto3.client("s3", endpoint_url=gate.endpoint, aws_access_key_id="x", aws_secret_access_key="x",
                          region_name="us-east-1",
                          config=botocore.config.Config(retries={"max_attempts": 1, "mode": "standard"}))
        s3.create_bucket(Bucket="gate")
        s3.put_object(Bucket="gate", Key="kept", Body=b"data")  # the client now holds a keep-alive connection
        gate.close()
        assert gate.refuses()
        for _ in range(2):  # the pooled connection is gone too: no request gets through
            with pytest.raises(botocore.exceptions.EndpointConnectionError):
                s3.get_object(Bucket="gate", Key="kept")
        gate.open()
        assert not gate.refuses()
        assert s3.get_object(Bucket="gate", Key="kept")["Body"].read() == b"data"
    finally:
        gate.close()
        stop_process(moto)


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosCluster]:
    # no node is lost here: Kubernetes' own node timings, so that a slow API server restart evicts nothing
    with ChaosCluster(tmp_path_factory.mktemp("chaos"), max_jobs=4, fast_node_loss=False) as cluster:
        yield cluster


def test_deployments_come_through_operator_kills_an_api_server_restart_and_an_s3_outage(
        chaos: ChaosCluster) -> None:
    rng = random.Random(SEED)
    plan = ["operator", "operator", "operator", "kube-apiserver", "s3"]
    rng.shuffle(plan)
    store = f"s3://{ARTIFACTS}/chaos-{uuid.uuid4().hex[:8]}"
    for index in range(DEPLOYMENTS):
        chaos.create(deployment(index, store, samples=48))
    started = time.monotonic()
    faults: list[Fault] = []
    for kind in plan:
        time.sleep(rng.uniform(1, 6))
        if kind == "operator":
            faults.append(chaos.kill_operator())
        elif kind == "kube-apiserver":
            faults.append(chaos.restart("kube-apiserver", kill=False))
        else:
            faults.append(chaos.s3_outage(S3_OUTAGE_SECONDS))
    summary = "\n".join(f"{f.kind}: lasted {f.duration:.1f} s, recovery {f.recovery}, idle {f.idle}, {f.notes}"
                        for f in faults)
    stuck = [f.kind for f in faults if not f.idle and f.recovery is None]
    assert not stuck, f"no progress within the bound after {stuck}; the faults:\n{summary}\n" \
                      f"operator log: {chaos.operator.log}"
    assert any(not f.idle for f in faults), f"every fault came after the work was done:\n{summary}"

    deadline = started + READY_SECONDS
    while not chaos.progress.all_ready() and time.monotonic() < deadline:
        time.sleep(2)
    bodies = chaos.deployments()
    not_ready = {body["metadata"]["name"]: [(s["name"], s.get("phase"), s.get("message"))
                                            for s in body.get("status", {}).get("stages", [])
                                            if s.get("phase") != "Succeeded"]
                 for body in bodies
                 if not any(c["type"] == "Ready" and c["status"] == "True"
                            for c in body.get("status", {}).get("conditions", []))}
    assert len(bodies) == DEPLOYMENTS and not not_ready, (
        f"not Ready {READY_SECONDS} s after the creations: {not_ready}\nthe faults:\n{summary}\n"
        f"operator log: {chaos.operator.log}")

    jobs, duplicates = chaos.duplicate_jobs()
    assert jobs >= 9 * DEPLOYMENTS
    assert not duplicates, f"Jobs created more than once (audit log {chaos.audit_log}): {duplicates}"

    check = chaos.verify_store(bodies)
    assert check.manifests >= 9 * DEPLOYMENTS and check.outputs > 0
    assert not check.bad, f"outputs missing or not matching their manifest's sha256: {check.bad}"
    assert not check.lost, f"tasks lost: {check.lost}"
    errors = [error for kubelet in chaos.kubelets.values() for error in kubelet.errors]
    assert not errors, f"the process kubelet failed: {errors}"
