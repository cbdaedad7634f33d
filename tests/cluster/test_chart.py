"""The Helm chart (charts/modeldeploy) with the real helm v3 binary (cluster/helm.py) and the real API server.

Offline: `helm lint --strict` with each values file of charts/modeldeploy/ci/, the generated files in sync
(values.schema.json, the chart's copy of the CRD), a misspelt value refused, the rules equal to
examples/cluster/rbac*.yaml, the images equal to modeldeploy.images, every rendered configuration accepted by the
operator's configuration model.

On the control plane: each values file rendered by `helm template` and applied with a server-side dry run (the
ServiceMonitor CRD installed from the prometheus-operator release); then `helm install`, the operator run as the
chart's Deployment would run it (its command, arguments and environment, the ConfigMap's file, a token of the
chart's ServiceAccount, the chart's Lease) taking the quickstart to Ready, `helm upgrade` to one namespace (the
ClusterRole replaced by a Role) with the operator restarted on the new release, and `helm uninstall`, which removes
every object of the release but the CRD and leaves the users' ModelDeployments and Jobs.

The chart's pod is kept off the session's nodes (a node selector no node has): there is no container runtime
here, and the process kubelet projects no ServiceAccount token; the operator runs as a process instead.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import modeldeploy
import pytest
import yaml
from modeldeploy import images
from modeldeploy.backends import registry
from modeldeploy.controller.config import OperatorConfig
from scenarios import MODELDEPLOY, READY_SECONDS, apply, condition, free_port, jobs_of, quickstart, ready, wait_for

from cluster.control_plane import ControlPlane
from cluster.helm import helm_binary, service_monitor_crd
from cluster.kustomize_base import CHART, render_chart
from cluster.operator_env import (
    CRD,
    EXAMPLES,
    RBAC,
    RBAC_NAMESPACED,
    Environment,
    Kube,
    refusals,
    token_kubeconfig,
    whoami,
)
from cluster.values_schema import SCHEMA, render

pytest_plugins = ["cluster.operator_fixtures"]

VALUES_FILES = sorted((CHART / "ci").glob("*-values.yaml"))
CHART_CRD = CHART / "files" / CRD.name
# What Helm's ownership check wants on an object a release takes over.
ADOPT = ("meta.helm.sh/release-name", "meta.helm.sh/release-namespace")


def helm(*args: str, kubeconfig: Path | None = None, check: bool = True, timeout: float = 300,
         home: Path | None = None) -> subprocess.CompletedProcess[str]:
    environment = dict(os.environ)
    if home is not None:  # helm's own config, cache and data (repositories, plugins) out of the user's home
        environment.update(HELM_CONFIG_HOME=str(home / "config"), HELM_CACHE_HOME=str(home / "cache"),
                           HELM_DATA_HOME=str(home / "data"))
    scope = [f"--kubeconfig={kubeconfig}"] if kubeconfig else []
    result = subprocess.run([str(helm_binary()), *scope, *args], capture_output=True, text=True, timeout=timeout,
                            check=False, env=environment)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def of_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [document for document in documents if document["kind"] == kind]


def one(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(documents, kind)
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def rendered_config(documents: list[dict[str, Any]]) -> dict[str, Any]:
    return yaml.safe_load(one(documents, "ConfigMap")["data"]["operator.yaml"])


# --- offline -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUES_FILES, ids=[path.name for path in VALUES_FILES])
def test_lint_strict(values: Path) -> None:
    result = helm("lint", "--strict", str(CHART), "-f", str(values))
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout, result.stdout


def test_the_helm_binary_is_v3() -> None:
    version = helm("version", "--template", "{{.Version}}").stdout
    assert version.startswith("v3."), version


def test_the_packaged_chart_renders_as_the_folder(tmp_path: Path) -> None:
    """`helm package` takes the CRD's copy and the schema along: the archive renders what the folder does and
    checks values the same way."""
    packaged = helm("package", str(CHART), "--destination", str(tmp_path)).stdout.strip().rsplit(" ", 1)[-1]
    assert Path(packaged).name == f"modeldeploy-{modeldeploy.__version__}.tgz"
    for values in VALUES_FILES:
        arguments = ("template", "md", "--namespace", "ns", "-f", str(values))
        assert helm(*arguments[:2], packaged, *arguments[2:]).stdout == helm(*arguments[:2], str(CHART),
                                                                            *arguments[2:]).stdout
    assert "maxJob is not allowed" in helm("template", "md", packaged, "--set", "config.maxJob=1", check=False).stderr


def test_values_schema_is_generated_from_the_operators_configuration() -> None:
    assert SCHEMA.read_text() == render(), "run: .venv/bin/python tests/cluster/values_schema.py"


def test_the_charts_crd_is_the_generated_one() -> None:
    assert CHART_CRD.read_bytes() == CRD.read_bytes(), f"copy {CRD} to {CHART_CRD} (make crd)"
    rendered = one(render_chart(), "CustomResourceDefinition")
    assert rendered["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    generated = yaml.safe_load(CRD.read_text())
    assert {key: value for key, value in rendered.items() if key != "metadata"} == \
        {key: value for key, value in generated.items() if key != "metadata"}
    assert rendered["metadata"]["name"] == generated["metadata"]["name"]
    assert of_kind(render_chart("--set", "crds.install=false"), "CustomResourceDefinition") == []


@pytest.mark.parametrize("values, message", [
    (["--set", "replica=2"], "Additional property replica is not allowed"),
    (["--set", "config.maxJob=3"], "Additional property maxJob is not allowed"),
    (["--set", "config.placement.ascend.nodeSelectr.a=b"], "Additional property nodeSelectr is not allowed"),
    (["--set", "config.namespaces={a}"], "Additional property namespaces is not allowed"),
    (["--set", "metrics.serviceMonitor.enable=true"], "Additional property enable is not allowed"),
    (["--set", "config.maxJobs=0"], "config.maxJobs"),
    (["--set", "watchNamespaces={Team_A}"], "watchNamespaces.0"),
    (["--set", "replicas=2", "--set", "leaderElection.enabled=false"], "replicas above 1 need leaderElection"),
])
def test_a_wrong_value_fails_naming_it(values: list[str], message: str) -> None:
    result = helm("template", "md", str(CHART), *values, check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr


def _rules(path: Path, kind: str, name: str) -> list[dict[str, Any]]:
    for document in yaml.safe_load_all(path.read_text()):
        if document and document["kind"] == kind and document["metadata"]["name"] == name:
            return document["rules"]
    raise AssertionError(f"no {kind} {name} in {path}")


def test_the_rules_are_the_shipped_rbac() -> None:
    everywhere = render_chart()  # release modeldeploy: the names of examples/cluster/rbac.yaml
    assert one(everywhere, "ClusterRole")["rules"] == _rules(RBAC, "ClusterRole", "modeldeploy-operator")
    election = one(everywhere, "Role")
    assert election["metadata"]["name"] == "modeldeploy-operator-leader-election"
    assert election["rules"] == _rules(RBAC, "Role", "modeldeploy-operator-leader-election")
    assert one(everywhere, "ClusterRoleBinding")["subjects"] == [
        {"kind": "ServiceAccount", "name": "modeldeploy-operator", "namespace": "modeldeploy-system"}]

    some = render_chart("--set", "watchNamespaces={team-a,team-b}", "--set", "leaderElection.enabled=false")
    assert of_kind(some, "ClusterRole") == of_kind(some, "ClusterRoleBinding") == []
    roles = of_kind(some, "Role")
    assert sorted(role["metadata"]["namespace"] for role in roles) == ["team-a", "team-b"]
    for role in roles:
        assert role["rules"] == _rules(RBAC_NAMESPACED, "Role", "modeldeploy-operator")
    for binding in of_kind(some, "RoleBinding"):  # the ServiceAccount stays in the release's namespace
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "modeldeploy-operator",
                                        "namespace": "modeldeploy-system"}]
    args = one(some, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args and "--all-namespaces" not in args
    assert not [arg for arg in args if arg.startswith("--leader")] and of_kind(some, "Lease") == []


def test_the_default_images_are_the_projects() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["version"] == chart["appVersion"] == modeldeploy.__version__
    documents = render_chart()
    container = one(documents, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == images.operator_image()
    built = images.default_images()
    assert rendered_config(documents)["images"] == {
        "default": built["jobs-cpu"], "openvino": built["jobs-cpu"], "onnxruntime": built["jobs-cpu"],
        "ascend": built["jobs-ascend"], "magicmind": built["jobs-magicmind"]}
    defaults = OperatorConfig.model_validate(rendered_config(documents))
    assert {backend.name: defaults.image(backend) for backend in registry().values()} == \
        {backend.name: backend.image for backend in registry().values()}


@pytest.mark.parametrize("values", VALUES_FILES, ids=[path.name for path in VALUES_FILES])
def test_the_operator_accepts_the_rendered_configuration(values: Path) -> None:
    documents = render_chart("-f", str(values))
    given = yaml.safe_load(values.read_text()) or {}
    config = OperatorConfig.model_validate(rendered_config(documents))
    assert config.metrics_port == (given.get("metrics") or {}).get("port", 9090)
    for key, value in (given.get("config") or {}).items():
        if key != "images":  # merged over the chart's
            assert rendered_config(documents)[key] == value


def test_the_deployment_is_restricted_and_probed() -> None:
    deployment = one(render_chart(), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {"name": "health", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"] and "--leader-elect" in container["args"]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container["env"]


# --- on the control plane ------------------------------------------------------------------------------------


def _ensure_namespace(control_plane: ControlPlane, name: str) -> None:
    document = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(document))


def server_dry_run(control_plane: ControlPlane, manifest: str) -> subprocess.CompletedProcess[str]:
    """Applies the manifest with a server-side dry run: the API server validates (strict field validation),
    defaults and admits every object, and stores nothing."""
    return control_plane.kubectl("apply", "--server-side", "--dry-run=server", "--force-conflicts",
                                 "--field-manager=modeldeploy-chart-tests", "-f", "-", input=manifest, timeout=120)


def restricted(control_plane: ControlPlane, namespace: str) -> None:
    """The namespace warns of workloads whose pods the restricted Pod Security Standard would refuse (the API
    server's PodSecurity admission checks a Deployment's pod template only to warn)."""
    control_plane.kubectl("label", "--overwrite", "namespace", namespace, "pod-security.kubernetes.io/warn=restricted",
                          "pod-security.kubernetes.io/enforce=restricted")


@pytest.fixture(scope="module")
def service_monitors(control_plane: ControlPlane) -> str:
    return control_plane.apply_crd(service_monitor_crd())


@pytest.mark.parametrize("values", VALUES_FILES, ids=[path.name for path in VALUES_FILES])
def test_each_values_file_applies_to_the_api_server(values: Path, control_plane: ControlPlane, crd: str,
                                                    service_monitors: str, namespace: str) -> None:
    given = yaml.safe_load(values.read_text()) or {}
    for watched in given.get("watchNamespaces", []):
        _ensure_namespace(control_plane, watched)
    restricted(control_plane, namespace)
    manifest = helm("template", "modeldeploy", str(CHART), "--namespace", namespace, "-f", str(values)).stdout
    documents = [document for document in yaml.safe_load_all(manifest) if document]
    applied = server_dry_run(control_plane, manifest)
    assert applied.stdout.count("(server dry run)") == len(documents), applied.stdout
    assert "PodSecurity" not in applied.stderr, applied.stderr
    kinds = {document["kind"] for document in documents}
    assert ("ServiceMonitor" in kinds) == bool(given.get("metrics", {}).get("serviceMonitor", {}).get("enabled"))


def test_the_pod_security_check_sees_a_privileged_operator(control_plane: ControlPlane, crd: str,
                                                           namespace: str) -> None:
    """The check above can fail: without the chart's securityContext the same dry run warns."""
    restricted(control_plane, namespace)
    manifest = helm("template", "modeldeploy", str(CHART), "--namespace", namespace,
                    "--set", "securityContext.allowPrivilegeEscalation=true").stdout
    warned = server_dry_run(control_plane, manifest).stderr
    assert 'would violate PodSecurity "restricted:latest": allowPrivilegeEscalation != false' in warned, warned


@pytest.fixture
def release(environment: Environment, crd: str, tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """A release name and namespace for it; the CRD, installed earlier in the session with kubectl, is handed to
    the release as docs/install.md tells (Helm refuses to take over an object without its ownership marks)."""
    name = f"modeldeploy-{uuid.uuid4().hex[:6]}"
    namespace = f"mdsys-{uuid.uuid4().hex[:6]}"
    kube = environment.kube
    kube.ensure_namespace(namespace)
    # the API server creates the operator's pod only if the restricted Pod Security Standard allows it
    kube.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted", scoped=False)
    kube.kubectl("annotate", "--overwrite", f"crd/{crd}", f"{ADOPT[0]}={name}", f"{ADOPT[1]}={namespace}",
                 scoped=False)
    kube.kubectl("label", "--overwrite", f"crd/{crd}", "app.kubernetes.io/managed-by=Helm", scoped=False)
    yield name, namespace, tmp_path
    helm("uninstall", name, "--namespace", namespace, "--ignore-not-found", kubeconfig=kube.kubeconfig,
         home=tmp_path, check=False)
    kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False, scoped=False)


class ChartOperator:
    """`modeldeploy operator` as the release's Deployment runs it: the container's command and arguments, its
    environment (the downward API's POD_NAME and POD_NAMESPACE from the release's pod, the ConfigMap's file where
    the pod mounts it) and a TokenRequest token of the release's ServiceAccount instead of the projected one."""

    def __init__(self, kube: Kube, name: str, namespace: str, workdir: Path):
        self.kube, self.name, self.namespace, self.workdir = kube, name, namespace, workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / "operator.log"
        self.pod = ""
        self.args: list[str] = []

    def start(self) -> None:
        deployment = self.kube.get("deployments.apps", self.namespace, self.name)
        assert deployment is not None
        template = deployment["spec"]["template"]
        pod = wait_for(lambda: self._pod(template), 60, what=f"a pod of {self.name}'s current template")
        spec = template["spec"]
        container = spec["containers"][0]
        mounts = self._mounted_config_maps(spec, container)
        field = {"metadata.name": pod["metadata"]["name"], "metadata.namespace": self.namespace}
        environment = {key: value for key, value in os.environ.items() if not key.startswith(("MODELDEPLOY_", "AWS_"))}
        for variable in container.get("env", []):
            if "value" in variable:
                value = variable["value"]
                for mount_path, local in mounts.items():
                    if value.startswith(mount_path + "/"):
                        value = str(local / value[len(mount_path) + 1:])
                environment[variable["name"]] = value
            else:
                environment[variable["name"]] = field[variable["valueFrom"]["fieldRef"]["fieldPath"]]
        account = spec["serviceAccountName"]
        kubeconfig = token_kubeconfig(self.kube, self.workdir / f"{account}.kubeconfig", self.namespace, account)
        assert whoami(kubeconfig, self.kube.kubectl_binary) == f"system:serviceaccount:{self.namespace}:{account}"
        environment["KUBECONFIG"] = str(kubeconfig)
        assert container["command"] == ["modeldeploy"]
        self.pod = pod["metadata"]["name"]
        self.args = container["args"]
        with self.log.open("ab") as handle:
            self.process = subprocess.Popen([str(MODELDEPLOY), *self.args], stdout=handle, stderr=subprocess.STDOUT,
                                            env=environment)

    def _pod(self, template: dict[str, Any]) -> dict[str, Any] | None:
        checksum = template["metadata"]["annotations"]["modeldeploy.io/config-sha256"]
        selector = ",".join(f"{key}={value}" for key, value in template["metadata"]["labels"].items())
        for pod in self.kube.list("pods", self.namespace, selector):
            if pod["metadata"]["annotations"].get("modeldeploy.io/config-sha256") == checksum:
                return pod
        return None

    def _mounted_config_maps(self, spec: dict[str, Any], container: dict[str, Any]) -> dict[str, Path]:
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        mounts = {}
        for mount in container["volumeMounts"]:
            source = volumes[mount["name"]].get("configMap")
            if source is None:
                continue
            config_map = self.kube.get("configmaps", self.namespace, source["name"])
            assert config_map is not None
            local = self.workdir / f"{source['name']}-{uuid.uuid4().hex[:6]}"
            local.mkdir()
            for key, text in config_map["data"].items():
                (local / key).write_text(text)
            mounts[mount["mountPath"]] = local
        return mounts

    def port(self, flag_prefix: str) -> int:
        return int(next(arg for arg in self.args if arg.startswith(flag_prefix)).rsplit(":", 1)[1].split("/")[0])

    def get(self, url: str) -> str:
        return urllib.request.urlopen(url, timeout=5).read().decode()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


def _values(path: Path, values: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(values))
    return path


def _release_objects(kube: Kube, name: str, namespace: str, home: Path) -> list[tuple[str, str | None, str]]:
    manifest = helm("get", "manifest", name, "--namespace", namespace, kubeconfig=kube.kubeconfig, home=home).stdout
    return [(document["kind"], document["metadata"].get("namespace"), document["metadata"]["name"])
            for document in yaml.safe_load_all(manifest) if document]


RESOURCES = {"CustomResourceDefinition": "customresourcedefinitions", "ServiceAccount": "serviceaccounts",
             "ConfigMap": "configmaps", "ClusterRole": "clusterroles", "ClusterRoleBinding": "clusterrolebindings",
             "Role": "roles", "RoleBinding": "rolebindings", "Service": "services", "Deployment": "deployments.apps",
             "Lease": "leases.coordination.k8s.io"}


def test_install_upgrade_uninstall(environment: Environment, release: tuple[str, str, Path]) -> None:
    name, release_namespace, workdir = release
    kube = environment.kube
    s3 = environment.create_buckets("modeldeploy-examples", "modeldeploy-artifacts")
    for file in ("digits_cnn.py", "digits_cnn.pt"):
        s3.upload_file(str(EXAMPLES / file), "modeldeploy-examples", f"quickstart/{file}")
    models = f"md-{uuid.uuid4().hex[:8]}"
    kube.ensure_namespace(models)
    wait_for(lambda: kube.get("serviceaccounts", models, "default"), 60, what=f"{models}/default")
    environment.credentials_secret(models)
    users = kube.in_namespace(models)

    values = {
        "config": {"s3Endpoint": environment.s3_endpoint, "resyncSeconds": 3,
                   "policy": {"allowPythonArchitectures": True}},  # the quickstart's model is its own code
        "metrics": {"port": free_port()}, "health": {"port": free_port()},  # this machine is shared
        "nodeSelector": {"modeldeploy.io/no-container-runtime-here": "true"},
    }
    first = _values(workdir / "values.yaml", values)
    installed = helm("install", name, str(CHART), "--namespace", release_namespace, "-f", str(first),
                     kubeconfig=kube.kubeconfig, home=workdir)
    assert "STATUS: deployed" in installed.stdout and "kubectl get mdep" in installed.stdout  # NOTES.txt
    crd = kube.get("customresourcedefinitions", None, "modeldeployments.modeldeploy.io")
    assert crd is not None and crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["metadata"]["labels"]["app.kubernetes.io/instance"] == name
    operator_name = f"{name}-operator"
    assert kube.get("clusterroles", None, operator_name) is not None

    operator = ChartOperator(kube, operator_name, release_namespace, workdir)
    operator.start()
    try:
        assert "--all-namespaces" in operator.args and "--leader-elect" in operator.args
        health = f"http://127.0.0.1:{operator.port('--liveness=')}/healthz"
        wait_for(lambda: _answers(operator, health), 60, what="the operator's /healthz, which the probes ask")
        wait_for(lambda: _held_by(kube, release_namespace, operator_name, operator.pod), 60,
                 what="the operator holding the chart's Lease")
        # a store of its own: the session's other tests run the same quickstart into the shared one, and find its
        # tasks done there (no Jobs) when this one ran first
        apply(users, quickstart(**{"spec.artifacts.uri": f"s3://modeldeploy-artifacts/chart-{uuid.uuid4().hex[:8]}"}))
        body = wait_for(lambda: ready(users, "quickstart"), READY_SECONDS, interval=1, what="quickstart Ready")
        assert body["status"]["phase"] == "Succeeded" and len(body["status"]["results"]) == 12
        metrics_port = values["metrics"]["port"]
        metrics = operator.get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert 'modeldeploy_deployments{phase="Succeeded"} 1.0' in metrics
        service = kube.get("services", release_namespace, f"{operator_name}-metrics")
        assert service is not None and service["spec"]["ports"][0]["port"] == metrics_port
    finally:
        operator.stop()
    assert not refusals(operator.log), refusals(operator.log)
    before_upgrade = kube.get("deployments.apps", release_namespace, operator_name)
    assert before_upgrade is not None

    # Upgrade: only the namespace of the models, a Role there instead of the ClusterRole, a new configuration.
    values["watchNamespaces"] = [models]
    values["config"]["maxJobs"] = 7
    second = _values(workdir / "values-2.yaml", values)
    helm("upgrade", name, str(CHART), "--namespace", release_namespace, "-f", str(second),
         kubeconfig=kube.kubeconfig, home=workdir)
    assert kube.get("clusterroles", None, operator_name) is None
    assert kube.get("clusterrolebindings", None, operator_name) is None
    role = kube.get("roles", models, operator_name)
    assert role is not None and role["rules"] == _rules(RBAC_NAMESPACED, "Role", "modeldeploy-operator")
    config_map = kube.get("configmaps", release_namespace, operator_name)
    assert config_map is not None and yaml.safe_load(config_map["data"]["operator.yaml"])["maxJobs"] == 7
    after_upgrade = kube.get("deployments.apps", release_namespace, operator_name)
    assert after_upgrade is not None
    annotation = "modeldeploy.io/config-sha256"
    assert (after_upgrade["spec"]["template"]["metadata"]["annotations"][annotation]
            != before_upgrade["spec"]["template"]["metadata"]["annotations"][annotation])
    restarted = ChartOperator(kube, operator_name, release_namespace, workdir / "upgraded")
    restarted.workdir.mkdir()
    restarted.start()
    try:
        assert f"--namespace={models}" in restarted.args and "--all-namespaces" not in restarted.args
        wait_for(lambda: _held_by(kube, release_namespace, operator_name, restarted.pod), 60,
                 what="the upgraded operator holding the Lease")
        wait_for(lambda: 'modeldeploy_deployments{phase="Succeeded"} 1.0' in _answers(
            restarted, f"http://127.0.0.1:{values['metrics']['port']}/metrics"), 120,
            what="the upgraded operator counting the quickstart Succeeded")
        token = restarted.workdir / f"{operator_name}.kubeconfig"
        assert _can_i(kube, token, "list", "jobs.batch", models) and not _can_i(kube, token, "list", "jobs.batch")
    finally:
        restarted.stop()
    assert not refusals(restarted.log), refusals(restarted.log)

    # Uninstall: every object of the release goes but the CRD; the users' deployments and their Jobs stay.
    objects = _release_objects(kube, name, release_namespace, workdir)
    jobs = {job["metadata"]["name"] for job in jobs_of(users, "quickstart")}
    assert jobs
    helm("uninstall", name, "--namespace", release_namespace, "--wait", kubeconfig=kube.kubeconfig, home=workdir)
    for kind, namespace, object_name in objects:
        left = kube.get(RESOURCES[kind], namespace, object_name)
        if kind == "CustomResourceDefinition":
            assert left is not None, "the CRD is kept"
        else:
            assert left is None, f"{kind} {namespace}/{object_name} left behind"
    wait_for(lambda: not kube.list("pods", release_namespace, f"app.kubernetes.io/instance={name}"), 120,
             what="the operator's pods gone")
    leftovers = [f"{item['kind']} {item['metadata']['name']}" for item in json.loads(kube.kubectl(
        "get", "all,configmaps,serviceaccounts,roles,rolebindings,leases", "-n", release_namespace,
        "-l", f"app.kubernetes.io/instance={name}", "-o", "json", scoped=False).stdout)["items"]]
    assert leftovers == []
    assert [role for role in kube.list("clusterroles", None) if role["metadata"]["name"].startswith(name)] == []
    kept = kube.get("modeldeployments.modeldeploy.io", models, "quickstart")
    assert kept is not None and condition(kept, "Ready")["status"] == "True"
    assert {job["metadata"]["name"] for job in jobs_of(users, "quickstart")} == jobs
    # With no operator left, the deployment's finalizer holds it: docs/install.md says to delete them first.
    users.kubectl("patch", "mdep", "quickstart", "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
    kube.kubectl("delete", "namespace", models, "--wait=false", scoped=False)


def _answers(operator: ChartOperator, url: str) -> str:
    try:
        return operator.get(url) or "ok"
    except OSError:
        return ""


def _can_i(kube: Kube, kubeconfig: Path, verb: str, resource: str, namespace: str | None = None) -> bool:
    scope = ["-n", namespace] if namespace else ["--all-namespaces"]
    result = subprocess.run([kube.kubectl_binary, f"--kubeconfig={kubeconfig}", "auth", "can-i", verb, resource,
                             *scope], capture_output=True, text=True, timeout=60, check=False)
    return result.stdout.strip() == "yes"


def _held_by(kube: Kube, namespace: str, name: str, pod: str) -> bool:
    """Whether the Lease's holder is a process of the pod (the identity is POD_NAME and a suffix per process)."""
    lease = kube.get("leases.coordination.k8s.io", namespace, name)
    return (((lease or {}).get("spec") or {}).get("holderIdentity") or "").startswith(f"{pod}_")
