"""The prepared-data format: written by the prepare stage, read by calibrate and evaluate.

Every variant's directory holds `meta.json`. The `tensors` variant adds `shard-00000.npz`, ...
(one array per model input, samples on the first axis) and `labels.npy` when labelled; the bins
variants add `bins.tar` with one raw C-order `<input>/<sample>.bin` member per sample and input
(the ais_bench input layout) and `labels.txt` of `<sample> <label>` lines when labelled.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import tarfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

TENSORS = "tensors"
TENSORS_NHWC = "tensors-nhwc"  # the tensors of images preprocessed channels last, for a model built to take NHWC
SAMPLE_BINS = "sample-bins"
RAW_UINT8_BINS = "raw-uint8-bins"
RAW_UINT8_UNCROPPED_BINS = "raw-uint8-uncropped-bins"  # resized, not cropped: Ascend's AIPP crops on the device
VARIANTS = (TENSORS, TENSORS_NHWC, SAMPLE_BINS, RAW_UINT8_BINS, RAW_UINT8_UNCROPPED_BINS)
SHARDED = (TENSORS, TENSORS_NHWC)

META = "meta.json"
LABELS_NPY = "labels.npy"
LABELS_TXT = "labels.txt"
BINS_TAR = "bins.tar"
SHARD_BYTES = 256 * 1024 * 1024

DIGITS_SAMPLES = 1797  # len(sklearn.datasets.load_digits().target)

# One sample: an array per model input, without the batch axis.
Sample = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class InputInfo:
    name: str
    shape: tuple[int, ...]  # per sample
    dtype: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InputInfo:
        return cls(data["name"], tuple(data["shape"]), data["dtype"])


def digits_split(count: int = DIGITS_SAMPLES) -> tuple[np.ndarray, np.ndarray]:
    """The fixed (train, test) indices of scikit-learn's digits: a quarter held out for testing."""
    rng = np.random.default_rng(0)
    permutation = rng.permutation(count)
    test = np.sort(permutation[: count // 4])
    train = np.sort(permutation[count // 4 :])
    return train, test


def write_prepared(
    directory: Path,
    variant: str,
    names: Sequence[str],
    samples: Iterable[Sample],
    labels: np.ndarray | None,
    *,
    shard_bytes: int = SHARD_BYTES,
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Writes one sample per name (in order) as `variant`; returns the files by name and the meta.

    Input names, shapes and dtypes are taken from the first sample; every sample must match them.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown prepared-data variant {variant!r}")
    if labels is not None and len(labels) != len(names):
        raise ValueError(f"{len(labels)} labels for {len(names)} samples")
    iterator = iter(samples)
    first = next(iterator, None)
    if first is None:
        raise ValueError("no samples to write")
    inputs = [InputInfo(name, tuple(array.shape), str(array.dtype)) for name, array in first.items()]
    checked = (sample for _, sample in zip(names, itertools.chain([first], iterator), strict=True))

    meta: dict[str, Any] = {
        "variant": variant,
        "count": len(names),
        "labelled": labels is not None,
        "numClasses": None if labels is None else int(labels.max()) + 1,
        "inputs": [info.to_json() for info in inputs],
    }
    if variant in SHARDED:
        shards = _write_shards(directory, inputs, len(names), checked, shard_bytes)
        meta["shards"] = [{"name": path.name, "count": count} for path, count in shards]
        files = [path for path, _ in shards]
        if labels is not None:
            np.save(directory / LABELS_NPY, labels.astype(np.int64))
            files.append(directory / LABELS_NPY)
    else:
        _write_bins(directory / BINS_TAR, inputs, names, checked)
        meta["names"] = list(names)
        files = [directory / BINS_TAR]
        if labels is not None:
            lines = "".join(f"{name} {int(label)}\n" for name, label in zip(names, labels, strict=True))
            (directory / LABELS_TXT).write_text(lines)
            files.append(directory / LABELS_TXT)
    next(checked, None)  # lets zip's strict check catch more samples than names
    (directory / META).write_text(json.dumps(meta, indent=2) + "\n")
    files.append(directory / META)
    return {path.name: path for path in files}, meta


def _sample_bytes(inputs: Sequence[InputInfo]) -> int:
    return sum(math.prod(info.shape) * np.dtype(info.dtype).itemsize for info in inputs)


def _write_shards(
    directory: Path, inputs: Sequence[InputInfo], count: int, samples: Iterator[Sample], shard_bytes: int
) -> list[tuple[Path, int]]:
    per_shard = max(1, shard_bytes // max(1, _sample_bytes(inputs)))
    shards: list[tuple[Path, int]] = []
    for start in range(0, count, per_shard):
        size = min(per_shard, count - start)
        arrays = {info.name: np.empty((size, *info.shape), info.dtype) for info in inputs}
        for row, sample in zip(range(size), samples):
            for name, array in arrays.items():
                array[row] = sample[name]
        path = directory / f"shard-{len(shards):05d}.npz"
        np.savez(path, **arrays)
        shards.append((path, size))
    return shards


def _write_bins(path: Path, inputs: Sequence[InputInfo], names: Sequence[str], samples: Iterator[Sample]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, sample in zip(names, samples):
            for info in inputs:
                payload = np.ascontiguousarray(sample[info.name]).tobytes()
                member = tarfile.TarInfo(f"{info.name}/{name}.bin")
                member.size = len(payload)
                member.mode = 0o644
                tar.addfile(member, io.BytesIO(payload))


class PreparedData:
    """A prepare output, read a few samples at a time: by shard (tensors) or by tar member (the bins variants)."""

    def __init__(self, directory: Path, meta: Mapping[str, Any], labels: np.ndarray | None):
        self.directory = directory
        self.count: int = meta["count"]
        self.inputs: list[InputInfo] = [InputInfo.from_json(item) for item in meta["inputs"]]
        self.labels = labels

    @classmethod
    def open(cls, directory: Path) -> PreparedData:
        meta = json.loads((directory / META).read_text())
        if meta["variant"] in SHARDED:
            return TensorShards(directory, meta, np.load(directory / LABELS_NPY) if meta["labelled"] else None)
        labels = None
        if meta["labelled"]:
            by_name = dict(line.split() for line in (directory / LABELS_TXT).read_text().splitlines() if line)
            labels = np.array([int(by_name[name]) for name in meta["names"]], dtype=np.int64)
        return SampleBins(directory, meta, labels)

    def take(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        """The samples at `indices`, stacked in the given order."""
        positions = np.asarray(indices, dtype=np.int64).reshape(-1)
        if np.any((positions < 0) | (positions >= self.count)):
            raise IndexError(f"sample indices must lie in [0, {self.count})")
        return self._take(positions)

    def _take(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def batches(self, batch_size: int) -> Iterator[tuple[dict[str, np.ndarray], int]]:
        """Every sample in order, batch_size at a time; the last batch is padded by repeating its last sample.

        Yields (arrays, number of real samples).
        """
        if batch_size < 1:
            raise ValueError(f"batch size must be positive, got {batch_size}")
        for start in range(0, self.count, batch_size):
            real = min(batch_size, self.count - start)
            indices = list(range(start, start + real)) + [start + real - 1] * (batch_size - real)
            yield self.take(indices), real

    def calibration_indices(self, samples: int) -> np.ndarray:
        """min(samples, count) indices spread evenly over the dataset."""
        n = min(samples, self.count)
        return np.unique(np.linspace(0, self.count - 1, n).round().astype(int))


class TensorShards(PreparedData):
    """The tensors variant, one shard in memory at a time."""

    def __init__(self, directory: Path, meta: Mapping[str, Any], labels: np.ndarray | None):
        super().__init__(directory, meta, labels)
        self._shards: list[str] = [shard["name"] for shard in meta["shards"]]
        self._starts = np.cumsum([0] + [shard["count"] for shard in meta["shards"]])[:-1]
        self._loaded: tuple[int, dict[str, np.ndarray]] | None = None

    def _take(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        taken = {info.name: np.empty((len(positions), *info.shape), info.dtype) for info in self.inputs}
        shard_of = np.searchsorted(self._starts, positions, side="right") - 1
        for shard in dict.fromkeys(shard_of.tolist()):
            rows = np.flatnonzero(shard_of == shard)
            arrays = self._shard(shard)
            local = positions[rows] - self._starts[shard]
            for name, array in taken.items():
                array[rows] = arrays[name][local]
        return taken

    def _shard(self, index: int) -> dict[str, np.ndarray]:
        if self._loaded is None or self._loaded[0] != index:
            self._loaded = None  # release the previous shard before reading the next
            with np.load(self.directory / self._shards[index]) as npz:
                self._loaded = (index, {info.name: npz[info.name] for info in self.inputs})
        return self._loaded[1]


class SampleBins(PreparedData):
    """A bins variant: each sample's raw `.bin` per input read from bins.tar when asked for."""

    def __init__(self, directory: Path, meta: Mapping[str, Any], labels: np.ndarray | None):
        super().__init__(directory, meta, labels)
        self.names: list[str] = list(meta["names"])
        with tarfile.open(directory / BINS_TAR) as archive:
            self._members = {member.name: member for member in archive.getmembers()}

    def _take(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        taken = {info.name: np.empty((len(positions), *info.shape), info.dtype) for info in self.inputs}
        with tarfile.open(self.directory / BINS_TAR) as archive:
            for row, position in enumerate(positions.tolist()):
                for info in self.inputs:
                    member = archive.extractfile(self._members[f"{info.name}/{self.names[position]}.bin"])
                    assert member is not None
                    taken[info.name][row] = np.frombuffer(member.read(), dtype=info.dtype).reshape(info.shape)
        return taken
