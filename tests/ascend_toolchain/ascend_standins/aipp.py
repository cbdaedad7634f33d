"""AIPP for the stand-ins: parse an `--insert_op_conf` file (atc) and apply it to uint8 NHWC input (ais_bench).

Format and arithmetic from docs/ascend.md §1.4: `aipp_op { key : value }` blocks in protobuf text; with AIPP
the model is fed NHWC uint8 of the source image size, which is cropped and normalised per channel as
`(pixel - mean_chn_i - min_chn_i) * var_reci_chn_i` (min/var are fp16 on the device) before it reaches the
model. Colour-space conversion, resize, padding, XRGB/YUV420SP input and dynamic AIPP are accepted like the
real atc does but not emulated at run time (AippUnsupported).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ascend_standins import PrototextError, PrototextValue, as_bool, parse_prototext

AippOp = dict[str, Any]

INPUT_FORMATS = ("YUV420SP_U8", "XRGB8888_U8", "RGB888_U8", "YUV400_U8")
EMULATED_FORMAT_CHANNELS = {"RGB888_U8": 3, "YUV400_U8": 1}
CHANNELS = range(4)
FP16_MAX = 65504.0

_FIELDS: dict[str, tuple[type, Any]] = {
    "aipp_mode": (str, None),
    "related_input_rank": (int, 0),
    "input_format": (str, None),
    "src_image_size_w": (int, 0),
    "src_image_size_h": (int, 0),
    "max_src_image_size": (int, 0),
    "crop": (bool, False),
    "load_start_pos_w": (int, 0),
    "load_start_pos_h": (int, 0),
    "crop_size_w": (int, 0),
    "crop_size_h": (int, 0),
    "resize": (bool, False),
    "resize_output_w": (int, 0),
    "resize_output_h": (int, 0),
    "padding": (bool, False),
    "left_padding_size": (int, 0),
    "right_padding_size": (int, 0),
    "top_padding_size": (int, 0),
    "bottom_padding_size": (int, 0),
    "csc_switch": (bool, False),
    "rbuv_swap_switch": (bool, False),
    "ax_swap_switch": (bool, False),
    "single_line_mode": (bool, False),
    **{f"matrix_r{row}c{column}": (int, 0) for row in range(3) for column in range(3)},
    **{f"input_bias_{index}": (int, 0) for index in range(3)},
    **{f"output_bias_{index}": (int, 0) for index in range(3)},
    **{f"mean_chn_{channel}": (int, 0) for channel in CHANNELS},
    **{f"min_chn_{channel}": (float, 0.0) for channel in CHANNELS},
    **{f"var_reci_chn_{channel}": (float, 1.0) for channel in CHANNELS},
}
_PADDING_SIDES = ("left", "right", "top", "bottom")


class AippConfigError(ValueError):
    """An AIPP config the real atc would reject."""


class AippUnsupported(ValueError):
    """A valid AIPP feature the stand-in runtime does not emulate."""


def parse(text: str) -> list[AippOp]:
    """Every `aipp_op` block, validated, with defaults filled in."""
    try:
        message = parse_prototext(text)
    except PrototextError as error:
        raise AippConfigError(f"The file is not valid prototxt: {error}") from None
    unknown = set(message) - {"aipp_op"}
    if unknown:
        raise AippConfigError(f"Unknown top-level field [{', '.join(sorted(unknown))}]; expected aipp_op blocks")
    blocks = message.get("aipp_op", [])
    if not blocks:
        raise AippConfigError("No aipp_op block is configured")
    ops = [_parse_op(block) for block in blocks]
    ranks = [op["related_input_rank"] for op in ops]
    if len(set(ranks)) != len(ranks):
        raise AippConfigError("Two aipp_op blocks have the same related_input_rank")
    return ops


def _parse_op(block: PrototextValue) -> AippOp:
    if not isinstance(block, dict):
        raise AippConfigError("aipp_op must be a block: aipp_op { ... }")
    op: AippOp = {key: default for key, (_, default) in _FIELDS.items()}
    for key, values in block.items():
        if key not in _FIELDS:
            raise AippConfigError(f"Unknown field [{key}] in aipp_op")
        if len(values) != 1:
            raise AippConfigError(f"Field [{key}] is set more than once")
        op[key] = _convert(key, values[0])
    _validate(op)
    return op


def _convert(key: str, value: PrototextValue) -> Any:
    kind = _FIELDS[key][0]
    try:
        if kind is bool:
            return as_bool(value)
        if kind is int and isinstance(value, int):
            return value
        if kind is float and isinstance(value, int | float):
            return float(value)
        if kind is str and isinstance(value, str):
            return value
    except PrototextError:
        pass
    raise AippConfigError(f"Value [{value}] of field [{key}] is not a valid {kind.__name__}")


def _validate(op: AippOp) -> None:
    if op["aipp_mode"] not in ("static", "dynamic"):
        raise AippConfigError(f"aipp_mode [{op['aipp_mode']}] must be static or dynamic")
    if op["aipp_mode"] == "dynamic":
        if op["max_src_image_size"] <= 0:
            raise AippConfigError("Dynamic AIPP needs max_src_image_size")
        return
    if op["input_format"] not in INPUT_FORMATS:
        raise AippConfigError(f"input_format [{op['input_format']}] must be one of {', '.join(INPUT_FORMATS)}")
    _check_range(op, "src_image_size_w", 2, 4096, zero_allowed=True)
    _check_range(op, "src_image_size_h", 1, 4096, zero_allowed=True)
    for side in _PADDING_SIDES:
        _check_range(op, f"{side}_padding_size", 0, 32)
    for channel in CHANNELS:
        _check_range(op, f"mean_chn_{channel}", 0, 255)
        _check_range(op, f"min_chn_{channel}", 0, 255)
        _check_range(op, f"var_reci_chn_{channel}", -FP16_MAX, FP16_MAX)
    if op["crop"]:
        _check_crop_fits(op)


def _check_range(op: AippOp, key: str, low: float, high: float, zero_allowed: bool = False) -> None:
    value = op[key]
    if not (low <= value <= high or (zero_allowed and value == 0)):
        raise AippConfigError(f"Value [{value}] of field [{key}] is out of range [{low}, {high}]")


def _check_crop_fits(op: AippOp) -> None:
    for axis in ("w", "h"):
        source = op[f"src_image_size_{axis}"]
        end = op[f"load_start_pos_{axis}"] + op[f"crop_size_{axis}"]
        if op[f"load_start_pos_{axis}"] < 0 or (source and end > source):
            raise AippConfigError(f"The crop window along {axis} ends at {end}, outside the source image ({source})")


def is_static(op: Mapping[str, Any]) -> bool:
    return op["aipp_mode"] == "static"


def source_hw(op: Mapping[str, Any], model_hw: tuple[int, int]) -> tuple[int, int]:
    """The image size fed at run time; 0 in the config means the model's size."""
    return op["src_image_size_h"] or model_hw[0], op["src_image_size_w"] or model_hw[1]


def output_hw(op: Mapping[str, Any], model_hw: tuple[int, int]) -> tuple[int, int]:
    """The image size AIPP hands to the model: source, then crop, resize and padding."""
    height, width = source_hw(op, model_hw)
    if op["crop"]:
        height, width = op["crop_size_h"] or model_hw[0], op["crop_size_w"] or model_hw[1]
    if op["resize"]:
        height, width = op["resize_output_h"], op["resize_output_w"]
    if op["padding"]:
        height += op["top_padding_size"] + op["bottom_padding_size"]
        width += op["left_padding_size"] + op["right_padding_size"]
    return height, width


def runtime_input_shape(op: Mapping[str, Any], batch: int, model_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """NHWC shape of the uint8 tensor the device is fed for this input."""
    _check_emulated(op)
    return (batch, *source_hw(op, model_hw), EMULATED_FORMAT_CHANNELS[op["input_format"]])


def apply(op: Mapping[str, Any], images: np.ndarray, model_hw: tuple[int, int]) -> np.ndarray:
    """uint8 NHWC source images → float32 NCHW model input: crop, channel swap, per-channel normalisation."""
    _check_emulated(op)
    if op["crop"]:
        top, left = op["load_start_pos_h"], op["load_start_pos_w"]
        height, width = output_hw(op, model_hw)
        images = images[:, top:top + height, left:left + width, :]
    if op["rbuv_swap_switch"]:
        images = images[..., ::-1]
    channels = images.shape[-1]
    mean = np.array([op[f"mean_chn_{c}"] for c in range(channels)], np.float32)
    minimum = np.array([op[f"min_chn_{c}"] for c in range(channels)], np.float16).astype(np.float32)
    scale = np.array([op[f"var_reci_chn_{c}"] for c in range(channels)], np.float16).astype(np.float32)
    normalised = (images.astype(np.float32) - mean - minimum) * scale
    return np.ascontiguousarray(normalised.transpose(0, 3, 1, 2))


def _check_emulated(op: Mapping[str, Any]) -> None:
    if not is_static(op):
        raise AippUnsupported("dynamic AIPP is not emulated by the stand-in")
    if op["input_format"] not in EMULATED_FORMAT_CHANNELS:
        raise AippUnsupported(f"AIPP input_format {op['input_format']} is not emulated by the stand-in")
    for feature in ("csc_switch", "resize", "padding"):
        if op[feature]:
            raise AippUnsupported(f"AIPP {feature} is not emulated by the stand-in")
