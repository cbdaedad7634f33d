"""`mm.CalibDataInterface` and `mm.Calibrator` (docs/magicmind.md §1.5).

`calibrate(network, config)` needs an active device and a qint precision_mode in the config. It reads every
calibration data object (one per network input, in input order) with reset() and then next()/get_sample() until
next() returns OUT_OF_RANGE, checks each sample against get_shape()/get_data_type() and against the network
input (its dims, -1 matching any, and its ONNX data type: calibration data follows the original network, §1.5),
and records the samples on the network for `Builder.build_model`, which quantizes with them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from magicmind_standins import dtypes
from magicmind_standins.quantize import QuantSettings

from magicmind.python.runtime._config import BuilderConfig
from magicmind.python.runtime._network import ITensor, Network
from magicmind.python.runtime._status import Code, Status, invalid, precondition
from magicmind.python.runtime._system import active_card
from magicmind.python.runtime._types import DataType, Dims, QuantizationAlgorithm


class CalibDataInterface:
    """Base of calibration data; subclasses call `super().__init__()` and override the five methods."""

    def __init__(self) -> None:
        self._calib_data_initialised = True

    def next(self) -> Status:
        """Move to the next sample: `Status()`, or `Status(Code.OUT_OF_RANGE, ...)` when there is none."""
        raise NotImplementedError

    def get_shape(self) -> Dims:
        raise NotImplementedError

    def get_data_type(self) -> DataType:
        raise NotImplementedError

    def get_sample(self) -> np.ndarray:
        raise NotImplementedError

    def reset(self) -> Status:
        raise NotImplementedError


@dataclass(frozen=True)
class CalibrationRecord:
    batches: list[dict[str, np.ndarray]]  # network input name → sample, one dict per calibration batch
    settings: QuantSettings


class CalibrationError(ValueError):
    """Calibration data the calibrator refuses; the message says why."""


class Calibrator:
    def __init__(self, calib_data: list[CalibDataInterface]) -> None:
        for data in calib_data:
            if not getattr(data, "_calib_data_initialised", False):
                raise TypeError(f"{type(data).__name__}.__init__() must call CalibDataInterface.__init__()")
        self._calib_data = list(calib_data)
        self._algorithm = QuantizationAlgorithm.LINEAR_ALGORITHM

    def set_quantization_algorithm(self, algorithm: QuantizationAlgorithm) -> Status:
        self._algorithm = algorithm
        return Status()

    def calibrate(self, network: Network, config: BuilderConfig) -> Status:
        if active_card() is None:
            return precondition("calibration runs on an MLU: activate a device with mm.Device().active() inside "
                                "`with mm.System():` first")
        settings = config._settings
        if not settings.quantized:
            return invalid(f"calibration needs a qint precision_mode in the builder config, not "
                           f"{settings.precision_mode}")
        if self._algorithm is QuantizationAlgorithm.EQNM_ALGORITHM and settings.activation_quant_algo != "symmetric":
            return invalid("EQNM_ALGORITHM works only with symmetric activation_quant_algo")
        if network._onnx is None:
            return precondition("the network is empty; parse a model into it first")
        if len(self._calib_data) != network.get_input_count():
            return invalid(f"the network has {network.get_input_count()} inputs, but the calibrator has "
                           f"{len(self._calib_data)} calibration data objects")
        try:
            samples = [_read_samples(data, network.get_input(index), index)
                       for index, data in enumerate(self._calib_data)]
        except CalibrationError as error:
            return invalid(str(error))
        if len({len(input_samples) for input_samples in samples}) > 1:
            return invalid(f"the calibration data objects hold different numbers of samples: "
                           f"{[len(input_samples) for input_samples in samples]}")
        names = [network.get_input(index).get_tensor_name() for index in range(network.get_input_count())]
        batches = [dict(zip(names, batch)) for batch in zip(*samples)]
        network._calibration = CalibrationRecord(batches, settings.quant_settings(self._algorithm.value))
        return Status()


def _read_samples(data: CalibDataInterface, tensor: ITensor, index: int) -> list[np.ndarray]:
    label = f"calibration data {index} (input {tensor.get_tensor_name()})"
    _expect_ok(data.reset(), f"{label}: reset()")
    samples: list[np.ndarray] = []
    while (status := data.next()).code() is not Code.OUT_OF_RANGE:
        _expect_ok(status, f"{label}: next()")
        samples.append(_checked_sample(data, tensor, f"{label} sample {len(samples)}"))
    if not samples:
        raise CalibrationError(f"{label} has no samples")
    return samples


def _checked_sample(data: CalibDataInterface, tensor: ITensor, label: str) -> np.ndarray:
    sample = np.ascontiguousarray(data.get_sample())
    shape, data_type = data.get_shape().GetDims(), data.get_data_type()
    if list(sample.shape) != shape:
        raise CalibrationError(f"{label} has shape {list(sample.shape)}, but get_shape() says {shape}")
    try:
        sample_type = dtypes.name_of_numpy(sample.dtype)
    except KeyError as error:
        raise CalibrationError(f"{label}: {error}") from None
    if sample_type != data_type.value:
        raise CalibrationError(f"{label} has data type {sample.dtype}, but get_data_type() says {data_type.name}")
    network_dims = tensor.get_dimension().GetDims()
    if len(shape) != len(network_dims) or any(dim not in (-1, size) for dim, size in zip(network_dims, shape)):
        raise CalibrationError(f"{label} has shape {shape}, which does not match the network input dims "
                               f"{network_dims}")
    if data_type is not tensor._network_data_type:
        raise CalibrationError(f"{label} has data type {data_type.name}, but the network input takes "
                               f"{tensor._network_data_type.name}")
    return sample.copy()


def _expect_ok(status: Status, call: str) -> None:
    if not status.ok():
        raise CalibrationError(f"{call} failed: {status}")
