"""targets[].toolchain.version: the vendor release a target expects. It picks the job image, enters the task keys
of that target's tasks, is checked per backend, and is compared with what ran: the stand-ins report a configurable
CANN (`atc --version`), ais_bench and driver release, and a MagicMind release."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import modeldeploy
import pytest
from modeldeploy import backends, images
from modeldeploy.controller.config import OperatorConfig
from modeldeploy.controller.jobs import Owner, job_manifest
from modeldeploy.manifest import read_manifest
from modeldeploy.parsers import atc, npu_smi
from modeldeploy.planner import Plan, plan
from modeldeploy.store import open_store
from modeldeploy.validation import FieldError, SpecError, load_resource
from test_ascend_pipeline import NPU, ascend_environment, planned
from test_magicmind_pipeline import magicmind_environment
from test_pipeline import quickstart, results_of, run

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def document(**target: Any) -> dict[str, Any]:
    """A spec with one Ascend target and one MagicMind target; `target` changes the Ascend one."""
    npu = {"name": "npu", "backend": "ascend", "device": "Ascend310P3", "precisions": ["fp16", "int8"],
           "batchSizes": [4], **target}
    mlu = {"name": "mlu", "backend": "magicmind", "device": "MLU370-X4", "precisions": ["fp32"],
           "batchSizes": [1, 4]}
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "versions"},
        "spec": {
            "source": {"format": "onnx", "uri": "s3://models/resnet50.onnx",
                       "inputs": [{"name": "input", "shape": [-1, 3, 32, 32]}]},
            "dataset": {"kind": "cifar100", "uri": "s3://data/cifar-100-python/test", "limit": 1000},
            "calibration": {"samples": 64},
            "targets": [npu, mlu],
        },
    }


def with_mlu(spec: dict[str, Any], **target: Any) -> dict[str, Any]:
    spec["spec"]["targets"][1].update(target)
    return spec


def planned_document(spec: dict[str, Any]) -> Plan:
    return plan(load_resource(spec).spec)


def keys(result: Plan, target: str | None) -> dict[str, str]:
    """The tasks' keys by name: the target's own tasks, or (target None) the shared ones."""
    return {task.name: task.key for task in result.tasks if task.target == target and task.kind != "report"}


def errors_of(spec: dict[str, Any]) -> list[FieldError]:
    with pytest.raises(SpecError) as caught:
        load_resource(spec)
    return caught.value.errors


# ---------------------------------------------------------------- keys and images


def test_a_target_without_a_release_keeps_the_keys_it_had() -> None:
    # Keys computed by the planner of the commit before toolchain.version existed.
    result = planned_document(document())
    assert keys(result, "npu")["compile npu/fp16/bs4"] == (
        "0f6d46c04c865fd16312a5899f7efa1825af81c11b4538d4c9d603fa65019ce6")
    assert keys(result, "mlu")["compile mlu/fp32/bs1"] == (
        "2be60220a8eccfed64dd8d3b0c9d19bfcf89e0353253b26a66d053d23f0fde09")


def test_naming_the_default_release_in_any_case_changes_no_key() -> None:
    default = planned_document(document())
    for written in ("8.2.rc1", "8.2.RC1"):
        assert planned_document(document(toolchain={"version": written})).tasks == default.tasks
    assert planned_document(with_mlu(document(), toolchain={"version": "1.7.0"})).tasks == default.tasks


def test_another_release_separates_every_task_of_that_target_only() -> None:
    default = planned_document(document())
    older = planned_document(document(toolchain={"version": "6.0.RC1"}))
    assert keys(older, None) == keys(default, None)  # convert and prepare do not run the vendor toolchain
    assert keys(older, "mlu") == keys(default, "mlu")
    old_npu, new_npu = keys(older, "npu"), keys(default, "npu")
    assert old_npu.keys() == new_npu.keys() == {"calibrate npu/int8", "compile npu/fp16/bs4", "compile npu/int8/bs4",
                                                 "evaluate npu/fp16/bs4", "evaluate npu/int8/bs4"}
    assert not set(old_npu.values()) & set(new_npu.values())
    for task in older.tasks:
        if task.target == "npu":
            assert task.toolchain == "cann-6.0.rc1"
            assert task.config["toolchainVersion"] == "6.0.rc1"
    # 6.0.RC1 and 6.3.RC1 never share a result either.
    newer = planned_document(document(toolchain={"version": "6.3.RC1"}))
    assert not set(keys(newer, "npu").values()) & set(old_npu.values())


PROJECT_VERSION = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["version"]


def test_the_release_picks_the_job_image() -> None:
    ascend, magicmind = backends.get("ascend"), backends.get("magicmind")
    spec = load_resource(with_mlu(document(toolchain={"version": "6.3.RC1"}), toolchain={"version": "0.13.0"})).spec
    npu, mlu = spec.targets
    assert ascend.target_image(npu) == f"ghcr.io/modeldeploy/modeldeploy-jobs-ascend:{PROJECT_VERSION}-cann6.3.rc1"
    assert magicmind.target_image(mlu) == f"ghcr.io/modeldeploy/modeldeploy-jobs-magicmind:{PROJECT_VERSION}-mm0.13.0"
    defaults = load_resource(document()).spec
    assert ascend.target_image(defaults.targets[0]) == ascend.image == (
        f"ghcr.io/modeldeploy/modeldeploy-jobs-ascend:{PROJECT_VERSION}-cann8.2.rc1")
    assert magicmind.target_image(defaults.targets[1]) == magicmind.image == (
        f"ghcr.io/modeldeploy/modeldeploy-jobs-magicmind:{PROJECT_VERSION}-mm1.7.0")


def test_every_image_is_tagged_with_the_project_version() -> None:
    assert modeldeploy.__version__ == PROJECT_VERSION  # the tag's source, kept equal to pyproject.toml's
    assert images.default_images() == {
        "operator": f"ghcr.io/modeldeploy/modeldeploy-operator:{PROJECT_VERSION}",
        "jobs-cpu": f"ghcr.io/modeldeploy/modeldeploy-jobs-cpu:{PROJECT_VERSION}",
        "jobs-ascend": backends.get("ascend").image,
        "jobs-magicmind": backends.get("magicmind").image,
    }
    assert backends.get("openvino").image == backends.get("onnxruntime").image == images.cpu_jobs_image()


def test_the_operators_jobs_run_the_image_of_the_release_their_target_names() -> None:
    spec = load_resource(document(toolchain={"version": "6.3.RC1"})).spec
    (npu,) = [target for target in spec.targets if target.name == "npu"]
    compile_task = next(task for task in plan(spec).tasks if task.kind == "compile" and task.target == "npu")
    owner = Owner("cases", "team-a", "uid-1", 1)

    def image(config: OperatorConfig) -> str:
        body = job_manifest(owner, compile_task, npu, compile_task.task_document("s3://a/b"), "s3://a/b/t.json",
                            spec.artifacts, config)
        return body["spec"]["template"]["spec"]["containers"][0]["image"]

    assert image(OperatorConfig()) == images.ascend_jobs_image("6.3.rc1")
    assert image(OperatorConfig(images={"ascend": "registry.local/ascend:8.2"})) == (
        images.ascend_jobs_image("6.3.rc1"))  # that image is the default release's
    assert image(OperatorConfig(images={"ascend:6.3.rc1": "registry.local/ascend:6.3"})) == "registry.local/ascend:6.3"


def test_a_magicmind_release_before_1_0_plans_mm_run_with_its_batch_flag() -> None:
    def mm_run(result: Plan) -> list[str]:
        task = next(task for task in result.tasks if task.name == "evaluate mlu/fp32/bs4")
        return next(list(command) for command in task.commands if command[0] == "mm_run")

    assert mm_run(planned_document(with_mlu(document(), toolchain={"version": "0.13.0"})))[3:5] == ["--batch", "4"]
    assert mm_run(planned_document(document()))[3:5] == ["--batch_size", "4"]


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(("spec", "path", "words"), [
    (document(toolchain={"version": "6.0"}), "spec.targets[0].toolchain.version",
     "'6.0' is not a toolchain release of backend ascend; expected one such as 5.0.1, 6.0.RC1, 6.3.RC1 or 8.2.rc1"),
    (document(toolchain={"version": "6.0.RC"}), "spec.targets[0].toolchain.version", "is not a toolchain release of backend ascend"),
    (document(toolchain={"version": "1.7.0.0"}), "spec.targets[0].toolchain.version", "is not a toolchain release of backend ascend"),
    (with_mlu(document(), toolchain={"version": "1.7"}), "spec.targets[1].toolchain.version",
     "'1.7' is not a toolchain release of backend magicmind; expected one such as 0.13.0 or 1.7.0"),
    (with_mlu(document(), toolchain={"version": "6.0.RC1"}), "spec.targets[1].toolchain.version",
     "is not a toolchain release of backend magicmind"),
    (document(toolchain={"version": "v6.0.RC1"}), "spec.targets[0].toolchain.version", "must match ^[0-9][0-9A-Za-z.]*$"),
    (document(toolchain={}), "spec.targets[0].toolchain.version", "required"),
], ids=["cann-two-parts", "cann-rc-without-number", "cann-four-numbers", "magicmind-two-parts", "magicmind-cann-style",
        "leading-v", "no-version"])
def test_a_release_the_backend_does_not_name_is_refused_naming_the_field(
    spec: dict[str, Any], path: str, words: str
) -> None:
    errors = errors_of(spec)
    assert [error.path for error in errors] == [path]
    assert words in errors[0].message


def test_a_cpu_backend_takes_no_release() -> None:
    spec = document()
    spec["spec"]["targets"].append({"name": "cpu", "backend": "openvino", "precisions": ["fp32"], "batchSizes": [1],
                                    "toolchain": {"version": "2026.4.0"}})
    (error,) = errors_of(spec)
    assert error.path == "spec.targets[2].toolchain.version"
    assert "backend openvino runs the one toolchain of its image (openvino-2026.4+nncf-3.4): remove toolchain" in (
        error.message)


def test_pre_releases_and_either_case_are_cann_releases() -> None:
    for written in ("5.0.1", "6.0.RC1", "6.3.rc1", "7.0.RC1.alpha003", "8.0.RC2.beta1"):
        load_resource(document(toolchain={"version": written}))


# ---------------------------------------------------------------- what ran


def test_atc_version_reads_the_release() -> None:
    assert atc.version("atc version 6.3.RC1\n") == "6.3.RC1"
    assert atc.version("atc version 7.0.RC1.alpha003\nDebug build (NDEBUG not #defined)\n") == "7.0.RC1.alpha003"
    assert atc.version("atc\n") is None  # gflags without a version string
    assert atc.version("ATC start working now, please wait for a moment.\n") is None


def test_npu_smi_reports_the_driver_release() -> None:
    assert npu_smi.parse((FIXTURES / "ascend" / "npu_smi_310p3_22.0.2_npu2144.log").read_text())["version"] == "22.0.4"
    assert npu_smi.parse((FIXTURES / "ascend" / "npu_smi_310p3_duo_24.1.log").read_text())["version"] == "24.1.0.1"


def versions_in(environment: dict[str, str], backend: str) -> dict[str, str]:
    """What a job's `versions()` records in this environment, in a process of its own (as a stage runs)."""
    program = f"import json; from modeldeploy_jobs.backends import {backend}; print(json.dumps({backend}.versions()))"
    done = subprocess.run([sys.executable, "-c", program], env=environment, capture_output=True, text=True,
                          timeout=120, check=True, cwd=Path(__file__).parent)
    return json.loads(done.stdout)


def test_the_ascend_stand_ins_report_their_releases() -> None:
    assert versions_in(ascend_environment(), "ascend") == {"cann": "8.2.rc1", "aisBench": "0.0.2",
                                                           "npuDriver": "24.1.0.1"}
    older = ascend_environment(ASCEND_STANDIN_CANN_VERSION="6.0.RC1", ASCEND_STANDIN_DRIVER_VERSION="22.0.4")
    assert versions_in(older, "ascend") == {"cann": "6.0.RC1", "aisBench": "0.0.2", "npuDriver": "22.0.4"}


def test_without_the_tools_nothing_is_made_up() -> None:
    bare = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    bare.pop("ASCEND_TOOLKIT_HOME", None)
    bare.pop("PYTHONPATH", None)
    assert versions_in(bare, "ascend") == {"cann": "unknown"}
    assert versions_in(bare, "magicmind") == {"magicmind": "unknown"}


def test_the_magicmind_stand_ins_report_their_releases() -> None:
    assert versions_in(magicmind_environment(), "magicmind") == {"magicmind": "1.7.0", "mluDriver": "5.10.22"}
    assert versions_in(magicmind_environment(MAGICMIND_STANDIN_VERSION="0.13.0"), "magicmind")["magicmind"] == (
        "0.13.0")


# ---------------------------------------------------------------- a mismatch, end to end


def evaluated_runs(spec: Path, store: str, backend: str, cwd: Path) -> dict[str, tuple[dict[str, Any], str]]:
    """Each target's evaluate result and stage log, by target name."""
    evaluated = {task.target: task for task in planned(spec).tasks if task.kind == "evaluate" and task.backend == backend}
    opened = open_store(store)
    found: dict[str, tuple[dict[str, Any], str]] = {}
    for target, task in evaluated.items():
        assert target is not None
        manifest = read_manifest(opened, task.key)
        assert manifest is not None, f"{task.name} is not committed"
        (log,) = cwd.rglob(f"evaluate-{task.short_key}.log")
        found[target] = (dict(manifest.metrics), log.read_text())
    return found


def test_a_cann_other_than_the_expected_one_is_flagged_in_the_result_and_the_log(tmp_path: Path) -> None:
    """The image runs CANN 6.3.RC1: the target naming 6.3.RC1 matches, the one expecting the default does not."""
    targets = [{**NPU, "precisions": ["fp16"], "batchSizes": [1]},
               {**NPU, "name": "npu-63", "precisions": ["fp16"], "batchSizes": [1],
                "toolchain": {"version": "6.3.RC1"}}]
    spec = quickstart(tmp_path, targets=targets, **{"calibration.samples": 4, "dataset.limit": 16})
    store = (tmp_path / "store").as_uri()
    result = run(spec, store, env=ascend_environment(ASCEND_STANDIN_CANN_VERSION="6.3.RC1"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    runs = evaluated_runs(spec, store, "ascend", tmp_path)
    assert runs.keys() == {"npu", "npu-63"}
    (default, default_log), (named, named_log) = runs["npu"], runs["npu-63"]
    assert default["toolchain"] == {"expected": "8.2.rc1", "actual": "6.3.RC1", "match": False}
    assert named["toolchain"] == {"expected": "6.3.rc1", "actual": "6.3.RC1", "match": True}
    for metrics in (default, named):
        assert metrics["environment"]["toolchain"] == {"cann": "6.3.RC1", "aisBench": "0.0.2", "npuDriver": "24.1.0.1"}
    assert ("warning: ascend toolchain 6.3.RC1 ran, but the target expects 8.2.rc1 (targets[].toolchain.version): "
            "these results are not 8.2.rc1's") in default_log
    assert "warning" not in named_log
    cells = {cell["target"]: cell for cell in results_of(store, spec)["cells"]}  # what the status shows too
    assert cells["npu"]["toolchain"] == {"expected": "8.2.rc1", "actual": "6.3.RC1", "match": False}
    assert cells["npu-63"]["toolchain"] == {"expected": "6.3.rc1", "actual": "6.3.RC1", "match": True}


def test_a_magicmind_other_than_the_expected_one_is_flagged_and_mm_run_takes_its_flags(tmp_path: Path) -> None:
    """The image runs MagicMind 0.14.0, whose mm_run refuses 1.x's --batch_size: the run succeeds only if the job
    calls mm_run with the installed release's --batch. Only the target naming 0.14.0 matches."""
    targets = [{"name": "mlu", "backend": "magicmind", "device": "MLU370-X4", "precisions": ["fp32"],
                "batchSizes": [2]},
               {"name": "mlu-014", "backend": "magicmind", "device": "MLU370-X4", "precisions": ["fp32"],
                "batchSizes": [2], "toolchain": {"version": "0.14.0"}}]
    spec = quickstart(tmp_path, targets=targets, **{"calibration.samples": 4, "dataset.limit": 16})
    store = (tmp_path / "store").as_uri()
    result = run(spec, store, env=magicmind_environment(MAGICMIND_STANDIN_VERSION="0.14.0"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    runs = evaluated_runs(spec, store, "magicmind", tmp_path)
    (default, default_log), (named, named_log) = runs["mlu"], runs["mlu-014"]
    assert default["toolchain"] == {"expected": "1.7.0", "actual": "0.14.0", "match": False}
    assert named["toolchain"] == {"expected": "0.14.0", "actual": "0.14.0", "match": True}
    assert named["environment"]["toolchain"] == {"magicmind": "0.14.0", "mluDriver": "5.10.22"}
    assert "warning: magicmind toolchain 0.14.0 ran, but the target expects 1.7.0" in default_log
    assert "warning" not in named_log
