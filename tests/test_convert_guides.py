"""convert as the guides need it: an ONNX source at its own opset (002), and the convert keys of specs that do
not use it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
from conftest import EXAMPLES
from modeldeploy.planner import Plan, Task, plan
from modeldeploy.spec import Source
from modeldeploy.validation import load_documents, load_resource
from specs import Doc, base
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
