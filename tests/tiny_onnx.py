"""The tiny ONNX classifier both vendor stand-ins' tests compile: small enough to run in milliseconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INPUT_SHAPE = (3, 8, 8)
CLASSES = 10


def write_tiny_model(path: Path) -> None:
    """Conv → Relu → GlobalAveragePool → Flatten → Gemm, opset 11 like the ModelZoo exports."""
    rng = np.random.default_rng(0)
    initializers = [
        numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(rng.normal(0, 0.1, 4).astype(np.float32), "conv_b"),
        numpy_helper.from_array(rng.normal(0, 0.5, (CLASSES, 4)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(rng.normal(0, 0.1, CLASSES).astype(np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["conv"], name="Conv_0", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"], name="Relu_1"),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"], name="GlobalAveragePool_2"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="Flatten_3"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="Gemm_4", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *INPUT_SHAPE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=7)
    onnx.checker.check_model(model)
    onnx.save(model, path)
