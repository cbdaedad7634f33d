"""The Ascend command lines `modeldeploy plan` shows: equal to the guides' (docs/seeds.md) modulo paths."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import EXAMPLES
from modeldeploy.backends import ascend, ascend_tools
from modeldeploy.planner import plan
from modeldeploy.spec import Dataset
from modeldeploy.validation import SpecError, load_resource

MODELDEPLOY = Path(sys.executable).with_name("modeldeploy")

# Flags whose values are file or directory names: compared by presence, not value.
PATHS = {"--model", "--output", "--input", "--save_path", "--data_dir", "--calibration_config", "--insert_op_conf",
         "--output_dirname"}
# What our commands add to a guide's, and why that changes nothing the guide measures.
HARMLESS_EXTRAS = {
    ("ais_bench", "--device"): "0, ais_bench's default device, named explicitly",
    ("ais_bench", "--batchsize"): "used only to compute throughput",
    ("ais_bench", "--warmup_count"): "the guides rely on the default; the seeds set the same value",
    ("ais_bench", "--display_all_summary"): "adds the H2D/D2H lines to the summary",
    ("ais_bench", "--output"): "a results directory: the summary JSON holds every iteration's time",
    ("ais_bench", "--output_dirname"): "as --output",
}

# The guides' commands, verbatim but for line continuations; ${chip_name} is the guide's chip.
GUIDES: dict[str, list[str]] = {
    "000": [
        ('amct_onnx calibration --model ./models/end2end.onnx --save_path ./models/resnet50_quant '
        '--input_shape "input:24,3,32,32" --data_dir "./amct_bin_data/" --data_types "float32" '
        '--calibration_config ./quant.cfg'),
        ('atc --framework=5 --model=models/resnet50_quant_deploy_model.onnx --output=models/resnet50_quant_bs24 '
        '--input_format=NCHW --input_shape="input:24,3,32,32" --insert_op_conf=./aipp.conf --enable_small_channel=1 '
        '--op_select_implmode=high_performance --soc_version=Ascend${chip_name} --log=error'),
        ('python3 -m ais_bench --model ./models/resnet50_quant_bs24.om --input ./bin_data --output ./ --outfmt TXT '
        '--output_dirname dst'),
        'python3 -m ais_bench --model ./models/resnet50_quant_bs24.om --loop 100 --batchsize 24',
    ],
    "001": [
        ('atc --model=./se_resnet50_dynamic_bs.onnx --framework=5 --input_format=NCHW --input_shape="image:32,3,224,224" '
        '--output=./se_resnet50_fp16_bs32 --log=error --soc_version=Ascend${chip_name} '
        '--insert_op_conf=./aipp_SE_ResNet50_pth.config --enable_small_channel=1'),
        ('python3 -m ais_bench --model ./se_resnet50_fp16_bs32.om --batchsize 32 --input ./data/ImageNet_bin --output ./ '
        '--output_dirname result --outfmt TXT'),
        'python3 -m ais_bench --model=${om_model_path} --loop=20 --batchsize=32',
    ],
    "003": [
        # The guide builds with --log=debug; the log level only selects what ATC writes to ~/ascend/log.
        ('atc --framework=5 --model=inceptionresnetv2.onnx --output=inceptionresnetv2-b0_bs1 --input_format=NCHW '
        '--input_shape="image:1,3,299,299" --log=error --soc_version=Ascend310'),
    ],
    "004": [
        ('atc --framework=5 --model=./pnasnet5large_sim.onnx --input_format=NCHW --input_shape="image:4,3,331,331" '
        '--output=pnasnet5large_bs4 --log=error --soc_version=Ascend${chip_name}'),
        ('python3.7.5 -m ais_bench --model pnasnet5large_bs4.om --batchsize 4 --input ./prep_dataset --output ./result '
        '--outfmt "TXT" --device 0'),
        'python3.7.5 -m ais_bench --model pnasnet5large_bs4.om --batchsize 4 --output ./result --loop 1000 --device 0',
    ],
}
CHIPS = {"000": "310P3", "001": "310P3", "003": "310", "004": "310P3"}


def normalised(command: list[str], chip: str) -> tuple[str, dict[str, str | None]]:
    """(tool, {flag: value}) with --k=v and --k v unified, paths reduced to their presence."""
    words = [word.replace("${chip_name}", chip) for word in command]
    if words[0].startswith("python3"):
        assert words[1:3] == ["-m", "ais_bench"]
        tool, words = "ais_bench", words[3:]
    elif words[0] == "amct_onnx":
        tool, words = "amct_onnx", words[2:]
    else:
        tool, words = words[0], words[1:]
    flags: dict[str, str | None] = {}
    index = 0
    while index < len(words):
        flag, _, value = words[index].partition("=")
        if not value and index + 1 < len(words) and not words[index + 1].startswith("--"):
            index += 1
            value = words[index]
        flags[flag] = None if flag in PATHS else value
        index += 1
    return tool, flags


def planned(seed: str) -> list[dict[str, Any]]:
    (spec,) = EXAMPLES.glob(f"seeds/{seed}-*.yaml")
    result = subprocess.run([str(MODELDEPLOY), "plan", str(spec), "-o", "json"], capture_output=True, text=True,
                            check=True)
    return json.loads(result.stdout)["tasks"]


def commands_of(tasks: Iterable[dict[str, Any]]) -> list[list[str]]:
    return [command for task in tasks for command in task["commands"]]


@pytest.mark.parametrize("seed", sorted(GUIDES))
def test_every_guide_command_is_planned_with_the_same_flags_and_values(seed: str) -> None:
    ours = [normalised(command, CHIPS[seed]) for command in commands_of(planned(seed))]
    for line in GUIDES[seed]:
        tool, flags = normalised(shlex.split(line), CHIPS[seed])
        matches = [planned_flags for planned_tool, planned_flags in ours
                   if planned_tool == tool and all(planned_flags.get(k, "absent") == v for k, v in flags.items())]
        assert matches, f"no planned {tool} command has the guide's {flags}"
        extras = {flag for flag in matches[0] if flag not in flags}
        assert extras <= {flag for (extra_tool, flag) in HARMLESS_EXTRAS if extra_tool == tool}, extras


def test_plan_table_prints_the_commands_and_generated_files() -> None:
    (spec,) = EXAMPLES.glob("seeds/000-*.yaml")
    output = subprocess.run([str(MODELDEPLOY), "plan", str(spec)], capture_output=True, text=True, check=True).stdout
    assert "$ amct_onnx calibration --model=model.onnx" in output
    assert "$ atc --framework=5" in output and "--input_shape=input:24,3,32,32" in output
    assert "config/quant.cfg:\n    batch_num : 5\n    joint_quant : true\n" in output
    assert "aipp_mode : static" in output


# The files the guides' commands read, key by key, with the line of the guide (or of the file it names) each
# value comes from.
GUIDE_QUANT_CFG_000 = {
    "batch_num": "5",  # quant.cfg (amct_onnx ... --calibration_config ./quant.cfg): "batch_num: 5"
    "joint_quant": "true",  # quant.cfg: "joint_quant: true"
}
GUIDE_AIPP_001 = {  # aipp_SE_ResNet50_pth.config (atc ... --insert_op_conf=./aipp_SE_ResNet50_pth.config)
    "aipp_mode": "static",  # "aipp_mode: static"
    "input_format": "RGB888_U8",  # "input_format : RGB888_U8"
    "src_image_size_w": "256",  # "src_image_size_w : 256"
    "src_image_size_h": "256",  # "src_image_size_h : 256"
    "crop": "true",  # "crop: true"
    "load_start_pos_h": "16",  # "load_start_pos_h : 16"
    "load_start_pos_w": "16",  # "load_start_pos_w : 16"
    "crop_size_w": "224",  # "crop_size_w : 224"
    "crop_size_h": "224",  # "crop_size_h: 224"
    "min_chn_0": "123.675",  # "min_chn_0 : 123.675"
    "min_chn_1": "116.28",  # "min_chn_1 : 116.28"
    "min_chn_2": "103.53",  # "min_chn_2 : 103.53"
    "var_reci_chn_0": "0.0171247538316637",  # "var_reci_chn_0: 0.0171247538316637"
    "var_reci_chn_1": "0.0175070028011204",  # "var_reci_chn_1: 0.0175070028011204"
    "var_reci_chn_2": "0.0174291938997821",  # "var_reci_chn_2: 0.0174291938997821"
}
# What seeds/001's dataset.preprocess must say of imagenet_torch_preprocess.py: cv2.imread, BGR to RGB, cv2.resize
# to exactly 256x256 (aspect not kept) with INTER_CUBIC, and the 224 crop that AIPP makes on the device.
PREPROCESS_001 = {"decoder": "opencv", "resize": 256, "resizeMode": "exact", "interpolation": "bicubic", "crop": 224,
                  "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def settings(text: str) -> dict[str, str]:
    """The `key : value` lines of a quant.cfg or of an aipp_op block, by key (each key once)."""
    pairs = [line.split(":", 1) for line in text.splitlines() if ":" in line]
    found = {key.strip(): value.strip() for key, value in pairs}
    assert len(found) == len(pairs), text
    return found


def seed_document(seed: str) -> dict[str, Any]:
    (path,) = EXAMPLES.glob(f"seeds/{seed}-*.yaml")
    return yaml.safe_load(path.read_text())


def files_of(document: dict[str, Any], kind: str) -> dict[str, str]:
    (task,) = [task for task in plan(load_resource(document).spec).tasks if task.kind == kind]
    return dict(ascend.ASCEND.files(kind, task.config))


def test_seed_000_quant_cfg_is_the_guides_key_for_key() -> None:
    (task,) = [task for task in planned("000") if task["kind"] == "calibrate"]
    assert settings(task["files"]["config/quant.cfg"]) == GUIDE_QUANT_CFG_000


def test_quant_cfg_writes_each_amct_key_the_options_move_off_amcts_default() -> None:
    options = {"activationOffset": False, "jointQuant": True, "skipLayers": ["Conv_0", "Gemm_9"]}
    assert ascend_tools.quant_cfg(options, 3).splitlines() == [
        "batch_num : 3", "activation_offset : false", "joint_quant : true",
        'skip_layers : "Conv_0"', 'skip_layers : "Gemm_9"',
    ]
    defaults = ascend.AscendOptions.model_validate({}).model_dump(mode="json", by_alias=True)
    assert ascend_tools.quant_cfg(defaults, 1) == "batch_num : 1\n"


def test_aipp_crop_gives_the_guides_aipp_config_for_seed_001_key_for_key() -> None:
    document = seed_document("001")
    assert document["spec"]["dataset"]["preprocess"] == PREPROCESS_001
    assert document["spec"]["targets"][0]["options"]["aippCrop"] is True
    assert settings(files_of(document, "compile")["config/aipp.cfg"]) == GUIDE_AIPP_001


def test_aipp_crop_prepares_the_resized_images_and_still_plans_the_guides_atc_flags() -> None:
    document = seed_document("001")
    result = plan(load_resource(document).spec)
    assert {task.config["variant"] for task in result.tasks if task.kind == "prepare"} == {
        ascend.RAW_UINT8_UNCROPPED_BINS}
    (compile_task,) = [task for task in result.tasks if task.kind == "compile"]
    (atc,) = ascend.ASCEND.commands("compile", compile_task.config, load_resource(document).spec.source.inputs)
    tool, flags = normalised(atc, CHIPS["001"])
    guide_tool, guide_flags = normalised(shlex.split(GUIDES["001"][0]), CHIPS["001"])
    assert (tool, flags) == (guide_tool, guide_flags)


def test_options_added_later_leave_the_task_keys_of_targets_without_them_as_they_were() -> None:
    """Every Ascend task's config holds the options' dump: aippCrop and jointQuant enter it only when set."""
    dumped = ascend.AscendOptions.model_validate({}).model_dump(mode="json", by_alias=True)
    assert set(dumped) == {"aipp", "enableSmallChannel", "opSelectImplmode", "outputType", "activationOffset",
                           "skipLayers", "calibrationBatchSize"}
    used = ascend.AscendOptions.model_validate({"aipp": True, "aippCrop": True, "jointQuant": True})
    assert {"aippCrop", "jointQuant"} <= set(used.model_dump(mode="json", by_alias=True))


def test_the_centre_crop_on_the_device_starts_where_the_hosts_does() -> None:
    """prepare rounds (side - crop) / 2 as torchvision's CenterCrop does: 7 / 2 = 3.5 rounds to 4."""
    fields = ascend_tools.aipp_fields({"crop": 25}, {"name": "x", "shape": [-1, 3, 25, 25]}, source_side=32)
    assert fields["crop"] == {"loadStartPosH": 4, "loadStartPosW": 4, "cropSizeW": 25, "cropSizeH": 25}
    assert (fields["srcImageSizeW"], fields["srcImageSizeH"]) == (32, 32)


@pytest.mark.parametrize(("dataset", "side"), [
    ({"kind": "cifar100", "uri": "s3://d/test", "preprocess": {"crop": 28}}, 32),  # CIFAR's images are 32x32
    ({"kind": "cifar100", "uri": "s3://d/test", "preprocess": {"resize": 40, "crop": 36}}, 40),
    ({"kind": "imagenet", "uri": "s3://d/val", "labels": "s3://d/l.txt",
      "preprocess": {"resize": 256, "resizeMode": "exact", "crop": 224}}, 256),
    ({"kind": "imagenet", "uri": "s3://d/val", "labels": "s3://d/l.txt", "preprocess": {"resize": 256, "crop": 224}},
     None),  # the shorter side: every aspect ratio gives another size
])
def test_aipp_crop_source_is_the_one_size_every_image_has_after_the_resize(
    dataset: dict[str, Any], side: int | None
) -> None:
    assert ascend.resized_side(Dataset.model_validate(dataset)) == side


@pytest.mark.parametrize(("change", "message"), [
    ({"options": {"aipp": False, "aippCrop": True}}, "aippCrop crops in AIPP: set aipp: true"),
    ({"preprocess": {"resize": 256, "crop": 224}}, "set dataset.preprocess.resizeMode: exact"),
    ({"preprocess": {"resize": 256, "resizeMode": "exact"}}, "set preprocess.crop"),
    ({"preprocess": {"resize": 224, "resizeMode": "exact", "crop": 224}}, "it must be smaller than 224"),
    ({"preprocess": {"resize": 256, "resizeMode": "exact", "crop": 200}},
     "input 'image' is 224x224: preprocess.crop must be the model's input size"),
])
def test_aipp_crop_that_the_host_and_the_device_could_not_agree_on_is_refused(
    change: dict[str, Any], message: str
) -> None:
    document = seed_document("001")
    target = document["spec"]["targets"][0]
    target["options"] = {**target["options"], "aippCrop": True, **change.get("options", {})}
    document["spec"]["dataset"]["preprocess"] = change.get("preprocess", PREPROCESS_001)
    with pytest.raises(SpecError) as refused:
        load_resource(document)
    assert [str(error) for error in refused.value.errors if error.path == "spec.targets[0].options.aippCrop"
            and message in str(error)], refused.value.errors


def test_calibration_samples_that_leave_a_partial_amct_batch_are_refused() -> None:
    document = seed_document("000")
    document["spec"]["calibration"]["samples"] = 130
    with pytest.raises(SpecError) as refused:
        load_resource(document)
    assert [error for error in refused.value.errors if error.path == "spec.targets[0].options.calibrationBatchSize"
            and "calibration.samples (130) is not a multiple of calibrationBatchSize (24)" in str(error)]


def test_aipp_from_imagenet_preprocessing_matches_the_modelzoo_config() -> None:
    """aipp_resnet50_710.aippconfig (docs/ascend.md §1.4) folds the same mean and std."""
    preprocess = {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    fields = ascend_tools.aipp_fields(preprocess, {"name": "image", "shape": [-1, 3, 224, 224]})
    assert fields["minChn"] == pytest.approx([123.675, 116.28, 103.53])
    assert fields["varReciChn"] == pytest.approx([0.0171247538316637, 0.0175070028011204, 0.0174291938997821])
    assert (fields["srcImageSizeW"], fields["srcImageSizeH"]) == (224, 224)


def test_dynamic_batch_compiles_once_with_gears_and_evaluates_each_gear() -> None:
    config = {"options": {"aipp": False, "enableSmallChannel": False}, "precision": "fp16",
              "dynamicBatch": {"min": 1, "max": 8, "gears": [1, 4, 8]}, "batchSize": 4,
              "performance": {"warmup": 1, "iterations": 5}, "accuracy": False, "device": "Ascend310P3"}
    inputs = [ascend_tools.ModelInput("image", (3, 224, 224))]
    (atc,) = ascend_tools.commands("compile", config, inputs)
    assert "--input_shape=image:-1,3,224,224" in atc and "--dynamic_batch_size=1,4,8" in atc
    (_, speed) = ascend_tools.commands("evaluate", config, inputs)
    assert speed[-2:] == ["--dymBatch", "4"]


def test_device_auto_reads_the_chip_from_npu_smi_first() -> None:
    config = {"options": {"aipp": False, "enableSmallChannel": False}, "precision": "mixed", "batchSize": 1,
              "device": "auto"}
    npu_smi, atc = ascend_tools.commands("compile", config, [ascend_tools.ModelInput("x", (3, 8, 8))])
    assert npu_smi == ["npu-smi", "info"]
    assert "--soc_version=Ascend${CHIP_NAME}" in atc and "--precision_mode=allow_mix_precision" in atc


FIXTURES = Path(__file__).resolve().parent / "fixtures" / "ascend"


def parse_log(tool: str, log: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MODELDEPLOY), "tools", "parse", tool, log], capture_output=True, text=True,
                          input=stdin, check=False)


def test_tools_parse_prints_json_and_fails_on_a_failed_run() -> None:
    speed = parse_log("ais_bench", str(FIXTURES / "ais_bench_310p_bs64_txt.log"))
    assert speed.returncode == 0
    assert json.loads(speed.stdout)["throughput"] == pytest.approx(4749.03127425521)
    failed = parse_log("atc", "-", stdin=(FIXTURES / "atc_err_e19010.log").read_text())
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["errors"][0]["code"] == "E19010"
    chips = json.loads(parse_log("npu-smi", str(FIXTURES / "npu_smi_310p3_duo_24.1.log")).stdout)["chips"]
    assert [chip["socVersion"] for chip in chips] == ["Ascend310P3"] * 4


def test_tools_parse_names_a_missing_log() -> None:
    missing = parse_log("atc", "no-such.log")
    assert missing.returncode == 2 and missing.stderr.strip() == "no-such.log: No such file or directory"


def test_a_skip_layer_name_that_would_write_its_own_line_into_quant_cfg_is_refused() -> None:
    document = yaml.safe_load((EXAMPLES / "seeds" / "000-resnet50-cifar100-int8-ascend310p3.yaml").read_text())
    document["spec"]["targets"][0].setdefault("options", {})["skipLayers"] = ['conv1"\nbatch_num: 1\n#']
    with pytest.raises(SpecError) as refused:
        load_resource(document)
    assert any(error.path.startswith("spec.targets[0].options") and "skipLayers" in str(error)
               for error in refused.value.errors), refused.value.errors


@pytest.mark.parametrize("options", [{"aipp": 1}, {"calibrationBatchSize": "16"}, {"enableSmallChannel": "true"}])
def test_backend_options_take_the_types_they_declare_as_the_spec_does(options: dict[str, Any]) -> None:
    document = yaml.safe_load((EXAMPLES / "seeds" / "000-resnet50-cifar100-int8-ascend310p3.yaml").read_text())
    document["spec"]["targets"][0]["options"] = options
    with pytest.raises(SpecError) as refused:
        load_resource(document)
    assert any(error.path.startswith("spec.targets[0].options") for error in refused.value.errors)


# Guide 003, section 7.1: "Interface throughputRate: 104.996，104.996x4=419.984即是batch1 310单卡吞吐率", and the same
# for batch 4 (141.738x4=566.952), 8 (167.624x4=670.496), 16 (170.487x4=681.948) and 32 (173.11x4=692.44).
GUIDE_PER_CARD_003 = {1: 419.984, 4: 566.952, 8: 670.496, 16: 681.948, 32: 692.44}


def test_seed_003_measures_the_four_chips_of_the_atlas_300i_card_at_once() -> None:
    (path,) = EXAMPLES.glob("seeds/003-*.yaml")
    resource = load_resource(yaml.safe_load(path.read_text()))
    (target,) = resource.spec.targets
    assert resource.spec.performance.expected is not None
    assert {entry.batch_size: entry.throughput for entry in resource.spec.performance.expected} == GUIDE_PER_CARD_003
    backend = ascend.ASCEND
    assert [backend.device_count(target, stage) for stage in ("calibrate", "compile", "evaluate")] == [1, 1, 4]
    tasks = planned("003")
    evaluations = [task for task in tasks if task["kind"] == "evaluate" and task["config"].get("role") != "reference"]
    assert len(evaluations) == 5
    for task in evaluations:
        *_, accuracy, speed = task["commands"]
        assert accuracy[accuracy.index("--device") + 1] == "0"  # accuracy does not depend on the chips
        assert speed[speed.index("--device") + 1] == "0,1,2,3"
    # The .om files do not depend on how many chips measure them: the compile tasks are those of one device.
    document = yaml.safe_load(path.read_text())
    del document["spec"]["targets"][0]["options"]["devices"]
    one_device = plan(load_resource(document).spec)
    assert ({task.key for task in one_device.tasks if task.kind == "compile"}
            == {task["key"] for task in tasks if task["kind"] == "compile"})


def test_devices_is_a_count_of_chips() -> None:
    (path,) = EXAMPLES.glob("seeds/003-*.yaml")
    document = yaml.safe_load(path.read_text())
    document["spec"]["targets"][0]["options"]["devices"] = 0
    with pytest.raises(SpecError) as refused:
        load_resource(document)
    assert any(error.path == "spec.targets[0].options.devices" for error in refused.value.errors), refused.value.errors
