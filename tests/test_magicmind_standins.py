"""The MagicMind stand-ins (tests/magicmind_toolchain) behave like MagicMind's Python API, mm_run and cnmon.

The build and runtime API run in-process (`import magicmind.python.runtime as mm`, the toolchain on sys.path);
mm_run and cnmon run as subprocesses with the toolchain on PATH/PYTHONPATH. All on a tiny conv + linear ONNX
model; call sequences, texts and layouts come from docs/magicmind.md §1 (build), §3 (mm_run), §4 (runtime)
and §5 (cnmon).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx
import onnxruntime
import pytest
from tiny_onnx import CLASSES, INPUT_SHAPE, write_tiny_model

TOOLCHAIN = Path(__file__).resolve().parent / "magicmind_toolchain"
BATCH = 4
# The resnet50_onnx run.sh normalisation (§1.4): var = std².
MEANS = [123.675, 116.28, 103.53]
VARS = [3409.976, 3262.694, 3291.891]
# cnmon of driver 5.10.22 with two MLU370-X8 cards, §5.1(d), without its date line.
RECORDED_CNMON_X8 = """\
+------------------------------------------------------------------------------+
| CNMON v5.10.22                                               Driver v5.10.22 |
+-------------------------------+----------------------+-----------------------+
| Card  VF  Name       Firmware |               Bus-Id | Util        Ecc-Error |
| Fan   Temp      Pwr:Usage/Cap |         Memory-Usage | Mode     Compute-Mode |
|===============================+======================+=======================|
| 0     /   MLU370-X8    v1.1.6 |         0000:13:00.0 | 0%                  0 |
|  0%   28C        107 W/ 250 W |     0 MiB/ 20638 MiB | FULL          Default |
+-------------------------------+----------------------+-----------------------+
| 1     /   MLU370-X8    v1.1.6 |         0000:16:00.0 | 0%                  0 |
|  0%   32C        107 W/ 250 W |     0 MiB/ 20638 MiB | FULL          Default |
+-------------------------------+----------------------+-----------------------+

+------------------------------------------------------------------------------+
| Processes:                                                                   |
|  Card  MI  PID     Command Line                             MLU Memory Usage |
|==============================================================================|
|  No running processes found                                                  |
+------------------------------------------------------------------------------+
"""
# The parser regexes recommended in docs/magicmind.md §3.7.
THROUGHPUT = re.compile(r"^\s*Throughput \(qps\):\s*([0-9.eE+-]+)", re.MULTILINE)
NEW_TRAILER = re.compile(r"with total batch sizes: (\d+) and ([0-9.eE+-]+) iterations/second")
OLD_COMPUTE_LATENCY = re.compile(
    r"^MLU Compute Latency \(ms\):\s+min: (\S+)\s+max: (\S+)\s+mean: (\S+)\s+median: (\S+)\s+"
    r"percentile: \(90%\) (\S+)\s+\(95%\) (\S+)\s+\(99%\) (\S+)", re.MULTILINE)
NEW_COMPUTE_LATENCY = re.compile(
    r"MLU Compute \(Launch jobs\) Summary:\n\s+Latency\(host clock, ms\):\s+min: (\S+)\s+max: (\S+)\s+mean: (\S+)")
QUICK_RUN = ("--warmup", "0", "--duration", "0", "--iterations", "20")


@dataclass(frozen=True)
class Workspace:
    root: Path
    onnx_model: Path  # fp32, symbolic batch
    env: dict[str, str]

    def run(self, *command: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(part) for part in command], cwd=self.root, env={**self.env, **env},
                              capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("magicmind")
    write_tiny_model(root / "tiny.onnx")
    env = {name: value for name, value in os.environ.items() if not name.startswith("MAGICMIND_STANDIN")}
    env["PATH"] = os.pathsep.join([str(TOOLCHAIN / "bin"), str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = str(TOOLCHAIN)
    return Workspace(root, root / "tiny.onnx", env)


@pytest.fixture(scope="module")
def mm() -> Iterator[ModuleType]:
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(TOOLCHAIN))
        yield importlib.import_module("magicmind.python.runtime")


@pytest.fixture(autouse=True)
def default_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """One MLU370-S4 and MagicMind 1.7.0 unless a test says otherwise."""
    for name in ("MAGICMIND_STANDIN_CARDS", "MAGICMIND_STANDIN_VERSION"):
        monkeypatch.delenv(name, raising=False)


def _calibration_data(mm: ModuleType, samples: list[np.ndarray]) -> Any:
    """A CalibDataInterface following the resnet50_onnx calibrator.py contract (§1.5)."""
    from magicmind.python.common.types import get_datatype_by_numpy

    class ListCalibData(mm.CalibDataInterface):
        def __init__(self) -> None:
            super().__init__()
            self._index = -1

        def next(self) -> Any:
            self._index += 1
            if self._index >= len(samples):
                return mm.Status(mm.Code.OUT_OF_RANGE, "No more data.")
            return mm.Status()

        def get_shape(self) -> Any:
            return mm.Dims(samples[self._index].shape)

        def get_data_type(self) -> Any:
            return get_datatype_by_numpy(samples[self._index].dtype)

        def get_sample(self) -> np.ndarray:
            return np.ascontiguousarray(samples[self._index])

        def reset(self) -> Any:
            self._index = -1
            return mm.Status()

    return ListCalibData()


def _network(mm: ModuleType, path: Path, dims: tuple[int, ...] | None = (BATCH, *INPUT_SHAPE)) -> Any:
    network = mm.Network()
    assert mm.parser.Parser(mm.ModelKind.kOnnx).parse(network, str(path)).ok()
    if dims is not None:
        assert network.get_input(0).set_dimension(mm.Dims(dims)).ok()
    return network


def _config(mm: ModuleType, *entries: dict[str, Any]) -> Any:
    """A BuilderConfig from successive parse_from_string calls, one per key, as the samples do (§1.4)."""
    config = mm.BuilderConfig()
    for entry in entries:
        status = config.parse_from_string(json.dumps(entry))
        assert status.ok(), status
    return config


def _calibrate(mm: ModuleType, network: Any, config: Any, samples: list[np.ndarray],
               algorithm: str = "LINEAR_ALGORITHM") -> Any:
    calibrator = mm.Calibrator([_calibration_data(mm, samples)])
    assert calibrator.set_quantization_algorithm(getattr(mm.QuantizationAlgorithm, algorithm)).ok()
    with mm.System():
        device = mm.Device()
        device.id = 0
        assert device.active().ok()
        return calibrator.calibrate(network, config)


def _infer(mm: ModuleType, model_path: Path, arrays: list[np.ndarray], device_id: int = 0) -> tuple[Any, list[Any]]:
    """The MMRunner sequence of §4.1; the enqueue Status and the output tensors."""
    model = mm.Model()
    assert model.deserialize_from_file(str(model_path)).ok()
    with mm.System() as system:
        assert system.device_count() >= device_id + 1
        device = mm.Device()
        device.id = device_id
        assert device.active().ok()
        econfig = mm.Model.EngineConfig()
        econfig.device_type = "MLU"
        engine = model.create_i_engine(econfig)
        assert engine is not None
        context = engine.create_i_context()
        queue = device.create_queue()
        inputs = context.create_inputs()
        for tensor, array in zip(inputs, arrays):
            assert tensor.from_numpy(array).ok()
            assert tensor.to(device).ok()
        outputs: list[Any] = []
        status = context.enqueue(inputs, outputs, queue)
        assert queue.sync().ok()
        return status, outputs


def _save(model: Any, path: Path) -> Path:
    assert model is not None
    assert model.serialize_to_file(str(path)).ok()
    return path


def _reference(path: Path, inputs: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": inputs})[0]


def _inputs(seed: int, batch: int = BATCH) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (batch, *INPUT_SHAPE)).astype(np.float32)


def _calibration_samples() -> list[np.ndarray]:
    return [_inputs(seed) for seed in (10, 11, 12)]


@pytest.fixture(scope="module")
def static_model(mm: ModuleType, workspace: Workspace) -> Path:
    """fp32, batch 4, built for mtp_372 with cluster numbers."""
    network = _network(mm, workspace.onnx_model)
    config = _config(mm, {"archs": [{"mtp_372": [6, 8]}]}, {"opt_config": {"type64to32_conversion": True}})
    return _save(mm.Builder().build_model("tiny_fp32", network, config), workspace.root / "tiny_fp32_false_4.mm")


@pytest.fixture(scope="module")
def mutable_model(mm: ModuleType, workspace: Workspace) -> Path:
    """fp32, shape mutable with batch 1..8; built from the network dims with batch 4, as the samples do."""
    network = _network(mm, workspace.onnx_model)
    config = _config(mm, {"archs": ["mtp_372"]}, {"graph_shape_mutable": True},
                     {"dim_range": {"0": {"min": [1, *INPUT_SHAPE], "max": [8, *INPUT_SHAPE]}}})
    return _save(mm.Builder().build_model("tiny_dynamic", network, config), workspace.root / "tiny_fp32_true.mm")


# Build and runtime API


def test_fp32_model_round_trips_and_computes_like_onnxruntime(mm: ModuleType, workspace: Workspace,
                                                               static_model: Path) -> None:
    with zipfile.ZipFile(static_model) as archive:
        assert sorted(archive.namelist()) == ["magicmind.json", "model.onnx"]
        info = json.loads(archive.read("magicmind.json"))
        graph = onnx.load_from_string(archive.read("model.onnx")).graph
    assert (info["name"], info["archs"], info["cluster_num"]) == ("tiny_fp32", ["mtp_372"], {"mtp_372": [6, 8]})
    assert (info["precision_mode"], info["graph_shape_mutable"], info["quantization"]) == ("force_float32", False, None)
    assert info["inputs"] == [{"name": "input", "dims": [BATCH, *INPUT_SHAPE], "data_type": "FLOAT32",
                               "network_data_type": "FLOAT32", "layout": None, "insert_bn": None, "dim_range": None}]
    assert [dim.dim_value for dim in graph.input[0].type.tensor_type.shape.dim] == [BATCH, *INPUT_SHAPE]

    model = mm.Model()
    assert model.deserialize_from_file(str(static_model)).ok()
    assert (model.get_input_num(), model.get_output_num()) == (1, 1)
    assert (model.get_input_names(), model.get_output_names()) == (["input"], ["logits"])
    assert [dims.GetDims() for dims in model.get_input_dimensions()] == [[BATCH, *INPUT_SHAPE]]
    assert [dims.GetDims() for dims in model.get_output_dimensions()] == [[BATCH, CLASSES]]
    assert model.get_input_data_types() == [mm.DataType.FLOAT32]

    inputs = _inputs(1)
    status, outputs = _infer(mm, static_model, [inputs])
    assert status.ok(), status
    assert outputs[0].get_dimension().GetDims() == [BATCH, CLASSES]
    np.testing.assert_array_equal(outputs[0].asnumpy(), _reference(workspace.onnx_model, inputs))


def test_force_float16_rounds_inputs_and_outputs_through_half(mm: ModuleType, workspace: Workspace) -> None:
    network = _network(mm, workspace.onnx_model)
    config = _config(mm, {"archs": ["mtp_372"]}, {"precision_config": {"precision_mode": "force_float16"}})
    path = _save(mm.Builder().build_model("tiny_fp16", network, config), workspace.root / "tiny_fp16.mm")
    inputs = _inputs(2)
    status, outputs = _infer(mm, path, [inputs])
    assert status.ok(), status
    half = _reference(workspace.onnx_model, inputs.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(outputs[0].asnumpy(), half.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(outputs[0].asnumpy(), _reference(workspace.onnx_model, inputs), atol=1e-2)


@pytest.mark.parametrize(("precision", "algorithm", "granularity", "quantization"), [
    ("qint8_mixed_float32", "LINEAR_ALGORITHM", "per_tensor",
     {"algorithm": "linear", "calibration_method": "MinMax", "quant_type": "QInt8", "per_channel": False}),
    ("qint16_mixed_float16", "EQNM_ALGORITHM", "per_axis",
     {"algorithm": "eqnm", "calibration_method": "Entropy", "quant_type": "QInt16", "per_channel": True}),
], ids=["qint8-linear", "qint16-eqnm-per-axis"])
def test_qint_modes_quantize_with_the_calibration_samples(mm: ModuleType, workspace: Workspace, precision: str,
                                                         algorithm: str, granularity: str,
                                                         quantization: dict[str, Any]) -> None:
    network = _network(mm, workspace.onnx_model)
    config = _config(mm, {"archs": ["mtp_372"]}, {"precision_config": {"precision_mode": "force_float32"}},
                     {"precision_config": {"activation_quant_algo": "symmetric"}},
                     {"precision_config": {"weight_quant_granularity": granularity}})
    (workspace.root / f"{precision}.json").write_text(json.dumps({"precision_config": {"precision_mode": precision}}))
    assert config.parse_from_file(str(workspace.root / f"{precision}.json")).ok()  # overrides the earlier mode
    assert _calibrate(mm, network, config, _calibration_samples(), algorithm).ok()
    path = _save(mm.Builder().build_model("tiny_q", network, config), workspace.root / f"tiny_{precision}.mm")

    with zipfile.ZipFile(path) as archive:
        info = json.loads(archive.read("magicmind.json"))
        op_types = {node.op_type for node in onnx.load_from_string(archive.read("model.onnx")).graph.node}
    assert info["precision_mode"] == precision
    assert info["quantization"] == {**quantization, "activation_symmetric": True, "calibration_batches": 3}
    assert {"QuantizeLinear", "DequantizeLinear"} <= op_types

    inputs = _inputs(3)
    status, outputs = _infer(mm, path, [inputs])
    assert status.ok(), status
    fp32, quantized = _reference(workspace.onnx_model, inputs), outputs[0].asnumpy()
    assert np.abs(quantized - fp32).max() > 0
    np.testing.assert_allclose(quantized, fp32, atol=0.05 * np.abs(fp32).max())


def test_insert_bn_and_nhwc_take_uint8_pixels(mm: ModuleType, workspace: Workspace) -> None:
    network = _network(mm, workspace.onnx_model)
    config = _config(mm, {"archs": ["mtp_372"]},
                     {"convert_input_layout": {"0": {"src": "NCHW", "dst": "NHWC"}}},
                     {"insert_bn_before_firstnode": {"0": {"mean": MEANS, "var": VARS}}})
    path = _save(mm.Builder().build_model("tiny_bn", network, config), workspace.root / "tiny_bn.mm")
    model = mm.Model()
    assert model.deserialize_from_file(str(path)).ok()
    assert [dims.GetDims() for dims in model.get_input_dimensions()] == [[BATCH, 8, 8, 3]]
    assert model.get_input_data_types() == [mm.DataType.UINT8]

    pixels = np.random.default_rng(4).integers(0, 256, (BATCH, 8, 8, 3), dtype=np.uint8)
    status, outputs = _infer(mm, path, [pixels])
    assert status.ok(), status
    normalised = (pixels.astype(np.float32) - np.float32(MEANS)) / np.sqrt(np.float32(VARS))
    expected = _reference(workspace.onnx_model, np.ascontiguousarray(normalised.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(outputs[0].asnumpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("entry", "message"), [
    ({"precision_config": {"precision_mode": "int8"}}, "precision_config.precision_mode 'int8' is not one of"),
    ({"archs": ["mtp_999"]}, "archs 'mtp_999' is not one of"),
    ({"archs": [{"mtp_372": [0]}]}, "cluster numbers of arch mtp_372"),
    ({"precision": "force_float16"}, "unknown builder config key 'precision'"),
    ({"precision_config": {"weight_quant_granularity": "per_channel"}}, "weight_quant_granularity"),
    ({"precision_config": {"activation_quant_algo": "linear"}}, "activation_quant_algo"),
    ({"computation_preference": "slow"}, "computation_preference 'slow'"),
    ({"graph_shape_mutable": "true"}, "graph_shape_mutable must be true or false"),
    ({"dim_range": {"0": {"min": [8, 3, 8, 8], "max": [1, 3, 8, 8]}}}, "1 <= min <= max"),
    ({"convert_input_layout": {"0": {"src": "NCHW", "dst": "NTC"}}}, "cannot convert NCHW to NTC"),
    ({"insert_bn_before_firstnode": {"0": {"mean": [1, 2, 3], "var": [1, 0, 1]}}}, "var must be positive"),
    ({"opt_config": {"fusion": True}}, "unknown key 'fusion' in opt_config"),
    ({"custom_ranges": {"": {"max": [1], "min": [-1]}}}, "not emulated"),
], ids=["precision-mode", "arch", "cluster-num", "unknown-key", "granularity", "activation-algo", "preference",
        "mutable-type", "dim-range", "layout", "bn-var", "opt-config", "custom-ranges"])
def test_builder_config_rejects_what_magicmind_does_not_know(mm: ModuleType, entry: dict[str, Any],
                                                             message: str) -> None:
    config = _config(mm, {"archs": ["mtp_372"]})
    status = config.parse_from_string(json.dumps(entry))
    assert status.code() is mm.Code.INVALID_ARGUMENT and message in status.message()
    assert config.mlu_archs == ["mtp_372"]  # a rejected merge changes nothing


def test_builder_config_archs_attribute_and_json_errors(mm: ModuleType) -> None:
    config = mm.BuilderConfig()
    assert config.mlu_archs == ["mtp_372", "tp_322", "mtp_592"]
    config.mlu_archs = ["mtp_372"]
    assert config.mlu_archs == ["mtp_372"]
    with pytest.raises(ValueError, match="mtp_999"):
        config.mlu_archs = ["mtp_999"]
    assert not config.parse_from_string("{precision_config:").ok()
    assert not config.parse_from_file("/nonexistent/build_config.json").ok()


def test_qint_build_needs_a_matching_calibration(mm: ModuleType, workspace: Workspace,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    network = _network(mm, workspace.onnx_model)
    config = _config(mm, {"archs": ["mtp_372"]}, {"precision_config": {"precision_mode": "qint8_mixed_float16"}})
    assert mm.Builder().build_model("uncalibrated", network, config) is None
    assert "ERROR" in capsys.readouterr().err

    assert _calibrate(mm, network, config, _calibration_samples()).ok()
    assert config.parse_from_string('{"precision_config": {"precision_mode": "qint16_mixed_float16"}}').ok()
    assert mm.Builder().build_model("stale", network, config) is None
    assert "calibrate again" in capsys.readouterr().err


def test_calibrate_refuses_without_device_mode_or_fitting_samples(mm: ModuleType, workspace: Workspace) -> None:
    network = _network(mm, workspace.onnx_model)
    qint8 = _config(mm, {"precision_config": {"precision_mode": "qint8_mixed_float16"}})
    outside_system = mm.Calibrator([_calibration_data(mm, _calibration_samples())]).calibrate(network, qint8)
    assert outside_system.code() is mm.Code.FAILED_PRECONDITION

    fp32 = _config(mm, {"precision_config": {"precision_mode": "force_float32"}})
    assert "needs a qint precision_mode" in _calibrate(mm, network, fp32, _calibration_samples()).message()
    asymmetric = _config(mm, {"precision_config": {"precision_mode": "qint8_mixed_float16",
                                                   "activation_quant_algo": "asymmetric"}})
    eqnm = _calibrate(mm, network, asymmetric, _calibration_samples(), "EQNM_ALGORITHM")
    assert "EQNM_ALGORITHM works only with symmetric" in eqnm.message()
    wrong_batch = _calibrate(mm, network, qint8, [_inputs(5, batch=2)])
    assert "does not match the network input dims [4, 3, 8, 8]" in wrong_batch.message()
    wrong_type = _calibrate(mm, network, qint8, [_inputs(5).astype(np.float16)])
    assert "network input takes FLOAT32" in wrong_type.message()

    class Uninitialised(mm.CalibDataInterface):
        def __init__(self) -> None:
            pass

    with pytest.raises(TypeError, match="must call CalibDataInterface.__init__"):
        mm.Calibrator([Uninitialised()])


def test_parser_reports_missing_and_invalid_files(mm: ModuleType, workspace: Workspace) -> None:
    parser = mm.Parser(mm.ModelKind.kOnnx)
    assert "does not exist" in parser.parse(mm.Network(), str(workspace.root / "missing.onnx")).message()
    (workspace.root / "garbage.onnx").write_bytes(b"not a model")
    assert "not a valid ONNX model" in parser.parse(mm.Network(), str(workspace.root / "garbage.onnx")).message()
    assert mm.Parser(mm.ModelKind.kCaffe).parse(mm.Network(), str(workspace.onnx_model)).code() is mm.Code.UNIMPLEMENTED
    network = _network(mm, workspace.onnx_model, dims=None)
    assert network.get_input(0).get_dimension().GetDims() == [-1, *INPUT_SHAPE]
    assert not network.get_input(0).set_dimension(mm.Dims((BATCH, 3, 8))).ok()


def test_static_model_refuses_other_dims_and_types(mm: ModuleType, static_model: Path) -> None:
    status, outputs = _infer(mm, static_model, [_inputs(6, batch=2)])
    assert status.code() is mm.Code.INVALID_ARGUMENT and outputs == []
    assert "dims [2, 3, 8, 8] differ from the model dims [4, 3, 8, 8]" in status.message()
    model = mm.Model()
    assert model.deserialize_from_file(str(static_model)).ok()
    with mm.System():
        device = mm.Device()
        assert device.active().ok()
        engine = model.create_i_engine()
        assert engine is not None
        tensor = engine.create_i_context().create_inputs()[0]
        assert not tensor.from_numpy(_inputs(6).astype(np.float64)).ok()


def test_mutable_model_takes_dims_inside_its_dim_range(mm: ModuleType, workspace: Workspace,
                                                       mutable_model: Path) -> None:
    model = mm.Model()
    assert model.deserialize_from_file(str(mutable_model)).ok()
    assert [dims.GetDims() for dims in model.get_input_dimensions()] == [[-1, -1, -1, -1]]
    for batch in (1, 8):
        inputs = _inputs(7, batch)
        status, outputs = _infer(mm, mutable_model, [inputs])
        assert status.ok(), status
        np.testing.assert_array_equal(outputs[0].asnumpy(), _reference(workspace.onnx_model, inputs))
    status, outputs = _infer(mm, mutable_model, [_inputs(7, batch=9)])
    assert not status.ok() and outputs == []
    assert "outside the dim_range of the model: min [1, 3, 8, 8] max [8, 3, 8, 8]" in status.message()


def test_open_dims_need_a_shape_mutable_model(mm: ModuleType, workspace: Workspace,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    network = _network(mm, workspace.onnx_model, dims=None)
    assert mm.Builder().build_model("open", network, _config(mm, {"archs": ["mtp_372"]})) is None
    assert "open dims [-1, 3, 8, 8]" in capsys.readouterr().err
    mutable = _config(mm, {"archs": ["mtp_372"]}, {"graph_shape_mutable": True})
    assert mm.Builder().build_model("open", network, mutable) is not None


def test_engine_needs_an_active_device_of_a_model_arch(mm: ModuleType, static_model: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MAGICMIND_STANDIN_CARDS", "MLU370-X4,MLU590-H8")
    model = mm.Model()
    assert model.deserialize_from_file(str(static_model)).ok()
    assert model.create_i_engine() is None
    assert "no device is active" in capsys.readouterr().err
    with mm.System() as system:
        assert system.device_count() == 2
        device = mm.Device()
        device.id = 2
        assert device.active().code() is mm.Code.INVALID_ARGUMENT
        device.id = 1
        assert device.active().ok()
        assert model.create_i_engine() is None
        assert "MLU device 1 is a MLU590-H8 (mtp_592)" in capsys.readouterr().err
        device.id = 0
        assert device.active().ok()
        assert model.create_i_engine() is not None
    assert mm.Device().active().code() is mm.Code.FAILED_PRECONDITION  # no System open


# mm_run


def _performance(report: str, header: str) -> list[str]:
    """The Performance Summary blocks of a report, one per device."""
    return [block.split("\n=", 1)[0] for block in report.split(header)[1:]]


def _field(block: str, label: str) -> float:
    match = re.search(rf"^{re.escape(label)}\s+([0-9.eE+-]+)", block, re.MULTILINE)
    assert match, f"{label} not in {block}"
    return float(match[1])


def test_mm_run_new_format_reports_per_device_on_stderr(workspace: Workspace, static_model: Path) -> None:
    result = workspace.run("mm_run", "--magicmind_model", static_model, "--batch_size", "4", "--devices", "0,1",
                           "--threads", "2", *QUICK_RUN, MAGICMIND_STANDIN_CARDS="MLU370-X4,MLU370-X4")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == "==================== Parameter Information"
    assert f"--magicmind_model<Str>        : {static_model}" in lines
    assert "--batch_size<Vec<Int>>        : 4" in lines and "--devices<Vec<Int>>           : 0,1" in lines
    assert "--run_config<Str>             :" in lines and "--trace_time<Str>             : host" in lines
    assert "input             : [4, 3, 8, 8], FLOAT" in lines and "logits            : [4, 10], FLOAT" in lines
    assert lines.count("Cluster Number:               8") == 2
    assert "=================== Device 1 Utilization Summary" in lines

    blocks = _performance(result.stderr, "=================== Performance Summary\n")
    assert len(blocks) == 2 and len(THROUGHPUT.findall(result.stderr)) == 2
    for block in blocks:
        iterations, wall = _field(block, "Total iterations:"), _field(block, "Host wall time(s):")
        assert iterations >= 40  # 2 threads × 20
        throughput, trailer = THROUGHPUT.search(block), NEW_TRAILER.search(block)
        assert throughput and trailer
        assert int(trailer[1]) == iterations * BATCH
        assert float(throughput[1]) == pytest.approx(iterations * BATCH / wall, rel=1e-4)
        assert float(trailer[2]) == pytest.approx(iterations / wall, rel=1e-4)
        assert "Input shape group 0: [input: [4, 3, 8, 8]]" in block
        assert NEW_COMPUTE_LATENCY.search(block) and "Latency(dev clock, ms)" not in block
        assert re.search(r"^Trace average MLU Compute perf over \d+ runs \(\d+ per thread\):$", block, re.MULTILINE)


def test_mm_run_old_format_reports_on_stdout(workspace: Workspace, static_model: Path) -> None:
    result = workspace.run("mm_run", "--magicmind_model", static_model, "--batch", "4", *QUICK_RUN,
                           MAGICMIND_STANDIN_VERSION="0.14.0")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:13] == [
        "==================== Parameter Information", f"magicmind model file: {static_model}", "input dims type: 0",
        "iterations: 20", "duration: 0", "warm_up: 0", "thread_num: 1", "bind_cluster: 0", "devices: 0 ",
        "disable_data_copy: 0", "datatransfer_opt: 1", "kernel_capture: 0", "batch: 4",
    ]
    assert "Cluster Number:               6" in lines and "[0]: " in lines and "  Dim: [4, 3, 8, 8]" in lines
    throughput_line = next(line for line in lines if line.startswith("Throughput (qps):"))
    qps = float(throughput_line.split(":")[1].strip())  # compare_perf.py (§3.7)
    assert float(throughput_line[18:]) == qps  # perf.sh's ${fps:18}
    block = _performance(result.stdout, "==================== Performance Summary\n")[0]
    iterations, wall = _field(block, "Iterations:"), _field(block, "Host Wall Time (s):")
    assert iterations == 20 and qps == pytest.approx(iterations * BATCH / wall, rel=1e-4)
    latency = OLD_COMPUTE_LATENCY.search(block)
    assert latency and float(latency[1]) <= float(latency[3]) <= float(latency[2])
    averages = re.findall(r"^  MLU Compute Latency \(ms\): \S+\s+Enqueue: \S+\s*$", block, re.MULTILINE)
    assert "Trace averages of 2 runs:" in block and len(averages) == 10


@pytest.mark.parametrize(("version", "flag", "accepted"), [
    ("1.7.0", "--batch_size", True), ("1.7.0", "--batch", False),
    ("0.14.0", "--batch", True), ("0.14.0", "--batch_size", False),
])
def test_mm_run_batch_flag_depends_on_the_version(workspace: Workspace, static_model: Path, version: str,
                                                  flag: str, accepted: bool) -> None:
    result = workspace.run("mm_run", "--magicmind_model", static_model, flag, "4", "--iterations", "1",
                           "--warmup", "0", "--duration", "0", MAGICMIND_STANDIN_VERSION=version)
    report = result.stdout if version.startswith("0.") else result.stderr
    if accepted:
        assert result.returncode == 0 and THROUGHPUT.search(report), result.stderr
    else:
        assert result.returncode != 0 and f"Unknown option: {flag}" in result.stderr
        assert ("SYNOPSIS" if version.startswith("0.") else "Synopsis:") in result.stderr


@pytest.mark.parametrize(("flags", "message"), [
    (["--devices", "0", "--devices", "0"], "Duplicated option: --devices"),
    (["--bogus", "1"], "Unknown option: --bogus"),
    (["--threads"], "Option --threads needs a value"),
    (["--bind_cluster", "yes"], "Option --bind_cluster takes 0/1/True/False/true/false, got yes"),
])
def test_mm_run_aborts_on_bad_flags_with_the_synopsis(workspace: Workspace, static_model: Path, flags: list[str],
                                                      message: str) -> None:
    result = workspace.run("mm_run", "--magicmind_model", static_model, *flags)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(message + "\nSynopsis:\n")


@pytest.mark.parametrize(("flags", "cards", "message"), [
    (["--magicmind_model", "missing.mm"], "MLU370-S4", "failed to deserialize the model missing.mm"),
    (["--magicmind_model", "tiny.onnx"], "MLU370-S4", "is not a MagicMind model file"),
    (["--devices", "1"], "MLU370-S4", "MLU device 1 does not exist; there are 1 devices"),
    ([], "MLU590-H8", "the model is built for archs ['mtp_372'], but MLU device 0 is a MLU590-H8 (mtp_592)"),
    (["--batch_size", "2"], "MLU370-S4", "dims [2, 3, 8, 8] differ from the model dims [4, 3, 8, 8]"),
    (["--input_files", "x.bin"], "MLU370-S4", "--input_files is not emulated"),
], ids=["missing", "not-a-model", "no-device", "arch", "static-dims", "unemulated"])
def test_mm_run_errors(workspace: Workspace, static_model: Path, flags: list[str], cards: str, message: str) -> None:
    model = [] if "--magicmind_model" in flags else ["--magicmind_model", str(static_model)]
    result = workspace.run("mm_run", *model, *flags, *QUICK_RUN, MAGICMIND_STANDIN_CARDS=cards)
    assert result.returncode == 1
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}: ERROR: ", result.stderr)
    assert message in result.stderr


def test_mm_run_shape_mutable_model_runs_inside_its_dim_range(workspace: Workspace, mutable_model: Path) -> None:
    inside = workspace.run("mm_run", "--magicmind_model", mutable_model, "--input_dims", "8,3,8,8", *QUICK_RUN)
    assert inside.returncode == 0, inside.stderr
    assert "input             : [-1, -1, -1, -1], FLOAT" in inside.stderr.splitlines()
    assert "Input shape group 0: [input: [8, 3, 8, 8]]" in inside.stderr
    outside = workspace.run("mm_run", "--magicmind_model", mutable_model, "--batch_size", "16", *QUICK_RUN)
    assert outside.returncode == 1 and "outside the dim_range of the model" in outside.stderr


# cnmon


def test_cnmon_prints_the_recorded_table(workspace: Workspace) -> None:
    result = workspace.run("cnmon", MAGICMIND_STANDIN_CARDS="MLU370-X8,MLU370-X8")
    assert result.returncode == 0
    date, table = result.stdout.split("\n", 1)
    assert re.fullmatch(r"\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}", date)
    assert table == RECORDED_CNMON_X8


def test_cnmon_info_answers_the_card_type_queries(workspace: Workspace) -> None:
    env = {"MAGICMIND_STANDIN_CARDS": "MLU370-X4,MLU370-S4"}
    listing = workspace.run("cnmon", "info", **env)
    assert [line.split()[1] for line in listing.stdout.splitlines() if "Card" in line] == ["0", "1"]  # grep | awk
    product = workspace.run("cnmon", "info", "-c", "1", "-t", **env)
    names = [line.split(": ", 1)[1] for line in product.stdout.splitlines() if "Product Name" in line]
    assert (product.returncode, names) == (0, ["MLU370-S4"])
    missing = workspace.run("cnmon", "info", "-c", "5", "-t", **env)
    assert missing.returncode == 1 and "not existed" in missing.stdout
