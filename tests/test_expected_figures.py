"""Published figures in the spec: per-cell expected accuracy and throughput, their ratios, and the gates using them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from modeldeploy.controller.reconcile import Observed, decide
from modeldeploy.crd import crd
from modeldeploy.planner import plan, task_key
from modeldeploy.runner import render_results
from modeldeploy.spec import ModelDeploymentStatus
from modeldeploy.validation import FieldError, SpecError, load_resource
from specs import base, setting
from test_controller import META, NOW, manifest
from test_report import declared, evaluation, execute, from_source, results_of

# Seed 002's accuracy: the float precisions' published figure, and int8's.
FLOAT_TOP1, INT8_TOP1 = 0.755756, 0.740741


def cells_of(result: Any) -> dict[str, dict[str, Any]]:
    return {f"{c['target']}/{c['precision']}/bs{c['batchSize']}": c for c in results_of(result)["cells"]}


def per_precision(**gate: Any) -> dict[str, Any]:
    expected = [{"precision": "fp16", "top1": FLOAT_TOP1}, {"precision": "int8", "top1": INT8_TOP1, "top5": 0.92}]
    return declared(top1=FLOAT_TOP1, expected=expected, **gate)


def speed(**gate: Any) -> dict[str, Any]:
    return {"expected": [{"precision": "fp16", "batchSize": 8, "throughput": 1000.0},
                         {"precision": "int8", "batchSize": 8, "throughput": 2000.0}], **gate}


def run_stage(tmp_path: Path, accuracy: dict[str, Any] | None, cells: list[dict[str, Any]],
              performance: dict[str, Any] | None = None, reference: dict[str, Any] | None = None) -> Any:
    return execute(tmp_path, accuracy, cells, reference, performance=performance)


# ---------------------------------------------------------------- the accuracy gate


def test_each_precision_is_gated_against_its_own_figure(tmp_path: Path) -> None:
    result = run_stage(tmp_path, per_precision(), [
        evaluation("npu", "fp16", 8, top1=0.752),
        # 0.734 is 0.0067 under int8's figure: it passes, where the float figure would fail it by 2.2 points.
        evaluation("npu", "int8", 8, top1=0.734),
        evaluation("npu", "int8", 16, top1=0.728),  # 0.0127 under int8's figure
    ])
    cells = cells_of(result)
    assert cells["npu/fp16/bs8"]["gate"] == "Passed"
    assert cells["npu/int8/bs8"]["gate"] == "Passed"
    assert cells["npu/int8/bs8"]["drop"] == pytest.approx(INT8_TOP1 - 0.734)
    failed = cells["npu/int8/bs16"]
    assert (failed["gate"], failed["drop"]) == ("Failed", pytest.approx(INT8_TOP1 - 0.728))
    assert failed["gateMessage"] == "top-1 72.80% is 1.27 pp below the reference 74.07%, more than maxDrop 1.00 pp"


def test_a_precision_without_a_figure_falls_back_to_declared(tmp_path: Path) -> None:
    result = run_stage(tmp_path, per_precision(), [evaluation("cpu", "fp32", 1, top1=0.740)])
    (cell,) = cells_of(result).values()
    assert cell["drop"] == pytest.approx(FLOAT_TOP1 - 0.740)
    assert cell["gate"] == "Failed"
    assert cell["expected"] == {"top1": FLOAT_TOP1}


def test_a_batch_size_figure_wins_over_the_precision_s_and_a_target_s_over_both(tmp_path: Path) -> None:
    expected = [
        {"precision": "fp16", "top1": 0.80},
        {"precision": "fp16", "batchSize": 4, "top1": 0.90},
        {"target": "npu", "precision": "fp16", "top1": 0.70},
        {"target": "npu", "precision": "fp16", "batchSize": 4, "top1": 0.60},
    ]
    cells = [evaluation(target, "fp16", size, top1=0.5) for target in ("npu", "mlu") for size in (1, 4)]
    result = cells_of(run_stage(tmp_path, declared(top1=0.99, expected=expected), cells))
    assert {label: cell["expected"]["top1"] for label, cell in result.items()} == {
        "npu/fp16/bs1": 0.70, "npu/fp16/bs4": 0.60, "mlu/fp16/bs1": 0.80, "mlu/fp16/bs4": 0.90,
    }
    assert {label: cell["drop"] for label, cell in result.items()} == pytest.approx(
        {"npu/fp16/bs1": 0.20, "npu/fp16/bs4": 0.10, "mlu/fp16/bs1": 0.30, "mlu/fp16/bs4": 0.40}
    )


def test_with_a_source_reference_expected_figures_only_give_ratios(tmp_path: Path) -> None:
    accuracy = from_source(expected=[{"precision": "int8", "top1": 0.50}])
    reference = evaluation(target=None, batch_size=32, top1=0.80, throughput=None)
    (cell,) = cells_of(run_stage(tmp_path, accuracy, [evaluation("cpu", "int8", 1, top1=0.75)],
                                 reference=reference)).values()
    assert cell["gate"] == "Failed"  # 5 points under the source model, not 25 above the expected figure
    assert cell["drop"] == pytest.approx(0.05)
    assert cell["expected"] == {"top1": 0.50}
    assert cell["ratio"] == {"top1": pytest.approx(1.5)}


# ---------------------------------------------------------------- the speed gate


@pytest.mark.parametrize(
    ("throughput", "verdict"),
    [(950.0, "Passed"), (900.0, "Passed"), (899.0, "Failed")],  # exactly minRatio passes
)
def test_min_ratio_fails_a_cell_below_that_fraction_of_its_expected_throughput(
    tmp_path: Path, throughput: float, verdict: str
) -> None:
    result = run_stage(tmp_path, None, [evaluation("npu", "fp16", 8, throughput=throughput)], speed(minRatio=0.9))
    (cell,) = cells_of(result).values()
    assert cell["gate"] == verdict
    assert cell["ratio"]["throughput"] == pytest.approx(throughput / 1000.0)
    if verdict == "Failed":
        assert cell["gateMessage"] == (
            "throughput 899.0 samples/s is 0.90 of the expected 1,000.0, below minRatio 0.90"
        )
        assert results_of(result)["best"] == []
    else:
        assert "gateMessage" not in cell
        assert results_of(result)["best"][0]["precision"] == "fp16"
    assert results_of(result)["speedGate"] == {"minRatio": 0.9, "int8MustBeFaster": False}


def test_min_ratio_does_not_judge_a_cell_without_an_expected_throughput(tmp_path: Path) -> None:
    result = run_stage(tmp_path, None, [evaluation("npu", "fp16", 1, throughput=1.0)], speed(minRatio=0.9))
    (cell,) = cells_of(result).values()
    assert (cell["gate"], "expected" in cell) == ("Passed", False)


def test_speed_and_accuracy_verdicts_combine_with_both_reasons(tmp_path: Path) -> None:
    result = run_stage(tmp_path, per_precision(), [evaluation("npu", "int8", 8, top1=0.70, throughput=100.0)],
                       speed(minRatio=0.5))
    (cell,) = cells_of(result).values()
    assert cell["gate"] == "Failed"
    assert cell["gateMessage"].startswith("top-1 70.00% is 4.07 pp below the reference 74.07%")
    assert cell["gateMessage"].endswith("; throughput 100.0 samples/s is 0.05 of the expected 2,000.0, "
                                        "below minRatio 0.50")


@pytest.mark.parametrize(("int8", "verdict"), [(1500.0, "Passed"), (700.0, "Failed"), (900.0, "Failed")])
def test_int8_must_be_faster_than_every_float_cell_of_its_target_and_batch(
    tmp_path: Path, int8: float, verdict: str
) -> None:
    cells = [
        evaluation("npu", "fp32", 8, throughput=400.0),
        evaluation("npu", "fp16", 8, throughput=900.0),
        evaluation("npu", "int8", 8, throughput=int8),
        evaluation("npu", "int8", 1, throughput=10.0),  # no float cell at batch 1: not judged
        evaluation("cpu", "fp16", 8, throughput=5000.0),  # another target: not a sibling
    ]
    result = cells_of(run_stage(tmp_path, None, cells, {"int8MustBeFaster": True}))
    assert result["npu/int8/bs8"]["gate"] == verdict
    assert {label: cell["gate"] for label, cell in result.items() if label != "npu/int8/bs8"} == dict.fromkeys(
        ("npu/fp32/bs8", "npu/fp16/bs8", "npu/int8/bs1", "cpu/fp16/bs8"), "Passed"
    )
    if verdict == "Failed":
        assert result["npu/int8/bs8"]["gateMessage"] == (
            f"int8 throughput {int8:,.1f} samples/s is not above fp16's 900.0 at batch 8"
        )


def test_int8_without_a_throughput_is_not_evaluated(tmp_path: Path) -> None:
    cells = [evaluation("npu", "fp16", 8, throughput=900.0), evaluation("npu", "int8", 8, throughput=None)]
    result = cells_of(run_stage(tmp_path, None, cells, {"int8MustBeFaster": True}))
    assert result["npu/int8/bs8"]["gate"] == "NotEvaluated"
    assert result["npu/int8/bs8"]["gateMessage"] == "no throughput to compare int8 with its float cells"


# ---------------------------------------------------------------- results.json, the page, the status, the console


def test_ratios_in_results_json_the_status_and_the_console(tmp_path: Path) -> None:
    result = run_stage(tmp_path, per_precision(),
                       [evaluation("npu", "int8", 8, top1=0.7, top5=0.9, throughput=1500.0)], speed())
    document = results_of(result)
    (cell,) = document["cells"]
    assert cell["expected"] == {"top1": INT8_TOP1, "top5": 0.92, "throughput": 2000.0}
    assert cell["ratio"] == pytest.approx({"top1": 0.7 / INT8_TOP1, "top5": 0.9 / 0.92, "throughput": 0.75})
    assert document["speedGate"] is None  # figures only, no speed gate

    status = ModelDeploymentStatus.model_validate({"results": document["cells"]})
    assert status.model_dump(mode="json", by_alias=True, exclude_none=True)["results"] == document["cells"]
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    kept = schema["properties"]["results"]["items"]["properties"]
    assert {"expected", "ratio", "gateMessage"} <= kept.keys()
    assert set(kept["ratio"]["properties"]) == set(kept["expected"]["properties"]) == {"top1", "top5", "throughput"}

    table = render_results(document).splitlines()
    assert table[0].split() == ["TARGET", "PRECISION", "BATCH", "TOP1", "TOP5", "DROP", "SAMPLES/S", "VS",
                                "EXPECTED", "P50", "MS", "P99", "MS", "GATE"]
    assert table[1].split()[7] == "0.75x"

    page = result.outputs["report.html"].read_text()
    assert "throughput / expected" in page and "0.750 of 2,000.0" in page
    assert "0.945 of 74.07%" in page


def test_the_console_table_has_no_ratio_column_without_expected_throughput(tmp_path: Path) -> None:
    document = results_of(run_stage(tmp_path, per_precision(), [evaluation("npu", "int8", 8)]))
    assert "VS EXPECTED" not in render_results(document)


def test_the_page_says_why_a_cell_failed(tmp_path: Path) -> None:
    result = run_stage(tmp_path, None, [evaluation("npu", "fp16", 8, throughput=10.0)], speed(minRatio=0.9))
    page = result.outputs["report.html"].read_text()
    assert "is 0.01 of the expected 1,000.0, below minRatio 0.90" in page
    assert "throughput at least 0.90 of the expected figure" in page


# ---------------------------------------------------------------- the spec and the plan


def expected_spec() -> dict[str, Any]:
    doc = base()
    doc["spec"]["accuracy"] = {"reference": "declared", "declared": {"top1": 0.8},
                               "expected": [{"precision": "int8", "top1": 0.79},
                                            {"target": "npu", "precision": "fp16", "batchSize": 4, "top1": 0.8}]}
    # mlu's dynamicBatch 1..16 without evaluate measures 1, 2, 4, 8 and 16: 16 is one of them.
    doc["spec"]["performance"]["expected"] = [{"target": "mlu", "precision": "int8", "batchSize": 16,
                                               "throughput": 900.5},
                                              {"precision": "fp32", "batchSize": 1, "throughput": 100}]
    doc["spec"]["performance"]["minRatio"] = 0.9
    doc["spec"]["performance"]["int8MustBeFaster"] = True
    return doc


def test_expected_figures_for_measured_cells_are_accepted() -> None:
    spec = load_resource(expected_spec()).spec
    assert spec.performance.expected_for("mlu", "int8", 16) is not None
    assert spec.performance.expected_for("cpu", "int8", 16) is None
    assert spec.accuracy is not None and spec.accuracy.expected_for("npu", "fp16", 4) is not None


@pytest.mark.parametrize(
    ("path", "value", "field", "words"),
    [
        ("spec.performance.expected[0].batchSize", 3, "spec.performance.expected", "names a batchSize"),
        ("spec.performance.expected[1].precision", "int16", "spec.performance.expected", "names a precision"),
        ("spec.accuracy.expected[1].target", "gpu", "spec.accuracy.expected", "names a target that is not in"),
        ("spec.accuracy.expected[1].batchSize", 8, "spec.accuracy.expected", "names a batchSize"),
        ("spec.accuracy.expected[0].precision", "fp8", "spec.accuracy.expected[0].precision", "must be one of"),
        ("spec.performance.minRatio", 0, "spec.performance.minRatio", "greater than 0"),
        ("spec.performance.int8MustBeFaster", "yes", "spec.performance.int8MustBeFaster", "true or false"),
    ],
)
def test_bad_figures_are_refused_naming_the_field(path: str, value: Any, field: str, words: str) -> None:
    doc = expected_spec()
    setting(path, value)(doc)
    with pytest.raises(SpecError) as caught:
        load_resource(doc)
    errors: list[FieldError] = caught.value.errors
    assert any(error.path == field and words in error.message for error in errors), "\n".join(map(str, errors))


def test_only_the_report_key_moves_and_only_for_specs_with_figures() -> None:
    without = plan(load_resource(base()).spec)
    report = without.task(without.report)
    assert set(report.config) == {"accuracy", "cells"}
    spec = load_resource(base()).spec
    assert report.key == task_key("report", {
        "accuracy": spec.accuracy.model_dump(mode="json", by_alias=True, exclude_none=True) if spec.accuracy else None,
        "cells": [{"target": c.target, "precision": c.precision, "batchSize": c.batch_size, "evaluate": c.evaluate}
                  for c in without.cells],
    }, report.inputs, report.toolchain)
    # Writing the speed gate's default changes nothing.
    explicit = copy.deepcopy(base())
    explicit["spec"]["performance"]["int8MustBeFaster"] = False
    assert plan(load_resource(explicit).spec).report == without.report

    figures = expected_spec()
    figures["spec"]["accuracy"] = base()["spec"]["accuracy"]
    with_figures = plan(load_resource(figures).spec)
    assert with_figures.task(with_figures.report).config["performance"] == {
        "expected": figures["spec"]["performance"]["expected"], "minRatio": 0.9, "int8MustBeFaster": True,
    }
    assert with_figures.report != without.report
    others = {task.key for task in without.tasks} - {without.report}
    assert others == {task.key for task in with_figures.tasks} - {with_figures.report}


def test_the_charts_mark_each_cell_s_expected_figures(tmp_path: Path) -> None:
    cells = [evaluation("npu", "fp16", 8, top1=0.75, throughput=800.0),
             evaluation("npu", "int8", 8, top1=0.735, throughput=2100.0)]
    page = run_stage(tmp_path, per_precision(), cells, speed()).outputs["report.html"].read_text()
    assert "fp16 bs8: expected 1,000.0 samples/s" in page and "int8 bs8: expected 2,000.0 samples/s" in page
    # Each bar has its own precision's expected accuracy and gate, and no spec-wide line stands for them.
    assert "int8 expected 74.07%" in page and "int8 gate 73.07%" in page
    assert "fp16 expected 75.58%" in page and "fp16 gate 74.58%" in page
    assert "reference 75.58%" not in page


def test_a_cell_shows_its_ratios_in_the_status_as_soon_as_it_is_evaluated() -> None:
    doc = expected_spec()
    doc["spec"]["accuracy"] = {"reference": "declared", "declared": {"top1": 0.8, "top5": 0.95},
                               "expected": [{"target": "mlu", "precision": "int8", "top1": 0.75}]}
    result = plan(load_resource(doc).spec)
    (cell,) = [c for c in result.cells if (c.target, c.precision, c.batch_size) == ("mlu", "int8", 16)]
    metrics = {"accuracy": {"top1": 0.72, "top5": 0.9}, "performance": {"throughput": 450.25}}
    observed = Observed({}, {cell.evaluate: manifest(cell.evaluate, metrics)}, {})
    (row,) = decide(META, result, observed, 4, NOW, {}).status["results"]
    assert row["expected"] == {"top1": 0.75, "throughput": 900.5}  # mlu's int8 figure, not declared's 0.8
    assert row["ratio"] == pytest.approx({"top1": 0.96, "throughput": 0.5})
    assert row["gate"] == "NotEvaluated"  # the report gates
    assert ModelDeploymentStatus.model_validate({"results": [row]}).results[0].ratio is not None
