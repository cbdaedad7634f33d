"""Whose fault a failure is: every StageReason, and real failures of each kind through `modeldeploy-stage`.

Exit 3 (no retry) only when the user's input is at fault; a tool, device, network or store failure exits 1
and the Job retries it. docs/failures.md is the table these tests hold the code to.
"""

from __future__ import annotations

import http.server
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from modeldeploy.manifest import TaskDocument, read_failure, read_manifest, write_task
from modeldeploy.parsers import atc
from modeldeploy.planner import Plan
from modeldeploy.store import FileStore, open_store
from modeldeploy_jobs import entrypoint, sources
from modeldeploy_jobs.sources import fetch_source
from modeldeploy_jobs.stage import StageError, StageReason
from test_ascend_pipeline import NPU, ascend_environment, planned
from test_entrypoint import stage
from test_pipeline import quickstart
from tiny_onnx import write_tiny_model

DOCS = Path(__file__).resolve().parent.parent / "docs" / "failures.md"


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    opened = open_store((tmp_path / "store").as_uri())
    assert isinstance(opened, FileStore)
    return opened


def task_named(plan: Plan, name: str, store: FileStore) -> TaskDocument:
    return next(task for task in plan.tasks if task.name == name).task_document(store.uri)


def assert_failed(store: FileStore, task: TaskDocument, result: Any, reason: StageReason) -> None:
    """The exit code, the failure record and the console line all say the same thing."""
    assert result.returncode == (3 if reason.user_fault else 1), result.stderr
    assert f"failed: {reason.value}: " in result.stderr
    failure = read_failure(store, task.key)
    assert failure is not None and failure.reason == reason.value and failure.retriable is not reason.user_fault
    assert read_manifest(store, task.key) is None


# ---------------------------------------------------------------- every reason


def documented() -> dict[str, int]:
    return {name: int(code) for name, code in re.findall(r"^\| `(\w+)` \| ([13]) \|", DOCS.read_text(), re.MULTILINE)}


def test_every_reason_is_documented_with_the_exit_code_it_gets() -> None:
    assert documented() == {reason.value: 3 if reason.user_fault else 1 for reason in StageReason}


def test_reasons_are_distinct_camel_case_names() -> None:
    values = [reason.value for reason in StageReason]
    assert len(set(values)) == len(values)
    assert all(re.fullmatch(r"(?:[A-Z][a-z0-9]+)+", value) for value in values)


@pytest.mark.parametrize("reason", list(StageReason), ids=lambda reason: reason.value)
def test_every_reason_exits_and_is_recorded_as_classified(store: FileStore, reason: StageReason) -> None:
    task = TaskDocument(key=f"{list(StageReason).index(reason):064x}", stage="compile", name="compile x",
                        config={}, inputs={}, toolchain="test", store=store.uri)
    assert entrypoint.fail(store, task, reason, "what happened") == (3 if reason.user_fault else 1)
    failure = read_failure(store, task.key)
    assert failure is not None
    assert (failure.reason, failure.message, failure.retriable) == (reason.value, "what happened",
                                                                    not reason.user_fault)


def test_a_reason_that_does_not_exist_is_refused() -> None:
    assert StageError("WeightsInvalid", "x").reason is StageReason.WEIGHTS_INVALID
    with pytest.raises(ValueError, match="NoSuchReason"):
        StageError("NoSuchReason", "x")  # type: ignore[arg-type]


@pytest.mark.parametrize(("code", "cause"), [
    ("E10001", "parameters"), ("E10002", "parameters"), ("E10041", "parameters"), ("E19025", "parameters"),
    ("E19010", "operators"), ("EZ9010", "operators"), ("EZ0501", "operators"), ("EZ3002", "operators"),
    ("EZ3003", "operators"),
    ("E19999", "internal"), ("EZ9999", "internal"), ("EE1001", "internal"), (None, "internal"),
])
def test_atc_error_code_families(code: str | None, cause: str) -> None:
    assert atc.cause(code) == cause


# ---------------------------------------------------------------- vendor tools, for real


@pytest.fixture(scope="module")
def ascend_pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Plan, FileStore]:
    """The quickstart on an NPU at five batch sizes (five compile tasks), with its convert done."""
    directory = tmp_path_factory.mktemp("ascend-failures")
    spec = quickstart(directory, targets=[{**NPU, "precisions": ["fp16"], "batchSizes": [1, 2, 4, 8, 16]}])
    plan = planned(spec)
    opened = open_store((directory / "store").as_uri())
    assert isinstance(opened, FileStore)
    convert = task_named(plan, "convert", opened)
    assert stage(write_task(opened, convert)).returncode == 0
    return plan, opened


@pytest.mark.parametrize(("code", "batch", "reason"), [
    ("E10001", 1, StageReason.COMPILE_REJECTED),
    ("EZ3003", 2, StageReason.MODEL_UNSUPPORTED),
    ("E19010", 4, StageReason.MODEL_UNSUPPORTED),
    ("EZ9999", 8, StageReason.COMPILE_FAILED),
])
def test_atc_failures_by_error_code(
    ascend_pipeline: tuple[Plan, FileStore], monkeypatch: pytest.MonkeyPatch, code: str, batch: int,
    reason: StageReason,
) -> None:
    plan, store = ascend_pipeline
    task = task_named(plan, f"compile npu/fp16/bs{batch}", store)
    result = stage_with(ascend_environment(ATC_STANDIN_FAIL=code), task, store, monkeypatch)
    assert_failed(store, task, result, reason)
    assert f"atc failed (exit 255): {code}: " in result.stderr


def test_an_atc_that_fails_once_is_retried_and_then_succeeds(
    ascend_pipeline: tuple[Plan, FileStore], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    plan, store = ascend_pipeline
    task = task_named(plan, "compile npu/fp16/bs16", store)
    environment = ascend_environment(ATC_STANDIN_FAIL="E19999", ATC_STANDIN_FAIL_ONCE=str(tmp_path / "failed-once"))
    first = stage_with(environment, task, store, monkeypatch)
    assert_failed(store, task, first, StageReason.COMPILE_FAILED)
    assert "E19999: Internal Error!" in first.stderr
    retry = stage_with(environment, task, store, monkeypatch)
    assert retry.returncode == 0, retry.stderr
    manifest = read_manifest(store, task.key)
    assert manifest is not None and "model.om" in manifest.outputs


def stage_with(environment: dict[str, str], task: TaskDocument, store: FileStore, monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return stage(write_task(store, task))


# ---------------------------------------------------------------- the user's model


def test_an_onnx_model_whose_input_shape_is_not_the_specs_exits_3(store: FileStore, tmp_path: Path) -> None:
    model = tmp_path / "tiny.onnx"
    write_tiny_model(model)  # input [batch, 3, 8, 8]
    source = {"format": "onnx", "uri": str(model), "opset": 11, "outputs": ["logits"],
              "inputs": [{"name": "input", "shape": [-1, 3, 16, 16], "dtype": "float32"}]}
    spec = quickstart(tmp_path / "spec", source=source, targets=[{"name": "cpu", "backend": "onnxruntime",
                                                                  "precisions": ["fp32"], "batchSizes": [1]}])
    task = task_named(planned(spec), "convert", store)
    result = stage(write_task(store, task))
    assert_failed(store, task, result, StageReason.INPUTS_MISMATCH)
    assert f"{model}: input 'input' has shape [-1, 3, 8, 8] in the model, the spec declares [-1, 3, 16, 16]" \
        in result.stderr
    assert "Traceback" not in result.stderr


def test_a_loader_out_of_memory_on_the_users_file_is_retried(
    store: FileStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.load failing is WeightsInvalid, unless it failed for want of memory: then the file got no verdict."""
    import torch

    def exhausted(*args: Any, **kwargs: Any) -> Any:
        raise MemoryError

    monkeypatch.setattr(torch, "load", exhausted)
    task = task_named(planned(quickstart(tmp_path / "spec")), "convert", store)
    assert entrypoint.run_task(task, tmp_path / "work") == 1
    failure = read_failure(store, task.key)
    assert failure is not None and failure.reason == "OutOfMemory" and failure.retriable


# ---------------------------------------------------------------- the network


class _StallingHandler(http.server.BaseHTTPRequestHandler):
    """Promises a body and sends the first bytes of it, then nothing until the test ends."""

    release: threading.Event

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(1 << 20))
        self.end_headers()
        self.wfile.write(b"\x80\x02" + bytes(14))
        self.wfile.flush()
        self.release.wait(60)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def stalling_server() -> Iterator[str]:
    release = threading.Event()
    handler = type("Handler", (_StallingHandler,), {"release": release})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    release.set()
    server.shutdown()
    server.server_close()


def test_an_http_download_that_times_out_is_retriable(
    stalling_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "DOWNLOAD_TIMEOUT_SECONDS", 1)  # a stage waits 60 s for a silent server
    uri = f"{stalling_server}/weights.pth"
    with pytest.raises(StageError) as caught:
        fetch_source(uri, tmp_path / "weights.pth")
    assert caught.value.reason is StageReason.SOURCE_UNREACHABLE and not caught.value.reason.user_fault
    assert uri in caught.value.message
    assert not (tmp_path / "weights.pth").exists()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_missing_object_in_s3_exits_3(store: FileStore, tmp_path: Path, bucket: str, moto_endpoint: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    boto3.client("s3", endpoint_url=moto_endpoint).put_object(Bucket=bucket, Key="models/other.pth", Body=b"x")
    spec = quickstart(tmp_path / "spec", **{"source.weights": f"s3://{bucket}/models/digits.pth"})
    task = task_named(planned(spec), "convert", store)
    result = stage(write_task(store, task))
    assert_failed(store, task, result, StageReason.SOURCE_NOT_FOUND)
    assert f"s3://{bucket}/models/digits.pth does not exist" in result.stderr


def test_an_unreachable_s3_server_is_retried(store: FileStore, tmp_path: Path, aws_environment: None,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    spec = quickstart(tmp_path / "spec", **{"source.weights": "s3://models/digits.pth"})
    task = task_named(planned(spec), "convert", store)
    result = stage(write_task(store, task))
    assert_failed(store, task, result, StageReason.SOURCE_UNREACHABLE)
    assert "s3://models/digits.pth" in result.stderr and "Traceback" not in result.stderr
