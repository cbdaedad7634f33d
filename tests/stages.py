"""Running one stage in-process on local files, the way the entrypoint runs it in a Job."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modeldeploy.manifest import Manifest
from modeldeploy_jobs.sources import fetch_source, fetch_tree
from modeldeploy_jobs.stage import StageContext, StageInput, StageResult


def run_stage(kind: str, config: Mapping[str, Any], workdir: Path, inputs: Mapping[str, StageInput] = ()) -> StageResult:
    outputs = workdir / "outputs"
    outputs.mkdir(parents=True, exist_ok=True)
    context = StageContext(
        key="0" * 64,
        kind=kind,
        config=config,
        inputs=dict(inputs),
        workdir=workdir,
        outputs_dir=outputs,
        fetch_source=fetch_source,
        fetch_tree=fetch_tree,
        artifact_uri=lambda manifest, name: (workdir / manifest.key / name).as_uri(),
    )
    return importlib.import_module(f"modeldeploy_jobs.{kind}").run(context)


def as_input(result: StageResult, key: str = "1" * 64) -> StageInput:
    """A finished stage's outputs as the input of the next one (no store in between)."""
    from datetime import UTC, datetime

    from modeldeploy.manifest import Output, new_attempt
    from modeldeploy.store import sha256_file

    directory = next(iter(result.outputs.values())).parent
    manifest = Manifest(
        key=key,
        stage="test",
        attempt=new_attempt(),
        outputs={name: Output(sha256=sha256_file(path), size=path.stat().st_size) for name, path in result.outputs.items()},
        metrics=dict(result.metrics),
        started_at=datetime.now(UTC),
        finished_at=datetime.now(UTC),
    )
    return StageInput(key=key, manifest=manifest, directory=directory)
