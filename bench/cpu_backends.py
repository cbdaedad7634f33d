"""ResNet-50 (timm, random weights) on this CPU: torch eager against the converted models.

Run: python bench/cpu_backends.py [--threads 2] [--store DIR]
The ONNX Runtime and OpenVINO cells (fp32 and int8, batch 1 and 8) come from the project's own
pipeline (`modeldeploy run` of a spec like examples/resnet50-cpu.yaml); torch eager is measured
in this process with the same harness as the evaluate stage (modeldeploy_jobs.evaluate
.measure_speed), the same thread count and the same input batch. Printed as samples/s and as
ratios to torch eager at the same batch size; the target is OpenVINO int8 >= 4x torch at batch 8.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml
from modeldeploy.manifest import fetch_bytes, read_manifest
from modeldeploy.planner import plan
from modeldeploy.runner import localize
from modeldeploy.store import open_store
from modeldeploy.validation import load_resource
from modeldeploy_jobs.backends import InputSpec, Session
from modeldeploy_jobs.evaluate import measure_speed

BATCH_SIZES = [1, 8]
BUDGET = {"warmup": 5, "iterations": 40}


def spec(threads: int) -> dict:
    target = {"precisions": ["fp32", "int8"], "batchSizes": BATCH_SIZES}
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "bench-resnet50"},
        "spec": {
            "source": {"format": "pytorch", "architecture": "timm:resnet50", "randomWeights": True,
                       "numClasses": 1000, "inputs": [{"name": "input", "shape": [-1, 3, 224, 224]}]},
            "dataset": {"kind": "synthetic", "limit": 64},
            "calibration": {"samples": 32},
            "targets": [
                {"name": "onnxruntime", "backend": "onnxruntime", "options": {"intraOpThreads": threads}, **target},
                {"name": "openvino", "backend": "openvino", "options": {"inferenceThreads": threads}, **target},
            ],
            "performance": BUDGET,
        },
    }


def torch_eager(threads: int, batch: int) -> float:
    import timm
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = timm.create_model("resnet50", pretrained=False, num_classes=1000).eval()

    def infer(inputs: dict) -> list:
        with torch.inference_mode():
            return [model(torch.from_numpy(inputs["input"])).numpy()]

    session = Session([InputSpec("input", (None, 3, 224, 224), np.dtype("float32"))], infer, {})
    inputs = {"input": np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)}
    return measure_speed(session, inputs, BUDGET, batch, threads)["throughput"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--store", type=Path, help="reuse a store between runs (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        directory = args.store or Path(scratch)
        path = directory / "bench-resnet50.yaml"
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(spec(args.threads)))
        command = [str(Path(sys.executable).with_name("modeldeploy")), "run", str(path), "--store", str(directory / "store")]
        subprocess.run(command, check=True, cwd=directory, stdout=subprocess.DEVNULL, env=os.environ)
        resource = localize(load_resource(yaml.safe_load(path.read_text())), directory)
        report = plan(resource.spec).report
        store = open_store(str(directory / "store"))
        results = json.loads(fetch_bytes(store, read_manifest(store, report), "results.json"))

    eager = {batch: torch_eager(args.threads, batch) for batch in BATCH_SIZES}
    print(f"ResNet-50, {args.threads} threads, {BUDGET['iterations']} timed iterations after {BUDGET['warmup']} "
          "warm-up, samples/s (x torch eager at the same batch)")
    print(f"{'runtime':<22}" + "".join(f"{'batch ' + str(b):>22}" for b in BATCH_SIZES))
    print(f"{'torch eager fp32':<22}" + "".join(f"{eager[b]:>13.1f} (1.00x)" for b in BATCH_SIZES))
    for target in ("onnxruntime", "openvino"):
        for precision in ("fp32", "int8"):
            cells = {c["batchSize"]: c["throughput"] for c in results["cells"]
                     if c["target"] == target and c["precision"] == precision}
            print(f"{target + ' ' + precision:<22}"
                  + "".join(f"{cells[b]:>13.1f} ({cells[b] / eager[b]:.2f}x)" for b in BATCH_SIZES))
    openvino_int8 = next(c["throughput"] for c in results["cells"]
                         if c["target"] == "openvino" and c["precision"] == "int8" and c["batchSize"] == 8)
    print(f"OpenVINO int8 / torch eager at batch 8: {openvino_int8 / eager[8]:.2f}x (target >= 4x)")


if __name__ == "__main__":
    main()
