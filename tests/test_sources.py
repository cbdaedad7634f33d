"""Fetching what a spec points at: remote names never become paths outside the destination."""

from __future__ import annotations

import http.server
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from modeldeploy_jobs import sources
from modeldeploy_jobs.sources import fetch_source, fetch_tree, inside
from modeldeploy_jobs.stage import StageError, StageReason


@pytest.fixture
def s3(moto_endpoint: str, aws_environment: None, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_endpoint)
    return boto3.client("s3", endpoint_url=moto_endpoint)


@pytest.fixture
def bucket(s3) -> str:
    """A bucket of its own for every test and parameter (the shared fixture's names are cut short)."""
    name = f"md-sources-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    return name


def test_a_sibling_prefix_is_neither_fetched_nor_written_outside(s3, bucket: str, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "planted"
    s3.put_object(Bucket=bucket, Key="imgs/a.png", Body=b"a")
    s3.put_object(Bucket=bucket, Key="imgs/sub/b.png", Body=b"b")
    s3.put_object(Bucket=bucket, Key="imgs_other/c.png", Body=b"c")
    s3.put_object(Bucket=bucket, Key=f"imgsX{outside}", Body=b"planted")  # 'imgsX' + '/tmp/...': once an absolute path

    root = fetch_tree(f"s3://{bucket}/imgs", tmp_path / "dataset")

    found = sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file())
    assert found == ["a.png", "sub/b.png"]
    assert not outside.exists()


@pytest.mark.parametrize("key", ["imgs/../escaped.png", "imgs/./dot.png", "imgs//double.png"])
def test_a_key_that_is_no_plain_relative_path_is_refused_by_name(s3, bucket: str, tmp_path: Path, key: str) -> None:
    s3.put_object(Bucket=bucket, Key="imgs/a.png", Body=b"a")
    s3.put_object(Bucket=bucket, Key=key, Body=b"x")

    with pytest.raises(StageError) as refused:
        fetch_tree(f"s3://{bucket}/imgs/", tmp_path / "dataset")

    assert f"s3://{bucket}/{key}" in refused.value.message
    assert not (tmp_path / "escaped.png").exists()
    assert not (tmp_path / "dataset").exists()  # every name is checked before anything is written


def test_an_empty_prefix_says_so(s3, bucket: str, tmp_path: Path) -> None:
    s3.put_object(Bucket=bucket, Key="imgs_other/c.png", Body=b"c")

    with pytest.raises(StageError, match="holds no objects"):
        fetch_tree(f"s3://{bucket}/imgs", tmp_path / "dataset")


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../../x", "", ".", "a//b", "a/./b", "a\\..\\b"])
def test_inside_refuses_names_that_leave_the_folder_or_are_not_plain(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="not a plain relative name"):
        inside(tmp_path, name)


def test_inside_keeps_plain_names(tmp_path: Path) -> None:
    assert inside(tmp_path, "a/b.png") == tmp_path / "a" / "b.png"


class Answers(http.server.BaseHTTPRequestHandler):
    """/missing: 404; /broken: 503; /stalled: accepts, then says nothing; anything else: the bytes of its path."""

    def do_GET(self) -> None:
        if self.path == "/stalled":
            time.sleep(5)
            return
        status = {"/missing": 404, "/broken": 503}.get(self.path, 200)
        self.send_response(status)
        self.end_headers()
        if status == 200:
            self.wfile.write(self.path.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def web() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize(("path", "reason"), [
    ("/missing", StageReason.SOURCE_NOT_FOUND),
    ("/broken", StageReason.SOURCE_UNREACHABLE),
    ("/stalled", StageReason.SOURCE_UNREACHABLE),
])
def test_a_download_that_fails_says_whether_a_retry_may_help(web: str, tmp_path: Path, path: str, reason: StageReason,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "DOWNLOAD_TIMEOUT_SECONDS", 0.5)
    with pytest.raises(StageError) as failed:
        fetch_source(f"{web}{path}", tmp_path / "weights.pth")
    assert failed.value.reason is reason
    assert failed.value.reason.user_fault is (reason is StageReason.SOURCE_NOT_FOUND)
    assert f"{web}{path}" in failed.value.message
    assert list(tmp_path.iterdir()) == []
    assert fetch_source(f"{web}/fine", tmp_path / "fine").read_bytes() == b"/fine"


def test_an_s3_object_that_is_not_there_is_the_uris_fault(s3, bucket: str, tmp_path: Path) -> None:
    with pytest.raises(StageError) as failed:
        fetch_source(f"s3://{bucket}/no/such/weights.pth", tmp_path / "weights.pth")
    assert failed.value.reason is StageReason.SOURCE_NOT_FOUND


def test_an_s3_server_that_cannot_be_reached_is_retried(aws_environment: None, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(StageError) as failed:
        fetch_source("s3://bucket/weights.pth", tmp_path / "weights.pth")
    assert failed.value.reason is StageReason.SOURCE_UNREACHABLE
    with pytest.raises(StageError) as failed:
        fetch_tree("s3://bucket/images/", tmp_path / "images")
    assert failed.value.reason is StageReason.SOURCE_UNREACHABLE


def test_a_tree_over_the_dataset_caps_is_refused_from_its_listing(s3, bucket: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for index in range(3):
        s3.put_object(Bucket=bucket, Key=f"imgs/{index}.png", Body=b"x" * 100)
    monkeypatch.setenv("MODELDEPLOY_MAX_DATASET_FILES", "2")
    with pytest.raises(StageError, match=r"has 3 files, more than the 2 .*MODELDEPLOY_MAX_DATASET_FILES") as refused:
        fetch_tree(f"s3://{bucket}/imgs", tmp_path / "dataset")
    assert refused.value.reason is StageReason.LIMIT_EXCEEDED
    monkeypatch.setenv("MODELDEPLOY_MAX_DATASET_FILES", "3")
    monkeypatch.setenv("MODELDEPLOY_MAX_DATASET_BYTES", "299")
    with pytest.raises(StageError, match=r"has 300 bytes, more than the 299"):
        fetch_tree(f"s3://{bucket}/imgs", tmp_path / "dataset")
    assert not (tmp_path / "dataset").exists()
