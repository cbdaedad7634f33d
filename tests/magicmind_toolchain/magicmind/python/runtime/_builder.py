"""`mm.Builder().build_model(name, network, config)` (docs/magicmind.md §1.6): a `mm.Model`, or None after an
ERROR log line on stderr when the network and config cannot make one.

The built model is the parsed ONNX with the network's input dims (all dims symbolic for a shape-mutable model),
output shapes left to onnxruntime, and, for qint precision modes, QDQ quantization calibrated on the samples
`mm.Calibrator.calibrate` recorded on this network with the same precision settings (magicmind_standins/
quantize.py); a qint build without such a calibration fails, as MagicMind refuses to build it. The other
settings (layouts, insert_bn, float16) are applied when the model runs (magicmind_standins/engine.py).
`dim_range` is kept only for shape-mutable models.
"""

from __future__ import annotations

import copy

import onnx
import onnxruntime
from magicmind_standins import log
from magicmind_standins.engine import CHANNEL_AXIS, DEFAULT_CHANNEL_AXIS, ONNXRUNTIME_ERRORS, to_model_dims
from magicmind_standins.mm_file import InputInfo, ModelInfo, OutputInfo, QuantizationInfo
from magicmind_standins.quantize import QuantizationError, quantize

from magicmind.python.runtime._config import BuilderConfig, BuildSettings
from magicmind.python.runtime._model import Model
from magicmind.python.runtime._network import ITensor, Network

LOG_SOURCE = "magicmind/standin/builder.py"
FLOAT_TYPES = frozenset({"FLOAT32", "FLOAT16"})


class BuildError(ValueError):
    """Why build_model returns None."""


class Builder:
    def build_model(self, name: str, network: Network, config: BuilderConfig) -> Model | None:
        try:
            onnx_model, info = _build(name, network, config._settings)
        except BuildError as error:
            log("ERROR", LOG_SOURCE, f"build_model {name!r} failed: {error}")
            return None
        return Model._built(onnx_model.SerializeToString(), info)


def _build(name: str, network: Network, settings: BuildSettings) -> tuple[onnx.ModelProto, ModelInfo]:
    if network._onnx is None:
        raise BuildError("the network is empty; parse a model into it first")
    inputs = [network.get_input(index) for index in range(network.get_input_count())]
    outputs = [network.get_output(index) for index in range(network.get_output_count())]
    _check_inputs_fit(settings, inputs, len(outputs))
    graph = _graph_with_input_dims(network._onnx, inputs, settings.graph_shape_mutable)
    output_dims = _inferred_output_dims(graph, outputs)
    _check_output_layouts_fit(settings, outputs, output_dims)
    quantization: QuantizationInfo | None = None
    if settings.quantized:
        graph, quantization = _quantized(graph, network, settings)
    try:
        onnxruntime.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    except ONNXRUNTIME_ERRORS as error:
        raise BuildError(f"onnxruntime cannot load the built network: {error}") from None
    info = ModelInfo(
        name=name,
        archs=list(settings.archs),
        cluster_num=dict(settings.cluster_num),
        precision_mode=settings.precision_mode,
        computation_preference=settings.computation_preference,
        graph_shape_mutable=settings.graph_shape_mutable,
        quantization=quantization,
        inputs=[_input_info(index, tensor, settings) for index, tensor in enumerate(inputs)],
        outputs=[_output_info(index, tensor, dims, settings)
                 for index, (tensor, dims) in enumerate(zip(outputs, output_dims))],
    )
    return graph, info


def _check_inputs_fit(settings: BuildSettings, inputs: list[ITensor], output_count: int) -> None:
    """The config's per-tensor entries name existing tensors; inputs fit their entries; static ones have all dims."""
    for key, indexes, count in (
        ("dim_range", settings.dim_range, len(inputs)), ("convert_input_layout", settings.input_layouts, len(inputs)),
        ("insert_bn_before_firstnode", settings.insert_bn, len(inputs)),
        ("convert_output_layout", settings.output_layouts, output_count),
    ):
        unknown = sorted(index for index in indexes if index >= count)
        if unknown:
            raise BuildError(f"{key} names tensor indexes {unknown}, but the network has {count}")
    for index, tensor in enumerate(inputs):
        _check_input_fits(index, tensor, settings)


def _check_output_layouts_fit(settings: BuildSettings, outputs: list[ITensor], dims: list[list[int]]) -> None:
    for index, layout in settings.output_layouts.items():
        if len(layout["src"]) != len(dims[index]):
            raise BuildError(f"convert_output_layout.{index} {layout['src']} does not fit output "
                             f"{outputs[index].get_tensor_name()} dims {dims[index]}")


def _check_input_fits(index: int, tensor: ITensor, settings: BuildSettings) -> None:
    name, dims = tensor.get_tensor_name(), tensor.get_dimension().GetDims()
    if not settings.graph_shape_mutable and -1 in dims:
        raise BuildError(f"input[{index}] {name} has open dims {dims}; set them with set_dimension or build a "
                         "shape-mutable model (graph_shape_mutable true)")
    dim_range = settings.dim_range.get(index)
    if dim_range is not None and len(dim_range["min"]) != len(dims):
        raise BuildError(f"dim_range.{index} has {len(dim_range['min'])} dims, input {name} has {len(dims)}")
    layout = settings.input_layouts.get(index)
    if layout is not None and len(layout["src"]) != len(dims):
        raise BuildError(f"convert_input_layout.{index} {layout['src']} does not fit input {name} dims {dims}")
    normalization = settings.insert_bn.get(index)
    if normalization is None:
        return
    if tensor._network_data_type.value not in FLOAT_TYPES:
        raise BuildError(f"insert_bn_before_firstnode.{index} needs a float input, {name} is "
                         f"{tensor._network_data_type.name}")
    channels = dims[layout["src"].index(CHANNEL_AXIS) if layout else DEFAULT_CHANNEL_AXIS]
    if channels not in (-1, len(normalization["mean"])):
        raise BuildError(f"insert_bn_before_firstnode.{index} has {len(normalization['mean'])} means, input "
                         f"{name} has {channels} channels")


def _graph_with_input_dims(model: onnx.ModelProto, inputs: list[ITensor], mutable: bool) -> onnx.ModelProto:
    """The ONNX with the network's input dims (-1 or shape-mutable → symbolic) and no recorded inner shapes."""
    graph = copy.deepcopy(model)
    by_name = {value.name: value for value in graph.graph.input}
    for tensor in inputs:
        name = tensor.get_tensor_name()
        for axis, (dim, size) in enumerate(zip(by_name[name].type.tensor_type.shape.dim,
                                               tensor.get_dimension().GetDims())):
            if mutable or size == -1:
                dim.dim_param = f"{name}_dim{axis}"
            else:
                dim.dim_value = size
    del graph.graph.value_info[:]
    for output in graph.graph.output:
        output.type.tensor_type.ClearField("shape")
    return graph


def _inferred_output_dims(graph: onnx.ModelProto, outputs: list[ITensor]) -> list[list[int]]:
    """Output dims by ONNX shape inference (-1 where symbolic), else the dims the ONNX file declared."""
    inferred = {value.name: value for value in onnx.shape_inference.infer_shapes(graph).graph.output}
    dims: list[list[int]] = []
    for tensor in outputs:
        value = inferred.get(tensor.get_tensor_name())
        if value is not None and value.type.tensor_type.HasField("shape"):
            dims.append([dim.dim_value or -1 for dim in value.type.tensor_type.shape.dim])
        else:
            dims.append(tensor.get_dimension().GetDims())
    return dims


def _quantized(graph: onnx.ModelProto, network: Network,
               settings: BuildSettings) -> tuple[onnx.ModelProto, QuantizationInfo]:
    record = network._calibration
    if record is None:
        raise BuildError(f"precision_mode {settings.precision_mode} needs calibration: run "
                         "mm.Calibrator([...]).calibrate(network, config) with this network before build_model")
    expected = settings.quant_settings(record.settings.algorithm)
    if record.settings != expected:
        raise BuildError(f"the network was calibrated for {record.settings}, but the config asks for {expected}; "
                         "calibrate again")
    try:
        return quantize(graph, record.batches, record.settings)
    except QuantizationError as error:
        raise BuildError(str(error)) from None


def _input_info(index: int, tensor: ITensor, settings: BuildSettings) -> InputInfo:
    layout = settings.input_layouts.get(index)
    normalization = settings.insert_bn.get(index)
    return InputInfo(
        name=tensor.get_tensor_name(),
        dims=to_model_dims(tensor.get_dimension().GetDims(), layout),
        data_type="UINT8" if normalization is not None else tensor.get_data_type().value,
        network_data_type=tensor._network_data_type.value,
        layout=layout,
        insert_bn=normalization,
        dim_range=settings.dim_range.get(index) if settings.graph_shape_mutable else None,
    )


def _output_info(index: int, tensor: ITensor, dims: list[int], settings: BuildSettings) -> OutputInfo:
    layout = settings.output_layouts.get(index)
    return OutputInfo(
        name=tensor.get_tensor_name(),
        dims=to_model_dims(dims, layout),
        data_type=tensor.get_data_type().value,
        network_data_type=tensor._network_data_type.value,
        layout=layout,
    )
