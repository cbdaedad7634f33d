"""A real Kubernetes control plane on 127.0.0.1 for tests.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler, as built by
tests/cluster/build.sh, each a child process with its own free ports, under one
temporary directory that holds a fresh PKI, the etcd data and the logs:

    with ControlPlane() as cp:
        cp.kubeconfig            # admin kubeconfig (client certificate in system:masters)
        cp.api.get("/version")   # a small client for the same identity
        cp.kubectl("get", "nodes")

Everything is TLS with client certificates, as in a kubeadm cluster: etcd only
accepts the API server's certificate, the API server authorizes with Node,RBAC,
the controller manager and the scheduler authenticate as system:kube-controller-manager
and system:kube-scheduler. Children get SIGKILL if the process that started them dies
(PR_SET_PDEATHSIG), so a killed test run leaves nothing behind. See README.md.

Also here: `Node`, which registers a Node as a kubelet with a device plugin would
leave it and keeps its Lease renewed so the node lifecycle controller keeps it Ready.
"""

from __future__ import annotations

import base64
import ctypes
import datetime as dt
import http.client
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build.sh"
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/12"  # kubeadm's default
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


class ControlPlaneError(RuntimeError):
    pass


def build_binaries(timeout: float = 3 * 3600) -> Path:
    """Runs build.sh (a no-op on a warm cache) and returns the directory of the binaries.

    A failed build raises with the script's reason: tests that need the control plane fail,
    they never skip.
    """
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise ControlPlaneError(
            f"{BUILD_SCRIPT} exited {result.returncode}:\n{result.stderr[-4000:]}"
        )
    bin_dir = Path(result.stdout.strip().splitlines()[-1])
    if not bin_dir.is_dir():
        raise ControlPlaneError(f"{BUILD_SCRIPT} printed {bin_dir}, which is not a directory")
    return bin_dir


def read_versions(bin_dir: Path) -> dict[str, str]:
    """KUBE_VERSION, ETCD_VERSION, ... as build.sh recorded them next to the binaries."""
    versions = {}
    for line in (bin_dir.parent / "versions.env").read_text().splitlines():
        key, _, value = line.partition("=")
        versions[key] = value.strip('"')
    return versions


def free_port() -> int:
    # The port is free when this returns; a child binds it a moment later. Another process
    # taking it in between makes that child fail to start, with its log in the error.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- PKI -----------------------------------------------------------------------------------------

def _pem_key(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class PKI:
    """A self-signed CA and the certificates it signs, written to `directory` as PEM files."""

    def __init__(self, directory: Path, days: int = 7) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.days = days
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modeldeploy-test-ca")])
        now = dt.datetime.now(dt.UTC)
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key()), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        self.ca_file = self._write("ca.crt", _pem_cert(self.ca_cert))
        self.ca_key_file = self._write("ca.key", _pem_key(self.ca_key))

    def _write(self, name: str, data: bytes) -> Path:
        path = self.directory / name
        path.write_bytes(data)
        path.chmod(0o600)
        return path

    def issue(self, name: str, common_name: str, *, organizations: Sequence[str] = (),
              server_names: Sequence[str] = (), client: bool = False) -> tuple[Path, Path]:
        """Writes name.crt/name.key: a server certificate for `server_names` (DNS names or IPs)
        and/or a client certificate (the API server takes CN as user, O as groups)."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        subject.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server_names else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(subject)).issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=self.days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=False,
                                         crl_sign=False, content_commitment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                           critical=False)
        )
        if server_names:
            alt: list[x509.GeneralName] = []
            for entry in server_names:
                try:
                    alt.append(x509.IPAddress(ipaddress.ip_address(entry)))
                except ValueError:
                    alt.append(x509.DNSName(entry))
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        cert = builder.sign(self.ca_key, hashes.SHA256())
        return self._write(f"{name}.crt", _pem_cert(cert)), self._write(f"{name}.key", _pem_key(key))

    def service_account_keys(self) -> tuple[Path, Path]:
        """The key pair that signs service account tokens (private) and verifies them (public)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        return self._write("sa.key", _pem_key(key)), self._write("sa.pub", public)


def write_kubeconfig(path: Path, server: str, ca_file: Path, user: str, *,
                     cert: tuple[Path, Path] | None = None, token: str | None = None,
                     namespace: str | None = None) -> Path:
    """A kubeconfig with everything embedded, so it stays valid wherever it is copied."""
    credentials: dict[str, str] = {}
    if cert is not None:
        credentials["client-certificate-data"] = base64.b64encode(cert[0].read_bytes()).decode()
        credentials["client-key-data"] = base64.b64encode(cert[1].read_bytes()).decode()
    if token is not None:
        credentials["token"] = token
    context: dict[str, str] = {"cluster": "modeldeploy-test", "user": user}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "modeldeploy-test", "cluster": {
            "server": server, "certificate-authority-data": base64.b64encode(ca_file.read_bytes()).decode()}}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": user, "context": context}],
        "current-context": user,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


# --- a small REST client ---------------------------------------------------------------------------

class ApiError(Exception):
    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        self.status = status
        self.body = body
        try:
            self.reason = json.loads(body).get("reason", "")
            message = json.loads(body).get("message", body)
        except ValueError:
            self.reason, message = "", body
        super().__init__(f"{method} {path}: {status} {message}")


class Api:
    """JSON over HTTPS with a client certificate; enough for the harness itself."""

    def __init__(self, server: str, ca_file: Path, cert: tuple[Path, Path]) -> None:
        self.server = server.rstrip("/")
        self.context = ssl.create_default_context(cafile=str(ca_file))
        self.context.load_cert_chain(str(cert[0]), str(cert[1]))

    def request(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                query: Mapping[str, str] | None = None, timeout: float = 30) -> Any:
        url = self.server + path + (("?" + urllib.parse.urlencode(query)) if query else "")
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": content_type, "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, context=self.context, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            raise ApiError(method, path, err.code, err.read().decode(errors="replace")) from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode(errors="replace")

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def create(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, body)

    def merge_patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, body, content_type="application/merge-patch+json")

    def strategic_patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, body, content_type="application/strategic-merge-patch+json")

    def delete(self, path: str, body: Any = None, *, query: Mapping[str, str] | None = None) -> Any:
        return self.request("DELETE", path, body, query=query)

    def watch(self, path: str, query: Mapping[str, str], *, timeout: float = 330) -> Watch:
        """A watch request (`watch=1` is added); iterate it for the events, `close()` it from any thread."""
        return Watch(self, path, query, timeout)


class Watch:
    """One streaming watch: the API server's JSON events, one a line, until it ends the request (its
    `timeoutSeconds`), the connection breaks, or `close()` shuts the socket from another thread."""

    def __init__(self, api: Api, path: str, query: Mapping[str, str], timeout: float) -> None:
        url = urllib.parse.urlsplit(api.server)
        self.path = path + "?" + urllib.parse.urlencode({**query, "watch": "1"})
        self._conn = http.client.HTTPSConnection(url.hostname or "127.0.0.1", url.port, context=api.context,
                                                 timeout=timeout)
        self._closed = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            self._conn.request("GET", self.path, headers={"Accept": "application/json"})
            if self._closed:
                return
            response = self._conn.getresponse()
            if response.status != 200:
                raise ApiError("WATCH", self.path, response.status, response.read().decode(errors="replace"))
            for line in response:
                if self._closed:
                    return
                if line.strip():
                    yield json.loads(line)
        finally:
            self._conn.close()

    def close(self) -> None:
        self._closed = True
        sock = self._conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    """Calls check until it returns something truthy; raises with its last error after timeout."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except (OSError, ApiError, ssl.SSLError) as err:
            last = err
        if time.monotonic() > deadline:
            raise ControlPlaneError(f"timed out after {timeout:.0f}s waiting for {what}"
                                    + (f" (last error: {last})" if last else ""))
        time.sleep(interval)


# --- processes ------------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> Callable[[], None]:
    def preexec() -> None:
        # Runs in the child between fork and exec. The signal is tied to the thread that forked:
        # start the control plane from a thread that lives as long as it should (the main one).
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
    return preexec


class Component:
    """One child process of the control plane, logging to its own file."""

    def __init__(self, name: str, argv: list[str], log_file: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                            preexec_fn=_die_with(os.getpid()))  # noqa: PLW1509 (only prctl)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_alive(self) -> bool:
        if not self.alive():
            code = self.process.returncode if self.process else None
            raise ControlPlaneError(f"{self.name} exited ({code}); end of {self.log_file}:\n{self.log_tail()}")
        return True

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM, then SIGKILL if it has not exited after `timeout` seconds (at once with 0)."""
        if self.process is None or self.process.poll() is not None:
            return
        if timeout > 0:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
                return
            except subprocess.TimeoutExpired:
                pass
        self.process.kill()
        self.process.wait()


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler on 127.0.0.1.

    `start()` returns once etcd's /health, the API server's /readyz, the controller manager's
    /healthz and the scheduler's /readyz answer ok; `timings` then says when each was ready
    (seconds from the start of `start()`, the first entry being build.sh's cache check).
    """

    COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")

    def __init__(self, bin_dir: Path | None = None, *, workdir: Path | None = None,
                 keep_workdir: bool = False, extra_args: Mapping[str, Sequence[str]] | None = None) -> None:
        self.bin_dir = bin_dir
        self._own_workdir = workdir is None
        self.workdir = workdir
        self.keep_workdir = keep_workdir
        self.extra_args = {k: list(v) for k, v in (extra_args or {}).items()}
        self.components: dict[str, Component] = {}
        self.timings: dict[str, float] = {}
        self.versions: dict[str, str] = {}
        self.ports: dict[str, int] = {}
        self._ready: dict[str, Callable[[], bool]] = {}

    # Paths, set by start().
    kubeconfig: Path
    server: str
    pki: PKI
    api: Api  # as the admin
    etcd_api: Api  # etcd's HTTP endpoints (/health, /version), as the API server

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def binary(self, name: str) -> str:
        assert self.bin_dir is not None
        path = self.bin_dir / name
        if not os.access(path, os.X_OK):
            raise ControlPlaneError(f"{path} is missing; run {BUILD_SCRIPT}")
        return str(path)

    def start(self, ready_timeout: float = 120) -> ControlPlane:
        t0 = time.monotonic()
        if self.bin_dir is None:
            self.bin_dir = build_binaries()
        self.timings["build-check"] = time.monotonic() - t0
        self.versions = read_versions(self.bin_dir)
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="modeldeploy-cp-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        for name in ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler"):
            self.ports[name] = free_port()

        self.pki = PKI(self.workdir / "pki")
        pki = self.pki
        local = ["127.0.0.1", "localhost"]
        service_ip = str(next(ipaddress.ip_network(SERVICE_CLUSTER_IP_RANGE).hosts()))
        etcd_server = pki.issue("etcd-server", "etcd", server_names=local)
        etcd_client = pki.issue("apiserver-etcd-client", "kube-apiserver-etcd-client", client=True)
        apiserver = pki.issue("apiserver", "kube-apiserver", server_names=[
            *local, service_ip, "kubernetes", "kubernetes.default", "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local"])
        admin = pki.issue("admin", "modeldeploy-admin", organizations=["system:masters"], client=True)
        kcm_client = pki.issue("controller-manager-client", "system:kube-controller-manager", client=True)
        kcm_serving = pki.issue("controller-manager", "kube-controller-manager", server_names=local)
        scheduler_client = pki.issue("scheduler-client", "system:kube-scheduler", client=True)
        scheduler_serving = pki.issue("scheduler", "kube-scheduler", server_names=local)
        sa_key, sa_pub = pki.service_account_keys()
        self.timings["pki"] = time.monotonic() - t0

        self.server = f"https://127.0.0.1:{self.ports['apiserver']}"
        self.kubeconfig = write_kubeconfig(self.workdir / "admin.kubeconfig", self.server, pki.ca_file,
                                           "modeldeploy-admin", cert=admin)
        kcm_kubeconfig = write_kubeconfig(self.workdir / "controller-manager.kubeconfig", self.server,
                                          pki.ca_file, "system:kube-controller-manager", cert=kcm_client)
        scheduler_kubeconfig = write_kubeconfig(self.workdir / "scheduler.kubeconfig", self.server,
                                                pki.ca_file, "system:kube-scheduler", cert=scheduler_client)
        self.api = Api(self.server, pki.ca_file, admin)
        etcd_url = f"https://127.0.0.1:{self.ports['etcd']}"
        peer_url = f"http://127.0.0.1:{self.ports['etcd-peer']}"

        argv = {
            "etcd": [
                self.binary("etcd"),
                "--name=default",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--initial-cluster-state=new",
                f"--cert-file={etcd_server[0]}",
                f"--key-file={etcd_server[1]}",
                "--client-cert-auth=true",
                f"--trusted-ca-file={pki.ca_file}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            "kube-apiserver": [
                self.binary("kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                f"--etcd-cafile={pki.ca_file}",
                f"--etcd-certfile={etcd_client[0]}",
                f"--etcd-keyfile={etcd_client[1]}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.ports['apiserver']}",
                f"--tls-cert-file={apiserver[0]}",
                f"--tls-private-key-file={apiserver[1]}",
                f"--client-ca-file={pki.ca_file}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={sa_pub}",
                f"--service-account-signing-key-file={sa_key}",
                "--allow-privileged=true",
                # Without it, SIGTERM leaves the API server waiting (over 70 s measured) for the
                # controllers' open watches; with it, it closes them and exits within a second.
                "--shutdown-watch-termination-grace-period=5s",
            ],
            "kube-controller-manager": [
                self.binary("kube-controller-manager"),
                f"--kubeconfig={kcm_kubeconfig}",
                f"--authentication-kubeconfig={kcm_kubeconfig}",
                f"--authorization-kubeconfig={kcm_kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['controller-manager']}",
                f"--tls-cert-file={kcm_serving[0]}",
                f"--tls-private-key-file={kcm_serving[1]}",
                f"--client-ca-file={pki.ca_file}",
                f"--root-ca-file={pki.ca_file}",
                f"--service-account-private-key-file={sa_key}",
                "--use-service-account-credentials=true",
                f"--cluster-signing-cert-file={pki.ca_file}",
                f"--cluster-signing-key-file={pki.ca_key_file}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--leader-elect=false",
            ],
            "kube-scheduler": [
                self.binary("kube-scheduler"),
                f"--kubeconfig={scheduler_kubeconfig}",
                f"--authentication-kubeconfig={scheduler_kubeconfig}",
                f"--authorization-kubeconfig={scheduler_kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['scheduler']}",
                f"--tls-cert-file={scheduler_serving[0]}",
                f"--tls-private-key-file={scheduler_serving[1]}",
                f"--client-ca-file={pki.ca_file}",
                "--leader-elect=false",
            ],
        }
        for name, args in self.extra_args.items():
            argv[name].extend(args)
        for name in self.COMPONENTS:
            self.components[name] = Component(name, argv[name], logs / f"{name}.log")

        self.etcd_api = etcd_api = Api(etcd_url, pki.ca_file, etcd_client)
        kcm = Api(f"https://127.0.0.1:{self.ports['controller-manager']}", pki.ca_file, admin)
        scheduler = Api(f"https://127.0.0.1:{self.ports['scheduler']}", pki.ca_file, admin)
        self._ready = {
            "etcd": lambda: etcd_api.get("/health", timeout=2).get("health") == "true",
            "kube-apiserver": lambda: self.api.get("/readyz", timeout=2) == "ok",
            "kube-controller-manager": lambda: kcm.get("/healthz", timeout=2) == "ok",
            "kube-scheduler": lambda: scheduler.get("/readyz", timeout=2) == "ok",
        }
        for name in ("etcd", "kube-apiserver"):
            self.components[name].start()
            self._wait(name, ready_timeout)
            self.timings[name] = time.monotonic() - t0
        # The two controllers only talk to the API server; start them together.
        for name in ("kube-controller-manager", "kube-scheduler"):
            self.components[name].start()
        for name in ("kube-controller-manager", "kube-scheduler"):
            self._wait(name, ready_timeout)
            self.timings[name] = time.monotonic() - t0
        self.timings["total"] = time.monotonic() - t0
        return self

    def _wait(self, name: str, timeout: float) -> None:
        component, ready = self.components[name], self._ready[name]
        try:
            wait_for(f"{name} to be ready", lambda: component.check_alive() and ready(), timeout)
        except ControlPlaneError as err:
            raise ControlPlaneError(f"{err}\nend of {component.log_file}:\n{component.log_tail()}") from None

    def restart(self, name: str, *, kill: bool = False, ready_timeout: float = 120) -> float:
        """Stops one component (SIGTERM, or SIGKILL with kill=True) and starts it again with the same
        flags, ports and data; returns the seconds from the stop until it was ready again."""
        t0 = time.monotonic()
        self.components[name].stop(timeout=0 if kill else 30)
        self.components[name].start()
        self._wait(name, ready_timeout)
        return time.monotonic() - t0

    def stop(self) -> None:
        for name in reversed(self.COMPONENTS):
            if name in self.components:
                self.components[name].stop()
        if self.workdir is not None and self._own_workdir and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """kubectl of the same release, as the admin."""
        result = subprocess.run([self.binary("kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
                                input=input, capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise ControlPlaneError(f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    def apply_crd(self, path: Path) -> str:
        """Applies a CRD (server-side) and returns its name once it is Established. Waited for through the API:
        `kubectl wait --for=condition=Established` right after a CRD is first created fails at once, its status
        having no conditions yet."""
        name = yaml.safe_load(path.read_text())["metadata"]["name"]
        self.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=modeldeploy-tests",
                     "-f", str(path))
        crd = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
        wait_for(f"{name} to be Established", lambda: any(
            c["type"] == "Established" and c["status"] == "True"
            for c in self.api.get(crd).get("status", {}).get("conditions") or []), timeout=60)
        return name

    def node_api(self, node: str) -> Api:
        """A client with the credentials a kubelet has: user system:node:<node> in group system:nodes, which
        the Node authorizer and the NodeRestriction admission plugin confine to that node's pods and to the
        Secrets and ConfigMaps those pods reference."""
        cert = self.pki.issue(f"kubelet-{node}", f"system:node:{node}", organizations=["system:nodes"], client=True)
        return Api(self.server, self.pki.ca_file, cert)


# --- nodes ----------------------------------------------------------------------------------------

def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now_micro() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


ASCEND_CHIP_LABEL = "node.kubernetes.io/npu.chip.name"  # set by the Ascend device plugin
ASCEND310P = "huawei.com/Ascend310P"
ASCEND310 = "huawei.com/Ascend310"
MLU370 = "cambricon.com/mlu370"
MLU_TAINT = "cambricon.com/mlu"


class Node:
    """A Node as a kubelet registers it, with what a device plugin adds (extended resources in
    capacity and allocatable, its label and taint), kept alive by renewing its Lease in
    kube-node-lease as the kubelet does every 10 s (the node lifecycle controller marks a node
    whose Lease is older than --node-monitor-grace-period, 50 s, NotReady and taints it).

    Pods bound to it are run by tests/cluster/kubelet.py.
    """

    LEASE_SECONDS = 40  # the kubelet's default

    @classmethod
    def cpu(cls, api: Api, name: str, **kw: Any) -> Node:
        """A node without devices and without taints: where CPU stages land."""
        return cls(api, name, **kw)

    @classmethod
    def ascend(cls, api: Api, name: str, *, resource: str = ASCEND310P, chip: str = "310P3", count: int = 4,
               **kw: Any) -> Node:
        """A node as the Ascend device plugin leaves it: whole chips as `resource` (huawei.com/Ascend310P,
        huawei.com/Ascend310, ...), its own label with the chip name npu-smi reports (310P3, 310), and the taint
        with the resource's name that reserves the node for pods tolerating it."""
        return cls(api, name, resources={resource: str(count)}, labels={ASCEND_CHIP_LABEL: chip},
                   taints=[{"key": resource, "value": "present", "effect": "NoSchedule"}], **kw)

    @classmethod
    def mlu(cls, api: Api, name: str, *, resource: str = MLU370, count: int = 4, **kw: Any) -> Node:
        """A node as Cambricon's device plugin leaves it with device types on: cards as `resource`
        (cambricon.com/mlu370), the always registered cambricon.com/real-mlu-counts, and the taint
        cambricon.com/mlu that reserves MLU nodes (the plugin sets no labels by default)."""
        return cls(api, name, resources={resource: str(count), "cambricon.com/real-mlu-counts": str(count)},
                   taints=[{"key": MLU_TAINT, "value": "present", "effect": "NoSchedule"}], **kw)

    def __init__(self, api: Api, name: str, *, resources: Mapping[str, str] | None = None,
                 labels: Mapping[str, str] | None = None, taints: Sequence[Mapping[str, str]] = (),
                 renew_every: float = 10) -> None:
        self.api = api
        self.name = name
        self.capacity = {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "100Gi",
                         **(resources or {})}
        self.labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                       **(labels or {})}
        self.taints = [dict(t) for t in taints]
        self.renew_every = renew_every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.renewals = 0
        self.errors: list[str] = []

    def _conditions(self) -> list[dict[str, str]]:
        now = _now()
        ok = {"MemoryPressure": "KubeletHasSufficientMemory", "DiskPressure": "KubeletHasNoDiskPressure",
              "PIDPressure": "KubeletHasSufficientPID"}
        conditions = [{"type": t, "status": "False", "reason": r, "message": r, "lastHeartbeatTime": now,
                       "lastTransitionTime": now} for t, r in ok.items()]
        conditions.append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                           "message": "kubelet is posting ready status", "lastHeartbeatTime": now,
                           "lastTransitionTime": now})
        return conditions

    def register(self) -> dict[str, Any]:
        """Creates the Node with its status (a create may set status, as the kubelet's does) and its
        Lease, then starts renewing the Lease."""
        node = self.api.create("/api/v1/nodes", {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": self.name, "labels": self.labels},
            "spec": {"taints": self.taints} if self.taints else {},
            "status": {
                "capacity": self.capacity,
                "allocatable": self.capacity,
                "conditions": self._conditions(),
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                              {"type": "Hostname", "address": self.name}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
                "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux",
                             "kubeletVersion": "v0.0.0-modeldeploy-process-kubelet",
                             "containerRuntimeVersion": "process://0", "kernelVersion": os.uname().release,
                             "osImage": "modeldeploy test node", "machineID": "", "systemUUID": "",
                             "bootID": "", "kubeProxyVersion": ""},
            },
        })
        self.uid = node["metadata"]["uid"]
        self.api.create("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": self.name, "ownerReferences": [
                {"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": self.uid}]},
            "spec": {"holderIdentity": self.name, "leaseDurationSeconds": self.LEASE_SECONDS,
                     "renewTime": _now_micro()},
        })
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease-{self.name}", daemon=True)
        self._thread.start()
        return node

    def renew(self) -> None:
        self.api.merge_patch(f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}",
                             {"spec": {"renewTime": _now_micro(), "holderIdentity": self.name}})
        self.renewals += 1

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.renew_every):
            try:
                self.renew()
            except (OSError, ApiError) as err:  # the API server may be restarting; try again next time
                self.errors.append(str(err))

    def __enter__(self) -> Self:
        self.register()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stops renewing the Lease (the node then goes NotReady as a node whose kubelet died)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def get(self) -> dict[str, Any]:
        return self.api.get(f"/api/v1/nodes/{self.name}")

    def is_ready(self) -> bool:
        """Ready=True and no taint the node lifecycle controller puts on a node that is not ready."""
        node = self.get()
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))
        lifecycle = {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}
        return ready and not any(t["key"] in lifecycle for t in node["spec"].get("taints", []))


DEVICES_PER_NODE = 4  # few, so that a test can take them all


def standard_nodes(api: Api) -> dict[str, Node]:
    """The nodes of a test cluster, not yet registered: a CPU node, an Ascend 310P node, an Ascend 310 node and
    an MLU370 node, DEVICES_PER_NODE devices each."""
    return {
        "cpu": Node.cpu(api, "cpu-1"),
        "ascend310p": Node.ascend(api, "ascend310p-1", resource=ASCEND310P, chip="310P3", count=DEVICES_PER_NODE),
        "ascend310": Node.ascend(api, "ascend310-1", resource=ASCEND310, chip="310", count=DEVICES_PER_NODE),
        "mlu370": Node.mlu(api, "mlu370-1", resource=MLU370, count=DEVICES_PER_NODE),
    }
