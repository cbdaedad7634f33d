"""Stage results in the store: outputs first, then the manifest, the commit marker.

    tasks/<key>/task.json                     the task document the stage ran
    tasks/<key>/attempts/<attempt>/<name>     the outputs of one attempt at the task, under a name unique to it
    tasks/<key>/manifest.json                 written last, once, create-only: the task is done
    tasks/<key>/failure.json                  the latest failed attempt (replaced by a retry; never a manifest)

A task whose manifest exists is done, and its outputs are exactly the files the manifest lists,
with their sha256, in the attempt the manifest names. No attempt writes where another does, and
the manifest is created only if none exists (`If-None-Match: *` on S3, a hard link locally), so
of two writers racing for one task exactly one becomes the result and the other's files are never
read; a writer that dies before the manifest leaves nothing a reader takes for a result.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from pydantic.alias_generators import to_camel

from modeldeploy.store import AlreadyExists, ChecksumMismatch, NotFound, Store, StoreError

OutputProgress = Callable[[str, int], None]  # (output name, bytes just uploaded)


class _Document(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


DocumentType = TypeVar("DocumentType", bound=_Document)


# An output's name becomes a file name where a stage downloads it: one plain name, never a path.
OutputName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9._-]*$", max_length=200)]


class Output(_Document):
    sha256: str
    size: int


class Manifest(_Document):
    api_version: Literal["modeldeploy.io/v1alpha1"] = Field(default="modeldeploy.io/v1alpha1", alias="apiVersion")
    kind: Literal["StageResult"] = "StageResult"
    key: str
    stage: str
    attempt: str = Field(pattern=r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{16}$")  # the folder its outputs are in
    outputs: dict[OutputName, Output]
    metrics: dict[str, Any] = Field(default_factory=dict)
    toolchain: dict[str, str] = Field(default_factory=dict)
    started_at: datetime
    finished_at: datetime


class Failure(_Document):
    api_version: Literal["modeldeploy.io/v1alpha1"] = Field(default="modeldeploy.io/v1alpha1", alias="apiVersion")
    kind: Literal["StageFailure"] = "StageFailure"
    key: str
    stage: str
    reason: str
    message: str
    retriable: bool = False  # True when the cause was a tool, device or network failure, not the user's input
    failed_at: datetime


TASK_ENVIRONMENT = "MODELDEPLOY_TASK"  # the task document itself, as JSON: how a Job hands it to modeldeploy-stage


class TaskDocument(_Document):
    """What a stage Job (or a local subprocess) runs: one task of the plan and the store it works in."""

    api_version: Literal["modeldeploy.io/v1alpha1"] = Field(default="modeldeploy.io/v1alpha1", alias="apiVersion")
    kind: Literal["StageTask"] = "StageTask"
    key: str
    stage: str
    name: str
    config: dict[str, Any]
    inputs: dict[str, str]
    toolchain: str
    backend: str | None = None
    store: str


TASKS = "tasks"


def task_prefix(key: str) -> str:
    return f"{TASKS}/{key}"


def tasks_with_objects(store: Store) -> set[str]:
    """The keys of the tasks that have anything in the store: a task document, outputs, a failure, a manifest."""
    return store.folders(TASKS)


def attempt_prefix(key: str, attempt: str) -> str:
    return f"{task_prefix(key)}/attempts/{attempt}"


def output_name(manifest: Manifest, name: str) -> str:
    """Where a committed task's output is, in its store."""
    return f"{attempt_prefix(manifest.key, manifest.attempt)}/{name}"


def new_attempt() -> str:
    """A name no other attempt at any task has: when it began, and 64 random bits."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(8)}"


def manifest_name(key: str) -> str:
    return f"{task_prefix(key)}/manifest.json"


def failure_name(key: str) -> str:
    return f"{task_prefix(key)}/failure.json"


def task_document_name(key: str) -> str:
    return f"{task_prefix(key)}/task.json"


def write_task(store: Store, document: TaskDocument) -> str:
    """Store the task document (content-addressed by its key, so rewriting it is harmless); returns its URI."""
    name = task_document_name(document.key)
    store.put_bytes(name, _serialize(document))
    return store.uri_of(name)


def _serialize(document: BaseModel) -> bytes:
    return json.dumps(document.model_dump(mode="json", by_alias=True), indent=2, sort_keys=True).encode() + b"\n"


def commit(
    store: Store,
    key: str,
    stage: str,
    outputs: Mapping[str, Path],
    started_at: datetime,
    metrics: Mapping[str, Any] | None = None,
    toolchain: Mapping[str, str] | None = None,
    progress: OutputProgress | None = None,
) -> Manifest:
    """Upload every output under a new attempt, then create the manifest naming it.

    Raises AlreadyExists if the task was committed, before this attempt's manifest. Then, or when an upload fails,
    the attempt's files are removed; whatever is left (the removal failed, the writer died) no manifest names.
    A manifest write that fails otherwise keeps them: it may have landed all the same.
    """
    if store.exists(manifest_name(key)):
        raise AlreadyExists(f"{store.uri_of(manifest_name(key))} already exists")
    attempt = new_attempt()
    uploaded = {}
    try:
        for name, path in sorted(outputs.items()):
            report = (lambda transferred, name=name: progress(name, transferred)) if progress else None
            digest = store.put_file(f"{attempt_prefix(key, attempt)}/{name}", path, report)
            uploaded[name] = Output(sha256=digest, size=path.stat().st_size)
    except BaseException:
        _remove_quietly(store, attempt_prefix(key, attempt))
        raise
    manifest = Manifest(
        key=key,
        stage=stage,
        attempt=attempt,
        outputs=uploaded,
        metrics=dict(metrics or {}),
        toolchain=dict(toolchain or {}),
        started_at=started_at,
        finished_at=datetime.now(UTC),
    )
    try:
        store.create(manifest_name(key), _serialize(manifest))
    except AlreadyExists:
        _remove_quietly(store, attempt_prefix(key, attempt))
        raise
    return manifest


def _remove_quietly(store: Store, prefix: str) -> None:
    with contextlib.suppress(Exception):  # the error being raised matters more; what is left no manifest names
        store.delete_prefix(prefix)


def read_manifest(store: Store, key: str) -> Manifest | None:
    """The committed result of a task, or None while it is not done."""
    return _read(store, manifest_name(key), Manifest)


def fetch(store: Store, manifest: Manifest, name: str, destination: Path) -> Path:
    """Download one output of a committed task; the file appears only if its sha256 matches."""
    try:
        expected = manifest.outputs[name]
    except KeyError:
        raise KeyError(f"task {manifest.key} has no output {name!r} (it has: {', '.join(manifest.outputs)})") from None
    store.get_file(output_name(manifest, name), destination, sha256=expected.sha256)
    return destination


def fetch_bytes(store: Store, manifest: Manifest, name: str) -> bytes:
    """A small output of a committed task, checked against its sha256."""
    data = store.get_bytes(output_name(manifest, name))
    if hashlib.sha256(data).hexdigest() != manifest.outputs[name].sha256:
        raise ChecksumMismatch(f"{store.uri_of(output_name(manifest, name))}: sha256 mismatch")
    return data


def record_failure(
    store: Store, key: str, stage: str, reason: str, message: str, retriable: bool = False
) -> Failure:
    failure = Failure(
        key=key, stage=stage, reason=reason, message=message, retriable=retriable, failed_at=datetime.now(UTC)
    )
    store.put_bytes(failure_name(key), _serialize(failure))
    return failure


def read_failure(store: Store, key: str) -> Failure | None:
    return _read(store, failure_name(key), Failure)


class DocumentInvalid(StoreError):
    """A manifest or failure record that is not one: written by something else, or damaged."""


def _read(store: Store, name: str, document: type[DocumentType]) -> DocumentType | None:
    try:
        return document.model_validate_json(store.get_bytes(name))
    except NotFound:
        return None
    except ValidationError as error:
        raise DocumentInvalid(f"{store.uri_of(name)} is not a valid {document.__name__} "
                              f"({error.error_count()} problems, first: {error.errors()[0]['msg']})") from None
