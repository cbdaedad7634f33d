"""`modeldeploy-stage [TASK]`: run one stage task — the command every pipeline Job runs.

TASK is the task document's URI (s3://..., file://...) or a local path; without it, the
document itself comes as JSON in $MODELDEPLOY_TASK, as the operator's Jobs carry it, and the
stage keeps a copy in the store next to the task's results. The stage's inputs are downloaded
and verified, the stage runs in a scratch directory, its outputs are uploaded and the result
manifest is written last. A failure is recorded in the task's failure.json with its reason:
exit 3 when the user's input is at fault (retrying cannot help), 1 for anything else, a tool, a
device or the network failing (the Job retries); docs/failures.md lists the reasons.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

from modeldeploy.manifest import (
    TASK_ENVIRONMENT,
    DocumentInvalid,
    TaskDocument,
    commit,
    fetch,
    output_name,
    read_manifest,
    record_failure,
    write_task,
)
from modeldeploy.store import AlreadyExists, ChecksumMismatch, S3Store, Store, StoreError, open_store

from modeldeploy_jobs.sources import fetch_source, fetch_tree, inside
from modeldeploy_jobs.stage import StageContext, StageError, StageInput, StageReason

EXIT_FAILED = 1
EXIT_REJECTED = 3

STAGES = {
    "convert": "modeldeploy_jobs.convert",
    "prepare": "modeldeploy_jobs.prepare",
    "calibrate": "modeldeploy_jobs.calibrate",
    "compile": "modeldeploy_jobs.compile",
    "evaluate": "modeldeploy_jobs.evaluate",
    "report": "modeldeploy_jobs.report",
}


def read_task(uri: str) -> TaskDocument:
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        data = S3Store(parsed.netloc).get_bytes(parsed.path.lstrip("/"))
    else:
        data = Path(parsed.path if parsed.scheme == "file" else uri).read_bytes()
    return TaskDocument.model_validate_json(data)


def download_inputs(store: Store, task: TaskDocument, workdir: Path) -> dict[str, StageInput]:
    inputs = {}
    for role, key in task.inputs.items():
        manifest = read_manifest(store, key)
        if manifest is None:
            raise StageError(StageReason.INPUT_MISSING,
                             f"input {role} (task {key[:12]}) has no result in {store.uri} yet")
        directory = workdir / "inputs" / role.replace("/", "_").replace(":", "_")
        for name in manifest.outputs:
            fetch(store, manifest, name, inside(directory, name))
        inputs[role] = StageInput(key=key, manifest=manifest, directory=directory)
    return inputs


def run_task(task: TaskDocument, workdir: Path, keep_document: bool = False) -> int:
    """Run the task unless it is done; `keep_document` stores the task document first (it came from no store)."""
    store = open_store(task.store)
    if read_manifest(store, task.key) is not None:
        print(f"{task.name}: already done ({task.key[:12]})")
        return 0
    started = datetime.now(UTC)
    try:
        if keep_document:
            write_task(store, task)
        try:
            inputs = download_inputs(store, task, workdir)
        except (ChecksumMismatch, DocumentInvalid) as error:
            raise StageError(StageReason.INPUT_CORRUPT, str(error)) from None
        outputs_dir = workdir / "outputs"
        outputs_dir.mkdir(parents=True)
        context = StageContext(
            key=task.key,
            kind=task.stage,
            config=task.config,
            inputs=inputs,
            workdir=workdir,
            outputs_dir=outputs_dir,
            fetch_source=fetch_source,
            fetch_tree=fetch_tree,
            artifact_uri=lambda manifest, name: store.uri_of(output_name(manifest, name)),
        )
        result = importlib.import_module(STAGES[task.stage]).run(context)
        commit(store, task.key, task.stage, result.outputs, started, result.metrics, result.toolchain)
    except AlreadyExists:  # another runner committed the same task meanwhile: same key, same work
        return 0
    except StageError as error:
        reason = error.reason
        if isinstance(error.__context__, MemoryError):  # a parser that ran out of memory is no verdict on the file
            reason = StageReason.OUT_OF_MEMORY
        return fail(store, task, reason, error.message)
    except MemoryError:
        return fail(store, task, StageReason.OUT_OF_MEMORY, "the stage ran out of memory")
    except Exception as error:  # noqa: BLE001 - the Job's boundary: every failure is recorded, never lost
        traceback.print_exc()
        return fail(store, task, StageReason.STAGE_CRASHED, f"{type(error).__name__}: {error}")
    print(f"{task.name}: done ({task.key[:12]})")
    return 0


def fail(store: Store, task: TaskDocument, reason: StageReason, message: str) -> int:
    """Records the failure and returns the exit code that tells the Job whether to retry."""
    record_failure(store, task.key, task.stage, reason.value, message, retriable=not reason.user_fault)
    print(f"{task.name} failed: {reason}: {message}", file=sys.stderr)
    return EXIT_REJECTED if reason.user_fault else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="modeldeploy-stage",
        description="Run one pipeline stage task from its task document: download and verify its inputs, do the "
        "work, upload its outputs, write the result manifest last. Exit 0 when done (or already done), 3 when the "
        "user's input is at fault, 1 on any other failure, which a retry may fix (the reason is in the task's "
        "failure.json).",
    )
    parser.add_argument("task", nargs="?", help=f"the task document: s3://..., file://... or a path (default: the "
                        f"document itself, as JSON in ${TASK_ENVIRONMENT})")
    parser.add_argument("--workdir", type=Path, help="scratch directory (default: a temporary one)")
    args = parser.parse_args(argv)
    inline = os.environ.get(TASK_ENVIRONMENT) if args.task is None else None
    if args.task is None and not inline:
        parser.error(f"no task: give TASK or set ${TASK_ENVIRONMENT}")
    source = f"${TASK_ENVIRONMENT}" if inline else args.task
    try:
        task = TaskDocument.model_validate_json(inline) if inline else read_task(args.task)
    except (OSError, StoreError, ValueError) as error:
        print(f"cannot read the task document {source}: {error}", file=sys.stderr)
        return EXIT_FAILED
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix=f"{task.stage}-") as scratch:
        return run_task(task, Path(scratch), keep_document=bool(inline))


if __name__ == "__main__":
    sys.exit(main())
