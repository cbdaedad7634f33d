"""Test-only stand-ins for the Huawei Ascend command-line tools (never shipped).

`atc`, `amct_onnx`, `npu-smi` and `python3 -m ais_bench` are emulated on the CPU with onnxruntime so the
pipeline can be tested without an NPU; flags, console output, error texts, exit codes and file naming follow
docs/ascend.md (§1 atc, §2 amct_onnx, §3 ais_bench, §4 npu-smi).

This module holds the two text formats more than one tool reads: the `name:d0,d1;name2:...` shape lists of
`atc --input_shape` (§1.2) and `amct_onnx --input_shape` (§2.1), and protobuf text format, used by AIPP
configs (§1.4) and AMCT's quant.cfg (§2.2), and the emulated releases: CANN's, `ASCEND_STANDIN_CANN_VERSION`
(default 8.2.rc1, what `atc --version` reports), and the driver's, `ASCEND_STANDIN_DRIVER_VERSION` (default
24.1.0.1, what `npu-smi info` reports). The ais_bench stand-in's release is its metadata's (ais_bench-*.dist-info).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TypeAlias

Scalar: TypeAlias = str | int | float
PrototextValue: TypeAlias = "Scalar | PrototextMessage"
PrototextMessage: TypeAlias = dict[str, list[PrototextValue]]


CANN_VERSION_ENV = "ASCEND_STANDIN_CANN_VERSION"
DEFAULT_CANN_VERSION = "8.2.rc1"
DRIVER_VERSION_ENV = "ASCEND_STANDIN_DRIVER_VERSION"
DEFAULT_DRIVER_VERSION = "24.1.0.1"


def cann_release() -> str:
    return os.environ.get(CANN_VERSION_ENV) or DEFAULT_CANN_VERSION


def driver_release() -> str:
    return os.environ.get(DRIVER_VERSION_ENV) or DEFAULT_DRIVER_VERSION


class ShapeSpecError(ValueError):
    """A malformed `name:d0,d1,...;...` list; the message is the reason."""


def parse_shape_spec(text: str) -> dict[str, list[int]]:
    """`"a:1,3,224,224;b:1,-1"` → `{"a": [1, 3, 224, 224], "b": [1, -1]}`; `"s:"` is a scalar input."""
    shapes: dict[str, list[int]] = {}
    for entry in filter(None, (part.strip() for part in text.split(";"))):
        name, colon, dims = entry.rpartition(":")
        if not colon or not name:
            raise ShapeSpecError(f'Entry [{entry}] does not have the form "name:dims"')
        if name in shapes:
            raise ShapeSpecError(f"Input [{name}] is given more than once")
        shapes[name] = [_parse_dim(dim, entry) for dim in dims.split(",")] if dims.strip() else []
    if not shapes:
        raise ShapeSpecError("No input is given")
    return shapes


def _parse_dim(text: str, entry: str) -> int:
    try:
        dim = int(text.strip())
    except ValueError:
        raise ShapeSpecError(f"Dimension [{text}] of [{entry}] is not an integer") from None
    if dim == 0 or dim < -1:
        raise ShapeSpecError(f"Dimension [{dim}] of [{entry}] must be positive or -1")
    return dim


class PrototextError(ValueError):
    """Text that is not valid protobuf text format; the message says where."""


@dataclass(frozen=True)
class _Token:
    kind: str  # "punct", "string", "word"
    text: str
    line: int


_TOKEN = re.compile(
    r"""(?P<space>\s+)|(?P<comment>\#[^\n]*)|(?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')"""
    r"""|(?P<word>[A-Za-z0-9_.+\-]+)|(?P<punct>[:{}\[\],;])"""
)


def parse_prototext(text: str) -> PrototextMessage:
    """Protobuf text format → `{field: [values]}` (every field repeated); nested messages become dicts.

    Both `skip_layers: ["a", "b"]` and repeated `skip_layers: "a"` lines give `{"skip_layers": ["a", "b"]}`.
    """
    tokens = _tokenize(text)
    message, position = _parse_message(tokens, 0, closing=None)
    if position != len(tokens):
        raise PrototextError(f"line {tokens[position].line}: unexpected [{tokens[position].text}]")
    return message


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position, line = 0, 1
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise PrototextError(f"line {line}: unexpected character [{text[position]}]")
        kind = match.lastgroup or ""
        if kind in ("word", "string", "punct"):
            tokens.append(_Token(kind, match.group(), line))
        line += match.group().count("\n")
        position = match.end()
    return tokens


def _parse_message(tokens: list[_Token], position: int, closing: str | None) -> tuple[PrototextMessage, int]:
    message: PrototextMessage = {}
    while position < len(tokens) and tokens[position].text != closing:
        name = tokens[position]
        if name.kind != "word":
            raise PrototextError(f"line {name.line}: expected a field name, got [{name.text}]")
        position += 1
        if _peek(tokens, position) == ":":
            position += 1
        values, position = _parse_field_value(tokens, position, name)
        message.setdefault(name.text, []).extend(values)
        if _peek(tokens, position) in (",", ";"):
            position += 1
    if closing is not None:
        if position == len(tokens):
            raise PrototextError(f"missing [{closing}] at the end of the text")
        position += 1
    return message, position


def _parse_field_value(tokens: list[_Token], position: int, name: _Token) -> tuple[list[PrototextValue], int]:
    if position == len(tokens):
        raise PrototextError(f"line {name.line}: field [{name.text}] has no value")
    token = tokens[position]
    if token.text == "{":
        nested, position = _parse_message(tokens, position + 1, closing="}")
        return [nested], position
    if token.text == "[":
        return _parse_list(tokens, position + 1, name)
    return [_scalar(token)], position + 1


def _parse_list(tokens: list[_Token], position: int, name: _Token) -> tuple[list[PrototextValue], int]:
    values: list[PrototextValue] = []
    while _peek(tokens, position) != "]":
        if position == len(tokens):
            raise PrototextError(f"line {name.line}: list of [{name.text}] is not closed")
        value, position = _parse_field_value(tokens, position, name)
        values.extend(value)
        if _peek(tokens, position) == ",":
            position += 1
    return values, position + 1


def _peek(tokens: list[_Token], position: int) -> str | None:
    return tokens[position].text if position < len(tokens) else None


def _scalar(token: _Token) -> Scalar:
    if token.kind == "string":
        return token.text[1:-1]
    if token.kind != "word":
        raise PrototextError(f"line {token.line}: expected a value, got [{token.text}]")
    for convert in (int, float):
        try:
            return convert(token.text)
        except ValueError:
            pass
    return token.text


def as_bool(value: PrototextValue) -> bool:
    """A protobuf text bool: true/false, t/f or 1/0 (any case)."""
    text = str(value).lower()
    if text in ("true", "t", "1"):
        return True
    if text in ("false", "f", "0"):
        return False
    raise PrototextError(f"[{value}] is not a bool")
