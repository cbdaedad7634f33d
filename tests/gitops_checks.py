"""The GitOps checks of tests/gitops (a Go module): Argo CD's health check for ModelDeployment under gopher-lua and
kstatus' status.Compute, on the testdata of gitops/argocd or on another tree in the same layout."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GO_MODULE = REPO / "tests" / "gitops"
CUSTOMIZATIONS = REPO / "gitops" / "argocd" / "resource_customizations"
MODEL_DEPLOYMENT = CUSTOMIZATIONS / "modeldeploy.io" / "ModelDeployment"


def go_environment() -> dict[str, str]:
    """The module and build caches tests/cluster/build.sh uses (shared, outside the checkout), local Go only."""
    cache = Path(os.environ.get("MODELDEPLOY_CACHE") or Path.home() / ".cache" / "modeldeploy")
    return {
        **os.environ,
        "GOMODCACHE": os.environ.get("GOMODCACHE") or str(cache / "go" / "mod"),
        "GOCACHE": os.environ.get("GOCACHE") or str(cache / "go" / "build"),
        "GOTOOLCHAIN": "local", "GOWORK": "off", "GOFLAGS": "-buildvcs=false -mod=readonly",
    }


def go_test(customizations: Path = CUSTOMIZATIONS, run: str = "", timeout: float = 900,
            **settings: str) -> subprocess.CompletedProcess[str]:
    """`go test -v` of the module (the tests matching `run`, else all) against the tree `customizations`; a failed
    build fails like a failed test."""
    environment = {**go_environment(), "MODELDEPLOY_GITOPS_CUSTOMIZATIONS": str(customizations), **settings}
    selected = ["-run", run] if run else []
    return subprocess.run(["go", "test", "-count=1", "-v", *selected, "./..."], cwd=GO_MODULE, env=environment,
                          capture_output=True, text=True, timeout=timeout, check=False)


# The Argo CD and Flux releases whose CRDs the examples are checked against: Argo CD's newest release that builds with
# Go 1.26 (3.6 wants 1.27), and the controllers Flux v2.9.5 ships (its go.mod's api versions).
VENDOR_CRDS = {
    "github.com/argoproj/argo-cd/v3@v3.5.8": ["manifests/crds/application-crd.yaml"],
    "github.com/fluxcd/source-controller@v1.9.5": ["config/crd/bases/source.toolkit.fluxcd.io_gitrepositories.yaml"],
    "github.com/fluxcd/helm-controller@v1.6.4": ["config/crd/bases/helm.toolkit.fluxcd.io_helmreleases.yaml"],
    "github.com/fluxcd/kustomize-controller@v1.9.5": ["config/crd/bases/kustomize.toolkit.fluxcd.io_kustomizations.yaml"],
}


def vendor_module(module: str) -> Path:
    """The directory of a module version (`go mod download`, checked against sum.golang.org)."""
    result = subprocess.run(["go", "mod", "download", "-json", module], cwd=GO_MODULE, env=go_environment(),
                            capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, f"go mod download {module}: {result.stdout}{result.stderr}"
    return Path(json.loads(result.stdout)["Dir"])


def vendor_crds() -> list[Path]:
    """The CRD files of VENDOR_CRDS, from their Go modules."""
    return [vendor_module(module) / path for module, paths in VENDOR_CRDS.items() for path in paths]
