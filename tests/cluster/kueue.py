"""Kueue's own controller manager on the local control plane (docs/kueue.md).

`build_kueue()` runs kueue.sh (a no-op on a warm cache; a failed build raises, so the test fails).
`Kueue(control_plane, workdir)`: installs the release's CRDs as they are, then runs the manager as a
process with its own client certificate (user `kueue-controller-manager`, group system:masters: the
test does not exercise Kueue's RBAC), leader election off, the batch/job integration only, and
internal certificate management off. Kueue then serves its webhooks with a certificate we issue, but
no webhook configuration is installed, so the API server never calls them: the operator creates its
Jobs suspended itself, which is what Kueue's Job webhook would otherwise do for it.

With internal certificate management off, Kueue 0.19 reads its metrics server's certificate from the
fixed path /etc/kueue/metrics/certs (cmd/kueue/main.go) even with metrics off, and exits if it is
missing; `Kueue` writes a self-signed pair there when there is none (the metrics server stays off).
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any, Self

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cluster.control_plane import (
    HERE,
    Component,
    ControlPlane,
    ControlPlaneError,
    free_port,
    wait_for,
    write_kubeconfig,
)

BUILD_SCRIPT = HERE / "kueue.sh"
GROUP, VERSION = "kueue.x-k8s.io", "v1beta2"
USER = "kueue-controller-manager"
NAMESPACE = "kueue-system"
METRICS_CERTS = Path("/etc/kueue/metrics/certs")  # fixed in Kueue's main.go


def build_kueue(timeout: float = 3600) -> Path:
    """The release directory kueue.sh prints: bin/kueue, crd/*.yaml, version.env."""
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=timeout,
                            check=False)
    if result.returncode != 0:
        raise ControlPlaneError(f"{BUILD_SCRIPT} exited {result.returncode}:\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def read_version(release: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in (release / "version.env").read_text().splitlines() if "=" in line)


def _self_signed(directory: Path, name: str) -> None:
    """tls.crt and tls.key for `name`, signed by their own key."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    key_file = directory / "tls.key"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    (directory / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


class Kueue:
    """Kueue's CRDs and controller manager on `control_plane`, until `stop()` (or the context's end)."""

    def __init__(self, control_plane: ControlPlane, workdir: Path) -> None:
        self.cp = control_plane
        self.workdir = workdir
        self.release = build_kueue()
        self.version = read_version(self.release)
        self.health = f"http://127.0.0.1:{free_port()}"
        self.component: Component | None = None

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Kueue:
        self.install_crds()
        self.cp.kubectl("create", "namespace", NAMESPACE, check=False)  # present from an earlier start is fine
        self.workdir.mkdir(parents=True, exist_ok=True)
        client = self.cp.pki.issue(USER, USER, organizations=["system:masters"], client=True)
        kubeconfig = write_kubeconfig(self.workdir / "kueue.kubeconfig", self.cp.server, self.cp.pki.ca_file, USER,
                                      cert=client)
        webhook_certs = self.workdir / "webhook-certs"
        _self_signed(webhook_certs, f"kueue-webhook-service.{NAMESPACE}.svc")
        if not (METRICS_CERTS / "tls.crt").exists() or not (METRICS_CERTS / "tls.key").exists():
            _self_signed(METRICS_CERTS, f"kueue-controller-manager-metrics-service.{NAMESPACE}.svc")
        config = self.workdir / "kueue-config.yaml"
        config.write_text(yaml.safe_dump({
            "apiVersion": f"config.{GROUP}/{VERSION}", "kind": "Configuration",
            "namespace": NAMESPACE,
            "health": {"healthProbeBindAddress": self.health.removeprefix("http://")},
            "metrics": {"bindAddress": "0"},
            "webhook": {"host": "127.0.0.1", "port": free_port(), "certDir": str(webhook_certs)},
            "leaderElection": {"leaderElect": False},
            "internalCertManagement": {"enable": False},
            "integrations": {"frameworks": ["batch/job"]},
            # The pending-workloads API is an aggregated API server with its own certificate at the fixed path
            # /visibility; nothing here asks it, so it is off.
            "featureGates": {"VisibilityOnDemand": False},
        }))
        self.component = Component("kueue", [str(self.release / "bin" / "kueue"), f"--config={config}",
                                             f"--kubeconfig={kubeconfig}", "--zap-log-level=2"],
                                   self.workdir / "kueue.log")
        self.component.start()
        wait_for("Kueue's controller manager ready", self._ready, timeout=120)
        return self

    def stop(self) -> None:
        if self.component is not None:
            self.component.stop()

    @property
    def log(self) -> Path:
        return self.workdir / "kueue.log"

    def _ready(self) -> bool:
        assert self.component is not None
        self.component.check_alive()
        try:
            with urllib.request.urlopen(f"{self.health}/readyz", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def install_crds(self) -> None:
        """The release's CRDs (config/components/crd/bases), server-side, each Established."""
        crds = self.release / "crd"
        self.cp.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=modeldeploy-tests",
                        "-f", str(crds), timeout=180)
        for path in sorted(crds.glob("*.yaml")):
            name = yaml.safe_load(path.read_text())["metadata"]["name"]
            wait_for(f"{name} Established", lambda name=name: self._established(name), timeout=60)

    def _established(self, crd: str) -> bool:
        status = self.cp.api.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}").get("status") or {}
        return any(c["type"] == "Established" and c["status"] == "True" for c in status.get("conditions") or [])

    # Kueue's objects, through the admin's API client.

    def create(self, plural: str, body: dict[str, Any], namespace: str | None = None) -> Any:
        scope = f"namespaces/{namespace}/" if namespace else ""
        return self.cp.api.create(f"/apis/{GROUP}/{VERSION}/{scope}{plural}",
                                  {"apiVersion": f"{GROUP}/{VERSION}", **body})

    def get(self, plural: str, name: str, namespace: str | None = None) -> Any:
        scope = f"namespaces/{namespace}/" if namespace else ""
        return self.cp.api.get(f"/apis/{GROUP}/{VERSION}/{scope}{plural}/{name}")

    def workloads(self, namespace: str) -> list[dict[str, Any]]:
        return self.cp.api.get(f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/workloads")["items"]

    def queue(self, namespace: str, name: str, quota: dict[str, str]) -> None:
        """A ResourceFlavor, a ClusterQueue with `quota` of it for every namespace, and a LocalQueue `name` in
        `namespace` pointing at it (the cluster-scoped two named after the LocalQueue's namespace)."""
        flavor = f"{namespace}-flavor"
        self.create("resourceflavors", {"kind": "ResourceFlavor", "metadata": {"name": flavor}})
        self.create("clusterqueues", {"kind": "ClusterQueue", "metadata": {"name": namespace}, "spec": {
            "namespaceSelector": {},
            "resourceGroups": [{"coveredResources": sorted(quota), "flavors": [{
                "name": flavor,
                "resources": [{"name": resource, "nominalQuota": value} for resource, value in sorted(quota.items())],
            }]}],
        }})
        self.create("localqueues", {"kind": "LocalQueue", "metadata": {"name": name, "namespace": namespace},
                                    "spec": {"clusterQueue": namespace}}, namespace)
        wait_for(f"LocalQueue {namespace}/{name} active", lambda: self._active("localqueues", name, namespace), 60)

    def _active(self, plural: str, name: str, namespace: str | None) -> bool:
        status = self.get(plural, name, namespace).get("status") or {}
        return any(c.get("type") == "Active" and c.get("status") == "True" for c in status.get("conditions") or [])


def audit_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
