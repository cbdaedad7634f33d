"""Fetching what a spec points at: remote names never become paths outside the destination."""

from __future__ import annotations

import uuid
from pathlib import Path

import boto3
import pytest
from modeldeploy_jobs.sources import fetch_tree, inside
from modeldeploy_jobs.stage import StageError


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
