"""The CPU backends, which run for real on any node: OpenVINO and ONNX Runtime."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from modeldeploy import images
from modeldeploy.backends import Backend, Options

JOBS_IMAGE = images.cpu_jobs_image()


class OpenVINOOptions(Options):
    performance_hint: Literal["latency", "throughput"] = "latency"
    num_streams: int | None = Field(default=None, ge=1, le=64)
    inference_threads: int | None = Field(default=None, ge=1, le=256)


class ONNXRuntimeOptions(Options):
    graph_optimization_level: Literal["basic", "extended", "all"] = "all"
    intra_op_threads: int | None = Field(default=None, ge=1, le=256)
    quant_format: Literal["QDQ", "QOperator"] = "QDQ"
    per_channel: bool = True
    activation_type: Literal["uint8", "int8"] = Field(
        default="uint8", description="uint8 activations with int8 weights run the fast u8s8 kernels on x86."
    )


OPENVINO = Backend(
    name="openvino",
    precisions=frozenset({"fp32", "fp16", "bf16", "int8"}),
    toolchain="openvino-2026.4+nncf-3.4",
    image=JOBS_IMAGE,
    calibration_methods=frozenset({"auto", "minmax"}),
    options=OpenVINOOptions,
)

ONNXRUNTIME = Backend(
    name="onnxruntime",
    precisions=frozenset({"fp32", "int8"}),
    toolchain="onnxruntime-1.31",
    image=JOBS_IMAGE,
    calibration_methods=frozenset({"auto", "minmax", "entropy", "percentile"}),
    options=ONNXRuntimeOptions,
)
