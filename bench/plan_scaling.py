"""How planning cost grows with the number of cells, and how long `modeldeploy plan` takes.

Run: python bench/plan_scaling.py
Prints, side by side from one run, the time to validate and plan specs of 5 targets x 4
precisions x N batch sizes, the cost per cell, and each size's cost relative to the smallest
(a linear planner keeps time/cell flat). Then it times the whole `modeldeploy plan` command,
interpreter start-up included, on the 5 x 4 x 8 spec against `modeldeploy --version`.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from modeldeploy.planner import plan
from modeldeploy.validation import load_resource

TARGETS = [
    {"name": "ov-a", "backend": "openvino", "precisions": ["fp32", "fp16", "bf16", "int8"]},
    {"name": "ov-b", "backend": "openvino", "precisions": ["fp32", "fp16", "bf16", "int8"],
     "options": {"performanceHint": "throughput"}},
    {"name": "a910", "backend": "ascend", "device": "Ascend910B3", "precisions": ["fp32", "fp16", "bf16", "int8"]},
    {"name": "a310p", "backend": "ascend", "device": "Ascend310P3", "precisions": ["fp32", "fp16", "mixed", "int8"]},
    {"name": "mlu", "backend": "magicmind", "device": "MLU370-X4", "precisions": ["fp32", "fp16", "int8", "int16"]},
]


def spec(batch_sizes: int) -> dict[str, Any]:
    sizes = list(range(1, batch_sizes + 1))
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": f"bench-{batch_sizes}"},
        "spec": {
            "source": {"format": "onnx", "uri": "s3://models/m.onnx",
                       "inputs": [{"name": "x", "shape": [-1, 3, 224, 224]}]},
            "dataset": {"kind": "imagenet", "uri": "s3://data/val", "labels": "s3://data/val_label.txt",
                        "preprocess": {"resize": 256, "crop": 224, "mean": [0.485, 0.456, 0.406],
                                       "std": [0.229, 0.224, 0.225]}},
            "targets": [{**target, "batchSizes": sizes} for target in TARGETS],
            "accuracy": {"reference": "source", "maxDrop": 0.01},
        },
    }


def best_of(repeats: int, action: Any) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    load_resource(spec(1))  # compile the CEL rules once, as a long-running operator would
    print(f"{'batch sizes':>11} {'cells':>6} {'tasks':>6} {'validate+plan s':>16} {'plan s':>9} {'plan us/cell':>13}")
    cells, seconds = [], []
    for sizes in (1, 2, 4, 8, 16, 32, 64):
        document = spec(sizes)
        validated = load_resource(document).spec
        result = plan(validated)
        total = best_of(5, lambda document=document: plan(load_resource(document).spec))
        planning = best_of(5, lambda validated=validated: plan(validated))
        cells.append(len(result.cells))
        seconds.append(total)
        print(f"{sizes:>11} {len(result.cells):>6} {len(result.tasks):>6} {total:>16.4f} {planning:>9.4f} "
              f"{planning / len(result.cells) * 1e6:>13.1f}")
    slope, intercept = statistics.linear_regression(cells, seconds)
    worst = max(abs(s - (intercept + slope * c)) / s for c, s in zip(cells, seconds, strict=True))
    print(f"validate+plan = {intercept * 1e3:.1f} ms + {slope * 1e6:.1f} us x cells; "
          f"largest deviation from that line: {worst:.1%}")

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "bench.yaml"
        path.write_text(yaml.safe_dump(spec(8)))
        command = [str(Path(sys.executable).with_name("modeldeploy"))]
        plan_times = [best_of(1, lambda: subprocess.run([*command, "plan", str(path)], check=True,
                                                        capture_output=True)) for _ in range(5)]
        start_times = [best_of(1, lambda: subprocess.run([*command, "--version"], check=True,
                                                         capture_output=True)) for _ in range(5)]
    plan_median, start_median = statistics.median(plan_times), statistics.median(start_times)
    print()
    print(f"modeldeploy plan, 5 targets x 4 precisions x 8 batch sizes (160 cells): {plan_median:.3f} s median of 5")
    print(f"modeldeploy --version (start-up alone):                              {start_median:.3f} s median of 5")
    print(f"plan / start-up: {plan_median / start_median:.2f}x; target: plan under 1 s")


if __name__ == "__main__":
    main()
