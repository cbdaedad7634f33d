"""convert: PyTorch, TorchScript or ONNX → one checked ONNX model with a dynamic batch axis."""

from __future__ import annotations

import importlib
import sys
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from modeldeploy.spec import DEFAULT_SIMPLIFIER

from modeldeploy_jobs.limits import MODEL_BYTES
from modeldeploy_jobs.sources import inside
from modeldeploy_jobs.stage import StageContext, StageError, StageReason, StageResult

BATCH_AXIS = "batch"
PARITY_BATCH = 2
PICKLE_PROTOCOL_OPCODE = b"\x80"  # how a pickle of protocol 2 or later begins, as pre-1.6 torch.save wrote them


def run(context: StageContext) -> StageResult:
    source = context.config
    target = context.outputs_dir / "model.onnx"
    import onnx
    import onnxruntime
    import torch

    toolchain = {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    metrics: dict[str, Any] = {}
    if source["format"] == "onnx":
        original = _fetch_model(context, source)
        batch = _passthrough(original, source, target) or PARITY_BATCH
        reference = lambda: _onnx_reference(original, source)
    elif source["format"] == "pytorch":
        module, classifier = _pytorch_model(context, source)
        if classifier:
            metrics["weightsLabelOffset"] = {"rows": source["weightsLabelOffset"], "parameters": classifier}
        _export(module, source, target)
        batch, reference = PARITY_BATCH, lambda: _torch_runner(module)
    else:
        module = _torchscript(context, source)
        _export(module, source, target)
        batch, reference = PARITY_BATCH, lambda: _torch_runner(module)
    nodes_before = len(onnx.load(str(target), load_external_data=False).graph.node)
    simplifier = source.get("simplifier", DEFAULT_SIMPLIFIER) if source.get("simplify") else None
    if simplifier is not None:
        toolchain[simplifier] = SIMPLIFIERS[simplifier](target, source)
    _check(target, source)
    parity = _parity(reference(), target, source, batch)
    converted = onnx.load(str(target), load_external_data=False)
    metrics |= {
        "opset": _opset(converted),
        "simplifier": simplifier,
        "nodes": len(converted.graph.node),
        "nodesBeforeSimplify": nodes_before,
        "parity": parity,
    }
    return StageResult(outputs={"model.onnx": target}, metrics=metrics, toolchain=toolchain)


def _opset(model: Any) -> int | None:
    """The model's version of the default ONNX operator set."""
    return next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), None)


def _described(source: Mapping[str, Any]) -> str:
    return source.get("weights") or source.get("uri") or source.get("architecture", "the model")


# ---------------------------------------------------------------- PyTorch


def _pytorch_model(context: StageContext, source: Mapping[str, Any]) -> tuple[Any, list[str]]:
    """The model in eval mode, and the parameters whose leading rows weightsLabelOffset dropped."""
    import torch

    if source.get("code"):
        _import_path(context, source["code"])
    torch.manual_seed(0)  # random initialisation (randomWeights) is the same on every run
    model = _construct(source)
    trimmed: list[str] = []
    if source.get("weights"):
        path = context.fetch_source(source["weights"], context.workdir / "weights.pth", source.get("sha256"))
        state = _state_dict(path, source)
        if source.get("weightsLabelOffset", 0):
            trimmed = _drop_leading_labels(model.state_dict(), state, source)
        _load(model, state, source)
    return model.eval(), trimmed


def _import_path(context: StageContext, uri: str) -> None:
    name = Path(uri.split("?")[0]).name
    code_dir = context.workdir / "code"
    code_dir.mkdir(exist_ok=True)
    try:
        local = inside(code_dir, name)
    except ValueError:
        raise StageError(StageReason.CODE_INVALID, f"{uri}: names no file (a .py module or a .zip)") from None
    path = context.fetch_source(uri, local, None)
    if name.endswith(".zip"):
        unpacked = _unpacked_size(path)
        if unpacked is None:
            raise StageError(StageReason.CODE_INVALID, f"{uri}: not a readable zip archive")
        MODEL_BYTES.check(unpacked, f"{uri} unpacks to")
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                try:
                    inside(code_dir, member.removesuffix("/"))  # a folder's name ends in /
                except ValueError:
                    raise StageError(StageReason.CODE_INVALID,
                                     f"{uri}: an archive member's path is absolute or leads out of the archive") from None
            archive.extractall(code_dir)
    elif path != local:
        local.write_bytes(path.read_bytes())
    sys.path.insert(0, str(code_dir))


def _construct(source: Mapping[str, Any]) -> Any:
    architecture = source["architecture"]
    kind, _, rest = architecture.partition(":")
    kwargs = dict(source.get("architectureArgs", {}))
    if source.get("numClasses") is not None:
        kwargs["num_classes"] = source["numClasses"]
    try:
        if kind == "timm":
            import timm

            return timm.create_model(rest, pretrained=False, **kwargs)
        if kind == "torchvision":
            import torchvision

            return torchvision.models.get_model(rest, weights=None, **kwargs)
        module_name, _, callable_name = rest.partition(":")
        factory = getattr(importlib.import_module(module_name), callable_name)
        return factory(**kwargs)
    except SyntaxError as error:
        raise StageError(StageReason.CODE_INVALID, f"{architecture}: the code does not compile: "
                         f"{type(error).__name__} in {Path(error.filename or '?').name} line {error.lineno}") from None
    except (ImportError, AttributeError) as error:
        raise StageError(StageReason.ARCHITECTURE_INVALID, f"{architecture}: cannot import it: {error}") from None
    except Exception as error:  # noqa: BLE001 - the user's constructor may raise anything
        raise StageError(StageReason.ARCHITECTURE_INVALID,
                         f"{architecture}: cannot build it: {type(error).__name__}: {error}") from None


def _state_dict(path: Path, source: Mapping[str, Any]) -> dict[str, Any]:
    import pickle

    import torch

    uri = source["weights"]
    _check_checkpoint_size(path, uri)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "global" in str(error).lower():  # torch names the Python object it refused to import
            raise StageError(
                StageReason.UNSAFE_WEIGHTS,
                f"{uri}: refused: the file holds pickled Python objects, not only tensors (it is loaded with "
                "weights_only=True); save model.state_dict() instead",
            ) from None
        raise StageError(StageReason.WEIGHTS_INVALID, _unreadable_checkpoint(uri, error)) from None
    except Exception as error:  # noqa: BLE001 - a damaged file makes the unpickler fail in many ways
        raise StageError(StageReason.WEIGHTS_INVALID, _unreadable_checkpoint(uri, error)) from None
    key = source.get("weightsKey")
    if key is not None:
        if not isinstance(checkpoint, dict) or key not in checkpoint:
            found = f"a dict of {len(checkpoint)} entries" if isinstance(checkpoint, dict) else "no dict"
            raise StageError(StageReason.WEIGHTS_INVALID, f"{uri}: no {key!r} in the checkpoint (it holds {found})")
        checkpoint = checkpoint[key]
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise StageError(StageReason.WEIGHTS_INVALID, f"{uri}: expected a state_dict (names to tensors); set "
                         "weightsKey if it is nested in the checkpoint")
    prefixes = sorted(source.get("weightsPrefixMap", {}).items(), key=lambda item: -len(item[0]))
    return {_renamed(name, prefixes): tensor for name, tensor in checkpoint.items()}


def _check_checkpoint_size(path: Path, uri: str) -> None:
    """A torch.save file is a zip archive (a pickle before PyTorch 1.6): its unpacked size is checked against the
    model cap from the zip's central directory, before torch reads any of it."""
    unpacked = _unpacked_size(path)
    if unpacked is not None:
        MODEL_BYTES.check(unpacked, f"{uri} unpacks to")
        return
    with path.open("rb") as file:
        if file.read(1) != PICKLE_PROTOCOL_OPCODE:
            raise StageError(StageReason.WEIGHTS_INVALID, f"{uri}: not a readable PyTorch checkpoint: the file is "
                             "not a whole zip archive as torch.save writes (nor the pickle it wrote before 1.6)")
    MODEL_BYTES.check(path.stat().st_size, f"{uri} holds")


def _unpacked_size(path: Path) -> int | None:
    """The total size of a zip archive's members as its central directory declares them; None if it is no zip."""
    try:
        with zipfile.ZipFile(path) as archive:
            return sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile:
        return None


def _unreadable_checkpoint(uri: str, error: Exception) -> str:
    # The loader's message may quote bytes of the file, so only its type is named.
    return f"{uri}: not a readable PyTorch checkpoint: it is damaged or truncated ({type(error).__name__})"


def _renamed(name: str, prefixes: list[tuple[str, str]]) -> str:
    for old, new in prefixes:
        if name.startswith(old):
            return new + name[len(old) :]
    return name


def _drop_leading_labels(expected: Mapping[str, Any], state: dict[str, Any], source: Mapping[str, Any]) -> list[str]:
    """Drop weightsLabelOffset leading rows from the classifier's tensors in `state`, as timm's label_offset does;
    returns their names. They are the weight and bias of the modules `classifier` names, or else every tensor the
    checkpoint holds with that many rows more than the model's (the model's having numClasses rows, if it is set)."""
    rows = source["weightsLabelOffset"]
    described = f"{source['weights']}: weightsLabelOffset: {rows}"
    if source.get("classifier"):
        names = []
        for module in source["classifier"]:
            found = [f"{module}.{kind}" for kind in ("weight", "bias") if f"{module}.{kind}" in expected]
            if f"{module}.weight" not in found:
                raise StageError(StageReason.WEIGHTS_MISMATCH, f"classifier: {source['architecture']} has no "
                                 f"parameter {module}.weight (is {module!r} the classifier module's name?)")
            names += found
        for name in names:
            if name not in state:
                raise StageError(StageReason.WEIGHTS_MISMATCH, f"{described}: the checkpoint has no {name}")
            if not _has_extra_rows(state[name].shape, expected[name].shape, rows):
                raise StageError(StageReason.WEIGHTS_MISMATCH, f"{described}: {name} is "
                                 f"{list(state[name].shape)} in the checkpoint and {list(expected[name].shape)} in the "
                                 f"model, not {rows} leading row(s) more")
    else:
        classes = source.get("numClasses")
        names = [
            name for name, tensor in expected.items()
            if name in state and _has_extra_rows(state[name].shape, tensor.shape, rows)
            and (classes is None or tensor.shape[0] == classes)
        ]
        if not names:
            rows_of_model = f"the model's {classes}" if classes is not None else "the model's"
            raise StageError(StageReason.WEIGHTS_MISMATCH, f"{described}: no tensor of the checkpoint has {rows} "
                             f"leading row(s) more than {rows_of_model} (the classifier's weight and bias); name them "
                             "with classifier, or drop weightsLabelOffset if the checkpoint already matches")
    for name in names:
        state[name] = state[name][rows:]
    return names


def _has_extra_rows(checkpoint: Any, model: Any, rows: int) -> bool:
    return len(checkpoint) == len(model) >= 1 and checkpoint[0] == model[0] + rows and checkpoint[1:] == model[1:]


def _load(model: Any, state: dict[str, Any], source: Mapping[str, Any]) -> None:
    expected = model.state_dict()
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    mismatched = [
        f"{name}: checkpoint {list(state[name].shape)}, model {list(expected[name].shape)}"
        for name in expected
        if name in state and state[name].shape != expected[name].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s) ({_few(missing)})")
    if unexpected:  # the checkpoint's own names are not quoted: they are the file's content
        problems.append(f"{len(unexpected)} key(s) the model does not have")
    if mismatched:
        problems.append(f"size mismatch for {_few(mismatched)}")
        extra = {
            state[name].shape[0] - expected[name].shape[0]
            for name in expected
            if name in state and state[name].shape != expected[name].shape and state[name].shape[0] > expected[name].shape[0]
            and state[name].shape[1:] == expected[name].shape[1:]
        }
        if len(extra) == 1 and not source.get("weightsLabelOffset", 0):
            (rows,) = extra
            problems.append(f"the checkpoint's classifier has {rows} leading row(s) more than the model's (a "
                            f"background class?): weightsLabelOffset: {rows} drops them, as timm's label_offset does")
    if missing and unexpected and _differ_by_prefix(missing, unexpected):
        problems.append("every unexpected key ends in a missing one: map the prefix with weightsPrefixMap")
    if problems:
        raise StageError(
            StageReason.WEIGHTS_MISMATCH,
            f"{source['weights']} does not match {source['architecture']}: {'; '.join(problems)}",
        )
    model.load_state_dict(state, strict=True)


def _differ_by_prefix(missing: list[str], unexpected: list[str]) -> bool:
    return all(any(name.endswith(f".{wanted}") for wanted in missing) for name in unexpected)


def _few(items: list[str], limit: int = 4) -> str:
    return ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def _torchscript(context: StageContext, source: Mapping[str, Any]) -> Any:
    import torch

    path = context.fetch_source(source["uri"], context.workdir / "model.pt", source.get("sha256"))
    unpacked = _unpacked_size(path)
    if unpacked is None:
        raise StageError(StageReason.MODEL_INVALID, f"{source['uri']}: not a TorchScript archive: the file is not "
                         "a whole zip archive as torch.jit.save writes")
    MODEL_BYTES.check(unpacked, f"{source['uri']} unpacks to")
    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except (RuntimeError, ValueError) as error:
        raise StageError(StageReason.MODEL_INVALID, f"{source['uri']}: not a readable TorchScript archive: it is "
                         f"damaged or truncated ({type(error).__name__})") from None


def _dummy_inputs(source: Mapping[str, Any], batch: int) -> list[np.ndarray]:
    generator = np.random.default_rng(0)
    arrays = []
    for spec in source["inputs"]:
        shape = [batch if dim == -1 else dim for dim in spec["shape"]]
        if spec["dtype"].startswith("float"):
            arrays.append(generator.standard_normal(shape).astype(spec["dtype"]))
        else:
            arrays.append(generator.integers(0, 10, shape).astype(spec["dtype"]))
    return arrays


def _output_names(source: Mapping[str, Any]) -> list[str]:
    return list(source.get("outputs") or ["output"])


def _export(module: Any, source: Mapping[str, Any], target: Path) -> None:
    import torch

    names = [spec["name"] for spec in source["inputs"]]
    outputs = _output_names(source)
    dummies = tuple(torch.from_numpy(array) for array in _dummy_inputs(source, PARITY_BATCH))
    dynamic = {name: {0: BATCH_AXIS} for name in [*names, *outputs]}
    try:
        torch.onnx.export(
            module, dummies, str(target), input_names=names, output_names=outputs, dynamic_axes=dynamic,
            opset_version=source["opset"], do_constant_folding=True, dynamo=False,
        )
    except Exception as error:  # noqa: BLE001 - the exporter raises many types for unsupported models
        raise StageError(StageReason.EXPORT_FAILED, f"{_described(source)}: ONNX export at opset "
                         f"{source['opset']} failed: {type(error).__name__}: {error}") from None


def _torch_runner(module: Any) -> Any:
    import torch

    def run(arrays: list[np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            result = module(*(torch.from_numpy(array) for array in arrays))
        results = result if isinstance(result, (tuple, list)) else [result]
        return [item.detach().numpy() for item in results]

    return run


# ---------------------------------------------------------------- ONNX


def _fetch_model(context: StageContext, source: Mapping[str, Any]) -> Path:
    path = context.fetch_source(source["uri"], context.workdir / "source.onnx", source.get("sha256"))
    _check_onnx_size(path, source["uri"])
    return path


def _check_onnx_size(path: Path, uri: str) -> None:
    """The model file and the external data its tensors declare, against the model cap, before any tensor is read."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    MODEL_BYTES.check(path.stat().st_size, f"{uri} holds")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - protobuf decode errors have no common base
        raise StageError(StageReason.MODEL_INVALID, f"{uri}: not an ONNX model") from None
    directory = path.parent.resolve()
    total = path.stat().st_size
    for tensor in _tensors(model.graph):
        if not uses_external_data(tensor):
            continue
        try:
            info = ExternalDataInfo(tensor)
        except ValueError:  # an offset or length that is no integer
            raise StageError(StageReason.MODEL_INVALID, f"{uri}: a tensor's external-data entry is malformed") from None
        location = (directory / info.location).resolve()
        if not location.is_relative_to(directory):
            raise StageError(StageReason.MODEL_INVALID,
                             f"{uri}: a tensor's external data lies outside the model's directory")
        if not location.is_file():
            raise StageError(StageReason.MODEL_INVALID,
                             f"{uri}: a tensor's external-data file is not beside the model")
        available = max(0, location.stat().st_size - (info.offset or 0))
        declared = max(info.length or available, _tensor_bytes(tensor))
        total += declared
        MODEL_BYTES.check(total, f"{uri} and its external data declare")
        if declared > available:
            raise StageError(StageReason.MODEL_INVALID, f"{uri}: a tensor declares {declared:,} bytes of external "
                             f"data where its file holds {available:,}")


def _tensors(graph: Any) -> Any:
    """Every tensor of a graph: initializers and node attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _tensors(subgraph)


def _tensor_bytes(tensor: Any) -> int:
    from onnx import helper

    try:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except (KeyError, TypeError):
        itemsize = 1
    return int(np.prod(list(tensor.dims), dtype=object)) * itemsize


def _passthrough(original: Path, source: Mapping[str, Any], target: Path) -> int | None:
    """Save the source model with a dynamic batch axis, at the spec's opset if it names one (else at the model's
    own); returns the model's fixed batch, if any."""
    import onnx

    try:
        model = onnx.load(str(original))
    except Exception as error:  # noqa: BLE001 - protobuf and external-data errors have no common base
        raise StageError(StageReason.MODEL_INVALID, f"{source['uri']}: not a readable ONNX model "
                         f"({type(error).__name__})") from None
    initializers = {init.name for init in model.graph.initializer}
    graph_inputs = {value.name: value for value in model.graph.input if value.name not in initializers}
    declared = [spec["name"] for spec in source["inputs"]]
    if sorted(declared) != sorted(graph_inputs):
        raise StageError(StageReason.INPUTS_MISMATCH, f"{source['uri']}: the model's inputs are "
                         f"{sorted(graph_inputs)}, the spec declares {declared}")
    for spec in source["inputs"]:
        _check_declared_input(graph_inputs[spec["name"]], spec, source["uri"])
    static_batch = _batch_of(graph_inputs[declared[0]])
    for value in [*graph_inputs.values(), *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = BATCH_AXIS
    current = _opset(model)
    if source.get("opset") is not None and current != source["opset"]:
        try:
            model = onnx.version_converter.convert_version(model, source["opset"])
        except Exception as error:  # noqa: BLE001 - the converter raises bare RuntimeErrors and C++ errors
            raise StageError(StageReason.OPSET_CONVERSION_FAILED, f"{source['uri']}: cannot convert from opset "
                             f"{current} to {source['opset']}: {error}") from None
    onnx.save(model, str(target))
    return static_batch


def _check_declared_input(value: Any, spec: Mapping[str, Any], uri: str) -> None:
    """The spec's shape (past the batch axis) and dtype of one input against the model's, where the model fixes them."""
    from onnx import helper

    tensor = value.type.tensor_type
    declared = list(spec["shape"])
    if tensor.HasField("shape"):
        dims = [dim.dim_value if dim.HasField("dim_value") else -1 for dim in tensor.shape.dim]
        if len(dims) != len(declared) or any(
            model > 0 and wanted > 0 and model != wanted for model, wanted in zip(dims[1:], declared[1:])
        ):
            raise StageError(StageReason.INPUTS_MISMATCH, f"{uri}: input {spec['name']!r} has shape {dims} in the "
                             f"model, the spec declares {declared} (-1: any size; the first axis is the batch)")
    if tensor.elem_type:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
        if dtype != spec["dtype"]:
            raise StageError(StageReason.INPUTS_MISMATCH, f"{uri}: input {spec['name']!r} takes {dtype} in the "
                             f"model, the spec declares {spec['dtype']}")


def _batch_of(value: Any) -> int | None:
    dims = value.type.tensor_type.shape.dim
    return dims[0].dim_value if dims and dims[0].HasField("dim_value") else None


def _onnx_reference(original: Path, source: Mapping[str, Any]) -> Any:
    try:
        return _onnx_runner(original)
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise StageError(StageReason.MODEL_INVALID, f"{source['uri']}: onnxruntime cannot load it: {error}") from None


def _onnx_runner(path: Path) -> Any:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [item.name for item in session.get_inputs()]

    def run(arrays: list[np.ndarray]) -> list[np.ndarray]:
        return session.run(None, dict(zip(names, arrays, strict=True)))

    return run


def _onnxslim(target: Path, source: Mapping[str, Any]) -> str:
    import onnx
    import onnxslim

    try:
        simplified = onnxslim.slim(onnx.load(str(target)))
    except Exception as error:  # noqa: BLE001
        raise StageError(StageReason.SIMPLIFY_FAILED, f"onnxslim could not simplify the model ({error}); set "
                         "simplify: false to convert without it") from None
    onnx.save(simplified, str(target))
    return onnxslim.__version__


def _onnxsim(target: Path, source: Mapping[str, Any]) -> str:
    """onnx-simplifier as `python -m onnxsim model.onnx out.onnx --overwrite-input-shape=<name>:<shape>` runs it,
    with every input's shape as the spec declares it (-1 keeps the batch axis dynamic)."""
    from importlib.metadata import version

    import onnx

    try:
        import onnxsim
    except ImportError:
        raise StageError(StageReason.TOOLCHAIN_MISSING, "simplifier: onnxsim is not installed in this job image "
                         "(pip install onnxsim); set simplifier: onnxslim to use onnxslim") from None
    shapes = {spec["name"]: list(spec["shape"]) for spec in source["inputs"]}
    try:
        simplified, checked = onnxsim.simplify(onnx.load(str(target)), overwrite_input_shapes=shapes)
    except Exception as error:  # noqa: BLE001 - onnxsim raises its own and C++ errors
        raise StageError(StageReason.SIMPLIFY_FAILED, f"onnxsim could not simplify the model ({error}); set "
                         "simplifier: onnxslim, or simplify: false to convert without simplifying") from None
    if not checked:
        raise StageError(StageReason.SIMPLIFY_FAILED, "onnxsim's check found that the simplified model's outputs "
                         "differ from the model's; set simplifier: onnxslim, or simplify: false")
    onnx.save(simplified, str(target))
    return version("onnxsim")


SIMPLIFIERS: Mapping[str, Callable[[Path, Mapping[str, Any]], str]] = {"onnxslim": _onnxslim, "onnxsim": _onnxsim}


def _check(target: Path, source: Mapping[str, Any]) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(target), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        where = source.get("uri") if source["format"] == "onnx" else "the exported model"
        raise StageError(StageReason.MODEL_INVALID, f"{where} fails the ONNX checker: {error}") from None


def _parity(reference: Any, target: Path, source: Mapping[str, Any], batch: int) -> dict[str, float]:
    """Run both models on the same seeded random inputs; a source ONNX with a fixed batch runs at that batch."""
    arrays = _dummy_inputs(source, batch)
    try:
        expected = reference(arrays)
    except Exception as error:  # noqa: BLE001 - torch and onnxruntime raise their own exception types
        raise StageError(StageReason.INPUTS_MISMATCH, f"{_described(source)} does not run on inputs of the spec's "
                         f"shapes and dtypes: {type(error).__name__}: {error}") from None
    try:
        actual = _onnx_runner(target)(arrays)
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise StageError(StageReason.MODEL_INVALID, f"onnxruntime cannot run the converted model: {error}") from None
    diff, cosine = 0.0, 1.0
    for want, got in zip(expected, actual, strict=False):
        want, got = np.asarray(want, dtype=np.float64).ravel(), np.asarray(got, dtype=np.float64).ravel()
        if want.shape != got.shape:
            raise StageError(StageReason.PARITY_FAILED,
                             f"the ONNX output has {got.size} values, the source model {want.size}")
        diff = max(diff, float(np.max(np.abs(want - got))) if want.size else 0.0)
        norms = float(np.linalg.norm(want) * np.linalg.norm(got))
        cosine = min(cosine, float(want @ got) / norms if norms else 1.0)
    limits = source["parity"]
    if diff > limits["maxAbsDiff"] or cosine < limits["minCosine"]:
        raise StageError(
            StageReason.PARITY_FAILED,
            f"the ONNX model does not reproduce {_described(source)}: max abs diff {diff:.3g} "
            f"(allowed {limits['maxAbsDiff']}), cosine similarity {cosine:.6f} (required {limits['minCosine']})",
        )
    return {"maxAbsDiff": diff, "cosine": cosine, "batch": batch}
