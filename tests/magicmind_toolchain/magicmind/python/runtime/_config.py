"""`mm.BuilderConfig` (docs/magicmind.md §1.4): JSON keys merged by `parse_from_string`/`parse_from_file`.

Every merge is validated as a whole; an invalid one returns an INVALID_ARGUMENT Status and leaves the config as
it was. Accepted keys are those of §1.4 except `custom_ranges` (fake calibration, not emulated); unknown keys,
unknown values and wrongly typed values are errors. Defaults [assumption where docs/magicmind.md has none]:
precision force_float32, per_tensor weights, symmetric activations, computation_preference auto, not shape
mutable, archs `["mtp_372", "tp_322", "mtp_592"]` (python_common's list for "unset", §7).
`cross_compile_toolchain_path`, `debug_config`, `compute_determinism`, `opt_config` and
`computation_preference` are checked and recorded but change nothing in the stand-in's computation.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from magicmind_standins.engine import LAYOUTS
from magicmind_standins.mm_file import DimRange, LayoutConversion, Normalization
from magicmind_standins.quantize import QuantSettings

from magicmind.python.runtime._status import Status, invalid

ARCHS = ("mtp_372", "mtp_592", "mtp_270", "mtp_290", "mtp_220", "tp_322", "tp_520")  # §7
DEFAULT_ARCHS = ["mtp_372", "tp_322", "mtp_592"]
PRECISION_MODES = (
    "force_float32", "force_float16", "qint8_mixed_float16", "qint8_mixed_float32", "qint16_mixed_float16",
    "qint16_mixed_float32",
)
WEIGHT_QUANT_GRANULARITIES = ("per_tensor", "per_axis")
ACTIVATION_QUANT_ALGOS = ("symmetric", "asymmetric")
COMPUTATION_PREFERENCES = ("auto", "fast", "high_precision")
OPT_CONFIG_KEYS = ("type64to32_conversion", "conv_scale_fold", "auto_fusion_enable")
UNEMULATED_KEYS = {"custom_ranges": "fake calibration (custom_ranges) is not emulated by the stand-in"}


class ConfigError(ValueError):
    """An invalid builder config; the message names the key."""


@dataclass(frozen=True)
class BuildSettings:
    """A validated config; input/output indexes are ints, dim_range and layouts as mm_file stores them."""

    archs: list[str] = field(default_factory=lambda: list(DEFAULT_ARCHS))
    cluster_num: dict[str, list[int]] = field(default_factory=dict)
    precision_mode: str = "force_float32"
    weight_quant_granularity: str = "per_tensor"
    activation_quant_algo: str = "symmetric"
    computation_preference: str = "auto"
    graph_shape_mutable: bool = False
    dim_range: dict[int, DimRange] = field(default_factory=dict)
    input_layouts: dict[int, LayoutConversion] = field(default_factory=dict)
    output_layouts: dict[int, LayoutConversion] = field(default_factory=dict)
    insert_bn: dict[int, Normalization] = field(default_factory=dict)

    @property
    def quantized(self) -> bool:
        return self.precision_mode.startswith("qint")

    def quant_settings(self, algorithm: str) -> QuantSettings:
        return QuantSettings(self.precision_mode, algorithm, self.weight_quant_granularity == "per_axis",
                             self.activation_quant_algo == "symmetric")


class BuilderConfig:
    def __init__(self) -> None:
        self._values: dict[str, Any] = {}
        self._settings = BuildSettings()

    def parse_from_string(self, text: str) -> Status:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            return invalid(f"the builder config is not JSON: {error}")
        return self._merge(values)

    def parse_from_file(self, path: str | Path) -> Status:
        """Merge a JSON file; its keys override what was configured before (§1.4)."""
        try:
            text = Path(path).read_text()
        except OSError as error:
            return invalid(f"cannot read the builder config file {path}: {error}")
        return self.parse_from_string(text)

    @property
    def mlu_archs(self) -> list[str]:
        return list(self._settings.archs)

    @mlu_archs.setter
    def mlu_archs(self, archs: list[str]) -> None:
        """ValueError for an unknown arch (an attribute cannot return a Status)."""
        status = self._merge({"archs": list(archs)})
        if not status.ok():
            raise ValueError(status.message())

    def _merge(self, values: object) -> Status:
        if not isinstance(values, dict):
            return invalid("the builder config must be a JSON object")
        merged = _deep_merge(self._values, values)
        try:
            settings = parse_settings(merged)
        except ConfigError as error:
            return invalid(str(error))
        self._values, self._settings = merged, settings
        return Status()


def _deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_settings(values: Mapping[str, Any]) -> BuildSettings:
    for key in values:
        if key in UNEMULATED_KEYS:
            raise ConfigError(UNEMULATED_KEYS[key])
        if key not in KEY_CHECKS:
            raise ConfigError(f"unknown builder config key {key!r}; known: {', '.join(KEY_CHECKS)}")
        KEY_CHECKS[key](values[key])
    precision = values.get("precision_config", {})
    defaults = BuildSettings()
    archs, cluster_num = _archs(values["archs"]) if "archs" in values else (defaults.archs, defaults.cluster_num)
    return BuildSettings(
        archs=archs,
        cluster_num=cluster_num,
        precision_mode=precision.get("precision_mode", defaults.precision_mode),
        weight_quant_granularity=precision.get("weight_quant_granularity", defaults.weight_quant_granularity),
        activation_quant_algo=precision.get("activation_quant_algo", defaults.activation_quant_algo),
        computation_preference=values.get("computation_preference", defaults.computation_preference),
        graph_shape_mutable=values.get("graph_shape_mutable", defaults.graph_shape_mutable),
        dim_range={int(index): DimRange(min=entry["min"], max=entry["max"])
                   for index, entry in values.get("dim_range", {}).items()},
        input_layouts=_layouts(values.get("convert_input_layout", {})),
        output_layouts=_layouts(values.get("convert_output_layout", {})),
        insert_bn={int(index): Normalization(mean=[float(mean) for mean in entry["mean"]],
                                             var=[float(var) for var in entry["var"]])
                   for index, entry in values.get("insert_bn_before_firstnode", {}).items()},
    )


def _archs(entries: object) -> tuple[list[str], dict[str, list[int]]]:
    """`["mtp_372"]` or `[{"mtp_372": [6, 8]}]` (§1.4) → the arch names and their cluster numbers."""
    if not isinstance(entries, list) or not entries:
        raise ConfigError("archs must be a non-empty list")
    archs: list[str] = []
    cluster_num: dict[str, list[int]] = {}
    for entry in entries:
        if isinstance(entry, dict) and len(entry) == 1:
            (arch, clusters), = entry.items()
            if not _is_int_list(clusters) or min(clusters, default=0) < 1:
                raise ConfigError(f"the cluster numbers of arch {arch} must be a list of positive integers")
            cluster_num[arch] = clusters
        elif isinstance(entry, str):
            arch = entry
        else:
            raise ConfigError(f'archs entry {entry!r} is neither an arch name nor {{"<arch>": [clusters]}}')
        _choice("archs", arch, ARCHS)
        archs.append(arch)
    return archs, cluster_num


def _check_archs(value: object) -> None:
    _archs(value)


def _checked_by_caller(value: object) -> None:
    """A field `_object` accepts whose value the caller checks with its siblings."""


def _check_precision(value: object) -> None:
    _object("precision_config", value, {
        "precision_mode": _choice_check("precision_config.precision_mode", PRECISION_MODES),
        "weight_quant_granularity": _choice_check(
            "precision_config.weight_quant_granularity", WEIGHT_QUANT_GRANULARITIES),
        "activation_quant_algo": _choice_check("precision_config.activation_quant_algo", ACTIVATION_QUANT_ALGOS),
    })


def _check_dim_range(value: object) -> None:
    for index, entry in _indexed("dim_range", value).items():
        _object(f"dim_range.{index}", entry, {"min": _checked_by_caller, "max": _checked_by_caller},
                required=("min", "max"))
        low, high = entry["min"], entry["max"]
        if not (_is_int_list(low) and _is_int_list(high) and len(low) == len(high)):
            raise ConfigError(f"dim_range.{index} min and max must be integer lists of the same length")
        if any(not 1 <= lo <= hi for lo, hi in zip(low, high)):
            raise ConfigError(f"dim_range.{index} needs 1 <= min <= max in every dim, got min {low} max {high}")


def _layouts(value: Mapping[str, Any]) -> dict[int, LayoutConversion]:
    return {int(index): LayoutConversion(src=entry["src"], dst=entry["dst"]) for index, entry in value.items()}


def _layout_check(key: str) -> Callable[[object], None]:
    def check(value: object) -> None:
        for index, entry in _indexed(key, value).items():
            _object(f"{key}.{index}", entry, {
                "src": _choice_check(f"{key}.{index}.src", LAYOUTS),
                "dst": _choice_check(f"{key}.{index}.dst", LAYOUTS),
            }, required=("src", "dst"))
            if sorted(entry["src"]) != sorted(entry["dst"]):
                raise ConfigError(f"{key}.{index} cannot convert {entry['src']} to {entry['dst']}")

    return check


def _check_insert_bn(value: object) -> None:
    key = "insert_bn_before_firstnode"
    for index, entry in _indexed(key, value).items():
        _object(f"{key}.{index}", entry, {"mean": _checked_by_caller, "var": _checked_by_caller},
                required=("mean", "var"))
        mean, var = entry["mean"], entry["var"]
        if not (_is_number_list(mean) and _is_number_list(var) and len(mean) == len(var) and mean):
            raise ConfigError(f"{key}.{index} mean and var must be number lists of the same length")
        if min(var) <= 0:
            raise ConfigError(f"{key}.{index} var must be positive (var = std²), got {var}")


def _check_opt_config(value: object) -> None:
    _object("opt_config", value, {key: _bool_check(f"opt_config.{key}") for key in OPT_CONFIG_KEYS})


def _bool_check(key: str) -> Callable[[object], None]:
    def check(value: object) -> None:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")

    return check


def _type_check(key: str, expected: type) -> Callable[[object], None]:
    def check(value: object) -> None:
        if not isinstance(value, expected):
            raise ConfigError(f"{key} must be a JSON {expected.__name__}, got {value!r}")

    return check


def _object(key: str, value: object, fields: Mapping[str, Callable[[object], None]],
            required: tuple[str, ...] = ()) -> None:
    if not isinstance(value, dict):
        raise ConfigError(f"{key} must be a JSON object, got {value!r}")
    for name, field_value in value.items():
        if name not in fields:
            raise ConfigError(f"unknown key {name!r} in {key}; known: {', '.join(fields)}")
        fields[name](field_value)
    missing = [name for name in required if name not in value]
    if missing:
        raise ConfigError(f"{key} lacks {', '.join(missing)}")


def _indexed(key: str, value: object) -> dict[str, Any]:
    """A `{"0": ..., "1": ...}` object keyed by input or output index."""
    if not isinstance(value, dict):
        raise ConfigError(f"{key} must be a JSON object keyed by tensor index")
    for index in value:
        if not index.isdigit():
            raise ConfigError(f"{key} key {index!r} is not a tensor index such as \"0\"")
    return value


def _choice(key: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} {value!r} is not one of {', '.join(choices)}")


def _choice_check(key: str, choices: tuple[str, ...]) -> Callable[[object], None]:
    def check(value: object) -> None:
        _choice(key, value, choices)

    return check


def _is_int_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, int) and not isinstance(item, bool) for item in value)


def _is_number_list(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(item, int | float) and not isinstance(item, bool) for item in value)


KEY_CHECKS: dict[str, Callable[[object], None]] = {
    "archs": _check_archs,
    "precision_config": _check_precision,
    "graph_shape_mutable": _bool_check("graph_shape_mutable"),
    "dim_range": _check_dim_range,
    "opt_config": _check_opt_config,
    "convert_input_layout": _layout_check("convert_input_layout"),
    "convert_output_layout": _layout_check("convert_output_layout"),
    "insert_bn_before_firstnode": _check_insert_bn,
    "computation_preference": _choice_check("computation_preference", COMPUTATION_PREFERENCES),
    "cross_compile_toolchain_path": _type_check("cross_compile_toolchain_path", str),
    "debug_config": _type_check("debug_config", dict),
    "compute_determinism": _bool_check("compute_determinism"),
}
