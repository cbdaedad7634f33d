"""The report stage: accuracy gates, reference choice, best cell per target, results.json and the HTML page."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from modeldeploy.manifest import Manifest, new_attempt, output_name
from modeldeploy.spec import Accuracy, BestCell, CellResult
from modeldeploy_jobs.report import Reference, evaluate_gate, nice_ticks, run
from modeldeploy_jobs.stage import StageContext, StageError, StageInput, StageResult

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def evaluation(
    target: str | None = "cpu",
    precision: str = "fp32",
    batch_size: int = 1,
    *,
    top1: float | None = 0.80,
    top5: float | None = 0.95,
    throughput: float | None = 100.0,
) -> dict[str, Any]:
    """An evaluate stage's metrics; top1=None means no labelled data, throughput=None no performance run."""
    return {
        "target": target,
        "precision": precision,
        "batchSize": batch_size,
        "backend": "openvino",
        "device": None,
        "accuracy": None if top1 is None else {"top1": top1, "top5": top5, "samples": 1000},
        "performance": None
        if throughput is None
        else {
            "throughput": throughput,
            "latencyMs": {"mean": 10.0, "p50": 9.5, "p90": 12.0, "p99": 15.0},
            "iterations": 100,
            "seconds": 1.0,
            "warmup": 10,
            "threads": 4,
        },
        "artifact": {"uri": f"s3://bucket/tasks/{precision}{batch_size}/outputs/model.xml", "sha256": "ab" * 32},
        "environment": {"cpu": "test", "cores": 4, "toolchain": {"openvino": "2026.4.0"}},
    }


def stage_input(key: str, metrics: Mapping[str, Any]) -> StageInput:
    manifest = Manifest(key=key, stage="evaluate", attempt=new_attempt(), outputs={}, metrics=dict(metrics), started_at=NOW, finished_at=NOW)
    return StageInput(key, manifest, Path("/nonexistent"))


def declared(top1: float | None = 0.80, top5: float | None = None, **gate: Any) -> dict[str, Any]:
    numbers = {name: value for name, value in (("top1", top1), ("top5", top5)) if value is not None}
    return {
        "reference": "declared",
        "declared": numbers,
        "metric": "top1",
        "maxDrop": 0.01,
        "dropMode": "absolute",
        **gate,
    }


def from_source(**gate: Any) -> dict[str, Any]:
    return {"reference": "source", "metric": "top1", "maxDrop": 0.01, "dropMode": "absolute", **gate}


def execute(
    tmp_path: Path,
    accuracy: Mapping[str, Any] | None,
    cells: list[dict[str, Any]],
    reference: Mapping[str, Any] | None = None,
    performance: Mapping[str, Any] | None = None,
) -> StageResult:
    """Runs the stage on cells given as evaluate metrics; the reference, when given, is the source evaluation;
    performance, when given, holds the expected throughputs and the speed gate."""
    config: dict[str, Any] = {
        "accuracy": accuracy,
        "cells": [
            {"target": c["target"], "precision": c["precision"], "batchSize": c["batchSize"], "evaluate": f"k{i}"}
            for i, c in enumerate(cells)
        ],
    }
    if performance is not None:
        config["performance"] = performance
    inputs = {
        f"cell:{c['target']}/{c['precision']}/bs{c['batchSize']}": stage_input(f"k{i}", c) for i, c in enumerate(cells)
    }
    if reference is not None:
        inputs["reference"] = stage_input("ref", reference)
    context = StageContext(
        key="report-key",
        kind="report",
        config=config,
        inputs=inputs,
        workdir=tmp_path / "work",
        outputs_dir=tmp_path / "outputs",
        fetch_source=lambda uri, path, sha256: path,
        fetch_tree=lambda uri, path: path,
        artifact_uri=lambda manifest, name: f"s3://bucket/{output_name(manifest, name)}",
    )
    return run(context)


def results_of(result: StageResult) -> dict[str, Any]:
    return json.loads(result.outputs["results.json"].read_text())


def gates(result: StageResult) -> list[str]:
    return [cell["gate"] for cell in results_of(result)["cells"]]


# ---------------------------------------------------------------- gates


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("absolute", 0.80, "Passed"),
        ("absolute", 0.79, "Passed"),  # exactly maxDrop, although 0.80 - 0.79 > 0.01 in floating point
        ("absolute", 0.7899, "Failed"),
        ("absolute", 0.85, "Passed"),  # better than the reference: a negative drop
        ("relative", 0.792, "Passed"),  # exactly 1% of 0.80
        ("relative", 0.7919, "Failed"),
    ],
)
def test_gate_boundaries(mode: str, value: float, expected: str) -> None:
    gate = Accuracy.model_validate(declared(dropMode=mode))
    drop, status = evaluate_gate({"top1": value}, Reference("declared", top1=0.80), gate)
    assert status == expected
    assert drop == pytest.approx((0.80 - value) / (0.80 if mode == "relative" else 1.0))


def test_the_stage_gates_every_cell_against_declared_numbers(tmp_path: Path) -> None:
    result = execute(
        tmp_path,
        declared(top1=0.80),
        [
            evaluation(precision="fp32", top1=0.80),
            evaluation(precision="int8", top1=0.79),
            evaluation(precision="fp16", top1=0.7899),
        ],
    )
    document = results_of(result)
    assert gates(result) == ["Passed", "Passed", "Failed"]
    assert document["reference"] == {"source": "declared", "top1": 0.80, "top5": None}
    assert document["gate"]["maxDrop"] == 0.01
    assert [cell["drop"] for cell in document["cells"]] == pytest.approx([0.0, 0.01, 0.0101])
    assert (result.metrics["passed"], result.metrics["failed"], result.metrics["notEvaluated"]) == (2, 1, 0)


def test_source_reference_comes_from_the_reference_evaluation(tmp_path: Path) -> None:
    reference = evaluation(target=None, batch_size=32, top1=0.76, top5=0.93, throughput=None)
    result = execute(tmp_path, from_source(), [evaluation(top1=0.755), evaluation(batch_size=8, top1=0.745)], reference)
    assert results_of(result)["reference"] == {"source": "source", "top1": 0.76, "top5": 0.93}
    assert result.metrics["reference"] == {"source": "source", "top1": 0.76, "top5": 0.93}
    assert gates(result) == ["Passed", "Failed"]


def test_declared_reference_ignores_a_reference_run(tmp_path: Path) -> None:
    reference = evaluation(target=None, top1=0.50, throughput=None)
    result = execute(tmp_path, declared(top1=0.80), [evaluation(top1=0.75)], reference)
    assert gates(result) == ["Failed"]


def test_top5_gate_uses_top5_only(tmp_path: Path) -> None:
    result = execute(
        tmp_path,
        declared(top1=0.80, top5=0.95, metric="top5", maxDrop=0.005),
        [
            evaluation(precision="fp32", top1=0.70, top5=0.949),
            evaluation(precision="int8", top1=0.80, top5=0.94),
            evaluation(precision="fp16", top1=0.80, top5=None),
        ],
    )
    cells = results_of(result)["cells"]
    assert gates(result) == ["Passed", "Failed", "NotEvaluated"]
    assert cells[0]["drop"] == pytest.approx(0.001)
    assert "drop" not in cells[2]


@pytest.mark.parametrize(
    ("accuracy", "cell", "reference"),
    [
        (None, evaluation(), None),  # no gate configured
        (declared(), evaluation(top1=None), None),  # the cell has no labelled data
        (from_source(), evaluation(), evaluation(target=None, top1=None, throughput=None)),  # nor the reference
        (declared(top1=None, top5=0.9), evaluation(), None),  # the declared numbers lack the gate's metric
        (declared(top1=0.0, dropMode="relative"), evaluation(), None),  # no relative drop from zero
    ],
)
def test_not_evaluated(
    tmp_path: Path, accuracy: dict[str, Any] | None, cell: dict[str, Any], reference: dict[str, Any] | None
) -> None:
    result = execute(tmp_path, accuracy, [cell], reference)
    assert gates(result) == ["NotEvaluated"]
    assert result.metrics["notEvaluated"] == 1
    assert "drop" not in results_of(result)["cells"][0]


def test_a_missing_cell_input_is_an_input_error(tmp_path: Path) -> None:
    config = {"accuracy": None, "cells": [{"target": "cpu", "precision": "fp32", "batchSize": 2, "evaluate": "k"}]}
    context = StageContext(
        "key",
        "report",
        config,
        {"cell:cpu/fp32/bs1": stage_input("k", evaluation())},
        tmp_path,
        tmp_path,
        lambda uri, path, sha256: path,
        lambda uri, path: path,
        lambda key, name: name,
    )
    with pytest.raises(StageError) as raised:
        run(context)
    assert raised.value.reason == "InputMissing"
    assert "cell:cpu/fp32/bs2" in raised.value.message


def test_a_missing_reference_input_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(StageError) as raised:
        execute(tmp_path, from_source(), [evaluation()])
    assert raised.value.reason == "InputMissing"


# ---------------------------------------------------------------- best cell


def best_of(result: StageResult) -> list[tuple[str, str, int]]:
    return [(cell["target"], cell["precision"], cell["batchSize"]) for cell in result.metrics["best"]]


def test_best_is_the_fastest_passing_cell_per_target(tmp_path: Path) -> None:
    result = execute(
        tmp_path,
        declared(top1=0.80),
        [
            evaluation("cpu", "fp32", 1, throughput=100.0),
            evaluation("cpu", "int8", 8, top1=0.70, throughput=900.0),  # fastest, but fails the gate
            evaluation("cpu", "fp16", 4, throughput=300.0),
            evaluation("cpu", "fp16", 8, throughput=None),  # no throughput: never best
            evaluation("npu", "int8", 1, top1=0.60, throughput=50.0),
            evaluation("npu", "int8", 2, top1=0.60, throughput=80.0),
        ],
    )
    assert best_of(result) == [("cpu", "fp16", 4)]  # npu has no passing cell, so no best
    assert result.metrics["best"] == [
        {"target": "cpu", "precision": "fp16", "batchSize": 4, "throughput": 300.0, "top1": 0.80}
    ]
    assert results_of(result)["best"] == result.metrics["best"]


def test_ties_go_to_the_smaller_batch_then_config_order(tmp_path: Path) -> None:
    result = execute(
        tmp_path,
        declared(top1=0.80),
        [
            evaluation("a", "fp32", 8, throughput=200.0),
            evaluation("a", "fp16", 4, throughput=200.0),
            evaluation("b", "fp16", 4, throughput=200.0),
            evaluation("b", "fp32", 4, throughput=200.0),
        ],
    )
    assert best_of(result) == [("a", "fp16", 4), ("b", "fp16", 4)]


def test_without_a_gate_every_cell_with_a_throughput_competes(tmp_path: Path) -> None:
    result = execute(
        tmp_path,
        None,
        [
            evaluation(precision="fp32", top1=None, throughput=100.0),
            evaluation(precision="int8", top1=0.1, throughput=400.0),
            evaluation(precision="fp16", throughput=None),
        ],
    )
    assert best_of(result) == [("cpu", "int8", 1)]
    assert results_of(result)["reference"] == {"source": None, "top1": None, "top5": None}
    assert results_of(result)["gate"] is None


def test_results_json_matches_the_status_shapes(tmp_path: Path) -> None:
    result = execute(
        tmp_path,
        declared(top1=0.80),
        [evaluation("cpu", "fp32", 1), evaluation("cpu", "int8", 4, top1=None, throughput=None)],
    )
    document = results_of(result)
    assert set(document) == {"reference", "gate", "speedGate", "cells", "best"}
    assert document["speedGate"] is None
    for cell in document["cells"]:
        dumped = CellResult.model_validate(cell).model_dump(mode="json", by_alias=True, exclude_none=True)
        assert dumped == cell
    for cell in document["best"]:
        assert BestCell.model_validate(cell).model_dump(mode="json", by_alias=True, exclude_none=True) == cell
    full, bare = document["cells"]
    assert full == {
        "target": "cpu",
        "backend": "openvino",
        "precision": "fp32",
        "batchSize": 1,
        "top1": 0.80,
        "top5": 0.95,
        "throughput": 100.0,
        "latencyMs": {"mean": 10.0, "p50": 9.5, "p90": 12.0, "p99": 15.0},
        "artifact": "s3://bucket/tasks/fp321/outputs/model.xml",
        "sha256": "ab" * 32,
        "drop": 0.0,
        "expected": {"top1": 0.80},  # accuracy.declared, the figure of every cell without an expected one
        "ratio": {"top1": 1.0},
        "gate": "Passed",
    }
    assert set(bare) == {"target", "backend", "precision", "batchSize", "artifact", "sha256", "expected", "gate",
                         "gateMessage"}
    assert bare["gateMessage"] == "no top-1 measured"
    assert result.metrics["cells"] == 2
    assert result.toolchain == {}
    assert set(result.outputs) == {"results.json", "report.html"}
    assert all(path.parent == tmp_path / "outputs" for path in result.outputs.values())


# ---------------------------------------------------------------- report.html


class Collector(HTMLParser):
    """Start tags with their attributes, and the page's text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def page(result: StageResult) -> tuple[str, ET.Element, Collector]:
    text = result.outputs["report.html"].read_text(encoding="utf-8")
    collector = Collector()
    collector.feed(text)
    collector.close()
    return text, ET.fromstring(text), collector


def test_report_page(tmp_path: Path) -> None:
    cells = [
        evaluation(target, precision, size, top1=top1, throughput=size * speed)
        for target in ("cpu", "<script>alert(1)</script>")
        for precision, top1, speed in (("fp32", 0.80, 50.0), ("int8", 0.785, 120.0))
        for size in (1, 4, 16)
    ]
    text, root, collector = page(execute(tmp_path, declared(top1=0.80), cells))
    assert root.findtext("head/title") == "modeldeploy report"
    rows = root.findall("body/section/table/tbody/tr")
    assert len(rows) == len(cells) + 2  # the results, then one best row per target
    assert len(root.findall(".//svg")) == 4  # two charts per target
    assert len(root.findall(".//svg/polyline")) == 4  # one throughput line per precision per target
    assert len(root.findall(".//svg/rect")) == 4  # one accuracy bar per precision per target
    assert {tick.text for tick in root.findall(".//svg/text")} >= {"1", "4", "16", "fp32", "int8", "reference 80.00%"}
    assert "<script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "Target <script>alert(1)</script>" in "".join(collector.text)
    tags = [tag for tag, _ in collector.tags]
    assert "script" not in tags
    assert not any(name in attrs for _, attrs in collector.tags for name in ("src", "href"))
    assert "failed" in "".join(cell.text or "" for cell in rows[3].iter("td"))  # int8 drops 1.5 points


@pytest.mark.parametrize(
    ("accuracy", "cell"),
    [
        (None, evaluation(top1=None, throughput=None)),
        (declared(), evaluation(top1=None)),
        (declared(), evaluation(throughput=None)),
        (None, evaluation()),
    ],
)
def test_report_page_renders_a_single_cell_with_missing_numbers(
    tmp_path: Path, accuracy: dict[str, Any] | None, cell: dict[str, Any]
) -> None:
    text, root, _ = page(execute(tmp_path, accuracy, [cell]))
    assert len(root.findall(".//svg")) == 2
    assert ("no throughput measured" in text) == (cell["performance"] is None)
    assert ("no accuracy measured" in text) == (cell["accuracy"] is None)
    assert "nan" not in text.lower()


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0, 1000, [0, 200, 400, 600, 800, 1000]),
        (0, 730, [0, 200, 400, 600, 800]),
        (0.76, 0.82, [0.76, 0.78, 0.8, 0.82]),
    ],
)
def test_nice_ticks(low: float, high: float, expected: list[float]) -> None:
    assert nice_ticks(low, high) == pytest.approx(expected)
