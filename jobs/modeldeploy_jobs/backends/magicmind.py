"""Cambricon MLU in a Job: the MagicMind build program, runtime accuracy and mm_run speed.

compile runs `modeldeploy_jobs.magicmind_build` (calibrating on the MLU for the qint modes) with
the BuilderConfig from `modeldeploy.backends.magicmind_tools`, the code `modeldeploy plan` shows
it with; `load` runs the serialized model with the MagicMind Python runtime for the accuracy
pass; `benchmark` measures speed with `mm_run`, whose report is read with `modeldeploy.parsers`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from modeldeploy.backends import magicmind_tools
from modeldeploy.backends.magicmind import MAGICMIND_VERSION
from modeldeploy.backends.magicmind_tools import Workspace
from modeldeploy.parsers import cnmon, mm_run

from modeldeploy_jobs import magicmind_build
from modeldeploy_jobs.backends import InputSpec, Session
from modeldeploy_jobs.data import PreparedData
from modeldeploy_jobs.stage import StageError, StageReason
from modeldeploy_jobs.tools import last_error, run_tool

MODEL = "model.mm"


# The entry of versions() that is the release a target names in toolchain.version, and the release a target that
# names none expects.
RELEASE_TOOL = "magicmind"
DEFAULT_RELEASE = MAGICMIND_VERSION


def installed_version() -> str | None:
    """The MagicMind release here: the wheel's metadata, else the package's __version__; None without either."""
    try:
        return metadata.version("magicmind")
    except metadata.PackageNotFoundError:
        pass
    try:
        import magicmind
    except ImportError:
        return None
    found = getattr(magicmind, "__version__", None)
    return found if isinstance(found, str) else None


def version() -> str:
    """The release whose mm_run flags to use: the installed one, else the toolchain's."""
    return installed_version() or MAGICMIND_VERSION


def versions() -> dict[str, str]:
    """What runs here: MagicMind, and the MLU driver cnmon reports when cnmon is here."""
    found = {"magicmind": installed_version() or "unknown"}
    driver = _cnmon().get("driver")
    if driver is not None:
        found["mluDriver"] = driver
    return found


def _cnmon() -> dict[str, Any]:
    """`cnmon info` parsed; empty when cnmon is not here or fails (a CPU node)."""
    try:
        run = run_tool(["cnmon", "info"], Path("/tmp") / "cnmon.log", Path("/tmp"))
    except StageError:
        return {}
    return cnmon.parse(run.output) if run.returncode == 0 else {}


def compile(
    model: Path, config: Mapping[str, Any], outputs_dir: Path, workdir: Path,
    calibration: tuple[PreparedData, Sequence[int]] | None = None,
) -> tuple[dict[str, Path], dict]:
    workspace = Workspace(model=str(model), builder_config=str(workdir / "builder_config.json"),
                          calibration_data=str(workdir / "calibration"), magicmind_model=str(outputs_dir / MODEL))
    Path(workspace.builder_config).write_text(json.dumps(magicmind_tools.builder_config(config), indent=2))
    if magicmind_tools.quantized(config["precision"]):
        if calibration is None:
            raise StageError(StageReason.INPUT_MISSING, f"{config['precision']} needs calibration data")
        _write_calibration_data(*calibration, Path(workspace.calibration_data))
    log = outputs_dir / "build.log"
    run = run_tool(magicmind_tools.build_command(config, workspace), log, workdir)
    built = magicmind_build.BUILT in run.output and magicmind_build.SERIALIZED in run.output
    if run.returncode != 0 or not built or not (outputs_dir / MODEL).is_file():
        reason = StageReason.COMPILE_REJECTED if run.returncode == magicmind_build.EXIT_REJECTED else (
            StageReason.COMPILE_FAILED)
        raise StageError(reason, f"the MagicMind build failed (exit {run.returncode}): {last_error(run.output)}")
    outputs = {MODEL: outputs_dir / MODEL, "build.log": log,
               "builder_config.json": Path(workspace.builder_config).replace(outputs_dir / "builder_config.json")}
    return outputs, {"precisionMode": magicmind_tools.precision_mode(config["precision"], config["options"])}


def _write_calibration_data(data: PreparedData, indices: Sequence[int], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, samples in data.take(indices).items():
        np.save(directory / f"{name}.npy", samples)


def load(model: Path, config: Mapping[str, Any], threads: int) -> Session:
    """The model on MLU 0 with the MagicMind Python runtime (docs/magicmind.md §4.1)."""
    try:
        import magicmind.python.runtime as mm
    except ImportError:
        raise StageError(StageReason.TOOLCHAIN_MISSING, "this job image does not carry the MagicMind runtime") from None
    loaded = mm.Model()
    _check(loaded.deserialize_from_file(str(model)), f"loading {model.name}")
    # The runtime stays open until the stage's process ends: every inference of the evaluation uses it.
    mm.System().__enter__()
    device = mm.Device()
    device.id = 0
    _check(device.active(), "activating MLU 0")
    engine_config = mm.Model.EngineConfig()
    engine_config.device_type = "MLU"
    engine = loaded.create_i_engine(engine_config)
    if engine is None:
        raise StageError(StageReason.EVALUATION_FAILED,
                         f"{model.name} does not run on this MLU (built for another arch)")
    context = engine.create_i_context()
    queue = device.create_queue()

    def infer(inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        tensors = context.create_inputs()
        for tensor, name in zip(tensors, loaded.get_input_names(), strict=True):
            tensor.from_numpy(np.ascontiguousarray(inputs[name]))
            tensor.to(device)
        outputs: list[Any] = []
        _check(context.enqueue(tensors, outputs, queue), "enqueue")
        _check(queue.sync(), "sync")
        return [output.asnumpy() for output in outputs]

    names = loaded.get_input_names()
    shapes = [tuple(dim if dim > 0 else None for dim in dims.GetDims()) for dims in loaded.get_input_dimensions()]
    specs = [InputSpec(name, shape, np.dtype("float32")) for name, shape in zip(names, shapes, strict=True)]
    return Session(specs, infer, {"device": "MLU 0", **_card()})


def _card() -> dict[str, str]:
    """The card model as cnmon names it, as Cambricon's scripts read it (docs/magicmind.md §5.2)."""
    cards = _cnmon().get("cards")
    return {"card": cards[0]["name"]} if cards else {}


def _check(status: Any, what: str) -> None:
    if not status.ok():
        raise StageError(StageReason.EVALUATION_FAILED, f"MagicMind runtime: {what} failed: {status}")


def benchmark(model: Path, config: Mapping[str, Any], workdir: Path) -> dict[str, Any]:
    """Speed from mm_run on MLU 0 with one thread; its report goes to stderr, which run_tool keeps."""
    run = run_tool(magicmind_tools.mm_run_command(config, str(model), version()), workdir / "mm_run.log", workdir)
    report = mm_run.parse(run.output)
    if run.returncode != 0 or not report["ok"]:
        errors = "; ".join(error["message"] for error in report["errors"]) or last_error(run.output)
        raise StageError(StageReason.EVALUATION_FAILED, f"mm_run failed (exit {run.returncode}): {errors}")
    summary = report["summaries"][0]
    compute = summary["latencyMs"]["compute"] or {}
    return {
        "throughput": report["throughput"],
        "latencyMs": {"mean": compute.get("mean"), "p50": compute.get("median"), "p90": compute.get("p90"),
                      "p99": compute.get("p99")},
        "iterations": summary["iterations"],
        "seconds": summary["hostWallTimeS"],
        "mluComputeSeconds": summary["mluComputeTimeS"],
        "h2dLatencyMs": (summary["latencyMs"]["h2d"] or {}).get("mean"),
        "d2hLatencyMs": (summary["latencyMs"]["d2h"] or {}).get("mean"),
    }
