"""examples/gitops on the real API server: Argo CD's and Flux's own CRDs (from their Go modules, tests/gitops_checks.py)
are installed and every example document passes a server-side dry run with strict field validation, the
ModelDeployment against the project's CRD."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from gitops_checks import REPO, vendor_crds

from cluster.control_plane import ControlPlane

EXAMPLES = REPO / "examples" / "gitops"
NAMESPACES = ["argocd", "flux-system", "models"]


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
