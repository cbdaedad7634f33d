"""examples/gitops against this repository: the paths the Argo CD Applications and Flux objects point at exist, the
example ModelDeployment is the quickstart's, and argocd-cm carries the health check verbatim.
tests/cluster/test_gitops_examples.py checks them against Argo CD's and Flux's CRDs on the real API server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from gitops_checks import MODEL_DEPLOYMENT, REPO

EXAMPLES = REPO / "examples" / "gitops"
REPO_URL = "github.com/modeldeploy/modeldeploy"


def documents() -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            found[(document["kind"], document["metadata"]["name"])] = document
    return found


def in_repo(path: str) -> Path:
    return REPO / path.removeprefix("./")


def test_argo_cd_applications_point_at_the_chart_and_the_models() -> None:
    found = documents()
    operator = found[("Application", "modeldeploy-operator")]["spec"]
    assert REPO_URL in operator["source"]["repoURL"]
    assert (in_repo(operator["source"]["path"]) / "Chart.yaml").is_file()
    models = found[("Application", "modeldeploy-models")]["spec"]["source"]
    assert in_repo(models["path"]) == EXAMPLES / "models"


def test_flux_points_at_the_chart_and_the_models() -> None:
    found = documents()
    source = found[("GitRepository", "modeldeploy")]
    assert REPO_URL in source["spec"]["url"]
    release = found[("HelmRelease", "modeldeploy")]["spec"]
    assert (in_repo(release["chart"]["spec"]["chart"]) / "Chart.yaml").is_file()
    assert release["chart"]["spec"]["sourceRef"] == {"kind": "GitRepository", "name": "modeldeploy"}
    operator = found[("Kustomization", "modeldeploy-operator")]["spec"]
    assert in_repo(operator["path"]) == EXAMPLES / "flux" / "operator"
    models = found[("Kustomization", "modeldeploy-models")]["spec"]
    assert in_repo(models["path"]) == EXAMPLES / "models"
    assert models["dependsOn"] == [{"name": "modeldeploy-operator"}] and models["wait"] is True


def test_the_example_model_deployment_is_the_quickstart() -> None:
    quickstart = yaml.safe_load((REPO / "examples" / "cluster" / "quickstart.yaml").read_text())
    example = documents()[("ModelDeployment", "quickstart")]
    assert example["spec"] == quickstart["spec"]
    policy = {"allowPythonArchitectures": True}  # what the quickstart's architecture needs
    found = documents()
    assert found[("Application", "modeldeploy-operator")]["spec"]["source"]["helm"]["valuesObject"]["config"][
        "policy"] == policy
    assert found[("HelmRelease", "modeldeploy")]["spec"]["values"]["config"]["policy"] == policy


def test_argocd_cm_carries_the_health_check_verbatim() -> None:
    configmap = documents()[("ConfigMap", "argocd-cm")]
    script = configmap["data"]["resource.customizations.health.modeldeploy.io_ModelDeployment"]
    assert script == (MODEL_DEPLOYMENT / "health.lua").read_text()
