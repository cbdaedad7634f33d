"""The MagicMind build configuration and mm_run command lines `modeldeploy plan` shows, against guide 002."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import EXAMPLES
from modeldeploy.backends import magicmind_tools
from modeldeploy.validation import SpecError, load_resource

MODELDEPLOY = Path(sys.executable).with_name("modeldeploy")
# Guide 002 (gen_model/run.sh and the mm_run line of its README), MagicMind 0.14.
GUIDE_MM_RUN = "mm_run --magicmind_model $MM_MODEL --batch $BATCH_SIZE --devices $DEV_ID --threads 1 --iterations 1000"
GUIDE_MODES = {"fp32": "force_float32", "fp16": "force_float16", "int8": "qint8_mixed_float16"}


@pytest.fixture(scope="module")
def tasks() -> list[dict[str, Any]]:
    (spec,) = EXAMPLES.glob("seeds/002-*.yaml")
    result = subprocess.run([str(MODELDEPLOY), "plan", str(spec), "-o", "json"], capture_output=True, text=True,
                            check=True)
    return json.loads(result.stdout)["tasks"]


def guide_builder_config(quant_mode: str) -> dict[str, Any]:
    """gen_model.py's generate_model_config with shape_mutable "true" (run.sh force_float32 true 1), its
    parse_from_string calls merged, one line of the guide's script per key."""
    return {
        "archs": [{"mtp_372": [6, 8]}],  # '{"archs":[{"mtp_372": [6,8]}]}'
        "opt_config": {
            "type64to32_conversion": True,  # '{"opt_config":{"type64to32_conversion":true}}'
            "conv_scale_fold": True,  # '{"opt_config":{"conv_scale_fold":true}}'
        },
        "convert_input_layout": {"0": {"src": "NCHW", "dst": "NHWC"}},  # '{"convert_input_layout": {"0": ...}}'
        "graph_shape_mutable": True,  # '{"graph_shape_mutable":true}'
        "dim_range": {"0": {"min": [1, 3, 224, 224], "max": [64, 3, 224, 224]}},  # '{"dim_range": {"0": ...}}'
        "precision_config": {
            "precision_mode": quant_mode,  # '{"precision_config":{"precision_mode":"%s"}}' % args.quant_mode
            "activation_quant_algo": "symmetric",  # '{"precision_config": {"activation_quant_algo": "symmetric"}}'
            "weight_quant_granularity": "per_tensor",  # '{"precision_config": {"weight_quant_granularity": ...}}'
        },
        # Left out: '{"cross_compile_toolchain_path": "/tmp/gcc-linaro-6.2.1-2016.11-x86_64_aarch64-linux-gnu/"}',
        # the cross-compiler of the edge arch tp_322, which a build for mtp_372 does not use.
    }


def test_one_shape_mutable_model_per_mode_with_the_guides_build_settings(tasks: list[dict[str, Any]]) -> None:
    compiles = [task for task in tasks if task["kind"] == "compile"]
    assert len(compiles) == 3  # S4 and X4 share the mtp_372 model
    for task in compiles:
        config = json.loads(task["files"]["config/builder_config.json"])
        # gen_model_preprocess.py normalises on the host and feeds float NHWC: no insert_bn_before_firstnode
        assert config == guide_builder_config(GUIDE_MODES[task["config"]["precision"]])
        (build,) = task["commands"]
        assert build[:3] == ["python3", "-m", "modeldeploy_jobs.magicmind_build"]
        assert build[build.index("--input_dims") + 1] == "1,3,224,224"
        calibrated = "--calibration_data" in build
        assert calibrated == (task["config"]["precision"] == "int8")
        if calibrated:
            assert build[build.index("--calibration_algo") + 1] == "linear"
            assert config["precision_config"]["activation_quant_algo"] == "symmetric"


def test_mm_run_is_the_guides_for_the_magicmind_release_the_seed_names(tasks: list[dict[str, Any]]) -> None:
    guide = GUIDE_MM_RUN.split()
    evaluations = [task for task in tasks if task["kind"] == "evaluate"]
    assert len(evaluations) == 18
    for task in evaluations:
        mm_run = task["commands"][-1]
        assert mm_run[0] == "mm_run" and len(mm_run) == len(guide)
        flags = dict(zip(mm_run[1::2], mm_run[2::2], strict=True))
        assert flags == {"--magicmind_model": "model.mm", "--batch": str(task["config"]["batchSize"]),
                         "--devices": "0", "--threads": "1", "--iterations": "1000"}


def test_mm_run_flags_follow_the_magicmind_version() -> None:
    config = {"batchSize": 4, "performance": {"warmup": 1, "iterations": 50}}
    assert "--batch" in magicmind_tools.mm_run_command(config, "m", "0.14.0")
    assert "--batch_size" in magicmind_tools.mm_run_command(config, "m", "1.0.1")
    timed = magicmind_tools.mm_run_command({"batchSize": 1, "performance": {"warmup": 1, "durationSeconds": 2.5}},
                                           "m", "1.7.0")
    assert timed[-4:] == ["--iterations", "1", "--duration", "2500"]


def test_a_static_int8_model_is_built_at_its_batch_with_per_axis_eqnm() -> None:
    config = {"device": "mtp_372", "precision": "int8", "batchSize": 8,
              "inputs": [{"name": "data", "shape": [-1, 3, 32, 32]}],
              "calibration": {"samples": 64, "method": "auto"},
              "options": {"quantizedMixed": "float32", "weightQuantGranularity": "per_axis",
                          "activationQuantAlgo": "symmetric", "calibrationAlgorithm": "eqnm",
                          "computationPreference": "fast", "clusterNum": [6, 8]}}
    built = magicmind_tools.builder_config(config)
    assert built["archs"] == [{"mtp_372": [6, 8]}]
    assert built["precision_config"] == {"precision_mode": "qint8_mixed_float32",
                                         "weight_quant_granularity": "per_axis", "activation_quant_algo": "symmetric"}
    assert built["computation_preference"] == "fast"
    assert built["graph_shape_mutable"] is False and "dim_range" not in built
    command = magicmind_tools.build_command(config, magicmind_tools.Workspace())
    assert command[command.index("--input_dims") + 1] == "8,3,32,32"
    assert command[-2:] == ["--calibration_algo", "eqnm"]


def test_seed_002_evaluates_on_images_prepared_channels_last_and_calibrates_on_the_networks_layout(
    tasks: list[dict[str, Any]]
) -> None:
    by_key = {task["key"]: task for task in tasks}
    variants = {by_key[task["inputs"]["data"]]["config"]["variant"] for task in tasks if task["kind"] == "evaluate"}
    assert variants == {"tensors-nhwc"}
    calibrations = {by_key[task["inputs"]["calibrationData"]]["config"]["variant"]
                    for task in tasks if task["kind"] == "compile" and "calibrationData" in task["inputs"]}
    assert calibrations == {"tensors"}


def test_input_layout_needs_one_image_input_and_agrees_with_insert_bn() -> None:
    (seed,) = EXAMPLES.glob("seeds/002-*.yaml")
    document = yaml.safe_load(seed.read_text())
    document["spec"]["targets"][0]["options"].update(insertBn=True, inputLayout="NCHW")
    document["spec"]["source"]["inputs"].append({"name": "extra", "shape": [-1, 4]})
    with pytest.raises(SpecError) as refused:
        load_resource(document)
    messages = [str(error) for error in refused.value.errors if error.path == "spec.targets[0].options.inputLayout"]
    assert messages and "inputLayout can only be NHWC" in messages[0], refused.value.errors
    del document["spec"]["targets"][0]["options"]["insertBn"]
    with pytest.raises(SpecError) as refused:
        load_resource(document)
    assert any(error.path == "spec.targets[0].options.inputLayout" and "one image input" in str(error)
               for error in refused.value.errors), refused.value.errors


def test_insert_bn_on_an_input_that_is_no_3_channel_image_is_refused() -> None:
    (seed,) = EXAMPLES.glob("seeds/002-*.yaml")
    document = yaml.safe_load(seed.read_text())
    document["spec"]["targets"][0].setdefault("options", {})["insertBn"] = True
    document["spec"]["source"]["inputs"][0]["shape"] = [-1, 3, 224]
    with pytest.raises(SpecError) as refused:
        load_resource(document)
    assert any(error.path == "spec.targets[0].options.insertBn" and "model's inputs are" in str(error)
               for error in refused.value.errors), refused.value.errors
