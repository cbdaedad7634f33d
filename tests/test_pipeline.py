"""`modeldeploy run` end to end: real stages in subprocesses, on file:// and on moto's S3 server."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import EXAMPLES
from modeldeploy.manifest import fetch, fetch_bytes, read_failure, read_manifest
from modeldeploy.planner import plan
from modeldeploy.runner import localize
from modeldeploy.store import ChecksumMismatch, open_store
from modeldeploy.validation import load_resource

MODELDEPLOY = Path(sys.executable).with_name("modeldeploy")


def quickstart(directory: Path, **changes: Any) -> Path:
    """The quickstart, reduced for the test suite: fewer batch sizes and iterations."""
    document = yaml.safe_load((EXAMPLES / "quickstart.yaml").read_text())
    spec = document["spec"]
    spec["source"]["code"] = str(EXAMPLES / "digits_cnn.py")
    spec["source"]["weights"] = str(EXAMPLES / "digits_cnn.pt")
    spec["calibration"]["samples"] = 64
    spec["performance"] = {"warmup": 2, "iterations": 20}
    for target in spec["targets"]:
        target["batchSizes"] = [1, 8]
    for path, value in changes.items():
        node = spec
        *parents, last = path.split(".")
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[last] = value
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "quickstart.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def run(spec: Path, store: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MODELDEPLOY), "run", str(spec), "--store", store, "--jobs", "2"],
        capture_output=True, text=True, timeout=600, env=env, cwd=cwd, check=False,
    )


def started(output: str) -> list[str]:
    return re.findall(r"\] start\s+(.+)$", output, flags=re.MULTILINE)


def results_of(store_uri: str, spec: Path) -> dict[str, Any]:
    resource = localize(load_resource(yaml.safe_load(spec.read_text())), spec.parent)
    store = open_store(store_uri)
    report = plan(resource.spec).report
    manifest = read_manifest(store, report)
    assert manifest is not None
    return json.loads(fetch_bytes(store, manifest, "results.json"))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, subprocess.CompletedProcess[str]]:
    directory = tmp_path_factory.mktemp("quickstart")
    spec = quickstart(directory)
    store = (directory / "store").as_uri()
    return spec, store, run(spec, store, cwd=directory)


def test_quickstart_runs_end_to_end_and_int8_passes_the_gate(first_run: tuple[Path, str, Any]) -> None:
    spec, store, result = first_run
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(started(result.stdout)) == 22  # convert, prepare, reference, 2 calibrations, 8 compiles, 8 evaluations, report
    results = results_of(store, spec)
    cells = results["cells"]
    assert len(cells) == 8
    assert {cell["gate"] for cell in cells} == {"Passed"}
    assert all(cell["top1"] > 0.95 and cell["throughput"] > 0 for cell in cells)
    for target in ("openvino", "onnxruntime"):
        for precision in ("fp32", "int8"):  # accuracy does not depend on the batch size
            assert len({cell["top1"] for cell in cells if (cell["target"], cell["precision"]) == (target, precision)}) == 1
    assert results["reference"]["source"] == "source" and results["reference"]["top1"] > 0.95
    assert {best["target"] for best in results["best"]} == {"openvino", "onnxruntime"}
    assert re.search(r"^openvino\s+int8\s+8\s+\d+\.\d+%", result.stdout, flags=re.MULTILINE)
    assert "report: file://" in result.stdout and "report.html" in result.stdout


def test_a_second_run_executes_no_stage(first_run: tuple[Path, str, Any]) -> None:
    spec, store, _ = first_run
    again = run(spec, store, cwd=spec.parent)
    assert again.returncode == 0
    assert started(again.stdout) == []
    assert "22 done before, 0 to run" in again.stdout
    assert "best on openvino" in again.stdout


def test_adding_a_batch_size_runs_only_its_cells_and_the_report(first_run: tuple[Path, str, Any]) -> None:
    spec, store, _ = first_run
    bigger = quickstart(spec.parent / "bigger", **{"targets.0.batchSizes": [1, 8, 16]})
    result = run(bigger, store, cwd=spec.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(started(result.stdout)) == [
        "compile openvino/fp32/bs16", "compile openvino/int8/bs16",
        "evaluate openvino/fp32/bs16", "evaluate openvino/int8/bs16", "report",
    ]


def test_quickstart_against_s3(tmp_path: Path, bucket: str, moto_endpoint: str) -> None:
    spec = quickstart(tmp_path)
    env = {**os.environ, "AWS_ENDPOINT_URL_S3": moto_endpoint}
    result = run(spec, f"s3://{bucket}/quickstart", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"report: s3://{bucket}/quickstart/tasks/" in result.stdout
    os.environ["AWS_ENDPOINT_URL_S3"] = moto_endpoint
    try:
        results = results_of(f"s3://{bucket}/quickstart", spec)
    finally:
        del os.environ["AWS_ENDPOINT_URL_S3"]
    assert {cell["gate"] for cell in results["cells"]} == {"Passed"}
    assert all(cell["artifact"].startswith(f"s3://{bucket}/quickstart/tasks/") for cell in results["cells"])


def test_a_dataset_smaller_than_the_batch_size_fails_that_stage_only(tmp_path: Path) -> None:
    spec = quickstart(tmp_path, **{"dataset.limit": 6, "calibration.samples": 4,
                                   "targets": [{"name": "ort", "backend": "onnxruntime", "precisions": ["fp32"],
                                                "batchSizes": [4, 8]}]})
    store = (tmp_path / "store").as_uri()
    result = run(spec, store, cwd=tmp_path)
    assert result.returncode == 1
    assert "FAILED  evaluate ort/fp32/bs8: DatasetTooSmall: the prepared dataset" in result.stdout
    assert "has 6 samples, fewer than batch size 8" in result.stdout
    assert "done    evaluate ort/fp32/bs4" in result.stdout
    assert "skip    report: an input failed" in result.stdout
    assert "1 task(s) failed, 1 not run because of them" in result.stderr
    resource = localize(load_resource(yaml.safe_load(spec.read_text())), spec.parent)
    failed = next(cell for cell in plan(resource.spec).cells if cell.batch_size == 8)
    failure = read_failure(open_store(store), failed.evaluate)
    assert failure is not None and failure.reason == "DatasetTooSmall"
    assert read_manifest(open_store(store), failed.evaluate) is None


def test_ctrl_c_stops_cleanly_and_a_rerun_resumes(tmp_path: Path) -> None:
    spec = quickstart(tmp_path)
    store = (tmp_path / "store").as_uri()
    # Ctrl-C as at a terminal: a background job of a non-interactive shell (a CI runner's) runs with SIGINT ignored,
    # which its children inherit; a handled signal is reset to the default in them.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen(
            [str(MODELDEPLOY), "run", str(spec), "--store", store, "--jobs", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
        )
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "done    prepare" in line:
            break
    process.send_signal(signal.SIGINT)
    rest = process.stdout.read()
    assert process.wait(timeout=60) == 130
    assert "interrupted; finished tasks are kept, run again to resume" in rest
    assert "Traceback" not in rest
    survivors = subprocess.run(["pgrep", "-f", f"modeldeploy_jobs.entrypoint {store}"], capture_output=True, check=False)
    assert survivors.stdout == b""

    resumed = run(spec, store, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "convert" not in started(resumed.stdout)
    assert re.search(r"(\d+) done before", resumed.stdout).group(1) != "0"


def unverifiable_tasks(store_uri: str, scratch: Path) -> list[str]:
    """The committed tasks one of whose outputs no longer matches its manifest's sha256."""
    store = open_store(store_uri)
    broken = []
    for key in sorted(store.folders("tasks")):
        manifest = read_manifest(store, key)
        if manifest is None:
            continue
        try:
            for name in manifest.outputs:
                fetch(store, manifest, name, scratch / key / name)
        except ChecksumMismatch:
            broken.append(key)
    return broken


def stage_processes(store: str) -> bytes:
    return subprocess.run(["pgrep", "-f", f"modeldeploy_jobs.entrypoint {store}"], capture_output=True,
                          check=False).stdout


def test_a_killed_runner_takes_its_stages_with_it_and_a_rerun_finishes_whole(tmp_path: Path) -> None:
    slow = quickstart(tmp_path / "slow", **{"performance.iterations": 1_000_000})  # evaluate runs until killed
    store = (tmp_path / "store").as_uri()
    process = subprocess.Popen(
        [str(MODELDEPLOY), "run", str(slow), "--store", store, "--jobs", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if "start   evaluate" in line:
            break
    assert stage_processes(store) != b""
    process.kill()
    process.wait(timeout=30)
    deadline = time.monotonic() + 5
    while stage_processes(store) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stage_processes(store) == b""

    spec = quickstart(tmp_path)
    resumed = run(spec, store, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "convert" not in started(resumed.stdout)
    assert unverifiable_tasks(store, tmp_path / "verify") == []


def test_two_runs_at_once_on_one_s3_store_leave_every_task_whole(tmp_path: Path, bucket: str, moto_endpoint: str) -> None:
    """Two writers of every task at once: each task ends committed by one of them, its outputs intact."""
    spec = quickstart(tmp_path)
    store = f"s3://{bucket}/shared"
    env = {**os.environ, "AWS_ENDPOINT_URL_S3": moto_endpoint}
    command = [str(MODELDEPLOY), "run", str(spec), "--store", store, "--jobs", "2"]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                             env=env) for _ in range(2)]
    outputs = [process.communicate(timeout=600)[0] for process in runs]
    assert [process.returncode for process in runs] == [0, 0], "\n".join(outputs)
    os.environ["AWS_ENDPOINT_URL_S3"] = moto_endpoint
    try:
        assert unverifiable_tasks(store, tmp_path / "verify") == []
        again = run(spec, store, env=env, cwd=tmp_path)
    finally:
        del os.environ["AWS_ENDPOINT_URL_S3"]
    assert again.returncode == 0 and started(again.stdout) == [], again.stdout + again.stderr
