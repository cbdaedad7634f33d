"""Huawei Ascend in a Job: AMCT calibration, ATC compile and ais_bench evaluation through the vendor CLIs.

The command lines come from `modeldeploy.backends.ascend_tools`, the same code `modeldeploy plan`
shows them with; the tools' console output is read with `modeldeploy.parsers`. The job image
provides the CANN environment (docs/ascend.md §5.5).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tarfile
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from modeldeploy.backends import ascend_tools
from modeldeploy.backends.ascend import CANN_VERSION
from modeldeploy.backends.ascend_tools import ModelInput, Workspace
from modeldeploy.parsers import ais_bench, atc, npu_smi

from modeldeploy_jobs.data import BINS_TAR, PreparedData, SampleBins
from modeldeploy_jobs.stage import StageError, StageInput, StageReason
from modeldeploy_jobs.tools import last_error, run_tool

OM = "model.om"
MIN_PROBE_LOOP = 10


# The entry of versions() that is the release a target names in toolchain.version, and the release a target that
# names none expects.
RELEASE_TOOL = "cann"
DEFAULT_RELEASE = CANN_VERSION
VERSION_TIMEOUT_SECONDS = 60


def versions() -> dict[str, str]:
    """What runs here: the CANN release atc reports, the ais_bench wheel, and the NPU driver npu-smi reports."""
    found = {"cann": _cann_release() or "unknown"}
    try:
        found["aisBench"] = metadata.version("ais_bench")
    except metadata.PackageNotFoundError:
        pass
    driver = npu_smi.parse(_console(ascend_tools.NPU_SMI_INFO) or "")["version"]
    if driver is not None:
        found["npuDriver"] = driver
    return found


def _cann_release() -> str | None:
    """`atc --version`'s release; else the toolkit's directory, as ascend-toolkit/latest links to the release's."""
    release = atc.version(_console(ascend_tools.ATC_VERSION) or "")
    home = os.environ.get("ASCEND_TOOLKIT_HOME")
    return release or (Path(home).resolve().name if home else None)


def _console(command: Sequence[str]) -> str | None:
    """A version query's console output; None when the tool is not here or fails."""
    if shutil.which(command[0]) is None:
        return None
    try:
        run = subprocess.run(list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             errors="replace", timeout=VERSION_TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return run.stdout if run.returncode == 0 else None


# ---------------------------------------------------------------- calibrate


def calibrate(
    model: Path, data: PreparedData, indices: Sequence[int], config: Mapping[str, Any], outputs_dir: Path
) -> dict[str, Path]:
    workdir = outputs_dir.parent / "amct"
    inputs = ascend_tools.inputs_of(config)
    batch, batch_num = ascend_tools.calibration_batches(len(indices), config["options"]["calibrationBatchSize"])
    workspace = Workspace(model=str(model), output=str(workdir / "model"), data=str(workdir / "data"),
                          config=str(workdir / "config"))
    _write_calibration_bins(data, indices, inputs, batch, batch_num, workspace)
    Path(workspace.config).mkdir(parents=True, exist_ok=True)
    Path(workspace.quant_cfg).write_text(ascend_tools.quant_cfg(config["options"], batch_num))
    log = outputs_dir / "amct.log"
    run = run_tool(ascend_tools.amct_command(inputs, workspace, batch), log, workdir)
    deploy = Path(ascend_tools.deploy_model(workspace))
    if run.returncode != 0 or not deploy.is_file():
        raise StageError(StageReason.CALIBRATION_FAILED, f"amct_onnx calibration failed (exit {run.returncode}): "
                                                        f"{last_error(run.output)}")
    outputs = {"model.onnx": deploy.replace(outputs_dir / "model.onnx"), "amct.log": log}
    fake_quant = Path(f"{workspace.output}_fake_quant_model.onnx")
    if fake_quant.is_file():
        outputs["fake_quant_model.onnx"] = fake_quant.replace(outputs_dir / "fake_quant_model.onnx")
    outputs["quant.cfg"] = Path(workspace.quant_cfg).replace(outputs_dir / "quant.cfg")
    return outputs


def _write_calibration_bins(
    data: PreparedData, indices: Sequence[int], inputs: Sequence[ModelInput], batch: int, batch_num: int,
    workspace: Workspace,
) -> None:
    for model_input in inputs:
        Path(workspace.data_dir(model_input)).mkdir(parents=True, exist_ok=True)
    for number in range(batch_num):
        arrays = data.take(indices[number * batch : (number + 1) * batch])
        for model_input in inputs:
            array = np.ascontiguousarray(arrays[model_input.name], dtype=model_input.data_type)
            array.tofile(Path(workspace.data_dir(model_input)) / f"calibration-{number:05d}.bin")


# ---------------------------------------------------------------- compile


def compile(model: Path, config: Mapping[str, Any], outputs_dir: Path, workdir: Path) -> tuple[dict[str, Path], dict]:
    soc = _soc_version(config["device"], workdir)
    workspace = Workspace(model=str(model), output=str(outputs_dir / "model"), config=str(workdir / "config"))
    outputs: dict[str, Path] = {}
    if config.get("aipp"):
        Path(workspace.config).mkdir(parents=True, exist_ok=True)
        aipp = Path(workspace.aipp_cfg)
        aipp.write_text(ascend_tools.aipp_cfg(config["aipp"]))
        outputs["aipp.cfg"] = aipp
    log = workdir / "atc.log"
    run = run_tool(ascend_tools.atc_command(config, ascend_tools.inputs_of(config), workspace, soc), log, workdir)
    result = atc.parse(run.output)
    built = outputs_dir / OM
    if run.returncode != 0 or not result["ok"] or not built.is_file():
        raise StageError(_atc_reason(result), f"atc failed (exit {run.returncode}): {_atc_errors(result, run.output)}")
    outputs.update({OM: built, "atc.log": log.replace(outputs_dir / "atc.log")})
    warnings = sorted({warning["code"] for warning in result["warnings"]})
    return outputs, {"socVersion": soc, "atcWarnings": warnings}


def _atc_reason(result: Mapping[str, Any]) -> StageReason:
    """An operator the toolchain lacks, or a parameter or model it refuses, is the user's to fix; else a retry may help."""
    causes = {atc.cause(error["code"]) for error in result["errors"]}
    if "operators" in causes:
        return StageReason.MODEL_UNSUPPORTED
    if "parameters" in causes:
        return StageReason.COMPILE_REJECTED
    return StageReason.COMPILE_FAILED


def _atc_errors(result: Mapping[str, Any], output: str) -> str:
    if not result["errors"]:
        return last_error(output)
    return "; ".join(f"{error['code']}: {error['message']}" if error["code"] else error["message"]
                     for error in result["errors"])


def _soc_version(device: str, workdir: Path) -> str:
    if device != "auto":
        return ascend_tools.soc_version(device)
    chips = _chips(workdir)
    if not chips:
        raise StageError(StageReason.DEVICE_MISSING,
                         "device: auto reads the chip from npu-smi, which lists no NPU on this node")
    return chips[0]["socVersion"]


def _chips(workdir: Path) -> list[dict[str, Any]]:
    """The NPUs npu-smi lists here; empty when the node has no npu-smi (a CPU node)."""
    if shutil.which(ascend_tools.NPU_SMI_INFO[0]) is None:
        return []
    run = run_tool(ascend_tools.NPU_SMI_INFO, workdir / "npu-smi.log", workdir)
    return npu_smi.parse(run.output)["chips"] if run.returncode == 0 else []


# ---------------------------------------------------------------- evaluate


def _unpack(prepared: StageInput, directory: Path) -> SampleBins:
    """A bins-variant prepare output with its .bin files unpacked for ais_bench: one directory per input."""
    data = PreparedData.open(prepared.directory)
    if not isinstance(data, SampleBins):
        raise StageError(StageReason.INPUT_MISSING,
                         f"task {prepared.key[:12]} prepared tensors, not the .bin files ais_bench reads")
    with tarfile.open(prepared.path(BINS_TAR)) as archive:
        archive.extractall(directory, filter="data")
    return data


def evaluate(model: Path, prepared: StageInput | None, config: Mapping[str, Any], workdir: Path) -> dict[str, Any]:
    """Accuracy from ais_bench's per-sample outputs, speed from a pure-inference run; the chip from npu-smi."""
    chips = _chips(workdir)
    batch = config["batchSize"]
    bins = _unpack(prepared, workdir / "data") if prepared is not None else None
    if bins is not None and bins.count < batch:
        raise StageError(StageReason.DATASET_TOO_SMALL, f"the prepared dataset (task {prepared.key[:12]}) has "
                         f"{bins.count} samples, fewer than batch size {batch}; add samples or drop the batch size")
    workspace = Workspace(model=str(model), data=str(workdir / "data"), results=str(workdir / "results"))
    accuracy = None
    compute_ms = None
    if config.get("accuracy") and bins is not None and bins.labels is not None:
        inputs = [ModelInput(info.name, ()) for info in bins.inputs]
        run = _ais_bench(ascend_tools.accuracy_command(config, inputs, workspace), workdir, "accuracy")
        accuracy = _accuracy(bins, Path(workspace.results) / "accuracy")
        compute_ms = run["summaries"][0]["npuComputeTimeMs"]["mean"]
    budget = config["performance"]
    devices = ascend_tools.evaluated_devices(config)
    if len(devices) > 1 and len(chips) < len(devices):
        raise StageError(StageReason.DEVICE_MISSING,
                         f"options.devices is {len(devices)}, but npu-smi lists {len(chips)} NPU(s) in this pod: its "
                         f"Job must be given {len(devices)} of the device's resource")
    loop = budget.get("iterations")
    if loop is None:
        if compute_ms is None:
            one_device = {**config, "options": {**config["options"], "devices": 1}, "performance": {"warmup": 1}}
            probe = _ais_bench(ascend_tools.speed_command(one_device, workspace, MIN_PROBE_LOOP), workdir, "probe")
            compute_ms = probe["summaries"][0]["npuComputeTimeMs"]["mean"]
        loop = max(1, math.ceil(budget["durationSeconds"] * 1000 / compute_ms))
    speed = _ais_bench(ascend_tools.speed_command(config, workspace, loop), workdir, "speed")
    performance = _performance(speed, devices, Path(workspace.results), budget["warmup"])
    performance["throughputCovers"] = throughput_covers(devices, speed, chips)
    return {
        "accuracy": accuracy,
        "performance": performance,
        "runtime": {"tool": "ais_bench", "device": ascend_tools.EVALUATED_DEVICE,
                    "speedDevices": ",".join(str(device) for device in devices)},
        "environment": {"npu": chips[0]["name"] if chips else None, "npuCount": len(chips)},
    }


def throughput_covers(devices: Sequence[int], speed: Mapping[str, Any], chips: Sequence[Mapping[str, Any]]
                      ) -> dict[str, Any]:
    """What the throughput is the figure of: the devices it is summed over, each one's own figure, the chips, and
    the cards they make up. npu-smi groups the chips of one card under one NPU id (an Atlas 300I Duo's two, an
    Atlas 300I's four), so the cards are the NPU ids of the devices' chips, whole when every chip of theirs ran."""
    per_device = {entry["device"]: entry["throughput"] for entry in speed["devices"]}
    if not per_device:  # one device: its own summary is the run's
        per_device = {devices[0]: speed["summaries"][0]["throughput"]}
    by_device = {chip["device"]: chip for chip in chips if chip.get("device") is not None}
    used = [by_device.get(device) or (chips[device] if device < len(chips) else None) for device in devices]
    known = [chip for chip in used if chip is not None]
    cards = sorted({chip["npu"] for chip in known})
    whole = all(sum(1 for chip in chips if chip["npu"] == card) == sum(1 for chip in known if chip["npu"] == card)
                for card in cards)
    covers: dict[str, Any] = {
        "devices": len(devices),
        "perDevice": [{"device": device, "throughput": per_device.get(device)} for device in devices],
        "chips": len(devices),
        "chip": known[0]["socVersion"] if known else None,
        "cards": len(cards) if cards and len(known) == len(devices) else None,
        "wholeCards": whole if cards and len(known) == len(devices) else None,
    }
    return {**covers, "summary": covers_text(covers)}


def covers_text(covers: Mapping[str, Any]) -> str:
    """`sum of 4 devices (4 Ascend310 chips, 1 whole card); per device: ...`, or `1 device (1 ... chip, ...)`."""
    chips = covers["chips"]
    parts = [f"{chips}{' ' + covers['chip'] if covers['chip'] else ''} chip{'s' if chips != 1 else ''}"]
    cards = covers["cards"]
    if cards is not None and covers["wholeCards"]:
        parts.append(f"{cards} whole card{'s' if cards != 1 else ''}")
    elif cards is not None:
        parts.append("part of a card" if cards == 1 else f"parts of {cards} cards")
    if covers["devices"] == 1:
        return f"1 device ({', '.join(parts)})"
    each = ", ".join("?" if entry["throughput"] is None else f"{entry['throughput']:,.1f}"
                     for entry in covers["perDevice"])
    return f"sum of {covers['devices']} devices ({', '.join(parts)}); per device: {each} samples/s"


def _ais_bench(command: Sequence[str], workdir: Path, name: str) -> dict[str, Any]:
    run = run_tool(command, workdir / f"ais_bench-{name}.log", workdir)
    result = ais_bench.parse(run.output)
    devices = command[command.index("--device") + 1].split(",")
    if run.returncode != 0 or not result["ok"]:
        errors = "; ".join(f"{e['code']}: {e['message']}" if e["code"] else e["message"] for e in result["errors"])
        raise StageError(StageReason.EVALUATION_FAILED,
                         f"ais_bench ({name}) failed (exit {run.returncode}): {errors or last_error(run.output)}")
    # A multi-device run's exit status and `result` are not to be trusted (docs/ascend.md §3.5 (d)): every device
    # must have printed its summary and its throughput line.
    reported = len(result["devices"]) if len(devices) > 1 else len(devices)
    if len(result["summaries"]) != len(devices) or reported != len(devices):
        raise StageError(StageReason.EVALUATION_FAILED,
                         f"ais_bench ({name}) ran on devices {','.join(devices)} but reported "
                         f"{len(result['summaries'])} device summaries: {last_error(run.output)}")
    return result


def _accuracy(bins: SampleBins, results: Path) -> dict[str, Any]:
    assert bins.labels is not None
    top1 = top5 = 0
    ranked_five = True
    for name, label in zip(bins.names, bins.labels, strict=True):
        # ais_bench names an output after its input file up to the first dot (docs/ascend.md §3.4)
        path = results / f"{name.split('.', 1)[0]}_0.txt"
        try:
            with path.open() as text:
                scores = np.array(text.readline().split(), dtype=np.float64)
        except (OSError, ValueError) as error:
            raise StageError(StageReason.EVALUATION_FAILED,
                             f"ais_bench output {path.name} is missing or unreadable: {error}") from None
        top1 += int(scores.argmax() == label)
        if scores.size >= 5:
            top5 += int(label in np.argpartition(-scores, 4)[:5])
        else:
            ranked_five = False
    count = bins.count
    return {"top1": top1 / count, "top5": top5 / count if ranked_five else None, "samples": count}


def _summary_jsons(results: Path, devices: Sequence[int]) -> list[Path]:
    """The speed run's summary files: `speed_summary.json` beside its result directory, or one per device,
    `device<id>_<index>_summary.json`, inside it (docs/ascend.md §3.4)."""
    if len(devices) == 1:
        return [results / "speed_summary.json"]
    return [results / "speed" / f"device{device}_{index}_summary.json" for index, device in enumerate(devices)]


def _performance(result: Mapping[str, Any], devices: Sequence[int], results: Path, warmup: int) -> dict[str, Any]:
    """Throughput: the sum over the devices; latency: every timed inference of every device."""
    console = result["summaries"][0]
    per_device = []
    for path in _summary_jsons(results, devices):
        listed = json.loads(path.read_text()).get("npu_compute_time_list") if path.is_file() else None
        per_device.append(np.asarray(listed or [], dtype=np.float64))
    if all(times.size for times in per_device):
        milliseconds = np.concatenate(per_device)
        latency = {"mean": float(milliseconds.mean()), "p50": float(np.percentile(milliseconds, 50)),
                   "p90": float(np.percentile(milliseconds, 90)), "p99": float(np.percentile(milliseconds, 99))}
        # The devices compute at the same time: the run took as long as its busiest device.
        iterations, seconds = len(milliseconds), max(float(times.sum() / 1000) for times in per_device)
    else:
        stats = console["npuComputeTimeMs"]
        latency = {"mean": stats["mean"], "p50": stats["median"], "p90": None,
                   "p99": stats["percentile"] if stats["percentileRank"] == 99 else None}
        iterations, seconds = None, None
    performance: dict[str, Any] = {
        "throughput": result["throughput"],
        "latencyMs": latency,
        "iterations": iterations,
        "seconds": seconds,
        "warmup": warmup,
    }
    for key in ("h2dLatencyMs", "d2hLatencyMs"):
        if console.get(key):
            performance[key] = console[key]["mean"]
    return performance
