"""The report stage: gate every cell's accuracy and speed, pick the fastest passing cell per target, write the report.

Each cell is compared with the figures the spec declares for it (accuracy.expected, else accuracy.declared, and
performance.expected) as ratios; the speed gate fails a cell below performance.minRatio of its expected throughput,
and with performance.int8MustBeFaster an int8 cell not faster than its float cells of the same target and batch.

Outputs `results.json` (the cells and best cells exactly as the resource status holds them) and
`report.html`, one self-contained page with inline SVG charts drawn here, with no script and no
external asset, so it can be opened straight from the store.
"""

from __future__ import annotations

import html
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from modeldeploy.spec import (
    FLOAT_PRECISIONS,
    Accuracy,
    BestCell,
    CellResult,
    Figures,
    Latency,
    Performance,
    expected_figures,
)
from pydantic import BaseModel

from modeldeploy_jobs.stage import StageContext, StageError, StageInput, StageReason, StageResult

GateStatus = Literal["Passed", "Failed", "NotEvaluated"]

# 0.80 - 0.79 is 0.010000000000000009: a drop exactly at maxDrop must pass despite float rounding.
DROP_SLACK = 1e-12

METRIC_LABELS = {"top1": "top-1", "top5": "top-5"}
GATE_LABELS: Mapping[GateStatus, str] = {"Passed": "passed", "Failed": "failed", "NotEvaluated": "not evaluated"}


@dataclass(frozen=True)
class CellConfig:
    target: str
    precision: str
    batch_size: int

    @property
    def role(self) -> str:
        return f"cell:{self.target}/{self.precision}/bs{self.batch_size}"


@dataclass(frozen=True)
class Reference:
    """The accuracy cells are gated against; `source` is None when there is no gate."""

    source: Literal["declared", "source"] | None
    top1: float | None = None
    top5: float | None = None

    def value(self, metric: str) -> float | None:
        return self.top1 if metric == "top1" else self.top5

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "top1": self.top1, "top5": self.top5}


# ---------------------------------------------------------------- results


def parse_gate(config: Mapping[str, Any]) -> Accuracy | None:
    accuracy = config.get("accuracy")
    return None if accuracy is None else Accuracy.model_validate(accuracy)


def parse_performance(config: Mapping[str, Any]) -> Performance | None:
    """The expected throughputs and the speed gate, or None when the spec declares neither."""
    performance = config.get("performance")
    return None if performance is None else Performance.model_validate(performance)


def parse_cells(config: Mapping[str, Any]) -> list[CellConfig]:
    return [CellConfig(cell["target"], cell["precision"], int(cell["batchSize"])) for cell in config["cells"]]


def stage_input(inputs: Mapping[str, StageInput], role: str) -> StageInput:
    try:
        return inputs[role]
    except KeyError:
        raise StageError(StageReason.INPUT_MISSING, f"the report has no input {role!r}") from None


def reference_of(gate: Accuracy | None, inputs: Mapping[str, StageInput]) -> Reference:
    if gate is None:
        return Reference(None)
    if gate.reference == "declared":
        declared = gate.declared.model_dump() if gate.declared else {}
        return Reference("declared", declared.get("top1"), declared.get("top5"))
    measured = stage_input(inputs, "reference").manifest.metrics.get("accuracy") or {}
    return Reference("source", measured.get("top1"), measured.get("top5"))


def evaluate_gate(
    accuracy: Mapping[str, Any], reference: Reference, gate: Accuracy | None
) -> tuple[float | None, GateStatus]:
    """The drop of the gate's metric below the reference (a fraction of it in relative mode), and the verdict."""
    if gate is None:
        return None, "NotEvaluated"
    value = accuracy.get(gate.metric)
    base = reference.value(gate.metric)
    # A relative drop from a zero reference is undefined.
    if value is None or base is None or (gate.drop_mode == "relative" and base == 0):
        return None, "NotEvaluated"
    drop = base - value
    if gate.drop_mode == "relative":
        drop /= base
    return drop, "Passed" if drop <= gate.max_drop + DROP_SLACK else "Failed"


def cell_reference(cell: CellConfig, reference: Reference, gate: Accuracy) -> Reference:
    """What the cell's accuracy is gated against: with reference: declared its expected accuracy when the spec
    declares one for it, else the spec-wide reference."""
    if gate.reference != "declared":
        return reference
    expected = gate.expected_for(cell.target, cell.precision, cell.batch_size)
    return reference if expected is None else Reference("declared", expected.top1, expected.top5)


Verdict = tuple[GateStatus, str | None]  # the status, and why when it is not Passed


def accuracy_verdict(
    accuracy: Mapping[str, Any], reference: Reference, gate: Accuracy
) -> tuple[float | None, Verdict]:
    drop, status = evaluate_gate(accuracy, reference, gate)
    label = METRIC_LABELS[gate.metric]
    base = reference.value(gate.metric)
    if status == "Passed":
        return drop, ("Passed", None)
    if status == "Failed":
        assert drop is not None and base is not None
        why = (f"{label} {percent(accuracy.get(gate.metric))} is {drop_text(drop, gate)} below the reference "
               f"{percent(base)}, more than maxDrop {drop_text(gate.max_drop, gate)}")
        return drop, ("Failed", why)
    if accuracy.get(gate.metric) is None:
        return drop, ("NotEvaluated", f"no {label} measured")
    return drop, ("NotEvaluated", f"no usable {label} reference")


def min_ratio_verdict(throughput: float | None, expected: float | None, performance: Performance) -> Verdict | None:
    """minRatio's verdict, or None when it does not judge the cell (no minRatio, or no expected throughput)."""
    if performance.min_ratio is None or expected is None:
        return None
    if throughput is None:
        return "NotEvaluated", f"no throughput measured to compare with the expected {expected:,.1f} samples/s"
    ratio = throughput / expected
    if ratio + DROP_SLACK < performance.min_ratio:
        return "Failed", (f"throughput {throughput:,.1f} samples/s is {ratio:.2f} of the expected {expected:,.1f}, "
                          f"below minRatio {performance.min_ratio:.2f}")
    return "Passed", None


def int8_verdict(result: CellResult, results: Sequence[CellResult]) -> Verdict | None:
    """int8MustBeFaster's verdict on an int8 cell with float cells of its target and batch size, else None."""
    if result.precision != "int8":
        return None
    floats = [other for other in results if other.precision in FLOAT_PRECISIONS
              and other.target == result.target and other.batch_size == result.batch_size]
    if not floats:
        return None
    if result.throughput is None or any(other.throughput is None for other in floats):
        return "NotEvaluated", "no throughput to compare int8 with its float cells"
    fastest = max(floats, key=lambda other: other.throughput or 0.0)
    assert fastest.throughput is not None
    if result.throughput <= fastest.throughput:
        return "Failed", (f"int8 throughput {result.throughput:,.1f} samples/s is not above {fastest.precision}'s "
                          f"{fastest.throughput:,.1f} at batch {result.batch_size}")
    return "Passed", None


def combined(verdicts: Sequence[Verdict | None], gated: bool) -> Verdict:
    """One verdict from every gate's: failed when one fails, not evaluated when one cannot judge the cell."""
    if not gated:
        return "NotEvaluated", None
    judged = [verdict for verdict in verdicts if verdict is not None]
    for status in ("Failed", "NotEvaluated"):
        reasons = [reason for verdict_status, reason in judged if verdict_status == status and reason]
        if any(verdict_status == status for verdict_status, _ in judged):
            return status, "; ".join(reasons) or None
    return "Passed", None


def gate_threshold(reference: Reference, gate: Accuracy | None) -> float | None:
    """The lowest value of the gate's metric that passes, for the charts."""
    if gate is None:
        return None
    base = reference.value(gate.metric)
    if base is None:
        return None
    lowest = base - gate.max_drop if gate.drop_mode == "absolute" else base * (1 - gate.max_drop)
    return max(lowest, 0.0)


def cell_result(
    cell: CellConfig,
    metrics: Mapping[str, Any],
    reference: Reference,
    gate: Accuracy | None,
    speed: Performance | None,
) -> CellResult:
    """The cell with its ratios and the verdict of every gate but int8MustBeFaster, which needs all cells."""
    accuracy = metrics.get("accuracy") or {}
    performance = metrics.get("performance") or {}
    artifact = metrics.get("artifact") or {}
    latency = performance.get("latencyMs")
    drop, accuracy_gate = accuracy_verdict(accuracy, cell_reference(cell, reference, gate), gate) if gate else (None, None)
    expected = expected_figures(gate, speed, cell.target, cell.precision, cell.batch_size)
    measured = Figures(top1=accuracy.get("top1"), top5=accuracy.get("top5"), throughput=performance.get("throughput"))
    expected_speed = expected.throughput if expected else None
    speed_gate = min_ratio_verdict(measured.throughput, expected_speed, speed) if speed else None
    status, message = combined([accuracy_gate, speed_gate], gated=gate is not None or gated_on_speed(speed))
    return CellResult(
        target=cell.target,
        backend=metrics.get("backend"),
        device=metrics.get("device"),
        precision=cell.precision,
        batch_size=cell.batch_size,
        top1=accuracy.get("top1"),
        top5=accuracy.get("top5"),
        throughput=performance.get("throughput"),
        latency_ms=Latency.model_validate(latency) if latency else None,
        artifact=artifact.get("uri"),
        sha256=artifact.get("sha256"),
        drop=drop,
        expected=expected,
        ratio=measured.ratios(expected),
        gate=status,
        gate_message=message,
        toolchain=metrics.get("toolchain"),
    )


def gated_on_speed(speed: Performance | None) -> bool:
    return speed is not None and speed.speed_gated()


def cell_results(
    cells: Sequence[CellConfig],
    metrics: Sequence[Mapping[str, Any]],
    reference: Reference,
    gate: Accuracy | None,
    speed: Performance | None,
) -> list[CellResult]:
    """Every cell with its ratios and verdict; int8MustBeFaster judges each int8 cell against its float cells."""
    results = [cell_result(cell, each, reference, gate, speed) for cell, each in zip(cells, metrics, strict=True)]
    if speed is None or not speed.int8_must_be_faster:
        return results
    judged = []
    for result in results:
        verdict = int8_verdict(result, results)
        if verdict is None:
            judged.append(result)
            continue
        earlier: Verdict = (result.gate, result.gate_message)
        status, message = combined([earlier, verdict], gated=True)
        judged.append(result.model_copy(update={"gate": status, "gate_message": message}))
    return judged


def best_cells(results: Sequence[CellResult], gated: bool) -> list[BestCell]:
    """The fastest cell per target, among passing cells when gated; ties go to the smaller batch, then config order."""
    best = []
    for target in dict.fromkeys(result.target for result in results):
        pool = [
            (result.throughput, result)
            for result in results
            if result.target == target and result.throughput is not None and (not gated or result.gate == "Passed")
        ]
        if not pool:
            continue
        # min keeps the first of equal keys, so config order settles the last tie.
        throughput, winner = min(pool, key=lambda pair: (-pair[0], pair[1].batch_size))
        best.append(
            BestCell(
                target=target,
                precision=winner.precision,
                batch_size=winner.batch_size,
                throughput=throughput,
                top1=winner.top1,
            )
        )
    return best


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def speed_gate_json(speed: Performance | None) -> dict[str, Any] | None:
    if speed is None or not speed.speed_gated():
        return None
    return {"minRatio": speed.min_ratio, "int8MustBeFaster": speed.int8_must_be_faster}


def throughput_covers(metrics: Mapping[str, Any]) -> dict[str, Any] | None:
    """What an evaluated cell's throughput is the figure of, as its backend says (the devices it sums, with each
    one's figure, the chips and cards, and a `summary` in words); None when the backend does not say."""
    return (metrics.get("performance") or {}).get("throughputCovers")


def results_document(
    reference: Reference,
    gate: Accuracy | None,
    speed: Performance | None,
    results: Sequence[CellResult],
    best: Sequence[BestCell],
    covers: Sequence[Mapping[str, Any] | None] = (),
) -> dict[str, Any]:
    """The report's results; `covers` says, cell by cell, what each throughput covers (throughput_covers)."""
    cells = [dump(result) for result in results]
    for cell, covered in zip(cells, covers, strict=False):
        if covered is not None:
            cell["throughputCovers"] = dict(covered)
    return {
        "reference": reference.to_json(),
        "gate": dump(gate) if gate else None,
        "speedGate": speed_gate_json(speed),
        "cells": cells,
        "best": [dump(cell) for cell in best],
    }


def summary_metrics(reference: Reference, results: Sequence[CellResult], best: Sequence[BestCell]) -> dict[str, Any]:
    verdicts = Counter(result.gate for result in results)
    return {
        "cells": len(results),
        "passed": verdicts["Passed"],
        "failed": verdicts["Failed"],
        "notEvaluated": verdicts["NotEvaluated"],
        "best": [dump(cell) for cell in best],
        "reference": reference.to_json(),
    }


# ---------------------------------------------------------------- charts

WIDTH, HEIGHT = 520, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 124, 20, 48
PLOT_WIDTH, PLOT_HEIGHT = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
# No red: red marks the gate threshold and failures.
PALETTE = ("#0969da", "#e16f24", "#1a7f37", "#8250df", "#1b7c83", "#9a6700", "#bf3989", "#57606a")


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] with a step of 1, 2 or 5 times a power of ten."""
    if high <= low:
        high = low + 1
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step + 1e-9)
    last = math.ceil(high / step - 1e-9)
    return [round(index * step, 12) for index in range(first, last + 1)]


def tick_label(value: float, ticks: Sequence[float], factor: float = 1.0) -> str:
    """A tick value times factor, with as many decimals as the tick step needs, e.g. 1,500 or 78.5."""
    step = (ticks[1] - ticks[0]) * factor if len(ticks) > 1 else 1.0
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{value * factor:,.{decimals}f}"


def scale(value: float, low: float, high: float, start: float, end: float) -> float:
    """Maps value from [low, high] onto [start, end]; a single value lands in the middle."""
    if high == low:
        return (start + end) / 2
    return start + (value - low) / (high - low) * (end - start)


def precision_colors(results: Sequence[CellResult]) -> dict[str, str]:
    """One colour per precision, the same in every chart."""
    precisions = dict.fromkeys(result.precision for result in results)
    return {precision: PALETTE[index % len(PALETTE)] for index, precision in enumerate(precisions)}


def svg_open(label: str) -> str:
    return (
        f'<svg width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{esc(label)}"><title>{esc(label)}</title>'
    )


def empty_chart(label: str, message: str) -> str:
    return (
        f"{svg_open(label)}"
        f'<rect x="{LEFT}" y="{TOP}" width="{PLOT_WIDTH}" height="{PLOT_HEIGHT}" class="frame"/>'
        f'<text x="{LEFT + PLOT_WIDTH / 2:.1f}" y="{TOP + PLOT_HEIGHT / 2:.1f}" text-anchor="middle" '
        f'class="muted">{esc(message)}</text></svg>'
    )


def y_axis(ticks: Sequence[float], title: str, factor: float = 1.0) -> list[str]:
    """Horizontal grid lines with labelled ticks, and the axis title."""
    parts = []
    for tick in ticks:
        y = scale(tick, ticks[0], ticks[-1], TOP + PLOT_HEIGHT, TOP)
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + PLOT_WIDTH}" y2="{y:.1f}" class="grid"/>')
        parts.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{esc(tick_label(tick, ticks, factor))}</text>'
        )
    middle = TOP + PLOT_HEIGHT / 2
    parts.append(
        f'<text x="14" y="{middle:.1f}" text-anchor="middle" transform="rotate(-90 14 {middle:.1f})">{esc(title)}</text>'
    )
    return parts


def throughput_chart(results: Sequence[CellResult], colors: Mapping[str, str]) -> str:
    """Throughput against batch size, one line per precision, the batch axis spaced by log2; hollow points mark
    the expected throughputs."""
    label = "throughput vs batch size"
    expected = [
        (result.precision, result.batch_size, result.expected.throughput)
        for result in results
        if result.expected is not None and result.expected.throughput is not None
    ]
    lines: dict[str, list[tuple[int, float]]] = {}
    for precision in dict.fromkeys(result.precision for result in results):
        points = sorted(
            (result.batch_size, result.throughput)
            for result in results
            if result.precision == precision and result.throughput is not None
        )
        if points:
            lines[precision] = points
    if not lines:
        return empty_chart(label, "no throughput measured")
    sizes = sorted({result.batch_size for result in results})
    x_low, x_high = math.log2(sizes[0]), math.log2(sizes[-1])
    ticks = nice_ticks(0.0, max([throughput for points in lines.values() for _, throughput in points]
                                + [throughput for _, _, throughput in expected]))

    def x(size: int) -> float:
        return scale(math.log2(size), x_low, x_high, LEFT + 16, LEFT + PLOT_WIDTH - 16)

    def y(throughput: float) -> float:
        return scale(throughput, ticks[0], ticks[-1], TOP + PLOT_HEIGHT, TOP)

    parts = [svg_open(label), *y_axis(ticks, "samples/s")]
    bottom = TOP + PLOT_HEIGHT
    for size in sizes:
        parts.append(f'<line x1="{x(size):.1f}" y1="{bottom}" x2="{x(size):.1f}" y2="{bottom + 5}" class="axis"/>')
        parts.append(f'<text x="{x(size):.1f}" y="{bottom + 18}" text-anchor="middle">{size}</text>')
    parts.append(f'<line x1="{LEFT}" y1="{bottom}" x2="{LEFT + PLOT_WIDTH}" y2="{bottom}" class="axis"/>')
    parts.append(f'<text x="{LEFT + PLOT_WIDTH / 2:.1f}" y="{HEIGHT - 8}" text-anchor="middle">batch size</text>')
    for index, (precision, points) in enumerate(lines.items()):
        color = colors[precision]
        coordinates = " ".join(f"{x(size):.1f},{y(throughput):.1f}" for size, throughput in points)
        parts.append(f'<polyline points="{coordinates}" fill="none" stroke="{color}" stroke-width="2"/>')
        for size, throughput in points:
            parts.append(
                f'<circle cx="{x(size):.1f}" cy="{y(throughput):.1f}" r="3.5" fill="{color}">'
                f"<title>{esc(precision)} bs{size}: {throughput:,.1f} samples/s</title></circle>"
            )
        for precision_of, size, throughput in expected:
            if precision_of == precision:
                parts.append(
                    f'<circle cx="{x(size):.1f}" cy="{y(throughput):.1f}" r="4.5" fill="none" stroke="{color}" '
                    f'stroke-dasharray="2 2"><title>{esc(precision)} bs{size}: expected {throughput:,.1f} samples/s'
                    "</title></circle>"
                )
        legend_y = TOP + 8 + index * 18
        legend_x = LEFT + PLOT_WIDTH + 14
        parts.append(
            f'<line x1="{legend_x}" y1="{legend_y}" x2="{legend_x + 18}" y2="{legend_y}" stroke="{color}" '
            f'stroke-width="2"/><text x="{legend_x + 24}" y="{legend_y + 4}">{esc(precision)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def accuracy_chart(
    results: Sequence[CellResult], reference: Reference, gate: Accuracy | None, colors: Mapping[str, str]
) -> str:
    """The gate's metric (top-1 without a gate) per precision as bars, with the reference and the gate threshold:
    across the chart for a spec-wide reference, over each bar for the expected accuracy of the bar's cell."""
    metric = gate.metric if gate else "top1"
    label = f"{METRIC_LABELS[metric]} accuracy per precision"
    best: dict[str, tuple[float, CellResult] | None] = dict.fromkeys(result.precision for result in results)
    for result in results:
        value = result.top1 if metric == "top1" else result.top5
        current = best[result.precision]
        if value is not None and (current is None or value > current[0]):
            best[result.precision] = (value, result)
    bars = {precision: None if pair is None else pair[0] for precision, pair in best.items()}
    values = [value for value in bars.values() if value is not None]
    if not values:
        return empty_chart(label, "no accuracy measured")
    own_references = gate is not None and gate.expected is not None
    marks: dict[str, tuple[float | None, float | None]] = {}  # precision -> its cell's expected value and threshold
    if own_references:
        for precision, pair in best.items():
            expected = pair[1].expected if pair else None
            level = getattr(expected, metric) if expected else None
            own = Reference("declared", level, level) if gate.reference == "declared" else reference
            marks[precision] = (level, gate_threshold(own, gate) if level is not None else None)
    spec_wide = gate is not None and not (own_references and gate.reference == "declared")
    base = reference.value(metric) if spec_wide else None
    threshold = gate_threshold(reference, gate) if spec_wide else None
    levels = [*values, *(level for level in (base, threshold) if level is not None),
              *(level for pair in marks.values() for level in pair if level is not None)]
    # Zoomed in on the values: a one-point gate would be invisible on a 0-100% axis.
    pad = max(0.01, (max(levels) - min(levels)) * 0.2)
    ticks = nice_ticks(max(0.0, min(levels) - pad), min(1.0, max(levels) + pad))

    def y(value: float) -> float:
        return scale(value, ticks[0], ticks[-1], TOP + PLOT_HEIGHT, TOP)

    parts = [svg_open(label), *y_axis(ticks, f"{METRIC_LABELS[metric]} (%)", 100.0)]
    bottom = TOP + PLOT_HEIGHT
    band = PLOT_WIDTH / len(bars)
    width = min(band * 0.6, 56.0)
    for index, (precision, value) in enumerate(bars.items()):
        center = LEFT + band * (index + 0.5)
        parts.append(f'<text x="{center:.1f}" y="{bottom + 18}" text-anchor="middle">{esc(precision)}</text>')
        if value is None:
            parts.append(f'<text x="{center:.1f}" y="{bottom - 6}" text-anchor="middle" class="muted">n/a</text>')
            continue
        top = y(value)
        parts.append(
            f'<rect x="{center - width / 2:.1f}" y="{top:.1f}" width="{width:.1f}" height="{bottom - top:.1f}" '
            f'fill="{colors[precision]}"><title>{esc(precision)}: {value * 100:.2f}%</title></rect>'
        )
        parts.append(f'<text x="{center:.1f}" y="{top - 4:.1f}" text-anchor="middle">{value * 100:.2f}%</text>')
        for level, name, css in zip(marks.get(precision, ()), ("expected", "gate"), ("reference", "threshold")):
            if level is not None:
                parts.append(
                    f'<line x1="{center - band * 0.45:.1f}" y1="{y(level):.1f}" x2="{center + band * 0.45:.1f}" '
                    f'y2="{y(level):.1f}" class="{css}"><title>{esc(precision)} {name} {level * 100:.2f}%</title>'
                    "</line>"
                )
    parts.append(f'<line x1="{LEFT}" y1="{bottom}" x2="{LEFT + PLOT_WIDTH}" y2="{bottom}" class="axis"/>')
    parts.append(f'<text x="{LEFT + PLOT_WIDTH / 2:.1f}" y="{HEIGHT - 8}" text-anchor="middle">precision</text>')
    # The reference label sits above its line and the gate's below, so they stay apart when close.
    for level, name, css, offset in ((base, "reference", "reference", -4), (threshold, "gate", "threshold", 12)):
        if level is None:
            continue
        parts.append(
            f'<line x1="{LEFT}" y1="{y(level):.1f}" x2="{LEFT + PLOT_WIDTH}" y2="{y(level):.1f}" class="{css}"/>'
            f'<text x="{LEFT + PLOT_WIDTH + 6}" y="{y(level) + offset:.1f}" class="{css}-label">'
            f"{name} {level * 100:.2f}%</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


# ---------------------------------------------------------------- page

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1240px;
  padding:0 1rem;color:#1f2328;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}
h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem}
dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}
dt{font-weight:600}
dd{margin:0}
table{border-collapse:collapse;font-size:.88rem}
th,td{padding:.3rem .6rem;border-bottom:1px solid #d8dee4;text-align:left;white-space:nowrap}
th{background:#f6f8fa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
code{font-size:.85em}
.gate-passed{color:#1a7f37;font-weight:600}
.gate-failed{color:#cf222e;font-weight:600}
.gate-notevaluated,.muted{color:#6e7781;fill:#6e7781}
.why{white-space:normal;font-weight:400;color:#57606a;font-size:.8rem}
.charts{display:flex;flex-wrap:wrap;gap:1.5rem}
figure{margin:0}
figcaption{font-size:.85rem;color:#57606a;max-width:520px}
svg{font-size:11px;fill:#1f2328;background:#fff}
svg .grid{stroke:#eaeef2}
svg .axis{stroke:#57606a}
svg .frame{fill:none;stroke:#d0d7de}
svg .reference{stroke:#1f2328;stroke-dasharray:6 3;stroke-width:1.5}
svg .threshold{stroke:#cf222e;stroke-dasharray:3 3;stroke-width:1.5}
svg .threshold-label{fill:#cf222e}
"""


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.2f}%"


def milliseconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} ms"


def drop_text(drop: float | None, gate: Accuracy | None) -> str:
    if drop is None or gate is None:
        return "—"
    return f"{drop * 100:.2f} pp" if gate.drop_mode == "absolute" else f"{drop * 100:.2f}%"


def reference_text(reference: Reference) -> str:
    if reference.source is None:
        return "none"
    origin = "declared numbers" if reference.source == "declared" else "the source model in fp32 on the same data"
    return f"{origin}: top-1 {percent(reference.top1)}, top-5 {percent(reference.top5)}"


def gate_text(gate: Accuracy | None) -> str:
    if gate is None:
        return "none"
    limit = (
        f"{gate.max_drop * 100:.2f} percentage points"
        if gate.drop_mode == "absolute"
        else f"{gate.max_drop * 100:.2f}% of the reference"
    )
    own = ", or below its expected accuracy when the spec declares one" if gate.reference == "declared" else ""
    return f"{METRIC_LABELS[gate.metric]} may drop at most {limit} below the reference{own}"


def speed_gate_text(speed: Performance | None) -> str:
    rules = []
    if speed is not None and speed.min_ratio is not None:
        rules.append(f"throughput at least {speed.min_ratio:.2f} of the expected figure")
    if speed is not None and speed.int8_must_be_faster:
        rules.append("an int8 cell faster than its float cells of the same target and batch size")
    return "; ".join(rules) or "none"


def ratio_text(ratio: float | None, expected: str) -> str:
    return "—" if ratio is None else f"{ratio:.3f} of {expected}"


def gate_cell(result: CellResult) -> str:
    why = f'<br/><span class="why">{esc(result.gate_message)}</span>' if result.gate_message else ""
    return f'<td class="gate-{result.gate.lower()}">{GATE_LABELS[result.gate]}{why}</td>'


def cell_row(result: CellResult, gate: Accuracy | None, with_expected: bool,
             covers: Mapping[str, Any] | None = None, with_covers: bool = False) -> str:
    latency = result.latency_ms
    where = result.backend or "—"
    if result.device:
        where = f"{where} / {result.device}"
    cells = [
        f"<td>{esc(result.target)}</td>",
        f"<td>{esc(where)}</td>",
        f"<td>{esc(result.precision)}</td>",
        f'<td class="num">{result.batch_size}</td>',
        f'<td class="num">{percent(result.top1)}</td>',
        f'<td class="num">{percent(result.top5)}</td>',
        f'<td class="num">{drop_text(result.drop, gate)}</td>',
        f'<td class="num">{"—" if result.throughput is None else f"{result.throughput:,.1f}"}</td>',
        f'<td class="num">{milliseconds(latency.p50 if latency else None)}</td>',
        f'<td class="num">{milliseconds(latency.p99 if latency else None)}</td>',
        gate_cell(result),
        f'<td><code title="{esc(result.sha256 or "")}">{esc((result.sha256 or "—")[:12])}</code></td>',
    ]
    if with_expected:
        expected, ratio = result.expected or Figures(), result.ratio or Figures()
        speed = "—" if expected.throughput is None else f"{expected.throughput:,.1f}"
        cells[6:6] = [f'<td class="num">{esc(ratio_text(ratio.top1, percent(expected.top1)))}</td>']
        cells[9:9] = [f'<td class="num">{esc(ratio_text(ratio.throughput, speed))}</td>']
    if with_covers:
        position = cells.index(f'<td class="num">{milliseconds(latency.p50 if latency else None)}</td>')
        cells.insert(position, f"<td>{esc(covers['summary']) if covers else '—'}</td>")
    return f"<tr>{''.join(cells)}</tr>"


def results_table(results: Sequence[CellResult], gate: Accuracy | None,
                  covers: Sequence[Mapping[str, Any] | None] = ()) -> str:
    with_expected = any(result.expected is not None for result in results)
    listed = list(covers) or [None] * len(results)
    with_covers = any(covered is not None for covered in listed)
    headers = [
        "target",
        "backend / device",
        "precision",
        "batch",
        "top-1",
        "top-5",
        "drop",
        "throughput (samples/s)",
        "p50 latency",
        "p99 latency",
        "gate",
        "sha256",
    ]
    if with_expected:
        headers[6:6] = ["top-1 / expected"]
        headers[9:9] = ["throughput / expected"]
    if with_covers:
        headers.insert(headers.index("p50 latency"), "throughput covers")
    head = "".join(f"<th>{esc(header)}</th>" for header in headers)
    rows = "".join(cell_row(result, gate, with_expected, covered, with_covers)
                   for result, covered in zip(results, listed, strict=True))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def best_table(targets: Sequence[str], best: Sequence[BestCell], gated: bool) -> str:
    winners = {cell.target: cell for cell in best}
    missing = "no passing cell" if gated else "no cell with a throughput"
    rows = []
    for target in targets:
        cell = winners.get(target)
        if cell is None:
            rows.append(f'<tr><td>{esc(target)}</td><td colspan="4" class="muted">{missing}</td></tr>')
            continue
        rows.append(
            f'<tr><td>{esc(target)}</td><td>{esc(cell.precision)}</td><td class="num">{cell.batch_size}</td>'
            f'<td class="num">{cell.throughput:,.1f}</td><td class="num">{percent(cell.top1)}</td></tr>'
        )
    headers = ("target", "precision", "batch", "throughput (samples/s)", "top-1")
    head = "".join(f"<th>{esc(header)}</th>" for header in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def target_section(
    target: str, results: Sequence[CellResult], reference: Reference, gate: Accuracy | None, colors: Mapping[str, str]
) -> str:
    metric = METRIC_LABELS[gate.metric if gate else "top1"]
    return (
        f'<section><h2>Target {esc(target)}</h2><div class="charts">'
        f"<figure>{throughput_chart(results, colors)}"
        "<figcaption>Throughput against batch size (log2 scale), one line per precision.</figcaption></figure>"
        f"<figure>{accuracy_chart(results, reference, gate, colors)}"
        f"<figcaption>{esc(metric)} accuracy per precision, the best over its batch sizes; "
        "dashed lines: the reference and the lowest passing value.</figcaption></figure>"
        "</div></section>"
    )


def render_html(
    reference: Reference,
    gate: Accuracy | None,
    speed: Performance | None,
    results: Sequence[CellResult],
    best: Sequence[BestCell],
    covers: Sequence[Mapping[str, Any] | None] = (),
) -> str:
    """The whole report as one page: well-formed XML too, so it parses with any XML or HTML parser."""
    targets = list(dict.fromkeys(result.target for result in results))
    gated = gate is not None or gated_on_speed(speed)
    colors = precision_colors(results)
    verdicts = Counter(result.gate for result in results)
    summary = (
        f"{len(results)} cells: {verdicts['Passed']} passed, {verdicts['Failed']} failed, "
        f"{verdicts['NotEvaluated']} not evaluated"
    )
    sections = "".join(
        target_section(target, [result for result in results if result.target == target], reference, gate, colors)
        for target in targets
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/>'
        '<meta name="viewport" content="width=device-width, initial-scale=1"/>'
        f"<title>modeldeploy report</title><style>{STYLE}</style></head><body>"
        f'<h1>modeldeploy report</h1><p class="muted">{esc(summary)}</p>'
        "<section><h2>Reference and gate</h2><dl>"
        f"<dt>reference</dt><dd>{esc(reference_text(reference))}</dd>"
        f"<dt>accuracy gate</dt><dd>{esc(gate_text(gate))}</dd>"
        f"<dt>speed gate</dt><dd>{esc(speed_gate_text(speed))}</dd></dl></section>"
        f"<section><h2>Results</h2>{results_table(results, gate, covers)}</section>"
        f"<section><h2>Best cell per target</h2>{best_table(targets, best, gated)}</section>"
        f"{sections}</body></html>\n"
    )


# ---------------------------------------------------------------- stage


def run(context: StageContext) -> StageResult:
    gate = parse_gate(context.config)
    speed = parse_performance(context.config)
    reference = reference_of(gate, context.inputs)
    cells = parse_cells(context.config)
    metrics = [stage_input(context.inputs, cell.role).manifest.metrics for cell in cells]
    results = cell_results(cells, metrics, reference, gate, speed)
    gated = gate is not None or gated_on_speed(speed)
    best = best_cells(results, gated=gated)
    context.outputs_dir.mkdir(parents=True, exist_ok=True)
    results_path = context.outputs_dir / "results.json"
    covers = [throughput_covers(each) for each in metrics]
    results_path.write_text(json.dumps(results_document(reference, gate, speed, results, best, covers), indent=2)
                            + "\n")
    report_path = context.outputs_dir / "report.html"
    report_path.write_text(render_html(reference, gate, speed, results, best, covers), encoding="utf-8")
    return StageResult(
        outputs={"results.json": results_path, "report.html": report_path},
        metrics=summary_metrics(reference, results, best),
        toolchain={},
    )
