"""Leader election (issue 17 item 3) on a real API server: the Lease logic of modeldeploy.controller.leader round by
round, the shipped RBAC for it, and two `modeldeploy operator --leader-elect` replicas with pipelines running,
the leader killed (SIGKILL) mid-pipeline.

The module starts a control plane of its own (as tests/cluster/chaos.py does) whose API server keeps an audit log of
every write the operator's ServiceAccount makes and of its Lease reads: each replica has its own token, and the
audit log names the token (`authentication.kubernetes.io/credential-id`, JTI=<its jti claim>), so it tells which
replica wrote what. One CPU node with the process kubelet runs the Jobs; moto's S3 server holds the artifacts.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from modeldeploy.controller import leader
from modeldeploy.manifest import fetch, read_manifest, tasks_with_objects
from modeldeploy.planner import plan
from modeldeploy.store import ChecksumMismatch, NotFound, StoreError, open_store
from modeldeploy.validation import load_resource
from scenarios import MODELDEPLOY, wait_for

from cluster.chaos import ARTIFACTS, SOURCES, deployment, start_moto, stop_process
from cluster.control_plane import ApiError, ControlPlane, Node
from cluster.control_plane import wait_for as wait_until
from cluster.kubelet import Kubelet
from cluster.operator_env import (
    EXAMPLES,
    OPERATOR_NAMESPACE,
    SERVICE_ACCOUNT,
    Environment,
    Kube,
    Replica,
    operator_kubeconfig,
    running_replicas,
)

ACCOUNT = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{SERVICE_ACCOUNT}"
CREDENTIAL_ID = "authentication.kubernetes.io/credential-id"
LEASE = "modeldeploy-operator"
SERVICE_ACCOUNT_FILE = leader.SERVICE_ACCOUNT_NAMESPACE
LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{OPERATOR_NAMESPACE}/leases"
DEPLOYMENTS = 3
READY_SECONDS = 900
AUDIT_POLICY = f"""\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  users: ["{ACCOUNT}"]
  verbs: [create, update, patch, delete, deletecollection]
- level: Metadata
  users: ["{ACCOUNT}"]
  resources: [{{group: coordination.k8s.io, resources: [leases]}}]
- level: None
"""


@dataclass
class Cluster:
    control_plane: ControlPlane
    environment: Environment
    audit_log: Path
    workdir: Path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    scratch = tmp_path_factory.mktemp("leader")
    policy = scratch / "audit-policy.yaml"
    policy.write_text(AUDIT_POLICY)
    audit_log = scratch / "audit.log"
    control_plane = ControlPlane(extra_args={"kube-apiserver": [f"--audit-policy-file={policy}",
                                                                f"--audit-log-path={audit_log}",
                                                                "--audit-log-maxsize=0"]})
    with contextlib.ExitStack() as stack:
        moto, port = start_moto()
        stack.callback(stop_process, moto)
        stack.enter_context(control_plane)
        node = Node.cpu(control_plane.api, "cpu-1")
        node.register()
        stack.callback(node.stop)
        kubelet = Kubelet(control_plane, [node.name], scratch / "kubelet")
        kubelet.start()
        stack.callback(kubelet.stop)
        wait_until(f"node {node.name} Ready and untainted", node.is_ready, timeout=180)
        kube = Kube(control_plane.binary("kubectl"), control_plane.kubeconfig, "default")
        kube.install_crd()
        environment = Environment(kube, f"http://127.0.0.1:{port}", local=True, control_plane=control_plane)
        s3 = environment.create_buckets(SOURCES, ARTIFACTS)
        for name in ("digits_cnn.py", "digits_cnn.pt"):
            s3.upload_file(str(EXAMPLES / name), SOURCES, f"quickstart/{name}")
        yield Cluster(control_plane, environment, audit_log, scratch)
        assert not kubelet.errors, kubelet.errors


def api_client(kubeconfig: Path) -> client.ApiClient:
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return client.ApiClient(configuration)


class Clock:
    """A monotonic clock the test moves by hand: how long a candidate has seen a record unchanged."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def lease_namespace(cluster: Cluster) -> Iterator[str]:
    name = f"lease-{uuid.uuid4().hex[:8]}"
    cluster.environment.kube.ensure_namespace(name)
    yield name
    cluster.environment.kube.kubectl("delete", "namespace", name, "--wait=false", check=False, scoped=False)


def elector(cluster: Cluster, namespace: str, identity: str, clock: Clock | None = None,
            **timings: float) -> leader.Elector:
    settings = leader.Settings(namespace, LEASE, identity, **timings)
    leases = leader.Leases(api_client(cluster.control_plane.kubeconfig))
    return leader.Elector(settings, leases, clock) if clock else leader.Elector(settings, leases)


def read_lease(cluster: Cluster, namespace: str, name: str = LEASE) -> dict[str, Any]:
    return cluster.control_plane.api.get(f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}")


def usurp(cluster: Cluster, namespace: str, identity: str) -> None:
    """An administrator writes another holder into the Lease (read, change, update; again when the holder renewed
    in between and the update met a newer resourceVersion)."""

    def write() -> bool:
        lease = read_lease(cluster, namespace)
        lease["spec"]["holderIdentity"] = identity
        try:
            cluster.control_plane.api.request("PUT", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/"
                                                     f"{LEASE}", lease)
        except ApiError as error:
            if error.status != 409:
                raise
            return False
        return True

    wait_for(write, 30, what=f"the Lease of {namespace} written")


def micro_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


# --- the command line ----------------------------------------------------------------------------------------------

def test_the_lease_namespace_comes_from_the_pod_or_the_flag(tmp_path: Path) -> None:
    account = tmp_path / "namespace"
    assert leader.default_namespace({"POD_NAMESPACE": "ops"}, account) == "ops"
    assert leader.default_namespace({}, account) is None
    account.write_text("from-the-token\n")
    assert leader.default_namespace({}, account) == "from-the-token"
    assert leader.default_namespace({"POD_NAMESPACE": "ops"}, account) == "ops"
    first, second = leader.identity({"POD_NAME": "op-1"}), leader.identity({"POD_NAME": "op-1"})
    assert first.startswith("op-1_") and second.startswith("op-1_") and first != second


@pytest.mark.parametrize(("arguments", "named"), [
    ([], "--leader-election-namespace"),
    (["--leader-election-namespace=ops", "--leader-election-renew-deadline=20"], "--leader-election-renew-deadline"),
])
def test_bad_leader_election_settings_are_refused_by_name(arguments: list[str], named: str) -> None:
    if SERVICE_ACCOUNT_FILE.exists():
        pytest.fail(f"{SERVICE_ACCOUNT_FILE} exists here: the default namespace cannot be missing")
    environment = {key: value for key, value in os.environ.items() if key not in ("POD_NAMESPACE", "POD_NAME")}
    result = subprocess.run([str(MODELDEPLOY), "operator", "-A", "--leader-elect", *arguments], env=environment,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2 and named in result.stderr and "Traceback" not in result.stderr, result.stderr


# --- the Lease, round by round ------------------------------------------------------------------------------------

def test_the_first_candidate_creates_the_lease_and_renews_it(cluster: Cluster, lease_namespace: str) -> None:
    a = elector(cluster, lease_namespace, "a")
    assert a.try_acquire_or_renew()
    first = read_lease(cluster, lease_namespace)
    assert first["spec"]["holderIdentity"] == "a"
    assert first["spec"]["leaseDurationSeconds"] == 15 and first["spec"]["leaseTransitions"] == 0
    assert a.try_acquire_or_renew()
    renewed = read_lease(cluster, lease_namespace)
    assert renewed["metadata"]["resourceVersion"] != first["metadata"]["resourceVersion"]
    assert renewed["spec"]["holderIdentity"] == "a" and renewed["spec"]["leaseTransitions"] == 0
    assert renewed["spec"]["acquireTime"] == first["spec"]["acquireTime"]
    assert micro_time(renewed["spec"]["renewTime"]) > micro_time(first["spec"]["renewTime"])


def test_a_held_lease_is_taken_only_after_a_lease_duration_unrenewed(cluster: Cluster, lease_namespace: str) -> None:
    a = elector(cluster, lease_namespace, "a")
    assert a.try_acquire_or_renew()
    clock = Clock()
    b = elector(cluster, lease_namespace, "b", clock)
    held = read_lease(cluster, lease_namespace)["metadata"]["resourceVersion"]
    assert not b.try_acquire_or_renew() and b.holder == "a"
    clock.now += 14.9
    assert not b.try_acquire_or_renew()
    assert read_lease(cluster, lease_namespace)["metadata"]["resourceVersion"] == held, "a refused candidate wrote"

    assert a.try_acquire_or_renew()  # a renews: b's wait starts again from its sighting of the new record
    assert not b.try_acquire_or_renew()
    clock.now += 14.9
    assert not b.try_acquire_or_renew()
    clock.now += 0.2
    assert b.try_acquire_or_renew()
    lease = read_lease(cluster, lease_namespace)["spec"]
    assert lease["holderIdentity"] == "b" and lease["leaseTransitions"] == 1

    assert not a.try_acquire_or_renew() and a.holder == "b"  # the old leader sees it is not the holder any more


def test_a_released_lease_is_taken_at_once(cluster: Cluster, lease_namespace: str) -> None:
    a = elector(cluster, lease_namespace, "a")
    assert a.try_acquire_or_renew()
    b = elector(cluster, lease_namespace, "b", Clock())  # b's clock never moves: no expiry helps it
    assert not b.try_acquire_or_renew()
    assert not b.release(), "released a Lease another holds"
    assert a.release()
    released = read_lease(cluster, lease_namespace)["spec"]
    assert "holderIdentity" not in released and released["leaseDurationSeconds"] == 1
    assert not a.release(), "released twice"
    assert b.try_acquire_or_renew()
    assert read_lease(cluster, lease_namespace)["spec"]["holderIdentity"] == "b"


def test_a_write_on_a_stale_resource_version_is_a_conflict(cluster: Cluster, lease_namespace: str) -> None:
    a = elector(cluster, lease_namespace, "a")
    assert a.try_acquire_or_renew()
    stale = read_lease(cluster, lease_namespace)
    assert a.try_acquire_or_renew()
    leases = leader.Leases(api_client(cluster.control_plane.kubeconfig))
    with pytest.raises(leader.Conflict):
        leases.replace(lease_namespace, LEASE, {**stale, "spec": {**stale["spec"], "holderIdentity": "x"}}, 5)
    assert read_lease(cluster, lease_namespace)["spec"]["holderIdentity"] == "a"
    a.release()

    # Two candidates race for the free Lease: c reads it, b takes it before c writes; c's write is refused.
    b = elector(cluster, lease_namespace, "b")
    c = elector(cluster, lease_namespace, "c")
    read = c.leases.get

    def get_then_lose_the_race(namespace: str, name: str, timeout: float) -> dict[str, Any] | None:
        found = read(namespace, name, timeout)
        assert b.try_acquire_or_renew()
        return found

    c.leases.get = get_then_lose_the_race  # type: ignore[method-assign]
    assert not c.try_acquire_or_renew()
    assert read_lease(cluster, lease_namespace)["spec"]["holderIdentity"] == "b"


def test_the_leader_finds_another_holder_and_gives_up(cluster: Cluster, lease_namespace: str) -> None:
    a = elector(cluster, lease_namespace, "a", lease_seconds=3, renew_deadline=2, retry_period=0.2)
    assert a.try_acquire_or_renew()
    usurp(cluster, lease_namespace, "usurper")
    assert a.renew_until_lost(threading.Event())
    assert a.holder == "usurper"


def test_the_leader_gives_up_by_the_renew_deadline_without_an_api_server(cluster: Cluster,
                                                                        lease_namespace: str) -> None:
    a = elector(cluster, lease_namespace, "a", lease_seconds=3, renew_deadline=2, retry_period=0.5)
    assert a.try_acquire_or_renew()
    stop = threading.Event()
    outcome: list[bool] = []
    thread = threading.Thread(target=lambda: outcome.append(a.renew_until_lost(stop)))
    thread.start()
    time.sleep(1.2)  # a few renewals go through
    assert not outcome
    renewed = read_lease(cluster, lease_namespace)["spec"]["renewTime"]
    unreachable = client.Configuration()
    unreachable.host = "https://127.0.0.1:9"  # nothing listens: every request fails at once
    a.leases = leader.Leases(client.ApiClient(unreachable))
    thread.join(timeout=30)
    assert outcome == [True], "still leading without renewing"
    assert read_lease(cluster, lease_namespace)["spec"]["renewTime"] >= renewed

    b = elector(cluster, lease_namespace, "b", lease_seconds=3, renew_deadline=2, retry_period=0.5)
    stop.clear()
    assert b.renew_until_lost(stop), "renewed a Lease it does not hold"


# --- the RBAC the project ships ----------------------------------------------------------------------------------

def test_the_shipped_rbac_grants_its_lease_and_no_other(cluster: Cluster) -> None:
    kube = cluster.environment.kube
    kubeconfig = operator_kubeconfig(kube, cluster.workdir / "rbac-check.kubeconfig")
    leases = leader.Leases(api_client(kubeconfig))
    account = leader.Elector(leader.Settings(OPERATOR_NAMESPACE, LEASE, "rbac-check"), leases)
    assert account.try_acquire_or_renew()  # create (the first time), get, update
    assert account.try_acquire_or_renew()
    assert account.release()
    with pytest.raises(client.ApiException) as refused:
        leases.get(OPERATOR_NAMESPACE, "someone-elses-lease", 5)
    assert refused.value.status == 403
    with pytest.raises(client.ApiException) as refused:
        leases.get("default", LEASE, 5)
    assert refused.value.status == 403
    for verb in ("list", "watch", "delete", "patch"):
        answer = kube.kubectl("auth", "can-i", verb, "leases.coordination.k8s.io", f"--as={ACCOUNT}",
                              "-n", OPERATOR_NAMESPACE, check=False, scoped=False)
        assert answer.stdout.strip() == "no", f"the ServiceAccount may {verb} Leases"
    cluster.control_plane.api.delete(f"{LEASES}/{LEASE}")


def test_the_namespaced_rbac_grants_the_lease_in_its_namespace(cluster: Cluster, lease_namespace: str) -> None:
    kubeconfig = operator_kubeconfig(cluster.environment.kube, cluster.workdir / "rbac-namespaced-check.kubeconfig",
                                     lease_namespace)
    leases = leader.Leases(api_client(kubeconfig))
    account = leader.Elector(leader.Settings(lease_namespace, LEASE, "rbac-check"), leases)
    assert account.try_acquire_or_renew() and account.try_acquire_or_renew() and account.release()
    with pytest.raises(client.ApiException) as refused:
        leases.get(lease_namespace, "someone-elses-lease", 5)
    assert refused.value.status == 403
    with pytest.raises(client.ApiException) as refused:
        leases.get(OPERATOR_NAMESPACE, LEASE, 5)
    assert refused.value.status == 403


# --- two operator replicas ---------------------------------------------------------------------------------------

def holder(cluster: Cluster) -> str | None:
    try:
        return (read_lease(cluster, OPERATOR_NAMESPACE)["spec"] or {}).get("holderIdentity")
    except Exception:  # noqa: BLE001 - not created yet
        return None


def leading(cluster: Cluster, replicas: list[Replica]) -> Replica | None:
    identity = holder(cluster) or ""
    return next((r for r in replicas if identity.startswith(r.environment["POD_NAME"] + "_")), None)


def jti(kubeconfig: Path) -> str:
    token = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"]
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"]


def audit_events(cluster: Cluster) -> list[dict[str, Any]]:
    return [json.loads(line) for line in cluster.audit_log.read_text().splitlines()]


def credential(event: dict[str, Any]) -> str:
    return ",".join((event.get("user", {}).get("extra") or {}).get(CREDENTIAL_ID) or ["?"])


def stamp(event: dict[str, Any]) -> float:
    return micro_time(event["requestReceivedTimestamp"]).timestamp()


def is_ready(body: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (body.get("status") or {}).get("conditions", []))


def verify_store(endpoint: str, bodies: list[dict[str, Any]]) -> tuple[int, list[str]]:
    """(manifests read, problems): every committed manifest's outputs fetched against their sha256, and every stage
    the status calls Succeeded found committed."""
    problems: list[str] = []
    committed: set[str] = set()
    with tempfile.TemporaryDirectory() as scratch:
        for uri in sorted({body["spec"]["artifacts"]["uri"] for body in bodies}):
            store = open_store(uri, endpoint=endpoint, region="us-east-1",
                               credentials={"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"})
            for key in sorted(tasks_with_objects(store)):
                manifest = read_manifest(store, key)
                if manifest is None:
                    continue
                committed.add(key)
                for name in manifest.outputs:
                    try:
                        fetch(store, manifest, name, Path(scratch) / "output")
                    except (ChecksumMismatch, NotFound, StoreError) as error:
                        problems.append(f"{uri} task {key} output {name}: {error}")
    for body in bodies:
        for stage in body["status"]["stages"]:
            if stage.get("phase") != "Succeeded" or stage.get("key") not in committed:
                problems.append(f"{body['metadata']['name']}: {stage['name']} is {stage.get('phase')}, "
                                f"committed: {stage.get('key') in committed}")
    return len(committed), problems


def test_two_replicas_one_leads_and_the_other_takes_over_when_it_is_killed_mid_pipeline(cluster: Cluster) -> None:
    env = cluster.environment
    workdir = cluster.workdir / "replicas"
    workdir.mkdir()
    started_at = time.time()  # the audit log before that is other tests' (the same ServiceAccount)
    with running_replicas(env, workdir, 2, every_namespace=True, MODELDEPLOY_MAX_JOBS="4") as (kube, replicas):
        first = wait_for(lambda: leading(cluster, replicas), 120, what="a replica to hold the Lease")
        second = next(r for r in replicas if r is not first)
        # the follower answers its liveness probe and says what it waits for, the holder once it has read the Lease
        # (it may answer before); the leader's is kopf's, with ours
        expected = {"leader": False, "lease": f"{OPERATOR_NAMESPACE}/{LEASE}", "holder": holder(cluster)}
        wait_for(lambda: (second.health() or {}).get("leaderElection") == expected, 60,
                 what=f"the follower's /healthz to report {expected}")
        leader_health = wait_for(first.health, 60, what="the leader's /healthz")
        assert leader_health["leaderElection"]["leader"] is True

        store = f"s3://{ARTIFACTS}/leader"
        documents = [deployment(index, store) for index in range(DEPLOYMENTS)]
        for document in documents:
            kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(document))
        namespace = kube.namespace

        def mid_pipeline() -> bool:
            """Every deployment has a stage done (its result must survive the takeover) and one still to do, and a
            Job is running (its result must be taken up by the successor)."""
            bodies = kube.list("mdep", namespace)
            phases = [[stage.get("phase") for stage in (body.get("status") or {}).get("stages") or []]
                      for body in bodies]
            running = [job for job in kube.list("jobs.batch", namespace) if (job.get("status") or {}).get("active")]
            return (len(bodies) == DEPLOYMENTS and bool(running)
                    and all("Succeeded" in stages and set(stages) != {"Succeeded"} for stages in phases))

        wait_for(mid_pipeline, 600, interval=0.5, what="every deployment part done and a Job running")
        killed_at = time.time()
        first.kill()
        assert first.process is not None and first.process.returncode == -9
        wait_for(lambda: leading(cluster, replicas) is second, 120, what="the other replica to take the Lease")

        wait_for(lambda: all(is_ready(body) for body in kube.list("mdep", namespace)) or None, READY_SECONDS,
                 interval=2, what=f"every deployment Ready (logs: {workdir})")
        bodies = kube.list("mdep", namespace)
        assert len(bodies) == DEPLOYMENTS
        for body in bodies:
            cells = plan(load_resource(body).spec).cells
            results = body["status"]["results"]
            assert len(results) == len(cells) and all(cell["sha256"] for cell in results), body["status"]
        manifests, problems = verify_store(env.s3_endpoint, bodies)
        assert manifests >= 9 * DEPLOYMENTS and not problems, problems

        # no Job created twice; who wrote what, by each replica's token
        events = [event for event in audit_events(cluster) if stamp(event) >= started_at]
        first_id, second_id = (f"JTI={jti(Path(r.environment['KUBECONFIG']))}" for r in (first, second))
        writes = [e for e in events if e["verb"] in ("create", "update", "patch", "delete", "deletecollection")
                  and e.get("stage") == "ResponseComplete"]
        created = Counter(e["objectRef"]["name"] for e in writes
                          if e["verb"] == "create" and e["objectRef"].get("resource") == "jobs"
                          and not e["objectRef"].get("subresource") and e["objectRef"].get("namespace") == namespace
                          and e["responseStatus"]["code"] == 201)
        assert len(created) >= 9 * DEPLOYMENTS
        assert not {name: n for name, n in created.items() if n > 1}, "Jobs created more than once"
        assert {credential(e) for e in writes} <= {first_id, second_id}, "writes by a token of neither replica"
        before = [e for e in writes if stamp(e) < killed_at]
        tried = [e for e in before if credential(e) != first_id]
        # both candidates may try to create the Lease at start; the API server refuses the second (409)
        assert before and all(e["objectRef"].get("resource") == "leases" and e["responseStatus"]["code"] >= 400
                              for e in tried), (
            "while both ran, the follower wrote: "
            f"{[(e['verb'], e['objectRef'], e['responseStatus']['code']) for e in tried][:10]}")
        follower_reads = [e for e in events if credential(e) == second_id and stamp(e) < killed_at
                          and e["verb"] == "get" and e["objectRef"].get("resource") == "leases"]
        assert follower_reads, "the follower never read the Lease while it waited"
        assert [e for e in writes if stamp(e) >= killed_at and credential(e) == second_id], "the successor wrote nothing"


def kopf_serving(replica: Replica) -> bool:
    return bool(((replica.health() or {}).get("leaderElection") or {}).get("leader"))


def test_replicas_stopped_cleanly_release_or_just_leave_and_one_that_loses_the_lease_exits(cluster: Cluster) -> None:
    env = cluster.environment
    workdir = cluster.workdir / "release"
    workdir.mkdir()
    with running_replicas(env, workdir, 3, every_namespace=True) as (_, replicas):
        first = wait_for(lambda: leading(cluster, replicas), 120, what="a replica to hold the Lease")
        for replica in replicas:
            wait_for(replica.health, 60, what=f"{replica.log.stem}'s /healthz")
        # started: a stop then runs kopf's cleanup, then the release
        wait_for(lambda: kopf_serving(first), 120, what="the leader's kopf serving")
        first.stop()  # SIGTERM
        assert first.process is not None and first.process.returncode == 0
        # right after it exited: released (no holder) or already another's, never its own
        assert leading(cluster, replicas) is not first
        assert "released the Lease" in first.log.read_text()
        second = wait_for(lambda: leading(cluster, replicas), 60, what="a follower to take the released Lease")
        third = next(r for r in replicas if r not in (first, second))

        # A follower stopped: it leaves at once and cleanly, having never started kopf.
        third.stop()
        assert third.process is not None and third.process.returncode == 0
        assert "kopf" not in third.log.read_text()

        # Leadership lost (the Lease taken from it): the replica exits at once, non-zero.
        wait_for(lambda: kopf_serving(second), 120, what="the new leader's kopf serving")
        usurp(cluster, OPERATOR_NAMESPACE, "an-administrator")
        assert second.process is not None
        wait_for(lambda: second.process.poll() is not None, 30, what="the replica that lost the Lease to exit")
        assert second.process.returncode == 1
        assert "leadership lost" in second.log.read_text()
        cluster.control_plane.api.delete(f"{LEASES}/{LEASE}")
