"""The images as built (tests/images/build.sh), run the way Kubernetes runs them: read-only root filesystem,
/tmp a scratch mount, the image's user and environment (rootfs.py).

- the CPU job image runs real stage tasks of the quickstart to committed manifests in a file store;
- the operator image serves /healthz against the local control plane with its ServiceAccount's token;
- the vendor job images find their toolkit (the test stand-ins) through the image's ENV alone;
- the operator and CPU images run as a numeric non-root user and carry the OCI labels.
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cluster.control_plane import ControlPlane
from cluster.operator_env import Kube, operator_kubeconfig
from modeldeploy import __version__, images
from modeldeploy.backends.ascend import CANN_VERSION
from modeldeploy.backends.magicmind import MAGICMIND_VERSION
from modeldeploy.manifest import TaskDocument, output_name, read_manifest
from modeldeploy.planner import plan
from modeldeploy.runner import localize
from modeldeploy.store import FileStore, open_store, sha256_file
from modeldeploy.validation import load_resource
from scenarios import free_port

from images.rootfs import Bind, Rootfs, image_config, unpacked

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
CRD = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
STORE = "/store"  # where the file store is mounted in the job container
JOB_ENVIRONMENT = {"HOME": "/tmp", "TMPDIR": "/tmp"}  # what the operator's Jobs set (controller/jobs.py)


@pytest.fixture(scope="module")
def cpu_root(built_images: dict[str, str]) -> Iterator[Rootfs]:
    with unpacked(images.cpu_jobs_image()) as root:
        yield root


@pytest.fixture(scope="module")
def operator_root(built_images: dict[str, str]) -> Iterator[Rootfs]:
    with unpacked(images.operator_image()) as root:
        yield root


def quickstart_tasks(store_uri: str) -> dict[str, TaskDocument]:
    document = load_resource(yaml.safe_load((EXAMPLES / "quickstart.yaml").read_text()))
    resource = localize(document, EXAMPLES)  # the sources as file:// URIs under examples/, mounted at that path
    return {task.name: task.task_document(store_uri) for task in plan(resource.spec).tasks}


def test_the_cpu_image_runs_stage_tasks_to_committed_manifests(cpu_root: Rootfs, tmp_path: Path) -> None:
    host_store = tmp_path / "store"
    host_store.mkdir()
    host_store.chmod(0o777)  # the image's user writes it, as a Job writes its bucket
    store = open_store(host_store.as_uri())
    assert isinstance(store, FileStore)
    tasks = quickstart_tasks(f"file://{STORE}")
    binds = [Bind(EXAMPLES, str(EXAMPLES)), Bind(host_store, STORE, read_only=False)]
    # convert (PyTorch to ONNX with the parity check on ONNX Runtime), prepare (scikit-learn's digits), then an
    # OpenVINO compile on convert's model: each in a container of its own, the task in the environment.
    for name in ("convert", "prepare tensors", "compile openvino/fp32/bs1"):
        task = tasks[name]
        document = task.model_dump_json(by_alias=True)
        result = cpu_root.run(["modeldeploy-stage"], env={**JOB_ENVIRONMENT, "MODELDEPLOY_TASK": document},
                              binds=binds, timeout=900)
        assert result.returncode == 0, f"{name}: {result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        manifest = read_manifest(store, task.key)
        assert manifest is not None, f"{name} committed no manifest"
        assert manifest.outputs, f"{name} committed no outputs"
        for output, recorded in manifest.outputs.items():
            assert sha256_file(host_store / output_name(manifest, output)) == recorded.sha256, output


def test_the_cpu_image_has_the_pinned_torch_from_the_index_it_was_built_with(cpu_root: Rootfs) -> None:
    result = cpu_root.run(["python3", "-c", ("import torch, torchvision, openvino, onnxruntime; "
                           "print(torch.__version__, torchvision.__version__)")])
    assert result.returncode == 0, result.stderr
    torch_version, torchvision_version = result.stdout.split()
    assert torch_version.split("+")[0] == "2.14.1" and torchvision_version.split("+")[0] == "0.29.1"
    index = cpu_root.config["Labels"]["io.modeldeploy.torch-index"]
    assert index, "the image records the index torch came from"


@pytest.mark.parametrize("image", [images.operator_image(), images.cpu_jobs_image()])
def test_the_image_runs_as_a_numeric_non_root_user_with_oci_labels(image: str, built_images: dict[str, str]) -> None:
    config = image_config(image)
    uid, _, gid = config["User"].partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) != 0 and int(gid) != 0, config["User"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.title"] == image.rsplit("/", 1)[1].split(":")[0]
    assert labels["org.opencontainers.image.revision"] and labels["org.opencontainers.image.created"]


@pytest.fixture(scope="module")
def control_plane() -> Iterator[ControlPlane]:
    """The local control plane of tests/cluster (built if missing), the project's CRD installed."""
    with ControlPlane() as cp:
        cp.apply_crd(CRD)
        yield cp


def test_the_operator_image_serves_healthz_on_a_read_only_root(operator_root: Rootfs, control_plane: ControlPlane,
                                                                tmp_path: Path) -> None:
    kube = Kube(control_plane.binary("kubectl"), control_plane.kubeconfig, "default")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    kubeconfig = operator_kubeconfig(kube, secrets / "kubeconfig")  # the shipped RBAC, a ServiceAccount token
    secrets.chmod(0o755)
    kubeconfig.chmod(0o644)
    health_port, metrics_port = free_port(), free_port()
    command = [*operator_root.config["Entrypoint"], *operator_root.config["Cmd"],
               "--liveness", f"http://127.0.0.1:{health_port}/healthz"]
    log = tmp_path / "operator.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            operator_root.command(command, binds=[Bind(secrets, "/etc/modeldeploy")],
                                  env={"KUBECONFIG": "/etc/modeldeploy/kubeconfig",
                                       "MODELDEPLOY_METRICS_PORT": str(metrics_port)}),
            stdout=handle, stderr=subprocess.STDOUT)
    try:
        status = wait_for_health(f"http://127.0.0.1:{health_port}/healthz", process, log)
        assert status == 200
        assert process_uid(process.pid) == int(operator_root.config["User"].split(":")[0])
        assert "Read-only file system" not in log.read_text()
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def wait_for_health(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 180) -> int:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            pytest.fail(f"the operator exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                pytest.fail(f"no answer on {url} in {timeout:.0f}s:\n{log.read_text()[-4000:]}")
            time.sleep(1)


def process_uid(pid: int) -> int:
    """The real uid of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


def test_the_ascend_image_finds_the_toolkit_through_its_env(built_images: dict[str, str]) -> None:
    with unpacked(images.ascend_jobs_image(CANN_VERSION)) as root:
        assert "LD_LIBRARY_PATH" in root.environment() and "ASCEND_OPP_PATH" in root.environment()
        # the Job's command replaces any ENTRYPOINT: no set_env.sh is sourced, the image's ENV is all there is
        result = root.run(["sh", "-c", ("atc --version && command -v atc && python3 -m ais_bench --help >/dev/null "
                           "&& npu-smi info >/dev/null && python3 -c 'import modeldeploy_jobs.backends.ascend'")],
                          env=JOB_ENVIRONMENT)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"atc version {CANN_VERSION}" in result.stdout.lower()
        assert "/usr/local/Ascend/ascend-toolkit/latest/bin/atc" in result.stdout


def test_the_magicmind_image_finds_magicmind_through_its_env(built_images: dict[str, str]) -> None:
    with unpacked(images.magicmind_jobs_image(MAGICMIND_VERSION)) as root:
        assert root.environment()["NEUWARE_HOME"] == "/usr/local/neuware"
        result = root.run(["sh", "-c", ("command -v mm_run && python3 -c 'import magicmind.python.runtime' && "
                           "python3 -m modeldeploy_jobs.magicmind_build --help >/dev/null")], env=JOB_ENVIRONMENT)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "/usr/local/neuware/bin/mm_run" in result.stdout
