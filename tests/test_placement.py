"""Where stages run and what they are given: the extended resource per backend device, renamed per installation;
the installation's limits, and the operator's variables over a target's placement.env."""

from __future__ import annotations

import pytest
from modeldeploy.controller.config import OperatorConfig
from modeldeploy.controller.jobs import Owner, job_manifest
from modeldeploy.planner import plan
from modeldeploy.validation import load_resource
from modeldeploy_jobs.limits import LIMITS
from specs import base

OWNER = Owner("cases", "team-a", "uid-1234", 3)


def limits_of(config: OperatorConfig, device: str, stage: str) -> dict[str, object]:
    doc = base()
    doc["spec"]["targets"] = [{"name": "mlu", "backend": "magicmind", "device": device, "precisions": ["int8"],
                               "batchSizes": [4]}]
    spec = load_resource(doc).spec
    task = next(task for task in plan(spec).tasks if task.kind == stage and task.target == "mlu")
    body = job_manifest(OWNER, task, spec.targets[0], task.task_document("s3://a"), "u", spec.artifacts, config)
    return body["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]


def test_mlu_resource_is_named_after_the_card_model() -> None:
    for card in ("MLU370-S4", "MLU370-X4", "MLU370-X8"):
        for stage in ("compile", "evaluate"):
            assert limits_of(OperatorConfig(), card, stage)["cambricon.com/mlu370"] == 1


def test_an_installation_renames_the_resource_for_a_plugin_without_device_types() -> None:
    config = OperatorConfig.model_validate({"resourceNames": {"cambricon.com/mlu370": "cambricon.com/mlu"}})
    limits = limits_of(config, "MLU370-X4", "evaluate")
    assert limits["cambricon.com/mlu"] == 1 and "cambricon.com/mlu370" not in limits


def test_mlu_stages_get_the_neuware_home_their_image_installs_to() -> None:
    doc = base()
    doc["spec"]["targets"] = [{"name": "mlu", "backend": "magicmind", "device": "MLU370-S4", "precisions": ["fp16"],
                               "batchSizes": [1], "placement": {"env": {"MM_CPP_MIN_LOG_LEVEL": "3"}}}]
    spec = load_resource(doc).spec
    task = next(task for task in plan(spec).tasks if task.kind == "evaluate" and task.target == "mlu")
    body = job_manifest(OWNER, task, spec.targets[0], task.task_document("s3://a"), "u", spec.artifacts,
                        OperatorConfig())
    container = body["spec"]["template"]["spec"]["containers"][0]
    values = {item["name"]: item["value"] for item in container["env"] if "value" in item}
    assert values["NEUWARE_HOME"] == "/usr/local/neuware" and values["MM_CPP_MIN_LOG_LEVEL"] == "3"


def test_the_installations_limits_reach_every_stage_and_a_target_cannot_override_the_operators_variables() -> None:
    doc = base()
    doc["spec"]["targets"] = [{"name": "cpu", "backend": "openvino", "precisions": ["fp32"], "batchSizes": [1],
                               "placement": {"env": {"HOME": "/root", "MODELDEPLOY_MAX_MODEL_BYTES": "1000000000000",
                                                     "MODELDEPLOY_MAX_DATASET_FILES": "1000000000",
                                                     "OMP_NUM_THREADS": "2"}}}]
    spec = load_resource(doc).spec
    config = OperatorConfig.model_validate({"limits": {"MAX_MODEL_BYTES": 1 << 30, "MAX_IMAGE_PIXELS": 4096 * 4096}})
    for task in plan(spec).tasks:
        body = job_manifest(OWNER, task, spec.targets[0] if task.target else None, task.task_document("s3://a"), "u",
                            spec.artifacts, config)
        pod = body["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        names = [item["name"] for item in container["env"]]
        assert len(names) == len(set(names)), task.kind
        values = {item["name"]: item.get("value") for item in container["env"]}
        assert values["MODELDEPLOY_MAX_MODEL_BYTES"] == str(1 << 30), task.kind
        assert values["MODELDEPLOY_MAX_IMAGE_PIXELS"] == str(4096 * 4096), task.kind
        assert "MODELDEPLOY_MAX_DATASET_FILES" not in values  # the stage's own default applies
        assert values["HOME"] == "/tmp"
        if task.target:
            assert values["OMP_NUM_THREADS"] == "2"
        assert pod["automountServiceAccountToken"] is False


def test_every_cap_a_stage_reads_can_be_set_through_the_operators_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load_resource(base()).spec
    config = OperatorConfig.model_validate({"limits": {limit.variable.removeprefix("MODELDEPLOY_"): limit.default + 1
                                                       for limit in LIMITS}})
    task = next(task for task in plan(spec).tasks if task.kind == "prepare")
    body = job_manifest(OWNER, task, None, task.task_document("s3://a"), "u", spec.artifacts, config)
    for item in body["spec"]["template"]["spec"]["containers"][0]["env"]:
        if "value" in item:
            monkeypatch.setenv(item["name"], item["value"])
    assert [limit.value() for limit in LIMITS] == [limit.default + 1 for limit in LIMITS]
