"""The MagicMind build program: ONNX -> a serialized MagicMind model, calibrated on the MLU for the qint modes.

Runs inside the MagicMind job image as `python3 -m modeldeploy_jobs.magicmind_build`, so it can be
run by hand with the command line `modeldeploy plan` shows. It follows Cambricon's own build flow
(docs/magicmind.md §1.2-1.6): Parser(kOnnx) -> Network with the input dims -> BuilderConfig
from a JSON file -> Calibrator over the calibration samples (one `<input>.npy` per input, samples
on the first axis, cut into batches of the input's batch dimension) on an active device ->
Builder.build_model -> serialize_to_file. It logs in the python_common format; the compile stage
reads the log for the two success lines. It exits 3 when the model or the calibration data is at
fault (the ONNX does not parse, an input takes no such dims, fewer samples than a batch), 1 when
the toolchain or the device failed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

EXIT_FAILED = 1
EXIT_REJECTED = 3
BUILT = "build_and_serialize: built model successfully."
SERIALIZED = "build_and_serialize: serialized model successfully."
LOG_FORMAT = "%(asctime)s: %(levelname)s: %(filename)s:%(lineno)d] %(message)s"

log = logging.getLogger("magicmind_build")


class BuildError(Exception):
    """A failed build; `rejected` when the model or the calibration data is at fault."""

    def __init__(self, message: str, rejected: bool = False):
        super().__init__(message)
        self.rejected = rejected


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python3 -m modeldeploy_jobs.magicmind_build", description=__doc__)
    parser.add_argument("--onnx", required=True, type=Path)
    parser.add_argument("--builder_config", required=True, type=Path, help="BuilderConfig JSON")
    parser.add_argument("--input_dims", required=True, nargs="+", metavar="N,C,H,W", help="one per model input")
    parser.add_argument("--magicmind_model", required=True, type=Path)
    parser.add_argument("--calibration_data", type=Path, help="directory of <input name>.npy (qint modes)")
    parser.add_argument("--calibration_algo", choices=("linear", "eqnm"), default="linear")
    parser.add_argument("--device_id", type=int, default=0)
    return parser.parse_args(argv)


def _check(status: Any, what: str, rejected: bool = False) -> None:
    if not status.ok():
        raise BuildError(f"{what} failed: {status}", rejected)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format=LOG_FORMAT)
    args = _arguments(argv)
    try:
        build(args)
    except BuildError as error:
        log.error("%s", error)
        return EXIT_REJECTED if error.rejected else EXIT_FAILED
    return 0


def build(args: argparse.Namespace) -> None:
    import magicmind.python.runtime as mm
    from magicmind.python.runtime.parser import Parser

    network = mm.Network()
    _check(Parser(mm.ModelKind.kOnnx).parse(network, str(args.onnx)), f"parsing {args.onnx}", rejected=True)
    if len(args.input_dims) != network.get_input_count():
        raise BuildError(f"{len(args.input_dims)} --input_dims for a network with {network.get_input_count()} inputs")
    dims = [tuple(int(d) for d in text.split(",")) for text in args.input_dims]
    for index, shape in enumerate(dims):
        _check(network.get_input(index).set_dimension(mm.Dims(shape)), f"setting input {index} to {shape}",
               rejected=True)
    config = mm.BuilderConfig()
    _check(config.parse_from_string(args.builder_config.read_text()), f"reading {args.builder_config}")
    if args.calibration_data is not None:
        _calibrate(mm, network, config, args, dims)
    model = mm.Builder().build_model("modeldeploy", network, config)
    if model is None:
        raise BuildError("build_and_serialize: building the model failed")
    log.info(BUILT)
    _check(model.serialize_to_file(str(args.magicmind_model)), f"serializing to {args.magicmind_model}")
    log.info(SERIALIZED)
    for index, (name, shape) in enumerate(zip(model.get_input_names(), model.get_input_dimensions(), strict=False)):
        log.info("model input[%d]'s name is %s", index, name)
        log.info("model input[%d]'s shape is %s", index, shape.GetDims())


def _calibrate(mm: Any, network: Any, config: Any, args: argparse.Namespace, dims: list[tuple[int, ...]]) -> None:
    from magicmind.python.common.types import get_datatype_by_numpy

    class CalibData(mm.CalibDataInterface):
        """One network input's calibration batches, served in order (docs/magicmind.md §1.5)."""

        def __init__(self, batches: list[np.ndarray]):
            super().__init__()
            self.batches = batches
            self.position = -1

        def next(self) -> Any:
            if self.position + 1 >= len(self.batches):
                return mm.Status(mm.Code.OUT_OF_RANGE, "No more data.")
            self.position += 1
            return mm.Status()

        def get_shape(self) -> Any:
            return mm.Dims(self.batches[max(self.position, 0)].shape)

        def get_data_type(self) -> Any:
            return get_datatype_by_numpy(self.batches[0].dtype)

        def get_sample(self) -> np.ndarray:
            return np.ascontiguousarray(self.batches[self.position])

        def reset(self) -> Any:
            self.position = -1
            return mm.Status()

    calibration_data = []
    for index in range(network.get_input_count()):
        name = network.get_input(index).get_tensor_name()
        path = args.calibration_data / f"{name}.npy"
        if not path.is_file():
            raise BuildError(f"no calibration data for input {name!r} ({path})")
        samples = np.load(path)
        batch = dims[index][0]
        if len(samples) < batch:
            raise BuildError(f"{len(samples)} calibration samples for input {name!r}, fewer than its batch {batch}",
                             rejected=True)
        calibration_data.append(CalibData([samples[start : start + batch]
                                           for start in range(0, len(samples) - batch + 1, batch)]))
    calibrator = mm.Calibrator(calibration_data)
    algorithm = {"linear": mm.QuantizationAlgorithm.LINEAR_ALGORITHM,
                 "eqnm": mm.QuantizationAlgorithm.EQNM_ALGORITHM}[args.calibration_algo]
    calibrator.set_quantization_algorithm(algorithm)
    with mm.System() as system:
        if system.device_count() <= args.device_id:
            raise BuildError(f"calibration needs MLU {args.device_id}; this node has {system.device_count()}")
        device = mm.Device()
        device.id = args.device_id
        _check(device.active(), f"activating MLU {args.device_id}")
        _check(calibrator.calibrate(network, config), "calibration")
    log.info("calibrated on %d batch(es) with the %s algorithm", len(calibration_data[0].batches), args.calibration_algo)


if __name__ == "__main__":
    sys.exit(main())
