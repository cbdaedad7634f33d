"""convert on small real models, and every way a user's model or weights can be wrong."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from conftest import EXAMPLES
from hostile import checkpoint_with_payload, code_zip
from modeldeploy.spec import Source
from modeldeploy_jobs.stage import StageError
from onnx import TensorProto, helper
from stages import run_stage

DIGITS = {
    "format": "pytorch",
    "architecture": "python:digits_cnn:DigitsCNN",
    "code": str(EXAMPLES / "digits_cnn.py"),
    "weights": str(EXAMPLES / "digits_cnn.pt"),
    "inputs": [{"name": "image", "shape": [-1, 1, 8, 8]}],
    "outputs": ["logits"],
}


def config(**fields: Any) -> dict[str, Any]:
    """A source config as the planner writes it: validated, defaults filled in."""
    return Source.model_validate(fields).model_dump(mode="json", by_alias=True, exclude_none=True)


def convert(tmp_path: Path, **fields: Any) -> tuple[onnx.ModelProto, dict[str, Any]]:
    result = run_stage("convert", config(**fields), tmp_path)
    return onnx.load(str(result.outputs["model.onnx"])), dict(result.metrics)


def failure(tmp_path: Path, **fields: Any) -> StageError:
    with pytest.raises(StageError) as caught:
        run_stage("convert", config(**fields), tmp_path)
    return caught.value


def batch_dims(model: onnx.ModelProto) -> list[str]:
    return [value.type.tensor_type.shape.dim[0].dim_param for value in [*model.graph.input, *model.graph.output]]


def test_pytorch_with_code_and_weights_becomes_checked_onnx(tmp_path: Path) -> None:
    model, metrics = convert(tmp_path, **DIGITS, opset=13)
    assert [entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")] == [13]
    assert [value.name for value in model.graph.input] == ["image"]
    assert [value.name for value in model.graph.output] == ["logits"]
    assert batch_dims(model) == ["batch", "batch"]
    assert metrics["parity"]["maxAbsDiff"] < 1e-4 and metrics["parity"]["cosine"] > 0.9999
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.run(None, {"image": np.zeros((5, 1, 8, 8), np.float32)})[0].shape == (5, 10)


def test_timm_architecture_with_random_weights_and_simplify(tmp_path: Path) -> None:
    model, metrics = convert(
        tmp_path, format="pytorch", architecture="timm:resnet10t", randomWeights=True, numClasses=7,
        inputs=[{"name": "input", "shape": [-1, 3, 32, 32]}], simplify=True,
    )
    assert model.graph.output[0].type.tensor_type.shape.dim[1].dim_value == 7
    assert metrics["nodes"] <= metrics["nodesBeforeSimplify"]


def test_checkpoint_wrapping_and_key_prefixes(tmp_path: Path) -> None:
    state = torch.load(EXAMPLES / "digits_cnn.pt", weights_only=True)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"model.backbone.{k}": v for k, v in state.items()}, "epoch": 3}, wrapped)
    _, metrics = convert(
        tmp_path / "work", **{**DIGITS, "weights": str(wrapped)}, weightsKey="state_dict",
        weightsPrefixMap={"model.backbone.": ""},
    )
    assert metrics["parity"]["cosine"] > 0.9999


def test_torchvision_and_torchscript_sources(tmp_path: Path) -> None:
    convert(tmp_path / "tv", format="pytorch", architecture="torchvision:squeezenet1_1", randomWeights=True,
            numClasses=4, inputs=[{"name": "x", "shape": [-1, 3, 64, 64]}])
    scripted = tmp_path / "net.pt"
    torch.jit.script(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())).save(str(scripted))
    model, _ = convert(tmp_path / "ts", format="torchscript", uri=str(scripted),
                       inputs=[{"name": "features", "shape": [-1, 4], "layout": "ND"}])
    assert batch_dims(model) == ["batch", "batch"]


def _onnx_file(path: Path, batch: int | str, input_name: str = "x", broken: bool = False) -> Path:
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], np.arange(12, dtype=np.float32).tolist())
    node = helper.make_node("MatMul", [input_name, "w" if not broken else "nowhere"], ["y"])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])], [weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=9), str(path))
    return path


def test_onnx_passthrough_gets_a_dynamic_batch_and_the_requested_opset(tmp_path: Path) -> None:
    source = _onnx_file(tmp_path / "fixed.onnx", batch=1)
    model, metrics = convert(tmp_path / "work", format="onnx", uri=str(source), opset=17,
                             inputs=[{"name": "x", "shape": [-1, 4], "layout": "ND"}])
    assert batch_dims(model) == ["batch", "batch"]
    assert [entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")] == [17]
    assert metrics["parity"] == {"maxAbsDiff": 0.0, "cosine": pytest.approx(1.0), "batch": 1}


def test_an_onnx_file_that_fails_the_checker(tmp_path: Path) -> None:
    source = _onnx_file(tmp_path / "broken.onnx", batch="n", broken=True)
    error = failure(tmp_path / "work", format="onnx", uri=str(source), opset=13,
                    inputs=[{"name": "x", "shape": [-1, 4], "layout": "ND"}])
    assert error.reason == "ModelInvalid"
    assert str(source) in error.message and "fails the ONNX checker" in error.message and "nowhere" in error.message


def test_onnx_inputs_that_do_not_match_the_spec(tmp_path: Path) -> None:
    source = _onnx_file(tmp_path / "m.onnx", batch="n")
    error = failure(tmp_path / "work", format="onnx", uri=str(source), inputs=[{"name": "image", "shape": [-1, 4]}])
    assert error.reason == "InputsMismatch" and "['x']" in error.message and "['image']" in error.message


def test_not_an_onnx_file(tmp_path: Path) -> None:
    source = tmp_path / "m.onnx"
    source.write_bytes(b"\x00garbage" * 10)
    error = failure(tmp_path / "work", format="onnx", uri=str(source), inputs=[{"name": "x", "shape": [-1, 4]}])
    assert error.reason == "ModelInvalid" and str(source) in error.message


@pytest.mark.parametrize("seed", range(8))
def test_corrupt_weights_file(tmp_path: Path, seed: int) -> None:
    weights = tmp_path / "corrupt.pth"
    weights.write_bytes(random.Random(seed).randbytes(4096))
    error = failure(tmp_path / "work", **{**DIGITS, "weights": str(weights)})
    assert error.reason == "WeightsInvalid"
    assert error.message.startswith(f"{weights}: not a readable PyTorch checkpoint")


def test_truncated_weights_file(tmp_path: Path) -> None:
    weights = tmp_path / "truncated.pth"
    weights.write_bytes((EXAMPLES / "digits_cnn.pt").read_bytes()[:5000])
    assert failure(tmp_path / "work", **{**DIGITS, "weights": str(weights)}).reason == "WeightsInvalid"


def test_weights_that_do_not_match_the_architecture(tmp_path: Path) -> None:
    error = failure(tmp_path, **DIGITS, numClasses=100)
    assert error.reason == "WeightsMismatch"
    assert f"{DIGITS['weights']} does not match python:digits_cnn:DigitsCNN" in error.message
    assert "size mismatch for classifier.weight: checkpoint [10, 64], model [100, 64]" in error.message


def test_weights_with_keys_the_model_lacks(tmp_path: Path) -> None:
    state = torch.load(EXAMPLES / "digits_cnn.pt", weights_only=True)
    renamed = tmp_path / "renamed.pth"
    torch.save({f"backbone.{k}": v for k, v in state.items()}, renamed)
    error = failure(tmp_path / "work", **{**DIGITS, "weights": str(renamed)})
    assert error.reason == "WeightsMismatch"
    assert "missing key(s)" in error.message and f"{len(state)} key(s) the model does not have" in error.message
    assert "map the prefix with weightsPrefixMap" in error.message
    assert "backbone" not in error.message  # the checkpoint's own names are its content, never quoted


def test_a_pickle_payload_in_a_pth_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    weights = checkpoint_with_payload(tmp_path / "evil.pth", marker)
    error = failure(tmp_path / "work", **{**DIGITS, "weights": str(weights)})
    assert error.reason == "UnsafeWeights"
    assert str(weights) in error.message and "weights_only=True" in error.message
    assert not marker.exists()


def test_weights_key_that_is_not_there(tmp_path: Path) -> None:
    error = failure(tmp_path, **DIGITS, weightsKey="model")
    assert error.reason == "WeightsInvalid"
    entries = len(torch.load(EXAMPLES / "digits_cnn.pt", weights_only=True))
    assert error.message.endswith(f"no 'model' in the checkpoint (it holds a dict of {entries} entries)")


def test_onnx_input_dtype_that_is_not_the_specs(tmp_path: Path) -> None:
    source = _onnx_file(tmp_path / "m.onnx", batch="n")
    error = failure(tmp_path / "work", format="onnx", uri=str(source),
                    inputs=[{"name": "x", "shape": [-1, 4], "dtype": "int64"}])
    assert error.reason == "InputsMismatch"
    assert error.message == f"{source}: input 'x' takes float32 in the model, the spec declares int64"


def test_code_that_does_not_compile(tmp_path: Path) -> None:
    code = tmp_path / "broken_net.py"
    code.write_text("def make(:\n    pass\n")
    error = failure(tmp_path / "work", format="pytorch", architecture="python:broken_net:make", code=str(code),
                    randomWeights=True, inputs=[{"name": "x", "shape": [-1, 4]}])
    assert error.reason == "CodeInvalid"
    assert error.message == "python:broken_net:make: the code does not compile: SyntaxError in broken_net.py line 1"


def test_a_code_archive_member_leading_out_of_it(tmp_path: Path) -> None:
    archive = code_zip(tmp_path / "code.zip", {"../outside.py": "X = 1\n"})
    error = failure(tmp_path / "work", format="pytorch", architecture="python:outside:X", code=str(archive),
                    randomWeights=True, inputs=[{"name": "x", "shape": [-1, 4]}])
    assert error.reason == "CodeInvalid" and "outside.py" not in error.message
    assert error.message == f"{archive}: an archive member's path is absolute or leads out of the archive"


@pytest.mark.parametrize("uri", ["s3://bucket/code/..", "https://example.org/.."])
def test_a_code_uri_naming_no_file_is_refused_before_it_is_fetched(tmp_path: Path, uri: str) -> None:
    error = failure(tmp_path / "work", format="pytorch", architecture="python:net:X", code=uri,
                    randomWeights=True, inputs=[{"name": "x", "shape": [-1, 4]}])
    assert (error.reason, error.message) == ("CodeInvalid", f"{uri}: names no file (a .py module or a .zip)")


def test_pinned_sha256_that_does_not_match(tmp_path: Path) -> None:
    error = failure(tmp_path, **DIGITS, sha256="0" * 64)
    assert error.reason == "ChecksumMismatch" and str(DIGITS["weights"]) in error.message


def test_missing_weights_file(tmp_path: Path) -> None:
    error = failure(tmp_path, **{**DIGITS, "weights": str(tmp_path / "nope.pth")})
    assert error.reason == "SourceNotFound" and "nope.pth" in error.message


def test_unknown_architecture(tmp_path: Path) -> None:
    error = failure(tmp_path, format="pytorch", architecture="timm:resnet_that_does_not_exist", randomWeights=True,
                    inputs=[{"name": "x", "shape": [-1, 3, 32, 32]}])
    assert error.reason == "ArchitectureInvalid" and "timm:resnet_that_does_not_exist" in error.message


def test_parity_beyond_tolerance_is_an_error(tmp_path: Path) -> None:
    error = failure(tmp_path, **DIGITS, parity={"maxAbsDiff": 1e-30, "minCosine": 1.0})
    assert error.reason == "ParityFailed"
    assert "max abs diff" in error.message and "(allowed 1e-30)" in error.message
