"""The planner: a DAG with content-addressed keys, shared work planned once, stable under unrelated edits."""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import pytest
from modeldeploy import backends
from modeldeploy.planner import Plan, plan, task_key
from modeldeploy.validation import load_resource
from specs import base


def plan_of(doc: dict[str, Any]) -> Plan:
    return plan(load_resource(doc).spec)


def keys_by_name(result: Plan) -> dict[str, str]:
    return {task.name: task.key for task in result.tasks}


def test_every_task_comes_after_its_inputs() -> None:
    result = plan_of(base())
    seen: set[str] = set()
    for task in result.tasks:
        assert set(task.inputs.values()) <= seen, task.name
        seen.add(task.key)
    assert result.report == result.tasks[-1].key


def test_keys_are_unique_and_recomputable_from_the_task() -> None:
    result = plan_of(base())
    assert len({task.key for task in result.tasks}) == len(result.tasks)
    for task in result.tasks:
        assert task.key == task_key(task.kind, task.config, task.inputs, task.toolchain)
        assert len(task.key) == 64


def test_planning_twice_gives_identical_keys() -> None:
    assert plan_of(base()) == plan_of(base())


def test_key_order_in_yaml_and_explicit_defaults_do_not_change_keys() -> None:
    doc = base()
    shuffled = base()
    shuffled["spec"] = dict(reversed(list(shuffled["spec"].items())))
    shuffled["spec"]["source"]["opset"] = 17
    shuffled["spec"]["source"]["simplify"] = False
    shuffled["spec"]["targets"][0]["options"] = {"performanceHint": "latency"}
    shuffled["spec"]["calibration"]["method"] = "auto"
    assert keys_by_name(plan_of(doc)) == keys_by_name(plan_of(shuffled))


def test_shared_work_is_planned_once() -> None:
    result = plan_of(base())
    kinds = Counter(task.kind for task in result.tasks)
    assert kinds["convert"] == 1
    # one prepared dataset per data layout: tensors (CPU, MagicMind, calibration) and uint8 bins (Ascend AIPP)
    assert sorted(task.config["variant"] for task in result.tasks if task.kind == "prepare") == [
        "raw-uint8-bins",
        "tensors",
    ]
    # one calibration per target x int8 precision (MagicMind calibrates inside its compile)
    assert sorted(task.name for task in result.tasks if task.kind == "calibrate") == [
        "calibrate cpu/int8",
        "calibrate npu/int8",
        "calibrate ort/int8",
    ]
    convert = next(task.key for task in result.tasks if task.kind == "convert")
    assert all(task.inputs.get("model") == convert for task in result.tasks if task.kind == "calibrate")


def test_identical_targets_share_every_task_but_the_report() -> None:
    doc = base()
    twin = copy.deepcopy(doc["spec"]["targets"][0])
    twin["name"] = "cpu-again"
    doc["spec"]["targets"].append(twin)
    single, doubled = plan_of(base()), plan_of(doc)
    assert len(doubled.cells) == len(single.cells) + 4
    assert len(doubled.tasks) == len(single.tasks)  # the report changes, nothing is added


def test_cards_of_one_mlu_architecture_share_the_compiled_model() -> None:
    doc = base()
    other = copy.deepcopy(doc["spec"]["targets"][3])
    other.update(name="mlu-s4", device="MLU370-S4")
    doc["spec"]["targets"].append(other)
    result = plan_of(doc)
    compiles = {cell.target: cell.compile for cell in result.cells if cell.precision == "int8"}
    evaluates = {cell.evaluate for cell in result.cells if cell.target in ("mlu", "mlu-s4")}
    assert compiles["mlu"] == compiles["mlu-s4"]
    assert len(evaluates) == 2 * 2 * len(load_resource(doc).spec.targets[3].evaluated_batch_sizes())


def test_changing_one_targets_batch_sizes_changes_only_its_cells() -> None:
    before = plan_of(base())
    doc = base()
    doc["spec"]["targets"][0]["batchSizes"] = [1, 8, 16]
    after = plan_of(doc)

    before_keys, after_keys = {t.key for t in before.tasks}, {t.key for t in after.tasks}
    added = {after.task(key).name for key in after_keys - before_keys}
    assert added == {"compile cpu/fp32/bs16", "compile cpu/int8/bs16", "evaluate cpu/fp32/bs16",
                     "evaluate cpu/int8/bs16", "report"}
    assert {before.task(key).name for key in before_keys - after_keys} == {"report"}


def test_removing_a_batch_size_drops_only_its_cells() -> None:
    doc = base()
    doc["spec"]["targets"][0]["batchSizes"] = [1]
    removed = {t.name for t in plan_of(base()).tasks} - {t.name for t in plan_of(doc).tasks}
    assert removed == {"compile cpu/fp32/bs8", "compile cpu/int8/bs8", "evaluate cpu/fp32/bs8",
                       "evaluate cpu/int8/bs8"}


@pytest.mark.parametrize(
    ("path", "value", "changed_kinds"),
    [
        (("source", "opset"), 13, {"convert", "calibrate", "compile", "evaluate", "report"}),
        (("calibration", "samples"), 32, {"calibrate", "compile", "evaluate", "report"}),
        (("performance", "iterations"), 20, {"evaluate", "report"}),
        (("accuracy", "maxDrop"), 0.05, {"report"}),
        (("dataset", "limit"), 500, {"prepare", "calibrate", "compile", "evaluate", "report"}),
    ],
)
def test_an_edit_changes_exactly_the_stages_downstream_of_it(
    path: tuple[str, str], value: Any, changed_kinds: set[str]
) -> None:
    doc = base()
    doc["spec"][path[0]][path[1]] = value
    before, after = keys_by_name(plan_of(base())), keys_by_name(plan_of(doc))
    changed = {name.split(" ")[0] for name in before if before[name] != after.get(name)}
    changed = {"evaluate" if name == "reference" else name for name in changed}
    assert changed == changed_kinds


def test_placement_and_target_names_do_not_change_keys() -> None:
    doc = base()
    doc["spec"]["targets"][2]["placement"] = {"nodeSelector": {"pool": "npu"}, "resources": {"limits": {"cpu": 4}}}
    before, after = plan_of(base()), plan_of(doc)
    assert [t.key for t in before.tasks] == [t.key for t in after.tasks]


def test_a_new_toolchain_changes_the_backends_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    before = plan_of(base())
    registry = dict(backends.registry())
    registry["openvino"] = backends.Backend(**{**registry["openvino"].__dict__, "toolchain": "openvino-2027.0"})
    monkeypatch.setattr(backends, "registry", lambda: registry)
    after = plan_of(base())
    changed = {before.task(k).name for k in {t.key for t in before.tasks} - {t.key for t in after.tasks}}
    assert changed == {t.name for t in before.tasks if t.target == "cpu" and t.kind != "prepare"} | {"report"}


def test_a_dynamic_batch_target_compiles_once_per_precision() -> None:
    result = plan_of(base())
    mlu = [cell for cell in result.cells if cell.target == "mlu"]
    assert sorted({cell.batch_size for cell in mlu}) == [1, 2, 4, 8, 16]
    assert len({cell.compile for cell in mlu}) == 2
    assert all(result.task(cell.compile).config["dynamicBatch"]["gears"] == [1, 2, 4, 8, 16] for cell in mlu)


def test_only_device_stages_request_the_device() -> None:
    result = plan_of(base())
    device_tasks = {(task.target, task.kind) for task in result.tasks if task.needs_device}
    assert device_tasks == {("npu", "evaluate"), ("mlu", "compile"), ("mlu", "evaluate")}


def test_without_a_dataset_evaluation_is_speed_only() -> None:
    doc = base()
    spec = doc["spec"]
    for name in ("dataset", "calibration", "accuracy"):
        del spec[name]
    spec["targets"] = [spec["targets"][0]]
    spec["targets"][0]["precisions"] = ["fp32"]
    result = plan_of(doc)
    assert [task.kind for task in result.tasks] == ["convert", "compile", "compile", "evaluate", "evaluate", "report"]
    evaluate = next(task for task in result.tasks if task.kind == "evaluate")
    assert evaluate.config["accuracy"] is False and set(evaluate.inputs) == {"model"}


def test_the_reference_is_the_source_model_on_the_same_data() -> None:
    result = plan_of(base())
    reference = next(task for task in result.tasks if task.name == "reference")
    convert = next(task for task in result.tasks if task.kind == "convert")
    tensors = next(task for task in result.tasks if task.kind == "prepare" and task.config["variant"] == "tensors")
    assert reference.inputs == {"model": convert.key, "data": tensors.key}
    assert result.task(result.report).inputs["reference"] == reference.key


def test_declared_reference_plans_no_reference_run() -> None:
    doc = base()
    doc["spec"]["accuracy"] = {"reference": "declared", "declared": {"top1": 0.9}}
    assert "reference" not in keys_by_name(plan_of(doc))


def test_plan_json_lists_every_task_and_cell() -> None:
    result = plan_of(base())
    document = result.to_json()
    assert len(document["tasks"]) == len(result.tasks)
    assert len(document["cells"]) == len(result.cells) == 4 + 2 + 2 + 10
    assert document["report"] == result.report
