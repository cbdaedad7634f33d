"""Test stand-in for CANN `atc`: validates the flags like the real tool and writes a stand-in `.om` (see om.py).

Behaviour from docs/ascend.md §1: gflags-style flags (§1.2), the `--soc_version` names (§1.3), AIPP configs
(§1.4), the console lines and `<CODE>: <message>` error blocks with the GE error templates (§1.5) and exit
status 255 on failure (§1.6). Only ONNX (`--framework=5`) in build mode (`--mode=0`) is supported.

Fault injection: with `ATC_STANDIN_FAIL=<code>` (e.g. `E19010`, `EZ3003`) the run fails with that code's recorded
output from §1.5 (or a one-line block for codes without a recording). With `ATC_STANDIN_FAIL_ONCE=<path>` as well,
the failure is transient: a run fails only while that file does not exist, and creates it.

`atc --version` prints the emulated CANN release, `ASCEND_STANDIN_CANN_VERSION` (default 8.2.rc1), as gflags prints
a program's version string (`atc version <release>`); docs/ascend.md has no recording of the real output.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx

from ascend_standins import ShapeSpecError, aipp, cann_release, om, parse_shape_spec

FAIL_ENV = "ATC_STANDIN_FAIL"
FAIL_ONCE_ENV = "ATC_STANDIN_FAIL_ONCE"

START = "ATC start working now, please wait for a moment."
SUCCESS = "ATC run success, welcome to the next use."
FAILURE = "ATC run failed, Please check the detail log, Try 'atc --help' for more information"
FAILURE_EXIT_STATUS = 255

SOC_VERSIONS = frozenset({
    "Ascend310", "Ascend710",  # Ascend710 is the old name of 310P (§1.3)
    "Ascend910PremiumA", "Ascend910ProA", "Ascend910A", "Ascend910ProB", "Ascend910B",
    "Ascend310P1", "Ascend310P2", "Ascend310P3", "Ascend310P4", "Ascend310P5", "Ascend310P7",
    "Ascend910B1", "Ascend910B2", "Ascend910B2C", "Ascend910B3", "Ascend910B4", "Ascend910B4_1",
    "Ascend310B1", "Ascend310B2", "Ascend310B3", "Ascend310B4",
    "Ascend910_9391", "Ascend910_9392", "Ascend910_9381", "Ascend910_9382", "Ascend910_9372", "Ascend910_9362",
})
BF16_SOC_PREFIXES = ("Ascend910B", "Ascend910_93", "Ascend310B")  # A2, A3 and 310B (§1.2 --precision_mode)
PRECISION_MODES = (
    "force_fp16", "force_fp32", "cube_fp16in_fp32out", "allow_fp32_to_fp16", "must_keep_origin_dtype",
    "allow_mix_precision", "allow_mix_precision_fp16", "allow_mix_precision_bf16", "allow_fp32_to_bf16",
)
DEFAULT_PRECISION_MODE = "force_fp16"
IMPL_MODES = ("high_performance", "high_precision", "high_precision_for_all", "high_performance_for_all")
OUTPUT_TYPES = ("FP32", "FP16", "UINT8", "INT8")
LOG_LEVELS = ("debug", "info", "warning", "error", "null")
ONNX_INPUT_FORMATS = ("NCHW", "ND", "NCDHW")
AIPP_INPUT_FORMATS = ("NCHW", "NHWC")
FRAMEWORK_CHOICES = "[0(Caffe) or 1(MindSpore) or 3(TensorFlow) or 5(Onnx)]"
ONNX_FRAMEWORK = "5"
AIPP_OUTPUT_CHANNELS = {"RGB888_U8": 3, "XRGB8888_U8": 3, "YUV420SP_U8": 3, "YUV400_U8": 1}
MAX_BATCH_GEARS = 100
FLAGS = (
    "mode", "framework", "model", "output", "input_format", "input_shape", "soc_version", "precision_mode",
    "insert_op_conf", "enable_small_channel", "op_select_implmode", "output_type", "dynamic_batch_size", "log",
)
USAGE = "usage: atc --framework=5 --model=<model.onnx> --output=<prefix> --soc_version=<soc> [--" + " --".join(
    flag + "=<value>" for flag in FLAGS if flag not in ("framework", "model", "output", "soc_version")) + "]"

_SOLUTION_REINSTALL = (
    "        Solution: Check the version of the installation package and reinstall the package. "
    "For details, see the operator specifications.\n        TraceBack (most recent call last):"
)


def _parser_failure(code: str) -> str:
    conv_ops = ("Conv_52", "Conv_112", "Conv_172", "Conv_232", "Conv_292")
    lines = [f"No parser is registered for Op [{name}, optype [ai.onnx::11::Convx]]." for name in conv_ops]
    return "\n".join([
        f"{code}: {lines[0]}",
        _SOLUTION_REINSTALL,
        *(f"        {line}" for line in lines[1:]),
        "        Model parse to graph failed, graph name:tdnnx.[FUNC:ModelParseToGraph][FILE:onnx_parser.cc][LINE:905]",
        "        ATC model parse ret fail.[FUNC:ParseGraph][FILE:omg.cc][LINE:788]",
    ])


def _required_parameter_empty(flag: str) -> str:
    # "requied" is verbatim from the recorded output (§1.5).
    return (f"E10054: The requied parameter [--{flag}] for ATC is empty. Another possible reason is that the value "
            'of some parameter is not enclosed by quotation marks ("").')


# The error blocks recorded from real runs (§1.5), printed after the FAILURE line.
RECORDED_FAILURES: dict[str, str] = {
    "E19010": _parser_failure("E19010"),
    "EZ9010": _parser_failure("EZ9010"),
    "EZ3003": "\n".join([
        "EZ3003: No supported Ops kernel and engine are found for [Conv_52], optype [Conv].",
        _SOLUTION_REINSTALL,
        *(f"        No supported Ops kernel and engine are found for [{name}], optype [Conv]."
          for name in ("Conv_112", "Conv_172", "Conv_232", "Conv_292")),
    ]),
    "EZ3002": "EZ3002: Optype [Convx] of Ops kernel [AICORE] is unsupported.\n" + _SOLUTION_REINSTALL,
    "EZ0501": "\n".join([
        "EZ0501: IR for Op [Conv_52, optype [Conv]], is not registered.",
        _SOLUTION_REINSTALL,
        *(f"        IR for Op [{name}, optype [Conv]], is not registered."
          for name in ("Conv_112", "Conv_172", "Conv_232", "Conv_292")),
    ]),
    "E19025": "E19025: Input tensor is invalid. Reason:",
    "E10001": "E10001: Value [-1] for parameter [input_2] is invalid. Reason: maybe you should set input_shape "
              "to specify its shape.",
    "E10054": _required_parameter_empty("model"),
    "E10007": f"E10007: [--framework] is required. The value must be {FRAMEWORK_CHOICES}.",
    "E19999": "E19999: Internal Error!\n        An unknown error occurred. Please check the log.",
}


class AtcError(Exception):
    """A failed run; `block` is the error-manager text printed after the FAILURE line."""

    def __init__(self, block: str) -> None:
        super().__init__(block)
        self.block = block


def invalid_value(value: object, parameter: str, reason: str) -> AtcError:
    return AtcError(f"E10001: Value [{value}] for parameter [{parameter}] is invalid. Reason: {reason}")


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if any(argument in ("--help", "-h", "--h") for argument in arguments):
        print(USAGE)
        return 0
    if arguments == ["--version"]:
        print(f"atc version {cann_release()}")
        return 0
    print(START, flush=True)
    try:
        injected = os.environ.get(FAIL_ENV)
        if injected and _fails_this_time():
            raise AtcError(RECORDED_FAILURES.get(injected, f"{injected}: Failure injected by {FAIL_ENV}."))
        build(parse_flags(arguments))
    except AtcError as failure:
        print(FAILURE)
        print(failure.block, flush=True)
        return FAILURE_EXIT_STATUS
    print(SUCCESS, flush=True)
    return 0


def _fails_this_time() -> bool:
    marker = os.environ.get(FAIL_ONCE_ENV)
    if not marker:
        return True
    try:
        Path(marker).touch(exist_ok=False)
    except FileExistsError:
        return False
    return True


def parse_flags(arguments: Sequence[str]) -> dict[str, str]:
    """gflags style: `--name=value`, `--name value` (one or two leading dashes)."""
    flags: dict[str, str] = {}
    position = 0
    while position < len(arguments):
        argument = arguments[position]
        if not argument.startswith("-"):
            raise invalid_value(argument, argument, "Only --name=value flags are accepted")
        name, has_value, value = argument.lstrip("-").partition("=")
        if not has_value:
            if position + 1 == len(arguments):
                raise AtcError(f"E10004: Value for --{name} is empty.")
            position += 1
            value = arguments[position]
        if name not in FLAGS:
            raise invalid_value(value, f"--{name}", "The parameter is not supported")
        flags[name] = value
        position += 1
    return flags


def build(flags: Mapping[str, str]) -> Path:
    """Validate every flag, then write `<output>.om`; AtcError on the first problem."""
    if flags.get("mode", "0") != "0":
        raise invalid_value(flags["mode"], "--mode", "The stand-in only builds models (--mode=0)")
    model_path = Path(_required(flags, "model"))
    _check_framework(flags)
    output = _required(flags, "output")
    soc_version = _soc_version(flags)
    input_format = _choice(flags, "input_format", ONNX_INPUT_FORMATS, "NCHW",
                           "The value must be NCHW, ND or NCDHW in ONNX model.")
    precision_mode = _precision_mode(flags, soc_version)
    impl_mode = _optional_choice(flags, "op_select_implmode", IMPL_MODES, _one_of(IMPL_MODES))
    output_type = _optional_choice(flags, "output_type", OUTPUT_TYPES, _one_of(OUTPUT_TYPES))
    _optional_choice(flags, "log", LOG_LEVELS, _one_of(LOG_LEVELS))
    small_channel = _choice(flags, "enable_small_channel", ("0", "1"), "0", "The value must be 0 or 1.") == "1"
    requested_shapes = _input_shape(flags)
    gears = _batch_gears(flags, requested_shapes)
    aipp_ops = _aipp_ops(flags, input_format)
    if small_channel and not (aipp_ops and all(aipp.is_static(op) for op in aipp_ops)):
        raise invalid_value(1, "--enable_small_channel", "--enable_small_channel=1 works only with static AIPP "
                                                         "(--insert_op_conf with aipp_mode: static)")
    source = _load_model(model_path)
    input_shape = _fix_input_shapes(source, requested_shapes)
    if aipp_ops:
        _check_aipp_fits(aipp_ops, source, input_shape)
    info: om.OmInfo = {
        "soc_version": soc_version,
        "input_format": input_format,
        "input_shape": input_shape,
        "precision_mode": precision_mode,
        "dynamic_batch_size": gears,
        "output_type": output_type,
        "op_select_implmode": impl_mode,
        "enable_small_channel": small_channel,
        "aipp": aipp_ops,
        "source_sha256": hashlib.sha256(model_path.read_bytes()).hexdigest(),
    }
    om_path = Path(output + ".om")
    om_path.parent.mkdir(parents=True, exist_ok=True)
    om.write(om_path, source.SerializeToString(), info)
    return om_path


def _required(flags: Mapping[str, str], name: str) -> str:
    value = flags.get(name, "")
    if not value:
        raise AtcError(_required_parameter_empty(name))
    return value


def _check_framework(flags: Mapping[str, str]) -> None:
    framework = flags.get("framework", "")
    if not framework:
        raise AtcError(RECORDED_FAILURES["E10007"])
    if framework not in ("0", "1", "3", ONNX_FRAMEWORK):
        raise invalid_value(framework, "--framework", f"The value must be {FRAMEWORK_CHOICES}.")
    if framework != ONNX_FRAMEWORK:
        raise invalid_value(framework, "--framework", "The stand-in converts only ONNX models (--framework=5).")


def _soc_version(flags: Mapping[str, str]) -> str:
    soc_version = flags.get("soc_version", "")
    if not soc_version:
        raise AtcError("E10007: [--soc_version] is required. The value must be Ascend followed by the chip name "
                       "shown by npu-smi info.")
    if soc_version not in SOC_VERSIONS:
        raise invalid_value(soc_version, "--soc_version", "The SoC version is not supported. The value must be "
                                                          "Ascend followed by the chip name shown by npu-smi info.")
    return soc_version


def _one_of(choices: Sequence[str]) -> str:
    return f"The value must be one of {', '.join(choices)}."


def _optional_choice(flags: Mapping[str, str], name: str, choices: Sequence[str], reason: str) -> str | None:
    value = flags.get(name)
    if value is not None and value not in choices:
        raise invalid_value(value, f"--{name}", reason)
    return value


def _choice(flags: Mapping[str, str], name: str, choices: Sequence[str], default: str, reason: str) -> str:
    return _optional_choice(flags, name, choices, reason) or default


def _precision_mode(flags: Mapping[str, str], soc_version: str) -> str:
    mode = _choice(flags, "precision_mode", PRECISION_MODES, DEFAULT_PRECISION_MODE,
                   _one_of(PRECISION_MODES))
    if "bf16" in mode and not soc_version.startswith(BF16_SOC_PREFIXES):
        raise invalid_value(mode, "--precision_mode", f"bf16 precision modes are not supported on {soc_version}.")
    return mode


def _input_shape(flags: Mapping[str, str]) -> dict[str, list[int]]:
    text = flags.get("input_shape")
    if text is None:
        return {}
    try:
        return parse_shape_spec(text)
    except ShapeSpecError as error:
        raise AtcError(f"E10002: Value [{text}] for parameter --input_shape is invalid. Reason: {error}. The value "
                       'must be formatted as "input_name1:n1,c1,h1,w1;input_name2:n2,c2,h2,w2".') from None


def _batch_gears(flags: Mapping[str, str], shapes: Mapping[str, list[int]]) -> list[int] | None:
    text = flags.get("dynamic_batch_size")
    if text is None:
        for name, dims in shapes.items():
            if -1 in dims:
                raise invalid_value(-1, f"{name}", "-1 in --input_shape needs --dynamic_batch_size")
        return None
    gears = _parse_gears(text)
    for name, dims in shapes.items():
        if -1 in dims[1:]:
            raise AtcError(f"E10018: Value [{','.join(map(str, dims))}] for shape [{name}] is invalid. When "
                           "--dynamic_batch_size is included, only batch size N can be -1 in --input_shape.")
    if not any(dims[:1] == [-1] for dims in shapes.values()):
        raise AtcError("E10031: --dynamic_batch_size is included, but none of the nodes specified in --input_shape "
                       "has a batch size equaling -1.")
    return gears


def _parse_gears(text: str) -> list[int]:
    try:
        gears = [int(gear) for gear in text.split(",")]
    except ValueError:
        raise invalid_value(text, "--dynamic_batch_size", "The value must be batch sizes separated by commas") from None
    if not 2 <= len(gears) <= MAX_BATCH_GEARS:
        raise invalid_value(text, "--dynamic_batch_size", f"The number of gears must be in [2, {MAX_BATCH_GEARS}]")
    if min(gears) < 1 or len(set(gears)) != len(gears):
        raise invalid_value(text, "--dynamic_batch_size", "The gears must be distinct positive integers")
    return gears


def _aipp_ops(flags: Mapping[str, str], input_format: str) -> list[aipp.AippOp] | None:
    path = flags.get("insert_op_conf")
    if path is None:
        return None
    if input_format not in AIPP_INPUT_FORMATS:
        raise invalid_value(input_format, "--input_format", "With --insert_op_conf the value must be NCHW or NHWC.")
    try:
        text = Path(path).read_text()
    except OSError:
        raise invalid_value(path, "--insert_op_conf", "The file does not exist or cannot be read.") from None
    try:
        return aipp.parse(text)
    except aipp.AippConfigError as error:
        raise invalid_value(path, "--insert_op_conf", str(error)) from None


def _load_model(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path))
    except Exception:  # noqa: BLE001 - protobuf's DecodeError, OSError, ...: anything that is no ONNX model
        raise AtcError(f"E10041: Failed to load the model from [{path}].") from None


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {tensor.name for tensor in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initializers]


def _model_dims(value: onnx.ValueInfoProto) -> list[int] | None:
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [dim.dim_value if dim.HasField("dim_value") else -1 for dim in tensor.shape.dim]


def _fix_input_shapes(model: onnx.ModelProto, requested: Mapping[str, list[int]]) -> dict[str, list[int]]:
    """Apply --input_shape to the graph inputs (-1 stays a symbolic batch axis); every input's final shape."""
    inputs = _graph_inputs(model)
    names = {value.name for value in inputs}
    for name in requested:
        if name not in names:
            raise AtcError(f"E10016: Op name [{name}] specified in --input_shape is not found in the model.")
    shapes: dict[str, list[int]] = {}
    for value in inputs:
        current = _model_dims(value)
        dims = requested.get(value.name)
        if dims is None:
            if current is None or -1 in current:
                raise invalid_value(-1, value.name, "maybe you should set input_shape to specify its shape.")
            shapes[value.name] = current
            continue
        if current is not None and len(current) != len(dims):
            raise invalid_value(",".join(map(str, dims)), "--input_shape",
                                f"Input [{value.name}] of the model has {len(current)} dimensions.")
        _set_dims(value, dims)
        shapes[value.name] = dims
    # Shapes recorded for the old input sizes would contradict the new ones; the runtime infers them again.
    del model.graph.value_info[:]
    for output in model.graph.output:
        output.type.tensor_type.ClearField("shape")
    return shapes


def _set_dims(value: onnx.ValueInfoProto, dims: Sequence[int]) -> None:
    shape = value.type.tensor_type.shape
    del shape.dim[:]
    for size in dims:
        dim = shape.dim.add()
        if size == -1:
            dim.dim_param = "batch"
        else:
            dim.dim_value = size


def _check_aipp_fits(ops: Sequence[aipp.AippOp], model: onnx.ModelProto, shapes: Mapping[str, list[int]]) -> None:
    inputs = _graph_inputs(model)
    for op in ops:
        rank = op["related_input_rank"]
        if rank >= len(inputs):
            raise invalid_value(rank, "related_input_rank", f"The model has only {len(inputs)} inputs.")
        dims = shapes[inputs[rank].name]
        if len(dims) != 4 or -1 in dims[1:]:
            raise invalid_value(",".join(map(str, dims)), "--input_shape", "AIPP needs a 4-D NCHW input.")
        if not aipp.is_static(op):
            continue
        channels, model_hw = dims[1], (dims[2], dims[3])
        if AIPP_OUTPUT_CHANNELS[op["input_format"]] != channels:
            raise invalid_value(op["input_format"], "input_format",
                                f"AIPP produces {AIPP_OUTPUT_CHANNELS[op['input_format']]} channels, "
                                f"input [{inputs[rank].name}] has {channels}.")
        output_hw = aipp.output_hw(op, model_hw)
        if output_hw != model_hw:
            raise invalid_value("{},{}".format(*output_hw), "--insert_op_conf",
                                f"The AIPP output size (h,w) does not match input [{inputs[rank].name}] size "
                                "{},{}.".format(*model_hw))
