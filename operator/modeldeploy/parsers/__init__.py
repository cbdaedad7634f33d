"""Parsers for vendor tool output: text in, JSON-ready dict out."""

from __future__ import annotations

from collections.abc import Callable

from modeldeploy.parsers import ais_bench, atc, cnmon, mm_run, npu_smi

PARSERS: dict[str, Callable[[str], dict]] = {
    "ais_bench": ais_bench.parse,
    "atc": atc.parse,
    "npu-smi": npu_smi.parse,
    "mm_run": mm_run.parse,
    "cnmon": cnmon.parse,
}
