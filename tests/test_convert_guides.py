"""convert as the guides need it: an ONNX source at its own opset (002), a checkpoint with a background class (004),
onnxsim as the simplifier (004), and the convert keys of specs that use none of these."""

from __future__ import annotations

import copy
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import pytest
import timm
import torch
from conftest import EXAMPLES
from modeldeploy.planner import Plan, Task, plan
from modeldeploy.spec import Source
from modeldeploy.validation import SpecError, load_documents, load_resource
from modeldeploy_jobs.stage import StageError
from specs import Doc, base, both, removing, setting
from stages import run_stage
from tiny_onnx import write_tiny_model


def config(**fields: Any) -> dict[str, Any]:
    """A source config as the planner writes it."""
    return Source.model_validate(fields).model_dump(mode="json", by_alias=True, exclude_none=True)


def convert(workdir: Path, **fields: Any) -> tuple[Path, dict[str, Any], dict[str, str]]:
    result = run_stage("convert", config(**fields), workdir)
    return result.outputs["model.onnx"], dict(result.metrics), dict(result.toolchain)


def seed_plan(seed: str) -> Plan:
    (path,) = EXAMPLES.glob(f"seeds/{seed}-*.yaml")
    (document,) = load_documents(path)
    return plan(load_resource(document).spec)


def convert_task(result: Plan) -> Task:
    (task,) = [task for task in result.tasks if task.kind == "convert"]
    return task


def convert_task_config(result: Plan) -> dict[str, Any]:
    return dict(convert_task(result).config)


def cpu_only(document: Doc) -> Doc:
    """A spec with its first target only, an OpenVINO one: the convert task is the same for any targets."""
    document["spec"]["targets"] = document["spec"]["targets"][:1]
    return document


def convert_key(document: Doc) -> str:
    return convert_task(plan(load_resource(cpu_only(document)).spec)).key


# ---------------------------------------------------------------- an ONNX source's opset


def opset(model: Path) -> int:
    (version,) = [entry.version for entry in onnx.load(str(model)).opset_import if entry.domain in ("", "ai.onnx")]
    return version


def test_an_onnx_source_keeps_its_opset_unless_the_spec_names_one(tmp_path: Path) -> None:
    source = tmp_path / "opset11.onnx"
    write_tiny_model(source)
    inputs = [{"name": "input", "shape": [-1, 3, 8, 8]}]
    assert "opset" not in config(format="onnx", uri=str(source), inputs=inputs)
    kept, metrics, _ = convert(tmp_path / "kept", format="onnx", uri=str(source), inputs=inputs)
    assert opset(kept) == 11 and metrics["opset"] == 11
    converted, metrics, _ = convert(tmp_path / "asked", format="onnx", uri=str(source), inputs=inputs, opset=13)
    assert opset(converted) == 13 and metrics["opset"] == 13


def test_seed_002_parses_the_onnx_model_at_its_own_opset() -> None:
    assert "opset" not in convert_task_config(seed_plan("002"))


def test_a_pytorch_source_without_an_opset_keeps_its_convert_config_and_key() -> None:
    source = config(**base()["spec"]["source"])
    assert source == {**base()["spec"]["source"], "opset": 17, "simplify": False, "randomWeights": False,
                      "architectureArgs": {}, "weightsPrefixMap": {},
                      "inputs": [{"name": "input", "shape": [-1, 3, 32, 32], "dtype": "float32", "layout": "NCHW"}],
                      "parity": {"maxAbsDiff": 0.001, "minCosine": 0.9999}}
    explicit = base()
    explicit["spec"]["source"]["opset"] = 17
    assert convert_key(explicit) == convert_key(base())


# ---------------------------------------------------------------- a classifier with a background class

CLASSES = 5
IMAGE = [{"name": "image", "shape": [-1, 3, 32, 32]}]


def failure(workdir: Path, **fields: Any) -> StageError:
    with pytest.raises(StageError) as caught:
        run_stage("convert", config(**fields), workdir)
    return caught.value


def logits(model: Path, images: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": images})[0]


@pytest.fixture(scope="module")
def background_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A timm ResNet's state_dict whose classifier (fc) has one leading row more than CLASSES: a background class."""
    torch.manual_seed(1)
    state = timm.create_model("resnet10t", num_classes=CLASSES + 1).state_dict()
    assert list(state["fc.weight"].shape) == [CLASSES + 1, 512] and list(state["fc.bias"].shape) == [CLASSES + 1]
    path = tmp_path_factory.mktemp("weights") / "background.pth"
    torch.save(state, path)
    return path


def by_hand(checkpoint: Path, images: np.ndarray) -> np.ndarray:
    """The logits of the CLASSES-class model loaded with rows 1.. of the checkpoint's classifier."""
    state = torch.load(checkpoint, weights_only=True)
    state["fc.weight"], state["fc.bias"] = state["fc.weight"][1:], state["fc.bias"][1:]
    model = timm.create_model("resnet10t", num_classes=CLASSES).eval()
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        return model(torch.from_numpy(images)).numpy()


def resnet(weights: Path, **fields: Any) -> dict[str, Any]:
    return {"format": "pytorch", "architecture": "timm:resnet10t", "numClasses": CLASSES, "weights": str(weights),
            "inputs": IMAGE, "outputs": ["logits"], **fields}


@pytest.mark.parametrize("classifier", [None, ["fc"]], ids=["found-by-shape", "named"])
def test_weights_label_offset_drops_the_background_row(
    tmp_path: Path, background_checkpoint: Path, classifier: list[str] | None
) -> None:
    named = {"classifier": classifier} if classifier else {}
    model, metrics, _ = convert(tmp_path, **resnet(background_checkpoint, weightsLabelOffset=1, **named))
    images = np.random.default_rng(3).standard_normal((4, 3, 32, 32)).astype(np.float32)
    converted = logits(model, images)
    assert converted.shape == (4, CLASSES)
    np.testing.assert_allclose(converted, by_hand(background_checkpoint, images), rtol=1e-4, atol=1e-4)
    assert metrics["weightsLabelOffset"] == {"rows": 1, "parameters": ["fc.weight", "fc.bias"]}


def test_without_weights_label_offset_the_mismatch_says_how_to_load_it(
    tmp_path: Path, background_checkpoint: Path
) -> None:
    error = failure(tmp_path, **resnet(background_checkpoint))
    assert error.reason == "WeightsMismatch"
    assert f"{background_checkpoint} does not match timm:resnet10t" in error.message
    assert f"fc.weight: checkpoint [{CLASSES + 1}, 512], model [{CLASSES}, 512]" in error.message
    assert f"fc.bias: checkpoint [{CLASSES + 1}], model [{CLASSES}]" in error.message
    assert "weightsLabelOffset: 1 drops them, as timm's label_offset does" in error.message


def test_weights_label_offset_on_a_checkpoint_without_the_extra_rows(tmp_path: Path) -> None:
    torch.manual_seed(1)
    matching = tmp_path / "matching.pth"
    torch.save(timm.create_model("resnet10t", num_classes=CLASSES).state_dict(), matching)
    error = failure(tmp_path / "found", **resnet(matching, weightsLabelOffset=1))
    assert error.reason == "WeightsMismatch"
    assert error.message.startswith(f"{matching}: weightsLabelOffset: 1: no tensor of the checkpoint has 1 leading "
                                    f"row(s) more than the model's {CLASSES}")
    error = failure(tmp_path / "named", **resnet(matching, weightsLabelOffset=1, classifier=["fc"]))
    assert error.message == (f"{matching}: weightsLabelOffset: 1: fc.weight is [{CLASSES}, 512] in the checkpoint "
                             f"and [{CLASSES}, 512] in the model, not 1 leading row(s) more")


def test_a_classifier_the_model_does_not_have(tmp_path: Path, background_checkpoint: Path) -> None:
    error = failure(tmp_path, **resnet(background_checkpoint, weightsLabelOffset=1, classifier=["head.fc"]))
    assert error.reason == "WeightsMismatch"
    assert error.message.startswith("classifier: timm:resnet10t has no parameter head.fc.weight")


def test_seed_004_loads_the_published_pnasnet_layout(tmp_path: Path) -> None:
    """pnasnet5large-bf079911.pth holds last_linear [1001, 4320] and [1001]; seed 004's source loads it into the
    1000-class model, rows 1.. as timm's pretrained loading does. (Only the loading step: the whole convert of this
    model takes minutes here.)"""
    from modeldeploy_jobs import convert as convert_stage

    torch.manual_seed(0)
    published = timm.create_model("pnasnet5large", num_classes=1001).state_dict()
    weights = tmp_path / "pnasnet5large-bf079911.pth"
    torch.save(published, weights)
    source = {**convert_task_config(seed_plan("004")), "weights": str(weights)}
    assert source["weightsLabelOffset"] == 1 and source["numClasses"] == 1000

    class Context:
        workdir = tmp_path

        @staticmethod
        def fetch_source(uri: str, local: Path, sha256: str | None) -> Path:
            return Path(uri)

    model, trimmed = convert_stage._pytorch_model(Context(), source)
    assert trimmed == ["last_linear.weight", "last_linear.bias"]
    loaded = model.state_dict()
    assert torch.equal(loaded["last_linear.weight"], published["last_linear.weight"][1:])
    assert torch.equal(loaded["last_linear.bias"], published["last_linear.bias"][1:])


def refused(change: Callable[[Doc], None], path: str, message: str) -> None:
    document = base()
    change(document)
    with pytest.raises(SpecError) as caught:
        load_resource(document)
    assert any(error.path == path and message in error.message for error in caught.value.errors), caught.value.errors


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        (setting("spec.source.classifier", ["fc"]), "spec.source.classifier", "it needs weightsLabelOffset"),
        (both(setting("spec.source.weightsLabelOffset", 1), setting("spec.source.randomWeights", True),
              removing("spec.source.weights", "spec.accuracy")),
         "spec.source.weightsLabelOffset", "applies only to a pytorch source's weights"),
        (setting("spec.source.weightsLabelOffset", -1), "spec.source.weightsLabelOffset", "at least 0"),
        (both(setting("spec.source.weightsLabelOffset", 1), setting("spec.source.classifier", ["fc;rm"])),
         "spec.source.classifier[0]", "must match"),
    ],
)
def test_weights_label_offset_and_classifier_are_checked(change: Callable[[Doc], None], path: str, message: str) -> None:
    refused(change, path, message)


def test_writing_weights_label_offset_0_does_not_change_the_convert_key() -> None:
    explicit = base()
    explicit["spec"]["source"]["weightsLabelOffset"] = 0
    assert convert_key(explicit) == convert_key(base())


def test_seed_004_drops_the_background_row_as_timm_does() -> None:
    source = convert_task_config(seed_plan("004"))
    assert source["weightsLabelOffset"] == 1 and source["numClasses"] == 1000 and "classifier" not in source


# ---------------------------------------------------------------- simplifiers


def test_onnxsim_simplifies_with_the_declared_input_shapes_and_is_recorded(tmp_path: Path) -> None:
    fields = {"format": "pytorch", "architecture": "timm:resnet10t", "randomWeights": True, "numClasses": CLASSES,
              "inputs": IMAGE, "simplify": True}
    model, metrics, toolchain = convert(tmp_path / "onnxsim", **fields, simplifier="onnxsim")
    assert toolchain["onnxsim"] == version("onnxsim") and "onnxslim" not in toolchain
    assert metrics["simplifier"] == "onnxsim"
    assert metrics["nodes"] < metrics["nodesBeforeSimplify"]
    graph = onnx.load(str(model)).graph
    assert [dim.dim_param or dim.dim_value for dim in graph.input[0].type.tensor_type.shape.dim] == ["batch", 3, 32, 32]
    assert metrics["parity"]["cosine"] > 0.9999
    assert logits(model, np.zeros((3, 3, 32, 32), np.float32)).shape == (3, CLASSES)

    _, metrics, toolchain = convert(tmp_path / "onnxslim", **fields)
    assert metrics["simplifier"] == "onnxslim" and "onnxslim" in toolchain and "onnxsim" not in toolchain
    _, metrics, toolchain = convert(tmp_path / "none", **{**fields, "simplify": False})
    assert metrics["simplifier"] is None and "onnxslim" not in toolchain


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (setting("spec.source.simplifier", "onnxsim"), "applies only with simplify: true"),
        (both(setting("spec.source.simplify", True), setting("spec.source.simplifier", "polygraphy")), "onnxsim"),
    ],
)
def test_simplifier_is_checked(change: Callable[[Doc], None], message: str) -> None:
    refused(change, "spec.source.simplifier", message)


def test_naming_the_default_simplifier_does_not_change_the_convert_key() -> None:
    simplified = base()
    simplified["spec"]["source"]["simplify"] = True
    explicit = copy.deepcopy(simplified)
    explicit["spec"]["source"]["simplifier"] = "onnxslim"
    assert convert_key(explicit) == convert_key(simplified)
    explicit["spec"]["source"]["simplifier"] = "onnxsim"
    assert convert_key(explicit) != convert_key(simplified)


def test_seed_004_simplifies_with_onnxsim_as_its_guide() -> None:
    source = convert_task_config(seed_plan("004"))
    assert source["simplify"] is True and source["simplifier"] == "onnxsim"
    # the guide: python3.7.5 -m onnxsim --overwrite-input-shape="-1,3,331,331" pnasnet5large.onnx ...
    assert source["inputs"] == [{"name": "image", "shape": [-1, 3, 331, 331], "dtype": "float32", "layout": "NCHW"}]
