"""The operator as it runs in a cluster: its ServiceAccount, the RBAC the project ships, a token.

`Kube` is admin access to a cluster for the scenarios of tests/scenarios.py (kubectl of the
server's release, JSON reads), in one namespace. `operator_kubeconfig` applies
examples/cluster/rbac.yaml (every namespace: a ClusterRole) or rbac-namespaced.yaml (one
namespace: a Role) as they are, asks the TokenRequest API for a token of the operator's
ServiceAccount and writes a kubeconfig holding only that token, so the operator has exactly the
permissions the project ships and a missing one shows as a refusal (`refusals`).

`running_operator` runs one operator process for a test; `running_replicas` several (`Replica`, e.g. with
--leader-elect), each with its own token of the ServiceAccount.

The same works on the local control plane (tests/cluster/control_plane.py) and on an outside
cluster (MODELDEPLOY_E2E_CLUSTER=1 with KUBECONFIG): the `environment` fixture
(cluster/operator_fixtures.py) picks one.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import yaml
from scenarios import MODELDEPLOY, Operator, free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
CRD = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
RBAC = EXAMPLES / "cluster" / "rbac.yaml"
RBAC_NAMESPACED = EXAMPLES / "cluster" / "rbac-namespaced.yaml"
SERVICE_ACCOUNT = "modeldeploy-operator"
OPERATOR_NAMESPACE = "modeldeploy-system"  # where rbac.yaml puts the ServiceAccount
TOKEN_DURATION = "24h"
EXCUSED: dict[Path, list[tuple[int, int]]] = {}  # by operator log: byte ranges whose refusals are expected
# What the operator logs when the API server refuses it: the informers' "(403)", kopf's APIForbiddenError and
# its "Not enough permissions" fallbacks.
REFUSED = re.compile(r"\(403\)|\b403\b.*[Ff]orbidden|APIForbiddenError|Not enough permissions|is forbidden")


class Kube:
    """A cluster through an admin kubeconfig, in `namespace`: what tests/scenarios.py calls the Cluster."""

    def __init__(self, kubectl: str, kubeconfig: Path, namespace: str):
        self.kubectl_binary = kubectl
        self.kubeconfig = kubeconfig
        self.namespace = namespace

    def in_namespace(self, namespace: str) -> Kube:
        return Kube(self.kubectl_binary, self.kubeconfig, namespace)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120,
                scoped: bool = True) -> subprocess.CompletedProcess[str]:
        """kubectl as the admin, in the namespace unless not `scoped` (for files naming their own)."""
        scope = ["-n", self.namespace] if scoped else []
        result = subprocess.run([self.kubectl_binary, f"--kubeconfig={self.kubeconfig}", *scope, *args],
                                input=input, capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    def get(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        scope = ["-n", namespace] if namespace else []
        result = self.kubectl("get", resource, name, *scope, "-o", "json", check=False, scoped=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr or "not found" in result.stderr:
                return None
            raise AssertionError(f"kubectl get {resource} {name}: {result.stderr}")
        return json.loads(result.stdout)

    def list(self, resource: str, namespace: str | None = None, label_selector: str = "") -> list[dict[str, Any]]:
        scope = ["-n", namespace] if namespace else ["--all-namespaces"]
        selector = ["-l", label_selector] if label_selector else []
        return json.loads(self.kubectl("get", resource, *scope, *selector, "-o", "json", scoped=False).stdout)["items"]

    def apply_file(self, path: Path, namespace: str | None = None) -> None:
        self.kubectl("apply", "-f", str(path), *(["-n", namespace] if namespace else []), scoped=False)

    def ensure_namespace(self, name: str) -> None:
        document = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump(document), scoped=False)

    def install_crd(self) -> None:
        self.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=modeldeploy-tests", "-f", str(CRD),
                     scoped=False)
        name = yaml.safe_load(CRD.read_text())["metadata"]["name"]
        # Not `kubectl wait --for=condition=Established`: right after a CRD is first created it fails at once,
        # the status having no conditions yet.
        established = "jsonpath={.status.conditions[?(@.type=='Established')].status}"
        wait_for(lambda: self.kubectl("get", f"crd/{name}", "-o", established, scoped=False).stdout == "True", 60,
                 what=f"{name} to be Established")


def operator_kubeconfig(kube: Kube, path: Path, namespace: str | None = None) -> Path:
    """Installs the shipped RBAC (every namespace for None, else only `namespace`) and writes a kubeconfig with a
    token of the operator's ServiceAccount from the TokenRequest API (`kubectl create token`)."""
    if namespace is None:
        kube.apply_file(RBAC)  # it has its own namespace, modeldeploy-system
        return token_kubeconfig(kube, path, OPERATOR_NAMESPACE, SERVICE_ACCOUNT)
    kube.apply_file(RBAC_NAMESPACED, namespace)
    return token_kubeconfig(kube, path, namespace, SERVICE_ACCOUNT, namespace)


def token_kubeconfig(kube: Kube, path: Path, account_namespace: str, account: str,
                     namespace: str | None = None) -> Path:
    """A kubeconfig holding a TokenRequest token of the ServiceAccount, for the admin kubeconfig's server."""
    token = kube.kubectl("create", "token", account, "-n", account_namespace,
                         f"--duration={TOKEN_DURATION}", scoped=False).stdout.strip()
    assert token.count(".") == 2, "TokenRequest did not return a JWT"
    view = json.loads(kube.kubectl("config", "view", "--raw", "--minify", "-o", "json", scoped=False).stdout)
    cluster = dict(view["clusters"][0]["cluster"])
    if "certificate-authority" in cluster:  # a path: embed it, the kubeconfig is read from elsewhere
        ca = Path(cluster.pop("certificate-authority")).read_bytes()
        cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
    user = f"system:serviceaccount:{account_namespace}:{account}"
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": "cluster", "user": user,
                                                **({"namespace": namespace} if namespace else {})}}],
        "current-context": user,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def whoami(kubeconfig: Path, kubectl: str) -> str:
    """The user the API server authenticates this kubeconfig as (SelfSubjectReview)."""
    out = subprocess.run([kubectl, f"--kubeconfig={kubeconfig}", "auth", "whoami", "-o", "json"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return json.loads(out)["status"]["userInfo"]["username"]


def refusals(log: Path, excused: Sequence[tuple[int, int]] = ()) -> list[str]:
    """The operator's log lines that tell of a request the API server refused, but for those in the `excused`
    ranges of byte offsets."""
    if not log.exists():
        return []
    text = log.read_bytes()
    for start, end in sorted(excused, reverse=True):
        text = text[:start] + text[end:]
    return [line for line in text.decode(errors="replace").splitlines() if REFUSED.search(line)]


@contextlib.contextmanager
def excused_refusals(operator: Operator, settle_seconds: float = 5) -> Iterator[None]:
    """Refusals the operator logs meanwhile (and `settle_seconds` after) do not fail the test: a kube-apiserver
    that starts serves requests before its RBAC authorizer has loaded the roles, and refuses them (403) until it
    has."""
    start = operator.log.stat().st_size
    yield
    time.sleep(settle_seconds)
    EXCUSED.setdefault(operator.log, []).append((start, operator.log.stat().st_size))


def unique_namespace(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Environment:
    """Where the scenarios run: admin access, the S3 endpoint the operator and the pods both reach, and whether
    the cluster is this project's local control plane (with its device nodes and process kubelet)."""

    kube: Kube
    s3_endpoint: str
    local: bool
    control_plane: Any = None  # the local ControlPlane, when local
    operator_config: dict[str, Any] = field(default_factory=dict)  # under each test's own configuration

    def s3(self) -> Any:
        if self.local:
            return boto3.client("s3", endpoint_url=self.s3_endpoint, aws_access_key_id="x",
                                aws_secret_access_key="x", region_name="us-east-1")
        return boto3.client("s3", endpoint_url=self.s3_endpoint)

    def credentials_secret(self, namespace: str, name: str = "s3-credentials") -> None:
        """The Secret of examples/cluster/s3-credentials.yaml; on an outside cluster with this machine's AWS keys."""
        secret = yaml.safe_load((EXAMPLES / "cluster" / "s3-credentials.yaml").read_text())
        secret["metadata"]["name"] = name
        if not self.local:
            secret["stringData"] = {key: os.environ[key] for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
        self.kube.in_namespace(namespace).kubectl("apply", "-f", "-", input=yaml.safe_dump(secret))

    def create_buckets(self, *buckets: str) -> Any:
        s3 = self.s3()
        for bucket in buckets:
            try:
                s3.create_bucket(Bucket=bucket)
            except (s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
                pass
        return s3


def outside() -> bool:
    return os.environ.get("MODELDEPLOY_E2E_CLUSTER") == "1"


class Replica(Operator):
    """`modeldeploy operator` with `arguments` of its own (e.g. --leader-elect) and its liveness endpoint known;
    started again after a kill, it is a new process on the same kubeconfig and log."""

    def __init__(self, kubeconfig: Path, log: Path, namespace: str | None, arguments: Sequence[str] = (),
                 **settings: str):
        super().__init__(kubeconfig, log, namespace, **settings)
        self.arguments = list(arguments)
        self.liveness = ""

    def start(self) -> None:
        self.liveness = f"http://127.0.0.1:{free_port()}/healthz"
        with self.log.open("ab") as handle:
            self.process = subprocess.Popen(
                [str(MODELDEPLOY), "operator", *self.scope, "--liveness", self.liveness, *self.arguments],
                stdout=handle, stderr=subprocess.STDOUT, env=self.environment,
            )

    def health(self) -> dict[str, Any] | None:
        """What the liveness endpoint answers (a JSON object), None while nothing listens there."""
        try:
            with urllib.request.urlopen(self.liveness, timeout=5) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, ConnectionError):
            return None


def _operator_namespace(env: Environment) -> tuple[str, Kube]:
    """A fresh namespace for the deployments, with its default ServiceAccount and the S3 credentials Secret."""
    namespace = unique_namespace("md")
    env.kube.ensure_namespace(namespace)
    kube = env.kube.in_namespace(namespace)
    # the serviceaccount controller's: pods (the Jobs') are refused until it exists
    wait_for(lambda: kube.get("serviceaccounts", namespace, "default"), 60, what=f"{namespace}/default")
    env.credentials_secret(namespace)
    return namespace, kube


def _config_setting(env: Environment, workdir: Path, config: dict[str, Any] | None) -> dict[str, str]:
    if config is None and not env.operator_config:
        return {}
    config_file = workdir / "operator.yaml"
    config_file.write_text(yaml.safe_dump({**env.operator_config, **(config or {})}))
    return {"MODELDEPLOY_CONFIG": str(config_file)}


@contextlib.contextmanager
def running_replicas(env: Environment, workdir: Path, replicas: int, *, every_namespace: bool,
                     arguments: Sequence[str] = ("--leader-elect",), config: dict[str, Any] | None = None,
                     **settings: str) -> Iterator[tuple[Kube, list[Replica]]]:
    """As `running_operator`, with `replicas` operator processes given `arguments`, started one after the other in
    order: replica i has POD_NAME=replica-i, POD_NAMESPACE the ServiceAccount's namespace (as the Downward API
    gives them in a Deployment), its own token of the ServiceAccount (so the API server's audit log tells the
    replicas apart) in workdir/replica-i.kubeconfig and its log in workdir/replica-i.log."""
    namespace, kube = _operator_namespace(env)
    account_namespace = OPERATOR_NAMESPACE if every_namespace else namespace
    settings = {**settings, **_config_setting(env, workdir, config)}
    started: list[Replica] = []
    for index in range(replicas):
        kubeconfig = operator_kubeconfig(env.kube, workdir / f"replica-{index}.kubeconfig",
                                         None if every_namespace else namespace)
        started.append(Replica(kubeconfig, workdir / f"replica-{index}.log", None if every_namespace else namespace,
                               arguments, MODELDEPLOY_S3_ENDPOINT=env.s3_endpoint, POD_NAME=f"replica-{index}",
                               POD_NAMESPACE=account_namespace, **settings))
    try:
        for replica in started:
            replica.start()
        yield kube, started
        kube.kubectl("delete", "mdep", "--all", "--timeout=120s")
    finally:
        for replica in started:
            replica.stop()
        env.kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False, scoped=False)
    refused = [line for replica in started for line in refusals(replica.log, EXCUSED.pop(replica.log, ()))]
    assert not refused, f"the API server refused the operator ({workdir}):\n" + "\n".join(refused[:20])


@contextlib.contextmanager
def running_operator(env: Environment, workdir: Path, *, every_namespace: bool, config: dict[str, Any] | None = None,
                     **settings: str) -> Iterator[tuple[Kube, Operator]]:
    """A fresh namespace with the S3 credentials Secret, and `modeldeploy operator` with the shipped RBAC's token:
    watching every namespace (rbac.yaml) or only that one (rbac-namespaced.yaml). On the way out the namespace's
    ModelDeployments are deleted while the operator still runs (it removes their finalizers), then the operator
    stops and the namespace goes; what the API server refused the operator fails the test."""
    namespace, kube = _operator_namespace(env)
    kubeconfig = operator_kubeconfig(env.kube, workdir / "operator.kubeconfig",
                                     None if every_namespace else namespace)
    settings.update(_config_setting(env, workdir, config))
    log = workdir / "operator.log"
    operator = Operator(kubeconfig, log, None if every_namespace else namespace,
                        MODELDEPLOY_S3_ENDPOINT=env.s3_endpoint, **settings)
    operator.start()
    try:
        yield kube, operator
        kube.kubectl("delete", "mdep", "--all", "--timeout=120s")
    finally:
        operator.stop()
        env.kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False, scoped=False)
    refused = refusals(log, EXCUSED.pop(log, ()))
    assert not refused, f"the API server refused the operator ({log}):\n" + "\n".join(refused[:20])
