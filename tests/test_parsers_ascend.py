"""Parsers for atc, ais_bench and npu-smi console output, against the recorded outputs in docs/ascend.md."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from modeldeploy.parsers import PARSERS, ais_bench, atc, npu_smi

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "ascend"


def fixture(name: str) -> str:
    # Bytes, not read_text(): universal newlines would turn a recorded `\r` into `\n`.
    return (FIXTURES / name).read_bytes().decode("utf-8")


def latency(value: float) -> dict[str, Any]:
    """A latency whose min, max, mean, median and p99 are all `value` (one-run samples)."""
    return {"min": value, "max": value, "mean": value, "median": value, "percentile": value, "percentileRank": 99}


def summary(**fields: Any) -> dict[str, Any]:
    return {
        "npuComputeTimeMs": None,
        "h2dLatencyMs": None,
        "d2hLatencyMs": None,
        "throughput": None,
        "batchSize": None,
        "throughputFormat": None,
    } | fields


ASCEND_PARSERS = {"ais_bench": ais_bench.parse, "atc": atc.parse, "npu-smi": npu_smi.parse}


def test_registry_names_the_ascend_tools() -> None:
    assert ASCEND_PARSERS.items() <= PARSERS.items()


# ais_bench ------------------------------------------------------------------------------------------------------

BS64_SUMMARY = summary(
    npuComputeTimeMs={
        "min": 13.384765625,
        "max": 13.640625,
        "mean": 13.476432624680307,
        "median": 13.4765625,
        "percentile": 13.55142578125,
        "percentileRank": 99,
    },
    throughput=4749.03127425521,
    batchSize=64.0,
    throughputFormat="current",
)


def test_ais_bench_full_dataset_run() -> None:
    assert ais_bench.parse(fixture("ais_bench_310p_bs64_txt.log")) == {
        "ok": True,
        "summaries": [BS64_SUMMARY],
        "throughput": 4749.03127425521,
        "devices": [],
        "batchSize": 64,
        "filesPerBatch": 64,
        "runCount": 782,
        "errors": [],
        "complete": True,
    }


def test_ais_bench_progress_bar_updates_share_a_line_with_the_summary() -> None:
    bar = "Inference array Processing: {:>3}%|{:<10}| {}/782 [00:01<00:00,  3.33it/s]"
    updates = "\r".join(bar.format(percent, "█" * (percent // 10), 782 * percent // 100) for percent in (0, 50, 100))
    recorded = fixture("ais_bench_310p_bs64_txt.log")
    recorded_bar = next(line for line in recorded.split("\n") if line.startswith("Inference array Processing"))
    text = recorded.replace(f"{recorded_bar}\n", f"{updates}\r")
    assert "\n[INFO] -----------------Performance Summary" not in text
    assert ais_bench.parse(text) == ais_bench.parse(recorded)


def test_ais_bench_windows_line_endings() -> None:
    recorded = fixture("ais_bench_multidevice_1_2.log")
    assert ais_bench.parse(recorded.replace("\n", "\r\n")) == ais_bench.parse(recorded)


def test_ais_bench_summary_without_display_all() -> None:
    assert ais_bench.parse(fixture("ais_bench_display_all_summary_false.log")) == {
        "ok": True,
        "summaries": [
            summary(
                npuComputeTimeMs=latency(0.6610000133514404),
                throughput=1512.8592735267011,
                batchSize=1.0,
                throughputFormat="current",
            )
        ],
        "throughput": 1512.8592735267011,
        "devices": [],
        "batchSize": None,
        "filesPerBatch": None,
        "runCount": None,
        "errors": [],
        "complete": True,
    }


def test_ais_bench_missing_closing_line_still_yields_the_numbers() -> None:
    result = ais_bench.parse(fixture("ais_bench_display_all_summary_true_no_closing.log"))
    assert result["summaries"] == [
        summary(
            npuComputeTimeMs=latency(0.6650000214576721),
            h2dLatencyMs=latency(0.05700000002980232),
            d2hLatencyMs=latency(0.014999999664723873),
            throughput=1503.759349974173,
            batchSize=1.0,
            throughputFormat="current",
        )
    ]
    assert result["complete"] is False
    assert result["ok"] is True
    assert result["throughput"] == 1503.759349974173


MULTIDEVICE_DEVICES = [
    {
        "index": 0,
        "device": 1,
        "throughput": 281.38893494131406,
        "startTime": 1676875630.804429,
        "endTime": 1676875630.8303885,
    },
    {
        "index": 1,
        "device": 2,
        "throughput": 276.54867008654026,
        "startTime": 1676875630.8043878,
        "endTime": 1676875630.8326817,
    },
]


def test_ais_bench_multidevice_run() -> None:
    result = ais_bench.parse(fixture("ais_bench_multidevice_1_2.log"))
    assert [each["throughput"] for each in result["summaries"]] == [281.38893494131406, 276.54867008654026]
    assert result["summaries"][1]["npuComputeTimeMs"] == {
        "min": 3.3889999389648438,
        "max": 3.9230000972747803,
        "mean": 3.616000032424927,
        "median": 3.555000066757202,
        "percentile": 3.9134000968933105,
        "percentileRank": 99,
    }
    assert result["devices"] == MULTIDEVICE_DEVICES
    assert result["throughput"] == 557.9376050278543
    assert (result["ok"], result["complete"], result["errors"]) == (True, True, [])


def test_ais_bench_multidevice_lines_with_info_prefix() -> None:
    recorded = fixture("ais_bench_multidevice_1_2.log")
    newer = recorded.replace("\ni:", "\n[INFO] i:")
    assert newer != recorded
    assert ais_bench.parse(newer)["devices"] == MULTIDEVICE_DEVICES


def test_ais_bench_multidevice_without_summary_line_sums_the_devices() -> None:
    text = fixture("ais_bench_multidevice_1_2.log").replace("[INFO] summary throughput:557.9376050278543\n", "")
    assert ais_bench.parse(text)["throughput"] == 281.38893494131406 + 276.54867008654026


def test_ais_bench_multidevice_with_a_device_missing_its_summary_is_not_ok() -> None:
    lines = fixture("ais_bench_multidevice_1_2.log").split("\n")
    result = ais_bench.parse("\n".join(lines[4:]))
    assert len(result["summaries"]) == 1
    assert len(result["devices"]) == 2
    assert result["ok"] is False


def test_ais_bench_runtime_error() -> None:
    assert ais_bench.parse(fixture("ais_bench_runtime_error_ez9999.log")) == {
        "ok": False,
        "summaries": [],
        "throughput": None,
        "devices": [],
        "batchSize": None,
        "filesPerBatch": 1,
        "runCount": 1,
        "errors": [{"code": "EZ9999", "message": "Inner Error!"}],
        "complete": False,
    }


def test_ais_bench_error_after_a_summary_is_not_ok() -> None:
    text = fixture("ais_bench_display_all_summary_false.log") + "[ERROR] check outputs failed\nE19999: Inner Error!\n"
    result = ais_bench.parse(text)
    assert result["errors"] == [
        {"code": None, "message": "check outputs failed"},
        {"code": "E19999", "message": "Inner Error!"},
    ]
    assert result["ok"] is False
    assert result["throughput"] == 1512.8592735267011


def test_ais_infer_legacy_throughput() -> None:
    result = ais_bench.parse(fixture("ais_infer_legacy_310p_bs1.log"))
    assert result["summaries"] == [
        summary(
            npuComputeTimeMs=latency(5.828554630279541),
            h2dLatencyMs=latency(0.2384185791015625),
            d2hLatencyMs=latency(0.08606910705566406),
            throughput=171.5691219234638,
            throughputFormat="legacy",
        )
    ]
    assert (result["ok"], result["throughput"], result["complete"]) == (True, 171.5691219234638, False)


@pytest.mark.parametrize(
    ("line", "throughput", "batch_size", "name"),
    [
        (
            "throughput 1000*batchsize.mean(1)/NPU_compute_time.mean(3.5538000106811523): 281.38893494131406",
            281.38893494131406,
            1.0,
            "current",
        ),
        (
            "throughput 1000*batchsize.mean(64.0)/NPU_compute_time.mean(13.476432624680307): 4749.03127425521",
            4749.03127425521,
            64.0,
            "current",
        ),
        (
            "throughput 1000*batchsize(1)/NPU_compute_time.mean(31.735000610351562): 31.510951302745856",
            31.510951302745856,
            1.0,
            "intermediate",
        ),
        ("throughput (1000*batchsize/NPU_compute_time): 171.5691219234638", 171.5691219234638, None, "legacy"),
    ],
)
def test_ais_bench_throughput_formats(line: str, throughput: float, batch_size: float | None, name: str) -> None:
    text = f"[INFO] -----------------Performance Summary------------------\n[INFO] {line}\n"
    (only,) = ais_bench.parse(text)["summaries"]
    assert (only["throughput"], only["batchSize"], only["throughputFormat"]) == (throughput, batch_size, name)


def test_ais_bench_summary_without_throughput_is_not_ok() -> None:
    lines = fixture("ais_bench_310p_bs64_txt.log").split("\n")
    result = ais_bench.parse("\n".join(line for line in lines if "throughput" not in line))
    assert result["summaries"][0]["npuComputeTimeMs"] == BS64_SUMMARY["npuComputeTimeMs"]
    assert (result["ok"], result["throughput"]) == (False, None)


@pytest.mark.parametrize(
    "name",
    [
        "ais_bench_debug_model_description.log",
        "ais_bench_310p_bs64_followup_accuracy.log",
        "ais_infer_legacy_sumary_json_fragment.txt",
    ],
)
def test_ais_bench_output_without_a_run(name: str) -> None:
    result = ais_bench.parse(fixture(name))
    assert (result["ok"], result["summaries"], result["throughput"], result["errors"]) == (False, [], None, [])


def test_ais_bench_empty_output() -> None:
    assert ais_bench.parse("") == {
        "ok": False,
        "summaries": [],
        "throughput": None,
        "devices": [],
        "batchSize": None,
        "filesPerBatch": None,
        "runCount": None,
        "errors": [],
        "complete": False,
    }


# atc ------------------------------------------------------------------------------------------------------------

SOLUTION = (
    "Check the version of the installation package and reinstall the package. For details, see the operator "
    "specifications."
)


def test_atc_success_with_warnings() -> None:
    slow = "does not hit the high-priority operator information library, which might result in compromised performance."
    ops = ("Slice_29", "Slice_9", "Slice_39", "Slice_19")
    assert atc.parse(fixture("atc_success_w11001.log")) == {
        "ok": True,
        "started": True,
        "errors": [],
        "warnings": [{"code": "W11001", "message": f"Op [{op}] {slow}"} for op in ops],
    }


def test_atc_success_after_the_progress_line() -> None:
    text = "ATC start working now, please wait for a moment.\n...\nATC run success, welcome to the next use.\n"
    assert atc.parse(text) == {"ok": True, "started": True, "errors": [], "warnings": []}


def test_atc_error_with_solution_and_traceback() -> None:
    assert atc.parse(fixture("atc_err_e19010.log")) == {
        "ok": False,
        "started": True,
        "errors": [
            {
                "code": "E19010",
                "message": "No parser is registered for Op [Conv_52, optype [ai.onnx::11::Convx]].",
                "solution": SOLUTION,
                "traceback": [
                    "No parser is registered for Op [Conv_112, optype [ai.onnx::11::Convx]].",
                    "No parser is registered for Op [Conv_172, optype [ai.onnx::11::Convx]].",
                    "No parser is registered for Op [Conv_232, optype [ai.onnx::11::Convx]].",
                    "No parser is registered for Op [Conv_292, optype [ai.onnx::11::Convx]].",
                    (
                        "Model parse to graph failed, graph name:tdnnx."
                        "[FUNC:ModelParseToGraph][FILE:onnx_parser.cc][LINE:905]"
                    ),
                    "ATC model parse ret fail.[FUNC:ParseGraph][FILE:omg.cc][LINE:788]",
                ],
            }
        ],
        "warnings": [],
    }


def test_atc_ez9010_is_e19010_with_another_code() -> None:
    result = atc.parse(fixture("atc_err_e19010.log").replace("E19010:", "EZ9010:"))
    assert [(error["code"], len(error["traceback"])) for error in result["errors"]] == [("EZ9010", 6)]


@pytest.mark.parametrize(
    ("name", "code", "message", "traceback_lines"),
    [
        (
            "atc_err_ez3003.log",
            "EZ3003",
            "No supported Ops kernel and engine are found for [Conv_52], optype [Conv].",
            4,
        ),
        ("atc_err_ez3002.log", "EZ3002", "Optype [Convx] of Ops kernel [AICORE] is unsupported.", 0),
        ("atc_err_ez0501.log", "EZ0501", "IR for Op [Conv_52, optype [Conv]], is not registered.", 4),
    ],
)
def test_atc_operator_errors(name: str, code: str, message: str, traceback_lines: int) -> None:
    result = atc.parse(fixture(name))
    (error,) = result["errors"]
    assert (error["code"], error["message"], error["solution"]) == (code, message, SOLUTION)
    assert len(error["traceback"]) == traceback_lines
    assert all(line.endswith(".") and not line.startswith(" ") for line in error["traceback"])
    assert (result["ok"], result["started"], result["warnings"]) == (False, True, [])


def test_atc_error_without_markers() -> None:
    assert atc.parse(fixture("atc_err_e10001_single_line.log")) == {
        "ok": False,
        "started": False,
        "errors": [
            {
                "code": "E10001",
                "message": "Value [-1] for parameter [input_2] is invalid. Reason: maybe you should set input_shape "
                "to specify its shape.",
                "solution": None,
                "traceback": [],
            }
        ],
        "warnings": [],
    }


def test_atc_parameter_error() -> None:
    (error,) = atc.parse(fixture("atc_err_e10054.log"))["errors"]
    assert error["code"] == "E10054"
    assert error["message"].startswith("The requied parameter [--model] for ATC is empty.")
    assert error["message"].endswith('enclosed by quotation marks ("").')


def test_atc_newer_pid_and_timestamp_prefix_is_dropped() -> None:
    result = atc.parse(fixture("atc_err_e10007_pid_prefix.log"))
    assert result == {
        "ok": False,
        "started": True,
        "errors": [
            {
                "code": "E10007",
                "message": "[--framework] is required. The value must be [0(Caffe) or 1(MindSpore) or 3(TensorFlow) "
                "or 5(Onnx)].",
                "solution": None,
                "traceback": [],
            }
        ],
        "warnings": [],
    }


def test_atc_internal_error_message_continues_on_the_next_line() -> None:
    text = (
        "ATC start working now, please wait for a moment.\n"
        "ATC run failed, Please check the detail log, Try 'atc --help' for more information\n"
        "E19999: Internal Error!\n"
        "An unknown error occurred. Please check the log.\n"
    )
    (error,) = atc.parse(text)["errors"]
    assert error == {
        "code": "E19999",
        "message": "Internal Error! An unknown error occurred. Please check the log.",
        "solution": None,
        "traceback": [],
    }


def test_atc_error_with_empty_reason() -> None:
    text = fixture("atc_err_ez3002.log") + "E19025: Input tensor is invalid. Reason:\n"
    result = atc.parse(text)
    assert [(error["code"], error["message"]) for error in result["errors"]] == [
        ("EZ3002", "Optype [Convx] of Ops kernel [AICORE] is unsupported."),
        ("E19025", "Input tensor is invalid. Reason:"),
    ]


def test_atc_amct_error_has_no_code() -> None:
    assert atc.parse(fixture("atc_err_amct_calibration_size.log")) == {
        "ok": False,
        "started": False,
        "errors": [
            {
                "code": None,
                "message": "AMCT(21177,atc.bin):2023-04-14-14:43:17[utils_acl.cpp:133]input image size[1579014] is not "
                "equal to model input size[3158028]",
                "solution": None,
                "traceback": [],
            }
        ],
        "warnings": [],
    }


def test_atc_killed_before_a_verdict() -> None:
    assert atc.parse("ATC start working now, please wait for a moment.\n...\n") == {
        "ok": False,
        "started": True,
        "errors": [],
        "warnings": [],
    }


def test_atc_empty_output() -> None:
    assert atc.parse("") == {"ok": False, "started": False, "errors": [], "warnings": []}


# npu-smi --------------------------------------------------------------------------------------------------------


def chip(npu: int, chip_index: int, name: str = "310P3", **fields: Any) -> dict[str, Any]:
    return {
        "npu": npu,
        "chip": chip_index,
        "name": name,
        "socVersion": f"Ascend{name}",
        "health": "OK",
        "powerW": None,
        "temperatureC": None,
        "device": None,
        "busId": None,
        "aicorePercent": 0.0,
        "memoryUsedMb": None,
        "memoryTotalMb": None,
        "hbmUsedMb": None,
        "hbmTotalMb": None,
    } | fields


def memory(used: int, total: int) -> dict[str, int]:
    return {"memoryUsedMb": used, "memoryTotalMb": total}


def test_npu_smi_older_driver_without_version() -> None:
    assert npu_smi.parse(fixture("npu_smi_310p3_older_driver.log")) == {
        "version": None,
        "chips": [
            chip(0, 0, powerW=15.8, temperatureC=42.0, device=0, busId="0000:82:00.0", **memory(1074, 21534)),
            chip(1, 0, powerW=15.4, temperatureC=43.0, device=1, busId="0000:89:00.0", **memory(1070, 21534)),
        ],
        "processes": [],
    }


def test_npu_smi_large_npu_id_and_power_na() -> None:
    assert npu_smi.parse(fixture("npu_smi_310p3_22.0.2_npu2144.log")) == {
        "version": "22.0.4",
        "chips": [chip(2144, 0, temperatureC=47.0, device=0, busId="0000:86:00.0", **memory(1807, 21527))],
        "processes": [],
    }


def test_npu_smi_duo_two_chips_per_npu_and_processes() -> None:
    assert npu_smi.parse(fixture("npu_smi_310p3_duo_24.1.log")) == {
        "version": "24.1.0.1",
        "chips": [
            chip(1, 0, temperatureC=62.0, device=0, busId="0000:01:00.0", **memory(16302, 44280)),
            chip(1, 1, temperatureC=62.0, device=1, busId="0000:01:00.0", **memory(15543, 43693)),
            chip(2, 0, temperatureC=61.0, device=2, busId="0000:02:00.0", **memory(35563, 44280)),
            chip(2, 1, temperatureC=61.0, device=3, busId="0000:02:00.0", **memory(35204, 43693)),
        ],
        "processes": [
            {"npu": 1, "chip": 0, "pid": 3277562, "name": "mindie_llm_back", "memoryMb": 14513},
            {"npu": 1, "chip": 1, "pid": 3277565, "name": "mindie_llm_back", "memoryMb": 14513},
            {"npu": 2, "chip": 0, "pid": 3034986, "name": "mindie_llm_back", "memoryMb": 34207},
            {"npu": 2, "chip": 1, "pid": 3034989, "name": "mindie_llm_back", "memoryMb": 33740},
        ],
    }


def test_npu_smi_no_running_processes() -> None:
    assert npu_smi.parse(fixture("npu_smi_310p3_25.5.2.log")) == {
        "version": "25.5.2",
        "chips": [chip(32896, 0, temperatureC=54.0, device=0, busId="0000:00:00.0", **memory(1904, 44213))],
        "processes": [],
    }


def test_npu_smi_910b_hbm_column_and_no_device_column() -> None:
    text = fixture("npu_smi_910b2c_23.0.2.1.log")
    assert text.split("\n")[0].endswith("+ ")
    assert npu_smi.parse(text) == {
        "version": "23.0.2.1",
        "chips": [
            chip(
                0,
                0,
                "910B2C",
                powerW=88.6,
                temperatureC=51.0,
                busId="0000:5A:00.0",
                **memory(0, 0),
                hbmUsedMb=20701,
                hbmTotalMb=65536,
            ),
            chip(
                1,
                0,
                "910B2C",
                powerW=99.6,
                temperatureC=50.0,
                busId="0000:19:00.0",
                **memory(0, 0),
                hbmUsedMb=20687,
                hbmTotalMb=65536,
            ),
        ],
        "processes": [{"npu": 0, "chip": 0, "pid": 124528, "name": "python3.8", "memoryMb": 17400}],
    }


def test_npu_smi_alarm_health_and_bus_id_na() -> None:
    assert npu_smi.parse(fixture("npu_smi_310b4_alarm_rows.log"))["chips"] == [
        chip(0, 0, "310B4", health="Alarm", powerW=0.0, temperatureC=65.0, device=0, **memory(3628, 15609))
    ]


def test_npu_smi_logic_id_table() -> None:
    assert npu_smi.parse(fixture("npu_smi_info_m_25.5.2.log")) == {
        "version": None,
        "chips": [chip(32896, 0, health=None, aicorePercent=None, device=0)],
        "processes": [],
    }


def test_npu_smi_logic_id_table_fills_the_device_of_a_910b_table() -> None:
    info_m = "NPU ID       Chip ID       Chip Logic ID       Chip Name\n0 0 0 Ascend 910B2C\n1 0 1 Ascend 910B2C\n"
    result = npu_smi.parse(fixture("npu_smi_910b2c_23.0.2.1.log") + info_m)
    assert [(each["npu"], each["device"], each["busId"]) for each in result["chips"]] == [
        (0, 0, "0000:5A:00.0"),
        (1, 1, "0000:19:00.0"),
    ]


def test_npu_smi_info_and_logic_id_tables_together_list_each_chip_once() -> None:
    both = npu_smi.parse(fixture("npu_smi_310p3_25.5.2.log") + fixture("npu_smi_info_m_25.5.2.log"))
    assert both == npu_smi.parse(fixture("npu_smi_310p3_25.5.2.log"))


def test_npu_smi_phy_id_column_is_not_a_device() -> None:
    text = (
        "| NPU     Name                  | Health          | Power(W)     Temp(C)           Hugepages-Usage(page) |\n"
        "| Chip  Phy-ID                  | Bus-Id          | AICore(%)    Memory-Usage(MB)  HBM-Usage(MB)         |\n"
        "+===============================+=================+======================================================+\n"
        "| 0       Ascend910             | OK              | 180.2        40                0    / 0              |\n"
        "| 0       0                     | 0000:9D:00.0    | 0            0    / 0          3396 / 65536          |\n"
        "+-------------------------------+-----------------+------------------------------------------------------+\n"
        "| 0       Ascend910             | OK              | -            41                0    / 0              |\n"
        "| 1       1                     | 0000:9F:00.0    | 0            0    / 0          3114 / 65536          |\n"
    )
    chips = npu_smi.parse(text)["chips"]
    assert [(each["chip"], each["name"], each["socVersion"], each["powerW"], each["device"]) for each in chips] == [
        (0, "910", "Ascend910", 180.2, None),
        (1, "910", "Ascend910", None, None),
    ]


def test_npu_smi_empty_output() -> None:
    assert npu_smi.parse("") == {"version": None, "chips": [], "processes": []}


# every parser, any text -----------------------------------------------------------------------------------------

SHAPES: dict[str, set[str]] = {
    "ais_bench": {
        "ok",
        "summaries",
        "throughput",
        "devices",
        "batchSize",
        "filesPerBatch",
        "runCount",
        "errors",
        "complete",
    },
    "atc": {"ok", "started", "errors", "warnings"},
    "npu-smi": {"version", "chips", "processes"},
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
    "\x0b",
    "█",
    "[INFO] ",
    "[ERROR] ",
    "[WARNING]",
    "EZ9999",
    "E10001:",
    "W11001: ",
    "Solution:",
    "TraceBack (most recent call last):",
    "...",
    "-----",
    "+====+",
    "Performance Summary",
    "NPU_compute_time (ms): min = ",
    ", max = ",
    "percentile(99%) = ",
    "throughput ",
    "1000*batchsize.mean(",
    "1000*batchsize(",
    ")/NPU_compute_time.mean(",
    "): ",
    "summary throughput:",
    "i:0 device_1 throughput:",
    " start_time:",
    " end_time:",
    "try get model batchsize:",
    "filesperbatch:",
    " runcount:",
    "npu-smi 1 Version: ",
    "NPU ID  Chip ID  Chip Logic ID  Chip Name",
    "Chip  Device",
    "Chip",
    "Ascend 310P3",
    "310P3",
    "Mcu",
    "NA",
    "-",
    "0",
    "7",
    "3.5",
    "1e999",
    "nan",
    "-1",
    "/",
    "16302/ 44280",
    "9" * 5000,
    "ATC start working now",
    "ATC run success",
    "ATC run failed",
    "[PID: 1] t ",
]


def garbage(seed: int) -> str:
    generator = random.Random(seed)
    return "".join(generator.choices(GARBAGE_TOKENS, k=generator.randint(0, 400)))


def assert_json_ready(tool: str, result: dict[str, Any]) -> None:
    assert set(result) == SHAPES[tool]
    json.dumps(result, allow_nan=False)


@pytest.mark.parametrize("tool", sorted(ASCEND_PARSERS))
def test_parsers_accept_random_text(tool: str) -> None:
    for seed in range(300):
        assert_json_ready(tool, ASCEND_PARSERS[tool](garbage(seed)))


# Python refuses int() of strings longer than 4300 digits; an id that long must not reach it.
HUGE = "9" * 5000

PATHOLOGICAL_TEXTS = [
    "1" * 100_000 + "x",
    "| " + "1 " * 50_000 + "|",
    "min = " + "1" * 100_000,
    "get filesperbatch " + "filesperbatch:1 " * 20_000,
    "-" * 100_000 + "Performance Summary",
    bytes(range(256)).decode("latin-1") * 100,
    f"[INFO] try get model batchsize:{HUGE}\n[INFO] get filesperbatch files0 filesperbatch:{HUGE} runcount:{HUGE}",
    f"i:{HUGE} device_{HUGE} throughput:1.0 start_time:{HUGE} end_time:{HUGE}.{HUGE}",
    (
        "-----Performance Summary-----\n"
        f"NPU_compute_time (ms): min = 1, max = 1, mean = 1, median = 1, percentile({HUGE}%) = 1\n"
        f"throughput 1000*batchsize.mean({HUGE})/NPU_compute_time.mean(1): 1e999"
    ),
    f"| {HUGE}  310P3 | OK | {HUGE} {HUGE} |\n| {HUGE} {HUGE} | NA | {HUGE} {HUGE}/{HUGE} {HUGE} / {HUGE} |",
    f"| {HUGE} {HUGE} | {HUGE} | name | {HUGE} |",
    f"NPU ID  Chip ID  Chip Logic ID  Chip Name\n{HUGE} {HUGE} {HUGE} Ascend 310P3",
]


@pytest.mark.parametrize("tool", sorted(ASCEND_PARSERS))
@pytest.mark.parametrize("text", PATHOLOGICAL_TEXTS, ids=range(len(PATHOLOGICAL_TEXTS)))
def test_parsers_accept_long_and_binary_looking_lines(tool: str, text: str) -> None:
    assert_json_ready(tool, ASCEND_PARSERS[tool](text))


@pytest.mark.parametrize("name", sorted(path.name for path in FIXTURES.iterdir()))
def test_parsers_accept_every_truncation_of_every_fixture(name: str) -> None:
    text = fixture(name)
    cuts = set(range(0, len(text), 7)) | {index for index, character in enumerate(text) if character == "\n"}
    for tool, parse in ASCEND_PARSERS.items():
        for cut in cuts:
            assert_json_ready(tool, parse(text[:cut]))
