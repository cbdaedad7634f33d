"""The modeldeploy command as a user runs it: exit codes, messages, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import EXAMPLES
from specs import base

MODELDEPLOY = Path(sys.executable).with_name("modeldeploy")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MODELDEPLOY), *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("command", [[], ["validate"], ["plan"], ["crd"]])
def test_every_command_has_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0
    assert "usage: modeldeploy" in result.stdout and len(result.stdout.splitlines()) > 4


def test_no_command_is_a_usage_error() -> None:
    result = run()
    assert result.returncode == 2 and "usage:" in result.stderr and "Traceback" not in result.stderr


def test_validate_reports_every_error_with_its_field_and_exits_2(tmp_path: Path) -> None:
    doc = base()
    doc["spec"]["targets"][0]["batchSizes"] = [0]
    doc["spec"]["targets"][1]["precisions"] = ["fp32", "bf16"]
    del doc["spec"]["source"]["weights"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = run("validate", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert result.stderr.splitlines() == [
        (
            f"{path}: spec.source.weights: a pytorch source needs weights (a state_dict), "
            "or randomWeights: true for speed-only runs"
        ),
        f"{path}: spec.targets[0].batchSizes[0]: must be at least 1 (got 0)",
        f"{path}: spec.targets[1].precisions: backend onnxruntime accepts precisions fp32, int8",
    ]


def test_validate_checks_every_file_and_every_document(tmp_path: Path) -> None:
    good, bad = base(), base()
    bad["spec"]["targets"][0]["backend"] = "tensorrt"
    both = tmp_path / "both.yaml"
    both.write_text(yaml.safe_dump_all([good, bad]))
    result = run("validate", str(EXAMPLES / "quickstart.yaml"), str(both))
    assert result.returncode == 2
    assert "quickstart.yaml: ModelDeployment quickstart is valid" in result.stdout
    assert f"{both}: document 2: spec.targets[0].backend: unknown backend 'tensorrt'" in result.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("spec: [unclosed\n", ":2:1: invalid YAML"),
        ("", ": no YAML document in the file"),
        ("- just\n- a list\n", ": (document): a ModelDeployment must be a mapping"),
    ],
)
def test_unreadable_documents(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(content)
    result = run("validate", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert expected in result.stderr and str(path) in result.stderr


def test_missing_file(tmp_path: Path) -> None:
    result = run("plan", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "nope.yaml: cannot read: No such file or directory" in result.stderr


def test_plan_table_shows_every_task_with_its_key() -> None:
    result = run("plan", str(EXAMPLES / "quickstart.yaml"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "ModelDeployment quickstart: 2 target(s), 12 cell(s), 30 task(s)"
    assert lines[2].split() == ["STAGE", "TASK", "KEY", "DEVICE", "INPUTS"]
    rows = lines[3:]
    assert len(rows) == 30
    assert rows[0].split()[:2] == ["convert", "convert"] and rows[-1].split()[:2] == ["report", "report"]
    assert any("compile openvino/int8/bs32" in row and "model=calibrate openvino/int8" in row for row in rows)


def test_plan_json_is_the_dag() -> None:
    result = run("plan", "--output", "json", str(EXAMPLES / "quickstart.yaml"))
    assert result.returncode == 0
    document = json.loads(result.stdout)
    assert document["name"] == "quickstart"
    keys = [task["key"] for task in document["tasks"]]
    assert len(keys) == len(set(keys)) == 30
    for index, task in enumerate(document["tasks"]):
        assert set(task["inputs"].values()) <= set(keys[:index])


def test_plan_marks_device_stages() -> None:
    result = run("plan", str(EXAMPLES / "seeds" / "000-resnet50-cifar100-int8-ascend310p3.yaml"))
    evaluate = next(line for line in result.stdout.splitlines() if line.startswith("evaluate"))
    compile_ = next(line for line in result.stdout.splitlines() if line.startswith("compile"))
    assert "Ascend310P3" in evaluate and "Ascend310P3" not in compile_


def test_plan_of_an_invalid_spec_exits_2(tmp_path: Path) -> None:
    doc = base()
    doc["spec"]["targets"][2]["device"] = "Ascend999"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = run("plan", str(path))
    assert result.returncode == 2 and result.stdout == ""
    assert "spec.targets[2].device: unknown ascend device 'Ascend999'" in result.stderr


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0 and result.stdout.startswith("modeldeploy 0.")
