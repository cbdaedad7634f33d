"""Parsers for mm_run and cnmon console output, against the recorded outputs in docs/magicmind.md (§3, §5)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from modeldeploy.parsers import PARSERS, cnmon, mm_run

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "magicmind"

MLU_TOOLS = {"mm_run": mm_run.parse, "cnmon": cnmon.parse}


def fixture(name: str) -> str:
    # Bytes, not read_text(): universal newlines would turn a recorded `\r` into `\n`.
    return (FIXTURES / name).read_bytes().decode("utf-8")


def test_registry_names_the_mlu_tools() -> None:
    assert PARSERS["mm_run"] is mm_run.parse
    assert PARSERS["cnmon"] is cnmon.parse


def test_fixtures_keep_the_recorded_trailing_spaces() -> None:
    resnet = fixture("mm_run_0.14_resnet50_onnx_qint8_bs1_s4.log").split("\n")
    assert "devices: 0 " in resnet
    assert "==================== Model Information " in resnet
    assert sum(line.endswith(" ") for name in FIXTURES.iterdir() for line in fixture(name.name).split("\n")) == 61


# mm_run ---------------------------------------------------------------------------------------------------------

OLD = "mm_run_0.14_resnet50_onnx_qint8_bs1_s4.log"
YOLO = "mm_run_0.14_yolov3_caffe_fp16_bs4_negative_pageable.log"
BERT = "mm_run_0.14_bert_tf_fp16_bs4_x4_warnings_abridged.log"
NEW = "mm_run_1x_performance_summary_2_shape_groups.log"
NO_DEVICE = {"computeCapability": None, "clusterNumber": None, "memoryMb": None, "name": None}


def stats(*values: float | None) -> dict[str, float | None]:
    return dict(zip(("min", "max", "mean", "median", "p90", "p95", "p99"), values, strict=True))


def summary(**fields: Any) -> dict[str, Any]:
    latency = dict.fromkeys(("enqueue", "h2d", "compute", "d2h", "total")) | fields.pop("latencyMs", {})
    return {
        "device": None,
        "iterations": None,
        "hostWallTimeS": None,
        "mluComputeTimeS": None,
        "throughput": None,
        "totalBatchSizes": None,
        "iterationsPerSecond": None,
        "latencyMs": latency,
    } | fields


RESNET_SUMMARY = summary(
    device=0,
    iterations=3152,
    hostWallTimeS=2.80002,
    mluComputeTimeS=2.7638,
    throughput=1125.71,
    latencyMs={
        "enqueue": stats(0.058268, 0.15355, 0.059835, 0.059545, 0.060374, 0.061077, 0.066136),
        "h2d": stats(0.058, 0.077, 0.062842, 0.063, 0.065, 0.066, 0.067),
        # The statistics line, not the `MLU Compute Latency (ms): 0.8768  Enqueue: ...` trace averages after it.
        "compute": stats(0.873, 0.891, 0.87684, 0.877, 0.879, 0.879, 0.88),
        "d2h": stats(0.013, 0.028, 0.014877, 0.014, 0.02, 0.021, 0.021),
    },
)
S4 = {"computeCapability": "3.0", "clusterNumber": 6, "memoryMb": 24576, "name": None}


def test_mm_run_old_format_resnet50() -> None:
    assert mm_run.parse(fixture(OLD)) == {
        "ok": True,
        "format": "old",
        "summaries": [RESNET_SUMMARY],
        "shapeGroups": 0,
        "throughput": 1125.71,
        "device": S4,
        "errors": [],
        "warnings": 0,
    }


def test_mm_run_old_format_negative_pageable_memory_and_a_cnnl_warning() -> None:
    text = fixture(YOLO)
    assert "Pageable Memory Access:       -1542368263" in text
    assert mm_run.parse(text) == {
        "ok": True,
        "format": "old",
        "summaries": [
            summary(
                device=0,
                iterations=1000,
                hostWallTimeS=14.1993,
                mluComputeTimeS=14.1869,
                throughput=281.705,
                latencyMs={
                    "enqueue": stats(0.23411, 0.63829, 0.24295, 0.23895, 0.24891, 0.26261, 0.3023),
                    "h2d": stats(0.17, 0.206, 0.17835, 0.178, 0.179, 0.179, 0.184),
                    "compute": stats(10.33, 17.8, 14.187, 14.201, 15.941, 16.351, 17.272),
                    "d2h": stats(0.025, 0.041, 0.027302, 0.026, 0.03, 0.03, 0.032),
                },
            )
        ],
        "shapeGroups": 0,
        "throughput": 281.705,
        "device": S4,
        "errors": [],
        "warnings": 1,
    }


def test_mm_run_old_format_with_runtime_warnings_on_an_eight_cluster_device() -> None:
    result = mm_run.parse(fixture(BERT))
    (only,) = result["summaries"]
    assert (only["device"], only["iterations"], only["hostWallTimeS"], only["mluComputeTimeS"]) == (
        0,
        1000,
        3.21617,
        3.20362,
    )
    assert only["throughput"] == result["throughput"] == 1243.71
    assert only["latencyMs"]["enqueue"] == stats(1.0532, 6.0636, 3.0796, 3.0858, 3.1463, 3.1624, 3.218)
    assert only["latencyMs"]["compute"] == stats(3.113, 4.069, 3.2036, 3.202, 3.238, 3.261, 3.279)
    assert result["device"] == {"computeCapability": "3.0", "clusterNumber": 8, "memoryMb": 24576, "name": None}
    assert (result["ok"], result["format"], result["warnings"], result["errors"]) == (True, "old", 2, [])


NEW_SUMMARY = summary(
    iterations=14466,
    hostWallTimeS=3.00164,
    # Both clocks printed: the dev clock wins over `Total MLU compute time(host clock, s): 1.26222`.
    mluComputeTimeS=0.891635,
    throughput=28916.2,
    totalBatchSizes=86796,
    iterationsPerSecond=4819.36,
    # Shape group 0 only, dev clock lines.
    latencyMs={
        "h2d": stats(0.12, 1.036, 0.35437, 0.312, 0.631, 0.697, 0.785),
        "compute": stats(0.051, 0.079, 0.055361, 0.054, 0.06, 0.066, 0.075),
        "d2h": stats(0.157, 1.207, 0.4014, 0.378, 0.622, 0.683, 0.837),
        "total": stats(0.349, 1.805, 0.81113, 0.788, 1.145, 1.251, 1.377),
    },
)


def test_mm_run_new_format_summary() -> None:
    assert mm_run.parse(fixture(NEW)) == {
        "ok": True,
        "format": "new",
        "summaries": [NEW_SUMMARY],
        "shapeGroups": 2,
        "throughput": 28916.2,
        "device": NO_DEVICE,
        "errors": [],
        "warnings": 0,
    }


def test_mm_run_new_format_host_clock_only() -> None:
    text = "\n".join(line for line in fixture(NEW).split("\n") if "dev clock" not in line)
    (only,) = mm_run.parse(text)["summaries"]
    assert only["mluComputeTimeS"] == 1.26222
    assert only["latencyMs"]["compute"] == stats(0.057, 0.237, 0.08457, 0.08, 0.103, 0.113, 0.14)
    assert only["latencyMs"]["total"] == stats(0.372, 1.884, 0.86524, 0.846, 1.204, 1.309, 1.44)


def test_mm_run_new_format_dev_clock_printed_before_host_clock_still_wins() -> None:
    lines = fixture(NEW).split("\n")
    host = lines.index("Total MLU compute time(host clock, s): 1.26222")
    lines[host], lines[host + 1] = lines[host + 1], lines[host]
    (only,) = mm_run.parse("\n".join(lines))["summaries"]
    assert only["mluComputeTimeS"] == 0.891635


def test_mm_run_new_format_trace_time_none_has_no_latencies() -> None:
    text = "\n".join(line for line in fixture(NEW).split("\n") if "clock" not in line)
    result = mm_run.parse(text)
    (only,) = result["summaries"]
    assert only["latencyMs"] == dict.fromkeys(("enqueue", "h2d", "compute", "d2h", "total"))
    assert (only["mluComputeTimeS"], result["throughput"], result["ok"]) == (None, 28916.2, True)


# The report of one device as mm_run 1.x prints it: one SLOG(INFO) whose prefix line stands alone (§3.5).
REPORT_PREFIX = "2022-06-17 06:38:44.862301: INFO: samples/cc/mm_run/trace.cc:412] \n"


def new_run(*throughputs: str) -> str:
    """A 1.x run: parameters, model, device, log lines, then one report per device with the given throughputs."""
    head = "".join(
        fixture(name)
        for name in (
            "mm_run_1x_parameter_information.log",
            "mm_run_1x_model_information.log",
            "mm_run_1x_device_information.log",
            "mm_run_1x_trace_log_lines.log",
        )
    )
    reports = []
    for device, throughput in enumerate(throughputs):
        utilization = fixture("mm_run_1x_host_occupancy_device_utilization.log")
        report = fixture(NEW).replace("28916.2 with", f"{throughput} with")
        reports.append(REPORT_PREFIX + utilization.replace("Device 0 Utilization", f"Device {device} Utilization"))
        reports.append(report)
    return head + "".join(reports)


def test_mm_run_new_format_whole_run() -> None:
    assert mm_run.parse(new_run("28916.2")) == {
        "ok": True,
        "format": "new",
        "summaries": [NEW_SUMMARY | {"device": 0}],
        "shapeGroups": 2,
        "throughput": 28916.2,
        "device": {"computeCapability": "3.0", "clusterNumber": 8, "memoryMb": 24576, "name": None},
        "errors": [],
        "warnings": 0,
    }


def test_mm_run_new_format_two_devices() -> None:
    result = mm_run.parse(new_run("28916.2", "27000.5"))
    assert [(each["device"], each["throughput"]) for each in result["summaries"]] == [(0, 28916.2), (1, 27000.5)]
    assert result["summaries"][1] == NEW_SUMMARY | {"device": 1, "throughput": 27000.5}
    assert result["throughput"] == 28916.2 + 27000.5
    assert (result["ok"], result["shapeGroups"]) == (True, 2)


def old_run_on(device: int, throughput: str) -> str:
    text = fixture(OLD).replace("Throughput (qps):             1125.71", f"Throughput (qps):             {throughput}")
    return text.replace("Device ID:                    0", f"Device ID:                    {device}").replace(
        "dev0_", f"dev{device}_"
    )


def test_mm_run_old_format_two_devices() -> None:
    result = mm_run.parse(old_run_on(0, "1125.71") + old_run_on(1, "1100.5"))
    assert [(each["device"], each["throughput"]) for each in result["summaries"]] == [(0, 1125.71), (1, 1100.5)]
    assert result["summaries"][0] == RESNET_SUMMARY
    assert result["throughput"] == 1125.71 + 1100.5
    assert result["ok"] is True


def test_mm_run_devices_from_the_device_information_blocks_alone() -> None:
    text = old_run_on(2, "1.5") + old_run_on(3, "2.5")
    text = "\n".join(line for line in text.split("\n") if "_chip_util" not in line)
    assert [each["device"] for each in mm_run.parse(text)["summaries"]] == [2, 3]


def test_mm_run_a_device_without_throughput_is_not_ok() -> None:
    text = new_run("28916.2", "27000.5")
    cut = text.rindex("Throughput (qps)")
    result = mm_run.parse(text[:cut])
    assert [each["throughput"] for each in result["summaries"]] == [28916.2, None]
    assert (result["ok"], result["throughput"]) == (False, None)


WARNINGS = [
    (
        "2022-10-11 02:34:10.284173: WARNING:  magicmind/runtime/executor/context.cc:223] Inferoutputshape return "
        "value is Unavailable, input parameter is invalid. Special op: Unpool, reverse, slice... "
    ),
    (
        "[2022-8-24 0:0:38] [CNNL] [Warning]: [cnnlSetActivationDescriptor_v4] is deprecated and will be removed in "
        "the future release, please use [cnnlSetActivationDescriptor_v5] instead."
    ),
]


def interleave_warnings(text: str) -> str:
    lines = text.split("\n")
    return "\n".join(f"{line}\n{WARNINGS[index % 2]}" for index, line in enumerate(lines))


@pytest.mark.parametrize("name", [OLD, YOLO, NEW])
def test_mm_run_warnings_between_every_line(name: str) -> None:
    recorded = mm_run.parse(fixture(name))
    result = mm_run.parse(interleave_warnings(fixture(name)))
    assert result == recorded | {"warnings": recorded["warnings"] + len(fixture(name).split("\n"))}


def test_mm_run_logger_prefix_before_the_header_and_fields() -> None:
    prefix = "2023-03-24 10:01:12,864: INFO: trace.cc:123] "
    lines = fixture(NEW).split("\n")
    text = "\n".join(prefix + line if line else line for line in lines)
    assert mm_run.parse(text) == mm_run.parse(fixture(NEW))


def test_mm_run_summary_without_its_header_line() -> None:
    text = fixture(OLD).replace("==================== Performance Summary\n", "")
    text = text.replace("==================== Device Utilization Summary", "")
    assert mm_run.parse(text)["summaries"] == [RESNET_SUMMARY]


def test_mm_run_missing_lines_are_null() -> None:
    lines = fixture(OLD).split("\n")
    dropped = ("Enqueue Time", "D2H Latency", "Iterations:", "MLU Compute Time")
    result = mm_run.parse("\n".join(line for line in lines if not line.startswith(dropped)))
    (only,) = result["summaries"]
    assert (only["iterations"], only["mluComputeTimeS"], only["throughput"]) == (None, None, 1125.71)
    assert (only["latencyMs"]["enqueue"], only["latencyMs"]["d2h"]) == (None, None)
    assert only["latencyMs"]["compute"] == RESNET_SUMMARY["latencyMs"]["compute"]
    assert result["ok"] is True


def test_mm_run_statistics_line_with_missing_percentiles() -> None:
    text = "==================== Performance Summary\nH2D Latency (ms): min: 1 max: 2 mean: 1.5 median: 1.4\n"
    (only,) = mm_run.parse(text)["summaries"]
    assert only["latencyMs"]["h2d"] == stats(1.0, 2.0, 1.5, 1.4, None, None, None)


@pytest.mark.parametrize(
    ("line", "throughput", "batches", "per_second"),
    [
        ("Throughput (qps):             1125.71", 1125.71, None, None),
        (
            "Throughput (qps): 28916.2 with total batch sizes: 86796 and 4819.36 iterations/second",
            28916.2,
            86796,
            4819.36,
        ),
        ("Throughput (qps):             1.5e3   ", 1500.0, None, None),
        ("Throughput (qps): 7 with total batch sizes: and so on", 7.0, None, None),
        ("Throughput (qps): -5", None, None, None),
        ("Throughput (qps): 1e999", None, None, None),
        ("Throughput (qps): nan", None, None, None),
        ("Throughput (qps): 12abc", None, None, None),
    ],
)
def test_mm_run_throughput_lines(
    line: str, throughput: float | None, batches: int | None, per_second: float | None
) -> None:
    result = mm_run.parse(f"=================== Performance Summary\n{line}\n")
    (only,) = result["summaries"]
    assert (only["throughput"], only["totalBatchSizes"], only["iterationsPerSecond"]) == (
        throughput,
        batches,
        per_second,
    )
    assert result["ok"] is (throughput is not None)


def test_mm_run_garbage_statistics_are_null() -> None:
    text = (
        "==================== Performance Summary\n"
        "Iterations:                   -3\n"
        "Host Wall Time (s):           -2.8\n"
        "MLU Compute Latency (ms):     min: -1 max: 1e999 mean: nan median: 2 percentile: (90%) -0.5 (95%) x (99%) 3\n"
    )
    (only,) = mm_run.parse(text)["summaries"]
    assert (only["iterations"], only["hostWallTimeS"]) == (None, None)
    assert only["latencyMs"]["compute"] == stats(None, None, None, 2.0, None, None, 3.0)


@pytest.mark.parametrize(
    "line",
    [
        "[ERROR] failed to open model file",
        "2022-06-17 06:38:41.652209: ERROR: samples/cc/mm_run/run.cc:99] Deserialize model failed",
        "2022-06-17 06:38:41.652209: FATAL: samples/cc/common/param.cc:80] duplicated key --devices",
        "[2022-8-24 0:0:38] [CNNL] [Error]: [cnnlConvolutionForward] bad param",
        "F0617 06:38:41.652209 123 run.cc:12] Check failed: status.ok()",
        "Aborted (core dumped)",
        "Segmentation fault (core dumped)",
        "terminate called after throwing an instance of 'std::runtime_error'",
        "Unknown option --batch",
        "MLU ERROR: out of memory",
    ],
)
def test_mm_run_error_lines(line: str) -> None:
    result = mm_run.parse(fixture(OLD) + line + "\n")
    message = re.sub(r"^\d{4}-\S+ \S+: (ERROR|FATAL): \S+\] ", "", line)
    assert result["errors"] == [{"message": message}]
    assert result["ok"] is False
    assert result["summaries"] == [RESNET_SUMMARY]
    assert result["throughput"] == 1125.71


def test_mm_run_usage_synopsis_is_an_error() -> None:
    assert mm_run.parse(fixture("mm_run_0.14_help_synopsis.log")) == {
        "ok": False,
        "format": None,
        "summaries": [],
        "shapeGroups": 0,
        "throughput": None,
        "device": NO_DEVICE,
        "errors": [
            {"message": "mm_run printed its usage synopsis: an unknown or malformed flag (or --help), nothing was run"}
        ],
        "warnings": 0,
    }


def test_mm_run_1x_usage_synopsis_is_an_error() -> None:
    result = mm_run.parse("Synopsis:\n  mm_run --magicmind_model <model>\nOptions:\n  --devices\n")
    assert (result["ok"], len(result["errors"])) == (False, 1)


@pytest.mark.parametrize(
    ("name", "layout", "device"),
    [
        ("mm_run_1x_parameter_information.log", "new", NO_DEVICE),
        ("mm_run_1x_model_information.log", "new", NO_DEVICE),
        (
            "mm_run_1x_device_information.log",
            "new",
            {"computeCapability": "3.0", "clusterNumber": 8, "memoryMb": 24576, "name": None},
        ),
        ("mm_run_1x_host_occupancy_device_utilization.log", "new", NO_DEVICE),
        ("mm_run_1x_trace_log_lines.log", "new", NO_DEVICE),
    ],
)
def test_mm_run_output_without_a_summary(name: str, layout: str, device: dict[str, Any]) -> None:
    assert mm_run.parse(fixture(name)) == {
        "ok": False,
        "format": layout,
        "summaries": [],
        "shapeGroups": 0,
        "throughput": None,
        "device": device,
        "errors": [],
        "warnings": 0,
    }


def test_mm_run_device_name_when_printed() -> None:
    text = "=================== Device Information\nDevice ID: 1\nDevice Name:   MLU370-X8\n"
    assert mm_run.parse(text)["device"]["name"] == "MLU370-X8"


def test_mm_run_model_buffer_names_are_not_the_device_name() -> None:
    assert mm_run.parse(fixture(OLD))["device"]["name"] is None


def test_mm_run_windows_line_endings() -> None:
    for name in (OLD, NEW):
        assert mm_run.parse(fixture(name).replace("\n", "\r\n")) == mm_run.parse(fixture(name))


def test_mm_run_empty_output() -> None:
    assert mm_run.parse("") == {
        "ok": False,
        "format": None,
        "summaries": [],
        "shapeGroups": 0,
        "throughput": None,
        "device": NO_DEVICE,
        "errors": [],
        "warnings": 0,
    }


# cnmon ----------------------------------------------------------------------------------------------------------


def card(number: int, name: str, **fields: Any) -> dict[str, Any]:
    return {
        "card": number,
        "name": name,
        "firmware": "1.1.6",
        "busId": None,
        "utilPercent": 0.0,
        "temperatureC": None,
        "powerW": None,
        "powerCapW": None,
        "memoryUsedMib": 0,
        "memoryTotalMib": None,
        "computeMode": None,
        "arch": "mtp_372",
    } | fields


def x4(number: int, temperature: float, power: float, **fields: Any) -> dict[str, Any]:
    return card(
        number, "MLU370-X4", temperatureC=temperature, powerW=power, powerCapW=150.0, memoryTotalMib=23308, **fields
    )


def x8(number: int, temperature: float, power: float, total: int, **fields: Any) -> dict[str, Any]:
    return card(
        number, "MLU370-X8", temperatureC=temperature, powerW=power, powerCapW=250.0, memoryTotalMib=total, **fields
    )


def test_cnmon_4_20_layout_with_driver_column() -> None:
    assert cnmon.parse(fixture("cnmon_4.20.11_3x_mlu370_x4.log")) == {
        "version": "4.20.11",
        "driver": "4.20.11",
        "cards": [x4(0, 32.0, 30.0), x4(1, 33.0, 25.0), x4(2, 30.0, 26.0)],
        "processes": [],
    }


def test_cnmon_5_10_10_sr_iov_layout() -> None:
    assert cnmon.parse(fixture("cnmon_5.10.10_2x_mlu370_x4_sriov.log")) == {
        "version": "5.10.10",
        "driver": "5.10.10",
        "cards": [
            x4(0, 41.0, 27.0, busId="0000:1B:00.0", computeMode="Exclusive"),
            x4(1, 41.0, 27.0, busId="0000:36:00.0", computeMode="Exclusive"),
        ],
        "processes": [],
    }


def test_cnmon_5_10_13_x8_without_date_or_process_table() -> None:
    assert cnmon.parse(fixture("cnmon_5.10.13_2x_mlu370_x8.log")) == {
        "version": "5.10.13",
        "driver": "5.10.13",
        "cards": [
            x8(0, 32.0, 106.0, 23374, busId="0000:39:00.0", computeMode="Default"),
            x8(1, 39.0, 106.0, 23374, busId="0000:3D:00.0", computeMode="Default"),
        ],
        "processes": [],
    }


def test_cnmon_5_10_22_mode_layout() -> None:
    assert cnmon.parse(fixture("cnmon_5.10.22_2x_mlu370_x8_mode.log")) == {
        "version": "5.10.22",
        "driver": "5.10.22",
        "cards": [
            x8(0, 28.0, 107.0, 20638, busId="0000:13:00.0", computeMode="Default"),
            x8(1, 32.0, 107.0, 20638, busId="0000:16:00.0", computeMode="Default"),
        ],
        "processes": [],
    }


def test_cnmon_table_without_its_heading_rows() -> None:
    text = fixture("cnmon_5.10.10_2x_mlu370_x4_sriov.log")
    headless = "\n".join(line for line in text.split("\n") if "Firmware" not in line and "Pwr:Usage" not in line)
    assert cnmon.parse(headless) == cnmon.parse(text)


def test_cnmon_card_without_its_second_row() -> None:
    text = fixture("cnmon_4.20.11_3x_mlu370_x4.log")
    cut = text.index("|  0%   30C")
    assert cnmon.parse(text[:cut])["cards"][2] == card(2, "MLU370-X4", memoryUsedMib=None)


def test_cnmon_busy_card_with_processes() -> None:
    text = (
        fixture("cnmon_5.10.22_2x_mlu370_x8_mode.log")
        .replace("| 0%                  0 |", "| 87%                 0 |", 1)
        .replace("|  0%   28C        107 W/ 250 W |     0 MiB/", "|  0%   61C        N/A W/ 250 W |  4321 MiB/", 1)
        .replace(
            "|  No running processes found                                                  |",
            "|  0     /   31337   python3 infer.py --model  resnet50.mm     4096 MiB |\n"
            "|  1     0   42      mm_run                                     512 MiB |",
        )
    )
    result = cnmon.parse(text)
    assert result["cards"][0] == x8(
        0, 61.0, 0.0, 20638, busId="0000:13:00.0", computeMode="Default", utilPercent=87.0, memoryUsedMib=4321
    ) | {"powerW": None}
    assert result["processes"] == [
        {"card": 0, "pid": 31337, "command": "python3 infer.py --model  resnet50.mm", "memoryMib": 4096},
        {"card": 1, "pid": 42, "command": "mm_run", "memoryMib": 512},
    ]


def test_cnmon_info_fragment() -> None:
    assert cnmon.parse(fixture("cnmon_info_5.10.26_mlu370_x8_fragment.log")) == {
        "version": None,
        "driver": "5.10.26",
        "cards": [card(0, "MLU370-X8", utilPercent=None, memoryUsedMib=None, firmware="1.1.6", computeMode="Default")],
        "processes": [],
    }


def info_card(number: int, name: str, mode: str) -> str:
    return (
        f"Card {number}\n"
        f"    Firmware                       : v1.1.6\n"
        f"    Product Name                   : {name}\n"
        f"    Driver                         : v5.10.26\n"
        f"    Compute Mode                   : {mode}\n"
    )


def test_cnmon_info_several_cards() -> None:
    text = info_card(0, "MLU370-X8", "Default") + info_card(1, "MLU370-S4", "Exclusive") + info_card(3, "MLU590", "")
    result = cnmon.parse(text)
    assert [
        (each["card"], each["name"], each["arch"], each["firmware"], each["computeMode"]) for each in result["cards"]
    ] == [
        (0, "MLU370-X8", "mtp_372", "1.1.6", "Default"),
        (1, "MLU370-S4", "mtp_372", "1.1.6", "Exclusive"),
        (3, "MLU590", "mtp_592", "1.1.6", None),
    ]
    assert result["driver"] == "5.10.26"


def test_cnmon_info_products_without_card_lines() -> None:
    text = fixture("cnmon_info_5.10.26_mlu370_x8_fragment.log") * 2
    assert [each["card"] for each in cnmon.parse(text)["cards"]] == [0, 1]


@pytest.mark.parametrize(
    ("name", "arch"),
    [
        ("MLU370-X4", "mtp_372"),
        ("MLU370-X8", "mtp_372"),
        ("MLU370-S4", "mtp_372"),
        ("MLU590-H8", "mtp_592"),
        ("MLU590", "mtp_592"),
        ("MLU270-X5K", "mtp_270"),
        ("MLU290-M5", "mtp_290"),
        ("MLU220-M.2", None),
        ("MLU3700", None),
        ("CE3226", None),
    ],
)
def test_cnmon_arch_of_the_card_name(name: str, arch: str | None) -> None:
    text = fixture("cnmon_5.10.13_2x_mlu370_x8.log").replace("MLU370-X8", name)
    assert {each["arch"] for each in cnmon.parse(text)["cards"]} == {arch}


def test_cnmon_empty_output() -> None:
    assert cnmon.parse("") == {"version": None, "driver": None, "cards": [], "processes": []}


# any text -------------------------------------------------------------------------------------------------------

SHAPES = {
    "mm_run": {"ok", "format", "summaries", "shapeGroups", "throughput", "device", "errors", "warnings"},
    "cnmon": {"version", "driver", "cards", "processes"},
}

GARBAGE_TOKENS = [
    "|",
    " ",
    "  ",
    "\r",
    "\n",
    "\r\n",
    "\t",
    "\x00",
    "█",
    "=================== ",
    "Performance Summary",
    "Device Information",
    "Device 1 Utilization Summary",
    "Device ID: ",
    "Cluster Number: ",
    "Total Memory Size: ",
    " (MB)",
    "Iterations: ",
    "Total iterations: ",
    "Host Wall Time (s): ",
    "Host wall time(s): ",
    "Total MLU compute time(dev clock, s): ",
    "Throughput (qps): ",
    " with total batch sizes: ",
    " and ",
    " iterations/second",
    "MLU Compute Latency (ms): ",
    "Input shape group 0: [",
    "MLU Compute (Launch jobs) Summary:",
    "Latency(dev clock, ms): ",
    "min: ",
    " max: ",
    " percentile: (90%) ",
    "(99%) ",
    "Trace averages of 10 runs:",
    "dev0_chip_util(%): ",
    "2022-06-17 06:38:41.652209: INFO: run.cc:1] ",
    ": WARNING:  ",
    "[CNNL] [Warning]: ",
    "[ERROR] ",
    "FATAL",
    "SYNOPSIS",
    "[MMINFO]  ",
    "CNMON v5.10.22",
    "Driver v5.10.22",
    "| 0     /   MLU370-X8    v1.1.6 |",
    "0000:13:00.0",
    " 0% ",
    "32C",
    " 107 W/ 250 W ",
    "0 MiB/ 20638 MiB",
    "N/A",
    "FULL",
    "Default",
    "Card 0",
    "Product Name : ",
    "Firmware : ",
    "Driver : ",
    "MLU370-X4",
    "MLU590",
    ":",
    "0",
    "7",
    "3.5",
    "-1542368263",
    "1e999",
    "nan",
    "9" * 5000,
]


def garbage(seed: int) -> str:
    generator = random.Random(seed)
    return "".join(generator.choices(GARBAGE_TOKENS, k=generator.randint(0, 400)))


def assert_json_ready(tool: str, result: dict[str, Any]) -> None:
    assert set(result) == SHAPES[tool]
    json.dumps(result, allow_nan=False)


@pytest.mark.parametrize("tool", sorted(MLU_TOOLS))
def test_parsers_accept_random_text(tool: str) -> None:
    for seed in range(300):
        assert_json_ready(tool, MLU_TOOLS[tool](garbage(seed)))


HUGE = "9" * 5000

PATHOLOGICAL_TEXTS = [
    "1" * 100_000 + "x",
    "| " + "1 " * 50_000 + "|",
    "| 1 / 1 x" + " " * 50_000 + "y |",
    "Product Name" + " " * 50_000 + "x",
    "=== a" + " " * 100_000 + "b",
    "min: " + " " * 100_000 + "x",
    "Throughput (qps): " + "1" * 100_000,
    "==== Performance Summary\nMLU Compute Latency (ms): min: " + "1" * 100_000,
    bytes(range(256)).decode("latin-1") * 100,
    (
        f"Iterations: {HUGE}\nTotal iterations: {HUGE}\nThroughput (qps): 1 with total batch sizes: {HUGE} and 1e999 "
        "iterations/second"
    ),
    f"=================== Device Information\nDevice ID: {HUGE}\nCluster Number: {HUGE}\nTotal Memory Size: {HUGE} (MB)",
    f"=================== Device {HUGE} Utilization Summary\ndev{HUGE}_chip_util(%): 1\nInput shape group {HUGE}: [",
    f"| {HUGE} / MLU370 v1 | x | {HUGE}% |\n| {HUGE}C {HUGE} W/ {HUGE} W | {HUGE} MiB/ {HUGE} MiB | a b |",
    f"| {HUGE} / {HUGE} python {HUGE} MiB |",
    f"Card {HUGE}\nProduct Name : MLU370-X8",
]


@pytest.mark.parametrize("tool", sorted(MLU_TOOLS))
@pytest.mark.parametrize("text", PATHOLOGICAL_TEXTS, ids=range(len(PATHOLOGICAL_TEXTS)))
def test_parsers_accept_long_and_binary_looking_lines(tool: str, text: str) -> None:
    assert_json_ready(tool, MLU_TOOLS[tool](text))


@pytest.mark.parametrize("name", sorted(path.name for path in FIXTURES.iterdir()))
def test_parsers_accept_every_truncation_of_every_fixture(name: str) -> None:
    text = fixture(name)
    cuts = set(range(0, len(text), 7)) | {index for index, character in enumerate(text) if character == "\n"}
    for tool, parse in MLU_TOOLS.items():
        for cut in cuts:
            assert_json_ready(tool, parse(text[:cut]))


def test_every_recorded_output_is_json_ready() -> None:
    for path in FIXTURES.iterdir():
        for tool, parse in MLU_TOOLS.items():
            assert_json_ready(tool, parse(fixture(path.name)))
