"""examples/gitops on the real API server: Argo CD's and Flux's own CRDs (from their Go modules, tests/gitops_checks.py)
are installed and every example document passes a server-side dry run with strict field validation, the
ModelDeployment against the project's CRD. And the Helm values the Argo CD Application and the HelmRelease give
render charts/modeldeploy with the real helm (its values.schema.json refuses a misspelt key)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from gitops_checks import REPO, vendor_crds

from cluster.control_plane import ControlPlane
from cluster.helm import helm_binary

EXAMPLES = REPO / "examples" / "gitops"
NAMESPACES = ["argocd", "flux-system", "models"]
CHART = REPO / "charts" / "modeldeploy"


def example_values() -> dict[str, Any]:
    application = yaml.safe_load((EXAMPLES / "argocd" / "operator.yaml").read_text())
    release = yaml.safe_load((EXAMPLES / "flux" / "operator" / "helmrelease.yaml").read_text())
    return {"argocd": application["spec"]["source"]["helm"]["valuesObject"], "flux": release["spec"]["values"]}


def helm_template(values: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    file = tmp_path / "values.yaml"
    file.write_text(yaml.safe_dump(values))
    return subprocess.run([str(helm_binary()), "template", "modeldeploy", str(CHART), "--namespace",
                           "modeldeploy-system", "-f", str(file)], capture_output=True, text=True, timeout=300,
                          check=False)


@pytest.fixture(scope="module")
def vendor(control_plane: ControlPlane, crd: str) -> list[str]:
    names = [control_plane.apply_crd(path) for path in vendor_crds()]
    for namespace in NAMESPACES:
        control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}))
    return names


@pytest.mark.parametrize("path", sorted(EXAMPLES.rglob("*.yaml")), ids=lambda path: str(path.relative_to(EXAMPLES)))
def test_the_example_passes_a_server_side_dry_run(path: Path, vendor: list[str], control_plane: ControlPlane) -> None:
    result = control_plane.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", str(path), check=False)
    assert result.returncode == 0, f"{path}: {result.stderr}"
    assert "(server dry run)" in result.stdout


def test_a_misspelt_field_is_refused(vendor: list[str], control_plane: ControlPlane, tmp_path: Path) -> None:
    """The dry run does check the vendors' schemas: a field the Application CRD does not declare is an error."""
    text = (EXAMPLES / "argocd" / "operator.yaml").read_text().replace("targetRevision:", "targetRevison:")
    wrong = tmp_path / "operator.yaml"
    wrong.write_text(text)
    result = control_plane.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", str(wrong), check=False)
    assert result.returncode != 0 and "targetRevison" in result.stderr, result.stdout + result.stderr


@pytest.mark.parametrize("tool", ["argocd", "flux"])
def test_the_examples_values_render_the_chart(tool: str, tmp_path: Path) -> None:
    result = helm_template(example_values()[tool], tmp_path)
    assert result.returncode == 0, result.stderr
    configmap = next(document for document in yaml.safe_load_all(result.stdout)
                     if document and document["kind"] == "ConfigMap")
    (config,) = configmap["data"].values()
    assert yaml.safe_load(config)["policy"] == {"allowPythonArchitectures": True}


def test_a_misspelt_value_is_refused(tmp_path: Path) -> None:
    result = helm_template({"config": {"policy": {"allowPythonArchitecture": True}}}, tmp_path)
    assert result.returncode != 0 and "allowPythonArchitecture is not allowed" in result.stderr, result.stderr
