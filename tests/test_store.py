"""The artifact store and result manifests, on a directory and on moto's S3 server over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
from conftest import REPO
from modeldeploy.manifest import (
    DocumentInvalid,
    commit,
    fetch,
    manifest_name,
    output_name,
    read_failure,
    read_manifest,
    record_failure,
)
from modeldeploy.store import AlreadyExists, ChecksumMismatch, NotFound, S3Store, Store, open_store

KEY = "ab" * 32
INTERRUPTED_COMMIT = REPO / "tests" / "interrupted_commit.py"


@pytest.fixture(params=["file", "s3"])
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return (tmp_path / "store").as_uri()
    bucket = request.getfixturevalue("bucket")
    return f"s3://{bucket}/deployments/demo"


@pytest.fixture
def store(store_uri: str, request: pytest.FixtureRequest) -> Store:
    endpoint = request.getfixturevalue("moto_endpoint") if store_uri.startswith("s3://") else None
    return open_store(store_uri, endpoint=endpoint)


@pytest.fixture
def outputs(tmp_path: Path) -> dict[str, Path]:
    model = tmp_path / "model.onnx"
    model.write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    metrics = tmp_path / "metrics.json"
    metrics.write_text('{"top1": 0.9}')
    return {"model.onnx": model, "metrics.json": metrics}


def overwrite_object(store: Store, name: str, data: bytes) -> None:
    """Change an object behind the store's back, as a faulty disk or a stray writer would."""
    if isinstance(store, S3Store):
        store.client.put_object(Bucket=store.bucket, Key=store._key(name), Body=data)
    else:
        (store.root / name).write_bytes(data)


def test_bytes_round_trip_and_listing(store: Store) -> None:
    store.put_bytes("a/b.txt", b"hello")
    store.put_bytes("a/c.txt", b"world")
    assert store.get_bytes("a/b.txt") == b"hello"
    assert store.exists("a/b.txt") and not store.exists("a/missing")
    assert store.list("a") == ["a/b.txt", "a/c.txt"]
    assert store.delete_prefix("a") == 2
    assert store.list() == []


def test_folders_are_the_names_directly_under_a_prefix(store: Store) -> None:
    store.put_bytes("tasks/aa/task.json", b"{}")
    store.put_bytes("tasks/aa/outputs/model.onnx", b"x")
    store.put_bytes("tasks/bb/manifest.json", b"{}")
    store.put_bytes("elsewhere/cc/x", b"x")
    assert store.folders("tasks") == {"aa", "bb"}
    assert store.folders("nothing") == set()


def test_missing_object_is_not_found(store: Store, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        store.get_bytes("nothing/here")
    with pytest.raises(NotFound):
        store.get_file("nothing/here", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_create_never_overwrites(store: Store) -> None:
    store.create("marker.json", b"first")
    with pytest.raises(AlreadyExists):
        store.create("marker.json", b"second")
    assert store.get_bytes("marker.json") == b"first"


def test_object_names_cannot_escape_the_store(store: Store) -> None:
    for name in ("../outside", "/absolute", "a//b", "a/./b", ""):
        with pytest.raises(ValueError, match="invalid object name"):
            store.put_bytes(name, b"x")


def test_commit_then_read_and_fetch_verified(store: Store, outputs: dict[str, Path], tmp_path: Path) -> None:
    started = datetime.now(UTC)
    manifest = commit(store, KEY, "compile", outputs, started, metrics={"seconds": 1.5}, toolchain={"atc": "8.2"})
    assert read_manifest(store, KEY) == manifest
    assert set(manifest.outputs) == {"model.onnx", "metrics.json"}
    assert manifest.outputs["model.onnx"].size == 1024 * 1024
    fetched = fetch(store, manifest, "model.onnx", tmp_path / "down" / "model.onnx")
    assert fetched.read_bytes() == outputs["model.onnx"].read_bytes()
    assert store.list(f"tasks/{KEY}") == sorted(
        [manifest_name(KEY), output_name(manifest, "metrics.json"), output_name(manifest, "model.onnx")]
    )
    assert output_name(manifest, "model.onnx") == f"tasks/{KEY}/attempts/{manifest.attempt}/model.onnx"


def test_a_committed_task_cannot_be_committed_again(store: Store, outputs: dict[str, Path]) -> None:
    first = commit(store, KEY, "compile", outputs, datetime.now(UTC))
    with pytest.raises(AlreadyExists):
        commit(store, KEY, "compile", outputs, datetime.now(UTC))
    assert read_manifest(store, KEY) == first


def test_a_corrupted_object_fails_its_checksum(store: Store, outputs: dict[str, Path], tmp_path: Path) -> None:
    manifest = commit(store, KEY, "compile", outputs, datetime.now(UTC))
    overwrite_object(store, output_name(manifest, "model.onnx"), b"not the model")
    destination = tmp_path / "download" / "model.onnx"
    with pytest.raises(ChecksumMismatch, match=r"model\.onnx: sha256 mismatch"):
        fetch(store, manifest, "model.onnx", destination)
    assert list(destination.parent.iterdir()) == []


def test_asking_for_an_output_the_task_does_not_have(store: Store, outputs: dict[str, Path], tmp_path: Path) -> None:
    manifest = commit(store, KEY, "compile", outputs, datetime.now(UTC))
    with pytest.raises(KeyError, match="has no output 'model.om'"):
        fetch(store, manifest, "model.om", tmp_path / "m")


def test_a_commit_that_fails_midway_leaves_no_manifest(store: Store, outputs: dict[str, Path]) -> None:
    outputs["zz-vanished.bin"] = outputs["model.onnx"].with_name("vanished.bin")
    with pytest.raises(FileNotFoundError):
        commit(store, KEY, "compile", outputs, datetime.now(UTC))
    assert read_manifest(store, KEY) is None
    assert store.list(f"tasks/{KEY}") == []  # the outputs uploaded before the failure are gone too


def test_of_two_writers_racing_for_a_task_one_wins_whole_and_the_other_leaves_nothing(
    store: Store, outputs: dict[str, Path], tmp_path: Path
) -> None:
    """The slower writer's uploads used to land over the faster writer's committed outputs, for good."""
    theirs = {name: tmp_path / f"theirs-{name}" for name in outputs}
    for name, path in theirs.items():
        path.write_bytes(outputs[name].read_bytes()[::-1] + b"another attempt")
    uploading, committed = threading.Event(), threading.Event()

    def wait_for_the_other(name: str, transferred: int) -> None:
        uploading.set()
        committed.wait(timeout=30)

    slower: list[BaseException] = []

    def slow_writer() -> None:
        try:
            commit(store, KEY, "compile", theirs, datetime.now(UTC), progress=wait_for_the_other)
        except BaseException as error:  # noqa: BLE001 - the test looks at it below
            slower.append(error)

    thread = threading.Thread(target=slow_writer)
    thread.start()
    assert uploading.wait(timeout=30)
    winner = commit(store, KEY, "compile", outputs, datetime.now(UTC))
    committed.set()
    thread.join(timeout=60)

    assert len(slower) == 1 and isinstance(slower[0], AlreadyExists)
    assert read_manifest(store, KEY) == winner
    for name, path in outputs.items():
        assert fetch(store, winner, name, tmp_path / "check" / name).read_bytes() == path.read_bytes()
    assert store.list(f"tasks/{KEY}") == sorted([manifest_name(KEY), *(output_name(winner, name) for name in outputs)])


def test_a_manifest_naming_an_output_outside_its_attempt_is_refused(store: Store) -> None:
    forged = {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "StageResult", "key": KEY, "stage": "convert",
              "attempt": "20260101T000000Z-0123456789abcdef", "outputs": {"../../../x": {"sha256": "0" * 64, "size": 1}},
              "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:00Z"}
    store.put_bytes(manifest_name(KEY), json.dumps(forged).encode())
    with pytest.raises(DocumentInvalid, match="is not a valid Manifest"):
        read_manifest(store, KEY)


def test_a_killed_upload_leaves_no_manifest_and_a_retry_commits(
    store_uri: str, store: Store, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    big = tmp_path / "weights.bin"
    with big.open("wb") as handle:
        handle.truncate(48 * 1024 * 1024)  # several multipart parts on S3
    small = tmp_path / "a-small.txt"
    small.write_text("uploaded before the big one")
    endpoint = request.getfixturevalue("moto_endpoint") if store_uri.startswith("s3://") else ""
    writer = subprocess.Popen(
        [sys.executable, str(INTERRUPTED_COMMIT), store_uri, endpoint, KEY, str(small), str(big)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "uploading weights.bin"
    writer.kill()
    writer.wait(timeout=30)

    assert read_manifest(store, KEY) is None
    left = store.list(f"tasks/{KEY}")  # what the killed writer uploaded before it died

    manifest = commit(store, KEY, "convert", {"weights.bin": big, "a-small.txt": small}, datetime.now(UTC))
    assert read_manifest(store, KEY) == manifest
    assert manifest.outputs["weights.bin"].size == 48 * 1024 * 1024
    assert not {output_name(manifest, name) for name in manifest.outputs} & set(left)


def test_failures_are_recorded_apart_from_results(store: Store) -> None:
    record_failure(store, KEY, "compile", "E10001", "Value for --soc_version is invalid")
    record_failure(store, KEY, "compile", "E10001", "second attempt")
    assert read_failure(store, KEY).message == "second attempt"
    assert read_manifest(store, KEY) is None


@pytest.fixture
def s3_store(bucket: str, moto_endpoint: str) -> Iterator[S3Store]:
    store = open_store(f"s3://{bucket}/prefix", endpoint=moto_endpoint)
    assert isinstance(store, S3Store)
    yield store


def test_s3_sends_no_checksums_unless_required(s3_store: S3Store, tmp_path: Path) -> None:
    config = s3_store.client.meta.config
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"
    sent: list[dict[str, str]] = []
    s3_store.client.meta.events.register(
        "before-send.s3.*", lambda request, **_: sent.append(dict(request.headers))
    )
    s3_store.put_bytes("x.json", b"{}")
    source = tmp_path / "f.bin"
    source.write_bytes(b"x" * 100)
    s3_store.put_file("f.bin", source)
    assert s3_store.get_bytes("x.json") == b"{}"
    assert sent and not [h for headers in sent for h in headers if h.lower().startswith("x-amz-checksum-")]
    assert not [headers for headers in sent if "x-amz-sdk-checksum-algorithm" in {h.lower() for h in headers}]


def test_s3_endpoint_and_credentials_from_the_standard_environment(
    bucket: str, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_endpoint)
    store = open_store(f"s3://{bucket}/from-env")
    store.put_bytes("hello.txt", b"hi")
    listed = boto3.client("s3", endpoint_url=moto_endpoint).list_objects_v2(Bucket=bucket)["Contents"]
    assert [item["Key"] for item in listed] == ["from-env/hello.txt"]


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("s3:///prefix", "needs a bucket"),
        ("file://host/path", "needs an absolute path"),
        ("gs://bucket/x", "unsupported store scheme 'gs'"),
    ],
)
def test_bad_store_uris(uri: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_store(uri)


def test_plain_paths_and_file_uris_are_directories(tmp_path: Path) -> None:
    open_store(str(tmp_path / "plain")).put_bytes("a", b"1")
    open_store((tmp_path / "uri").as_uri()).put_bytes("a", b"2")
    assert (tmp_path / "plain" / "a").read_bytes() == b"1"
    assert (tmp_path / "uri" / "a").read_bytes() == b"2"
