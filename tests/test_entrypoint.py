"""`modeldeploy-stage`: the command a Job runs, on task documents in a real store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import EXAMPLES
from modeldeploy.manifest import (
    TaskDocument,
    manifest_name,
    output_name,
    read_failure,
    read_manifest,
    task_document_name,
    write_task,
)
from modeldeploy.planner import plan
from modeldeploy.runner import localize
from modeldeploy.store import FileStore, Store, open_store
from modeldeploy.validation import load_resource

STAGE = Path(sys.executable).with_name("modeldeploy-stage")


def stage(task_uri: str | None, document: str | None = None) -> subprocess.CompletedProcess[str]:
    """The stage on a task document's URI, or (as a Job runs it) on the document in its environment."""
    environment = {key: value for key, value in os.environ.items() if key != "MODELDEPLOY_TASK"}
    if document is not None:
        environment["MODELDEPLOY_TASK"] = document
    return subprocess.run([str(STAGE), *([task_uri] if task_uri else [])], capture_output=True, text=True,
                          timeout=300, check=False, env=environment)


def quickstart_tasks(store: Store, **source_changes: str) -> dict[str, TaskDocument]:
    document = load_resource(yaml.safe_load((EXAMPLES / "quickstart.yaml").read_text()))
    resource = localize(document, EXAMPLES)
    if source_changes:
        source = resource.spec.source.model_copy(update=source_changes)
        resource = resource.model_copy(update={"spec": resource.spec.model_copy(update={"source": source})})
    return {task.name: task.task_document(store.uri) for task in plan(resource.spec).tasks}


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    store = open_store((tmp_path / "store").as_uri())
    assert isinstance(store, FileStore)
    return store


def test_a_task_runs_once_and_then_is_done(store: FileStore) -> None:
    task = quickstart_tasks(store)["convert"]
    uri = write_task(store, task)
    first = stage(uri)
    assert first.returncode == 0, first.stderr
    manifest = read_manifest(store, task.key)
    assert manifest is not None and set(manifest.outputs) == {"model.onnx"}
    assert manifest.metrics["parity"]["cosine"] > 0.9999 and "torch" in manifest.toolchain
    again = stage(uri)
    assert again.returncode == 0 and "already done" in again.stdout
    assert read_manifest(store, task.key) == manifest


def test_a_users_mistake_exits_3_with_a_failure_record_and_no_manifest(store: FileStore, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint at all" * 100)
    task = quickstart_tasks(store, weights=corrupt.as_uri(), sha256=None)["convert"]
    result = stage(write_task(store, task))
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    assert f"convert failed: WeightsInvalid: {corrupt.as_uri()}: not a readable PyTorch checkpoint" in result.stderr
    failure = read_failure(store, task.key)
    assert failure is not None and failure.reason == "WeightsInvalid" and failure.stage == "convert"
    assert not failure.retriable
    assert read_manifest(store, task.key) is None


def test_an_input_that_is_not_done_yet_is_retried(store: FileStore) -> None:
    task = quickstart_tasks(store)["calibrate openvino/int8"]
    result = stage(write_task(store, task))
    assert result.returncode == 1
    assert "InputMissing" in result.stderr and "has no result" in result.stderr
    failure = read_failure(store, task.key)
    assert failure is not None and failure.retriable


def test_a_corrupted_input_is_detected_before_any_work(store: FileStore) -> None:
    tasks = quickstart_tasks(store)
    convert = tasks["convert"]
    assert stage(write_task(store, convert)).returncode == 0
    committed = read_manifest(store, convert.key)
    assert committed is not None
    (store.root / output_name(committed, "model.onnx")).write_bytes(b"tampered")
    compile_task = tasks["compile onnxruntime/fp32/bs1"]
    result = stage(write_task(store, compile_task))
    assert result.returncode == 1  # the store's copy is damaged, not the user's input: a retry may read it whole
    assert "InputCorrupt" in result.stderr and "sha256 mismatch" in result.stderr
    assert read_manifest(store, compile_task.key) is None


def test_an_input_manifest_that_is_no_manifest_is_a_corrupt_input_without_a_traceback(store: FileStore) -> None:
    tasks = quickstart_tasks(store)
    convert = tasks["convert"]
    assert stage(write_task(store, convert)).returncode == 0
    (store.root / manifest_name(convert.key)).write_text('{"kind": "StageResult", "outputs": {"../../x": {}}}')
    result = stage(write_task(store, tasks["compile onnxruntime/fp32/bs1"]))
    assert result.returncode == 1
    assert "InputCorrupt" in result.stderr and "is not a valid Manifest" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreadable_task_document(tmp_path: Path) -> None:
    result = stage(str(tmp_path / "missing-task.json"))
    assert result.returncode == 1
    assert "cannot read the task document" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "bad.json").write_text(json.dumps({"kind": "StageTask"}))
    assert stage(str(tmp_path / "bad.json")).returncode == 1


def test_a_job_hands_the_document_in_the_environment_and_the_stage_keeps_it(store: FileStore) -> None:
    task = quickstart_tasks(store)["prepare tensors"]
    result = stage(None, task.model_dump_json(by_alias=True))
    assert result.returncode == 0, result.stderr
    assert read_manifest(store, task.key) is not None
    kept = (store.root / task_document_name(task.key)).read_text()
    assert TaskDocument.model_validate_json(kept) == task


def test_no_task_at_all_or_a_bad_one_in_the_environment() -> None:
    result = stage(None)
    assert result.returncode == 2 and "no task: give TASK or set $MODELDEPLOY_TASK" in result.stderr
    result = stage(None, '{"kind": "StageTask"}')
    assert result.returncode == 1 and "cannot read the task document $MODELDEPLOY_TASK" in result.stderr
    assert "Traceback" not in result.stderr
