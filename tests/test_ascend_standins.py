"""The Ascend tool stand-ins (tests/ascend_toolchain) behave like atc, amct_onnx, ais_bench and npu-smi.

Every tool runs as a subprocess with the toolchain on PATH/PYTHONPATH, on a tiny conv + linear ONNX model;
expected texts and formats come from docs/ascend.md §1–§4.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from modeldeploy.backends import ascend_tools
from modeldeploy.parsers import npu_smi
from tiny_onnx import CLASSES, INPUT_SHAPE, write_tiny_model

TOOLCHAIN = Path(__file__).resolve().parent / "ascend_toolchain"
SAMPLES = 6
ATC_START = "ATC start working now, please wait for a moment."
ATC_SUCCESS = "ATC run success, welcome to the next use."
ATC_FAILED = "ATC run failed, Please check the detail log, Try 'atc --help' for more information"
# Recorded atc output, docs/ascend.md §1.5 (msit fixture atc_err_e19010.txt).
RECORDED_E19010 = """\
ATC start working now, please wait for a moment.
ATC run failed, Please check the detail log, Try 'atc --help' for more information
E19010: No parser is registered for Op [Conv_52, optype [ai.onnx::11::Convx]].
        Solution: Check the version of the installation package and reinstall the package. For details, see the operator specifications.
        TraceBack (most recent call last):
        No parser is registered for Op [Conv_112, optype [ai.onnx::11::Convx]].
        No parser is registered for Op [Conv_172, optype [ai.onnx::11::Convx]].
        No parser is registered for Op [Conv_232, optype [ai.onnx::11::Convx]].
        No parser is registered for Op [Conv_292, optype [ai.onnx::11::Convx]].
        Model parse to graph failed, graph name:tdnnx.[FUNC:ModelParseToGraph][FILE:onnx_parser.cc][LINE:905]
        ATC model parse ret fail.[FUNC:ParseGraph][FILE:omg.cc][LINE:788]
"""
# The parser regexes suggested in docs/ascend.md §3.5.
STATISTICS_LINE = re.compile(
    r"^\[INFO\] (H2D_latency|NPU_compute_time|D2H_latency) \(ms\): min = (\S+), max = (\S+), mean = (\S+), "
    r"median = (\S+), percentile\((\d+)%\) = (\S+)$"
)
THROUGHPUT_LINE = re.compile(
    r"^\[INFO\] throughput (?:1000\*batchsize(?:\.mean)?\(([\d.]+)\)/NPU_compute_time\.mean\(([\d.eE+-]+)\)"
    r"|\(1000\*batchsize/NPU_compute_time\)): ([\d.eE+-]+)$"
)
DEVICE_LINE = re.compile(r"^\[INFO\] i:(\d+) device_(\d+) throughput:(\S+) start_time:(\S+) end_time:(\S+)$")
# ImageNet mean/std folded into AIPP, as in aipp_resnet50_710.aippconfig (§1.4), on a 10x10 source cropped to 8x8.
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
AIPP_CONFIG = """\
aipp_op{
    aipp_mode:static
    input_format : RGB888_U8

    src_image_size_w : 10
    src_image_size_h : 10

    crop: true
    load_start_pos_h : 1
    load_start_pos_w : 2
    crop_size_w : 8
    crop_size_h: 8

    min_chn_0 : 123.675
    min_chn_1 : 116.28
    min_chn_2 : 103.53
    var_reci_chn_0: 0.0171247538316637
    var_reci_chn_1: 0.0175070028011204
    var_reci_chn_2: 0.0174291938997821
}
"""


@dataclass(frozen=True)
class Workspace:
    root: Path
    model: Path  # fp32 ONNX, dynamic batch
    samples: Path  # SAMPLES per-sample float32 .bin files
    calibration: Path  # 3 float32 .bin files of 4 samples each
    env: dict[str, str]

    def run(self, *command: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
        """Run a tool; its output is decoded without newline translation, so progress lines keep their \\r."""
        result = subprocess.run([str(part) for part in command], cwd=self.root, env={**self.env, **env},
                                capture_output=True, timeout=120, check=False)
        return subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(),
                                           result.stderr.decode())

    def atc(self, *flags: str, **env: str) -> subprocess.CompletedProcess[str]:
        return self.run("atc", "--framework=5", "--soc_version=Ascend310P3", *flags, **env)

    def ais_bench(self, *flags: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
        return self.run("python3", "-m", "ais_bench", *flags, **env)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    root = tmp_path_factory.mktemp("ascend")
    write_tiny_model(root / "tiny.onnx")
    rng = np.random.default_rng(1)
    (root / "samples").mkdir()
    for index in range(SAMPLES):
        rng.normal(0, 1, (1, *INPUT_SHAPE)).astype(np.float32).tofile(root / "samples" / f"sample_{index}.bin")
    (root / "calibration").mkdir()
    for index in range(3):
        rng.normal(0, 1, (4, *INPUT_SHAPE)).astype(np.float32).tofile(root / "calibration" / f"batch_{index}.bin")
    env = {name: value for name, value in os.environ.items() if not name.startswith(("ASCEND_STANDIN", "ATC_STANDIN"))}
    env["PATH"] = os.pathsep.join([str(TOOLCHAIN / "bin"), str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = str(TOOLCHAIN)
    yield Workspace(root, root / "tiny.onnx", root / "samples", root / "calibration", env)


@pytest.fixture(scope="module")
def static_om(workspace: Workspace) -> Path:
    result = workspace.atc("--model=tiny.onnx", "--output=om/tiny_bs4", "--input_format=NCHW",
                           "--input_shape=input:4,3,8,8", "--output_type=FP32", "--log=error")
    assert result.returncode == 0, result.stdout
    return workspace.root / "om" / "tiny_bs4.om"


@pytest.fixture(scope="module")
def deploy_model(workspace: Workspace) -> tuple[Path, subprocess.CompletedProcess[str]]:
    (workspace.root / "quant.cfg").write_text("activation_offset:true\nbatch_num:2\n")
    result = workspace.run("amct_onnx", "calibration", "--model", "tiny.onnx", "--save_path", "amct/tiny",
                           "--input_shape", "input:4,3,8,8", "--data_dir", "calibration", "--data_types", "float32",
                           "--calibration_config", "quant.cfg")
    return workspace.root / "amct" / "tiny_deploy_model.onnx", result


def _reference(model: Path, inputs: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": inputs})[0]


def _samples(workspace: Workspace) -> np.ndarray:
    files = [workspace.samples / f"sample_{index}.bin" for index in range(SAMPLES)]
    return np.stack([np.fromfile(path, np.float32).reshape(INPUT_SHAPE) for path in files])


def _read_txt(path: Path) -> np.ndarray:
    return np.array([[float(value) for value in line.split()] for line in path.read_text().splitlines()])


def _failure_block(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 255, result.stdout
    lines = result.stdout.splitlines()
    assert lines[:2] == [ATC_START, ATC_FAILED]
    return "\n".join(lines[2:])


# atc


def test_atc_writes_the_om_with_its_arguments(workspace: Workspace, static_om: Path) -> None:
    result = workspace.atc("--model=tiny.onnx", "--output=om/again", "--input_shape=input:4,3,8,8")
    assert (result.returncode, result.stdout.splitlines()) == (0, [ATC_START, ATC_SUCCESS])
    with zipfile.ZipFile(static_om) as archive:
        assert sorted(archive.namelist()) == ["atc.json", "model.onnx"]
        info = json.loads(archive.read("atc.json"))
        model = onnx.load_from_string(archive.read("model.onnx"))
    assert info == {
        "soc_version": "Ascend310P3",
        "input_format": "NCHW",
        "input_shape": {"input": [4, 3, 8, 8]},
        "precision_mode": "force_fp16",
        "dynamic_batch_size": None,
        "output_type": "FP32",
        "op_select_implmode": None,
        "enable_small_channel": False,
        "aipp": None,
        "source_sha256": hashlib.sha256(workspace.model.read_bytes()).hexdigest(),
    }
    assert [dim.dim_value for dim in model.graph.input[0].type.tensor_type.shape.dim] == [4, 3, 8, 8]


def test_atc_rejects_an_unknown_soc_version(workspace: Workspace) -> None:
    result = workspace.run("atc", "--framework", "5", "--model", "tiny.onnx", "--output", "om/x",
                           "--input_shape", "input:1,3,8,8", "--soc_version", "Ascend999")
    block = _failure_block(result)
    assert block.startswith("E10001: Value [Ascend999] for parameter [--soc_version] is invalid. Reason:")
    assert not (workspace.root / "om" / "x.om").exists()


def test_atc_rejects_a_malformed_input_shape(workspace: Workspace) -> None:
    block = _failure_block(workspace.atc("--model=tiny.onnx", "--output=om/x", "--input_shape=input:1,3,eight,8"))
    assert block.startswith("E10002: Value [input:1,3,eight,8] for parameter --input_shape is invalid. Reason: ")
    assert block.endswith('The value must be formatted as "input_name1:n1,c1,h1,w1;input_name2:n2,c2,h2,w2".')


@pytest.mark.parametrize(("flags", "expected"), [
    (["--input_shape=image:1,3,8,8"], "E10016: Op name [image] specified in --input_shape is not found in the model."),
    ([], ("E10001: Value [-1] for parameter [input] is invalid. "
          "Reason: maybe you should set input_shape to specify its shape.")),
    (["--input_shape=input:1,3,8,8", "--dynamic_batch_size=1,2"],
     ("E10031: --dynamic_batch_size is included, but none of the nodes specified in --input_shape has a batch size "
      "equaling -1.")),
    (["--input_shape=input:1,-1,8,8", "--dynamic_batch_size=1,2"],
     ("E10018: Value [1,-1,8,8] for shape [input] is invalid. When --dynamic_batch_size is included, only batch size "
      "N can be -1 in --input_shape.")),
    (["--input_shape=input:1,3,8,8", "--precision_mode=fast"],
     "E10001: Value [fast] for parameter [--precision_mode] is invalid."),
    (["--input_shape=input:1,3,8,8", "--enable_small_channel=1"],
     "E10001: Value [1] for parameter [--enable_small_channel] is invalid."),
], ids=["unknown-input", "dynamic-dim-without-shape", "gears-without-minus-one", "minus-one-not-batch",
        "precision-mode", "small-channel-without-aipp"])
def test_atc_validation_errors(workspace: Workspace, flags: list[str], expected: str) -> None:
    assert _failure_block(workspace.atc("--model=tiny.onnx", "--output=om/x", *flags)).startswith(expected)


def test_atc_reports_missing_or_unloadable_models(workspace: Workspace) -> None:
    missing = _failure_block(workspace.atc("--output=om/x"))
    assert missing == ('E10054: The requied parameter [--model] for ATC is empty. Another possible reason is that '
                       'the value of some parameter is not enclosed by quotation marks ("").')
    unloadable = _failure_block(workspace.atc("--model=quant.cfg", "--output=om/x"))
    assert unloadable == "E10041: Failed to load the model from [quant.cfg]."
    no_framework = _failure_block(workspace.run("atc", "--model=tiny.onnx", "--output=om/x", "--soc_version=Ascend310"))
    assert no_framework.startswith("E10007: [--framework] is required.")


def test_atc_fault_injection_prints_the_recorded_output(workspace: Workspace) -> None:
    result = workspace.atc("--model=tiny.onnx", "--output=om/x", ATC_STANDIN_FAIL="E19010")
    assert (result.returncode, result.stdout) == (255, RECORDED_E19010)
    unrecorded = workspace.atc("--model=tiny.onnx", "--output=om/x", ATC_STANDIN_FAIL="EZ9999")
    assert _failure_block(unrecorded).startswith("EZ9999: ")


# amct_onnx


def test_amct_writes_an_int8_model_close_to_fp32(workspace: Workspace,
                                                 deploy_model: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    deploy, result = deploy_model
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "INFO - [AMCT]:[Utils]: The model file is saved in amct/tiny_deploy_model.onnx",
        "INFO - [AMCT]:[Utils]: The model file is saved in amct/tiny_fake_quant_model.onnx",
    ]
    op_types = {node.op_type for node in onnx.load(deploy).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= op_types
    record = json.loads((workspace.root / "amct" / "tiny_quant.json").read_text())
    assert record["batch_num"] == 2 and record["quantized_layers"] == ["Conv_0", "Gemm_4"]
    inputs = _samples(workspace)
    fp32, int8 = _reference(workspace.model, inputs), _reference(deploy, inputs)
    assert np.abs(fp32 - int8).max() > 0
    np.testing.assert_allclose(int8, fp32, atol=0.05 * np.abs(fp32).max())


def test_amct_skip_layers_stay_float(workspace: Workspace) -> None:
    (workspace.root / "skip.cfg").write_text('skip_layers : "Gemm_4"\nactivation_offset : false\n')
    result = workspace.run("amct_onnx", "calibration", "--model=tiny.onnx", "--save_path=amct/skip",
                           "--input_shape=input:4,3,8,8", "--data_dir=calibration", "--data_types=float32",
                           "--calibration_config=skip.cfg", "--batch_num=1")
    assert result.returncode == 0, result.stdout + result.stderr
    graph = onnx.load(workspace.root / "amct" / "skip_deploy_model.onnx").graph
    gemm = next(node for node in graph.node if node.op_type == "Gemm")
    assert gemm.input[1] == "fc_w"  # the float initializer, no DequantizeLinear in front
    assert json.loads((workspace.root / "amct" / "skip_quant.json").read_text())["quantized_layers"] == ["Conv_0"]


@pytest.mark.parametrize(("flags", "message"), [
    (["--input_shape=input:2,3,8,8"], "but one batch of input with shape 2,3,8,8 and data type float32 is 1536"),
    (["--input_shape=input:4,3,8,8", "--batch_num=5"], "holds 3 .bin files, fewer than batch_num 5"),
    (["--input_shape=input:4,3,8,8", "--calibration_config=bad.cfg"], "Unknown field layers"),
], ids=["bin-size", "too-few-batches", "unknown-config-field"])
def test_amct_rejects_bad_calibration_input(workspace: Workspace, flags: list[str], message: str) -> None:
    (workspace.root / "bad.cfg").write_text('layers : "Conv_0"\n')
    result = workspace.run("amct_onnx", "calibration", "--model=tiny.onnx", "--save_path=amct/bad",
                           "--data_dir=calibration", "--data_types=float32", *flags)
    assert result.returncode == 1
    assert result.stdout.startswith("ERROR - [AMCT]:") and message in result.stdout


def test_quant_cfg_list_and_repeated_forms_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TOOLCHAIN))
    from ascend_standins import parse_prototext

    listed = parse_prototext('activation_offset:true\nskip_layers:["Conv_104","Conv_140"]\nbatch_num:1\n')
    repeated = parse_prototext('# global\nskip_layers : "Conv_104"\nskip_layers : "Conv_140"\n'
                               "nuq_config {\n  nuq_quantize : {\n    num_steps : 32\n  }\n}\n")
    assert listed == {"activation_offset": ["true"], "skip_layers": ["Conv_104", "Conv_140"], "batch_num": [1]}
    assert repeated["skip_layers"] == listed["skip_layers"]
    assert repeated["nuq_config"] == [{"nuq_quantize": [{"num_steps": [32]}]}]


# ais_bench


def test_ais_bench_infers_a_directory_of_bins(workspace: Workspace, static_om: Path) -> None:
    result = workspace.ais_bench("--model", static_om, "--input", "samples", "--output", "out",
                                 "--output_dirname", "txt", "--outfmt", "TXT", "--warmup_count=2")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "[INFO] get filesperbatch files0 size:768 tensor0size:3072 filesperbatch:4 runcount:2" in lines
    assert "[INFO] warm up 2 done" in lines and "[INFO] output path:out/txt" in lines
    assert "\rInference array Processing: 100%|" in result.stdout
    statistics = [match for line in lines if (match := STATISTICS_LINE.match(line))]
    assert [match[1] for match in statistics] == ["NPU_compute_time"]
    throughput = next(match for line in lines if (match := THROUGHPUT_LINE.match(line)))
    assert throughput[1] == "4" and float(throughput[3]) == pytest.approx(4000 / float(throughput[2]))

    expected = _reference(workspace.model, _samples(workspace))
    outputs = np.stack([_read_txt(workspace.root / "out" / "txt" / f"sample_{index}_0.txt")[0]
                        for index in range(SAMPLES)])
    assert sorted(path.name for path in (workspace.root / "out" / "txt").iterdir()) == [
        f"sample_{index}_0.txt" for index in range(SAMPLES)]  # the 2 padding samples write nothing
    np.testing.assert_array_equal(outputs.argmax(axis=1), expected.argmax(axis=1))
    np.testing.assert_allclose(outputs, expected, atol=1e-2)

    summary = json.loads((workspace.root / "out" / "txt_summary.json").read_text())
    assert set(summary) == {"filesinfo", "args", "NPU_compute_time", "H2D_latency", "D2H_latency", "throughput",
                            "npu_compute_time_list", "pid"}
    assert summary["NPU_compute_time"]["count"] == len(summary["npu_compute_time_list"]) == 2
    assert summary["filesinfo"]["1"]["infiles"] == ["samples/sample_4.bin", "samples/sample_5.bin"]


def test_ais_bench_rejects_inputs_that_do_not_divide_the_tensor(workspace: Workspace, static_om: Path) -> None:
    odd = workspace.root / "odd"
    odd.mkdir()
    np.zeros(5, np.float32).tofile(odd / "a.bin")
    result = workspace.ais_bench("--model", static_om, "--input", odd)
    assert result.returncode == 1
    assert "[ERROR] arg0 tensorsize: 3072 filesize: 20 not match" in result.stdout.splitlines()


def test_aipp_om_normalises_uint8_input(workspace: Workspace) -> None:
    (workspace.root / "aipp.cfg").write_text(AIPP_CONFIG)
    built = workspace.atc("--model=tiny.onnx", "--output=om/aipp", "--input_format=NCHW",
                          "--input_shape=input:2,3,8,8", "--insert_op_conf=aipp.cfg", "--enable_small_channel=1")
    assert built.returncode == 0, built.stdout
    images = np.random.default_rng(2).integers(0, 256, (3, 10, 10, 3), dtype=np.uint8)
    (workspace.root / "raw").mkdir()
    for index, image in enumerate(images):
        image.tofile(workspace.root / "raw" / f"image_{index}.bin")
    result = workspace.ais_bench("--model", "om/aipp.om", "--input", "raw", "--output", "out",
                                 "--output_dirname", "aipp", "--outfmt", "NPY")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[INFO] get filesperbatch files0 size:300 tensor0size:600 filesperbatch:2 runcount:2" in result.stdout

    cropped = images[:, 1:9, 2:10, :].astype(np.float32) / 255
    by_hand = ((cropped - MEAN) / STD).transpose(0, 3, 1, 2)
    expected = _reference(workspace.model, np.ascontiguousarray(by_hand))
    outputs = np.concatenate([np.load(workspace.root / "out" / "aipp" / f"image_{index}_0.npy") for index in range(3)])
    np.testing.assert_allclose(outputs, expected, rtol=1e-2, atol=1e-2)


def test_the_planned_aipp_crop_gives_the_model_what_the_host_centre_crop_gives(workspace: Workspace) -> None:
    """aippCrop's config (modeldeploy's own aipp_cfg) on an 11x11 source: the centre 8x8 starts at round(1.5) = 2,
    where prepare's centre crop starts."""
    preprocess = {"resize": 11, "resizeMode": "exact", "crop": 8, "mean": MEAN.tolist(), "std": STD.tolist()}
    fields = ascend_tools.aipp_fields(preprocess, {"name": "input", "shape": [-1, *INPUT_SHAPE]}, source_side=11)
    (workspace.root / "crop.cfg").write_text(ascend_tools.aipp_cfg(fields))
    built = workspace.atc("--model=tiny.onnx", "--output=om/crop", "--input_format=NCHW",
                          "--input_shape=input:2,3,8,8", "--insert_op_conf=crop.cfg")
    assert built.returncode == 0, built.stdout
    images = np.random.default_rng(3).integers(0, 256, (2, 11, 11, 3), dtype=np.uint8)
    (workspace.root / "resized").mkdir()
    for index, image in enumerate(images):
        image.tofile(workspace.root / "resized" / f"image_{index}.bin")
    result = workspace.ais_bench("--model", "om/crop.om", "--input", "resized", "--output", "out",
                                 "--output_dirname", "crop", "--outfmt", "NPY")
    assert result.returncode == 0, result.stdout + result.stderr

    cropped = images[:, 2:10, 2:10, :].astype(np.float32) / 255
    by_hand = ((cropped - MEAN) / STD).transpose(0, 3, 1, 2)
    expected = _reference(workspace.model, np.ascontiguousarray(by_hand))
    outputs = np.concatenate([np.load(workspace.root / "out" / "crop" / f"image_{index}_0.npy") for index in range(2)])
    np.testing.assert_allclose(outputs, expected, rtol=1e-2, atol=1e-2)
    shifted = ((images[:, 1:9, 1:9, :].astype(np.float32) / 255 - MEAN) / STD).transpose(0, 3, 1, 2)
    assert not np.allclose(outputs, _reference(workspace.model, np.ascontiguousarray(shifted)), rtol=1e-2, atol=1e-2)


def test_ais_bench_fails_to_load_an_om_for_another_chip(workspace: Workspace, static_om: Path) -> None:
    result = workspace.ais_bench("--model", static_om, ASCEND_STANDIN_CHIP="910B3")
    assert result.returncode == 1
    assert f"[ERROR] load model from file failed, model file is {static_om}" in result.stdout.splitlines()
    not_an_om = workspace.ais_bench("--model", workspace.model)
    assert not_an_om.returncode == 1 and "[ERROR] load model from file failed" in not_an_om.stdout


def test_dynamic_batch_om_runs_at_a_gear(workspace: Workspace,
                                         deploy_model: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    built = workspace.atc(f"--model={deploy_model[0]}", "--output=om/dynamic", "--input_shape=input:-1,3,8,8",
                          "--dynamic_batch_size", "1,2,4")
    assert built.returncode == 0, built.stdout
    result = workspace.ais_bench("--model", "om/dynamic.om", "--dymBatch", "2", "--input", "samples",
                                 "--output", "out", "--output_dirname", "dynamic", "--outfmt", "NPY")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[INFO] get filesperbatch files0 size:768 tensor0size:1536 filesperbatch:2 runcount:3" in result.stdout
    outputs = np.stack([np.load(workspace.root / "out" / "dynamic" / f"sample_{index}_0.npy")[0]
                        for index in range(SAMPLES)])
    np.testing.assert_allclose(outputs, _reference(deploy_model[0], _samples(workspace)), atol=1e-2)
    wrong_gear = workspace.ais_bench("--model", "om/dynamic.om", "--dymBatch", "3")
    assert wrong_gear.returncode == 1 and "[ERROR] --dymBatch 3 is not one of" in wrong_gear.stdout


def test_multi_device_run_prints_the_trailer(workspace: Workspace, static_om: Path) -> None:
    result = workspace.ais_bench("--model", static_om, "--device", "0,1", "--loop", "3", "--batchsize", "4",
                                 "--display_all_summary", "true", "--output", "out", "--output_dirname", "multi",
                                 ASCEND_STANDIN_CHIPS="310P3,310P3")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [match[1] for line in lines if (match := STATISTICS_LINE.match(line))] == [
        "H2D_latency", "NPU_compute_time", "D2H_latency"] * 2
    assert "[INFO] multidevice run end qsize:4 result:0" in lines
    devices = [match for line in lines if (match := DEVICE_LINE.match(line))]
    assert sorted((match[1], match[2]) for match in devices) == [("0", "0"), ("1", "1")]
    total = float(lines[-1].removeprefix("[INFO] summary throughput:"))
    assert total == pytest.approx(sum(float(match[3]) for match in devices))
    for name in ("device0_0", "device1_1"):
        assert (workspace.root / "out" / "multi" / name / "pure_infer_data_0.bin").stat().st_size == 4 * CLASSES * 4
        assert json.loads((workspace.root / "out" / "multi" / f"{name}_summary.json").read_text())[
            "NPU_compute_time"]["count"] == 3


def test_multi_device_run_shares_the_input_files_and_refuses_a_device_the_node_lacks(
    workspace: Workspace, static_om: Path
) -> None:
    result = workspace.ais_bench("--model", static_om, "--input", "samples", "--device", "0,1,2", "--output", "out",
                                 "--output_dirname", "shared", "--outfmt", "NPY",
                                 ASCEND_STANDIN_CHIPS="310P3,310P3,310P3")
    assert result.returncode == 0, result.stdout + result.stderr
    written = {name: sorted(path.name for path in (workspace.root / "out" / "shared" / name).iterdir())
               for name in ("device0_0", "device1_1", "device2_2")}
    # ais_bench cuts the files into consecutive shares, one file more for the first ones when they do not divide
    share, left = divmod(SAMPLES, 3)
    assert [len(names) for names in written.values()] == [share + (index < left) for index in range(3)]
    assert sorted(name for names in written.values() for name in names) == sorted(
        f"sample_{index}_0.npy" for index in range(SAMPLES))
    missing = workspace.ais_bench("--model", static_om, "--device", "0,1", ASCEND_STANDIN_CHIPS="310P3")
    assert missing.returncode == 1
    assert ("[ERROR] subprocess run failed error_callback:open device 1 failed: the node has 1 NPU(s)"
            in missing.stdout)
    assert "[INFO] multidevice run end qsize:2 result:1" in missing.stdout.splitlines()


# npu-smi


def test_npu_smi_groups_the_chips_of_a_card_under_one_npu(workspace: Workspace) -> None:
    atlas_300i = {"ASCEND_STANDIN_CHIPS": "310,310,310,310", "ASCEND_STANDIN_CHIPS_PER_NPU": "4"}
    table = npu_smi.parse(workspace.run("npu-smi", "info", **atlas_300i).stdout)
    assert [(chip["npu"], chip["chip"], chip["device"], chip["socVersion"]) for chip in table["chips"]] == [
        (0, index, index, "Ascend310") for index in range(4)]
    mapping = npu_smi.parse(workspace.run("npu-smi", "info", "-m", **atlas_300i).stdout)
    assert [(chip["npu"], chip["chip"], chip["device"]) for chip in mapping["chips"]] == [
        (0, index, index) for index in range(4)]


def test_npu_smi_lists_the_configured_chips(workspace: Workspace) -> None:
    table = workspace.run("npu-smi", "info", ASCEND_STANDIN_CHIPS="310P3,310P3")
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[1].startswith("| npu-smi 24.1.0.1") and {len(line) for line in lines} == {106}
    assert [line.split()[1:3] for line in lines if re.match(r"^\| \d+ +310P3 ", line)] == [["0", "310P3"],
                                                                                           ["1", "310P3"]]
    mapping = workspace.run("npu-smi", "info", "-m", ASCEND_STANDIN_CHIP="910B3")
    assert mapping.stdout.splitlines() == [
        "NPU ID       Chip ID       Chip Logic ID       Chip Name",
        "0            0             0                   Ascend 910B3",
        "0            1             -                   Mcu",
    ]
    assert workspace.run("npu-smi", "list").returncode != 0
