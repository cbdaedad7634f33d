"""Does the evaluate stage's harness add overhead? Ours against OpenVINO's benchmark_app, same IR.

Run: python bench/harness_overhead.py [--threads 2] [--iterations 200]
Builds ResNet-50 (timm, random weights) IRs at batch 1 and 8 through the project's own
pipeline, then alternates, three rounds each, the evaluate stage's loader and timing loop
(modeldeploy_jobs.backends.openvino.load + evaluate.measure_speed) with `benchmark_app -api sync
-hint none -nstreams 1`, each in a process of its own, on the same IR, batch, thread count and
inference precision. Prints the median throughput of each and
their ratio; the target is within 10%.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml
from modeldeploy.manifest import fetch, read_manifest
from modeldeploy.planner import plan
from modeldeploy.runner import localize
from modeldeploy.store import open_store
from modeldeploy.validation import load_resource
from modeldeploy_jobs.backends import openvino
from modeldeploy_jobs.evaluate import measure_speed

BATCH_SIZES = [1, 8]
ROUNDS = 3


def spec(threads: int) -> dict:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "bench-harness"},
        "spec": {
            "source": {"format": "pytorch", "architecture": "timm:resnet50", "randomWeights": True,
                       "inputs": [{"name": "input", "shape": [-1, 3, 224, 224]}]},
            "targets": [{"name": "openvino", "backend": "openvino", "precisions": ["fp32"],
                         "batchSizes": BATCH_SIZES, "options": {"inferenceThreads": threads}}],
            "performance": {"warmup": 1, "iterations": 1},
        },
    }


def measure_ours(model: Path, batch: int, threads: int, iterations: int) -> float:
    config = {"options": {"performanceHint": "latency", "inferenceThreads": threads}}
    session = openvino.load(model, config, threads)
    inputs = {"input": np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)}
    return measure_speed(session, inputs, {"warmup": 10, "iterations": iterations}, batch, threads)["throughput"]


def ours(model: Path, batch: int, threads: int, iterations: int) -> float:
    """In a process of its own, like benchmark_app: idle runtime threads of one must not slow the other."""
    output = subprocess.run(
        [sys.executable, __file__, "--measure", str(model), str(batch), str(threads), str(iterations)],
        capture_output=True, text=True, check=True,
    ).stdout
    return float(output)


def benchmark_app(model: Path, threads: int, iterations: int) -> float:
    tool = Path(sys.executable).with_name("benchmark_app")
    hints = json.loads(model.with_name("runtime.json").read_text())["hints"]
    precision = ["-infer_precision", hints["INFERENCE_PRECISION_HINT"]] if hints else []
    output = subprocess.run(
        [str(tool), "-m", str(model), "-d", "CPU", "-api", "sync", "-hint", "none", "-nstreams", "1",
         "-nthreads", str(threads), "-niter", str(iterations), *precision],
        capture_output=True, text=True, check=True,
    ).stdout
    return float(re.search(r"Throughput:\s+([\d.]+)\s+FPS", output).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--measure", nargs=4, metavar=("MODEL", "BATCH", "THREADS", "ITERATIONS"),
                        help="internal: measure one IR with the evaluate stage's harness and print samples/s")
    args = parser.parse_args()
    if args.measure:
        model, batch, threads, iterations = args.measure
        print(measure_ours(Path(model), int(batch), int(threads), int(iterations)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        path = directory / "bench-harness.yaml"
        path.write_text(yaml.safe_dump(spec(args.threads)))
        command = [str(Path(sys.executable).with_name("modeldeploy")), "run", str(path), "--store", str(directory / "store")]
        subprocess.run(command, check=True, cwd=directory, stdout=subprocess.DEVNULL)
        resource = localize(load_resource(yaml.safe_load(path.read_text())), directory)
        store = open_store(str(directory / "store"))
        print(f"OpenVINO fp32 ResNet-50 IR, {args.threads} threads, {args.iterations} iterations, median of {ROUNDS}")
        print(f"{'batch':>5} {'evaluate stage':>16} {'benchmark_app':>15} {'ratio':>7}")
        for cell in plan(resource.spec).cells:
            model = directory / f"bs{cell.batch_size}" / "model.xml"
            for name in ("model.xml", "model.bin", "runtime.json"):
                fetch(store, read_manifest(store, cell.compile), name, model.with_name(name))
            mine, theirs = [], []
            for _ in range(ROUNDS):
                mine.append(ours(model, cell.batch_size, args.threads, args.iterations))
                theirs.append(benchmark_app(model, args.threads, args.iterations))
            a, b = statistics.median(mine), statistics.median(theirs)
            print(f"{cell.batch_size:>5} {a:>13.1f}/s {b:>12.1f}/s {a / b:>6.2f}x")
        print("target: evaluate stage within 10% of benchmark_app (ratio 0.90 or more)")


if __name__ == "__main__":
    main()
