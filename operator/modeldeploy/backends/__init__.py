"""Backend plugins: what each backend accepts and how its stages are planned and placed.

A backend is declared once, as a `Backend` value, and registered under the
`modeldeploy.backends` entry-point group (the built-in ones are registered the same way
in pyproject.toml). The control plane only needs these declarations; the code that
calibrates, compiles and evaluates lives in `modeldeploy_jobs`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from modeldeploy.spec import ModelDeploymentSpec, Target, TensorSpec

ENTRY_POINT_GROUP = "modeldeploy.backends"

# What a target's evaluation data must look like on disk.
TENSORS = "tensors"  # preprocessed float tensors, sharded .npy
TENSORS_NHWC = "tensors-nhwc"  # the same, channels last, whatever preprocess.layout says
SAMPLE_BINS = "sample-bins"  # the same values as one raw .bin file per sample (the ais_bench input layout)
RAW_UINT8_BINS = "raw-uint8-bins"  # resized and cropped uint8 NHWC, one .bin per sample; the device normalises

FieldErrors = list[tuple[str, str]]  # (path below the target, message)
Config = Mapping[str, Any]


class Options(BaseModel):
    """Base for backend option models: camelCase names, unknown options rejected, strict types as in the spec."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, strict=True)


class NoOptions(Options):
    pass


@dataclass(frozen=True)
class Device:
    """An accelerator a backend can target, and how Kubernetes exposes it."""

    name: str
    # Extended resource requested in limits, e.g. huawei.com/Ascend310P; None: the placement names it.
    resource: str | None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, str], ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)  # what the device's runtime needs in the container
    precisions: frozenset[str] | None = None  # narrower than the backend's, when the chip lacks some
    stages: frozenset[str] | None = None  # stages that run on the device, when not the backend's device_stages


@dataclass(frozen=True)
class Backend:
    name: str
    precisions: frozenset[str]
    toolchain: str  # enters every task key of this backend: a new toolchain never reuses old results
    image: str
    # The releases of the vendor toolchain a target may name in toolchain.version; without a release, the backend
    # runs the one toolchain of its image. `toolchain` and `image` are those of `release`, the default.
    release: str | None = None
    release_pattern: str | None = None  # matched in full, ignoring case
    release_examples: str = ""
    toolchain_of: Callable[[str], str] = lambda release: release
    image_of: Callable[[str], str] = lambda release: release
    calibration_methods: frozenset[str] = frozenset({"auto"})
    options: type[Options] = NoOptions
    devices: Mapping[str, Device] = field(default_factory=dict)  # empty: runs on any CPU node, no device field
    calibrates_in_compile: bool = False  # the tool calibrates while it builds (MagicMind)
    runs_as_non_root: bool = True  # vendor images that need their own user set this to False
    device_stages: frozenset[str] = frozenset({"evaluate"})
    data_variant: Callable[[Target], str] = lambda target: TENSORS
    # What a compiled artifact is built for; devices that map to the same value share calibration and compile.
    build_target: Callable[[str], str] = lambda device: device
    check: Callable[[Target, ModelDeploymentSpec], FieldErrors] = lambda target, spec: []
    # What calibrate and compile tasks need from the spec beyond the target (it enters their keys).
    build_config: Callable[[Target, ModelDeploymentSpec], Config] = lambda target, spec: {}
    # The tool command lines a task runs, for `modeldeploy plan` (empty: the stage calls a Python API).
    commands: Callable[[str, Config, Sequence[TensorSpec]], list[list[str]]] = lambda kind, config, inputs: []
    # The config files a task generates for its tools, by name.
    files: Callable[[str, Config], Mapping[str, str]] = lambda kind, config: {}
    # How many of the device's extended resource a Job of this stage of the target requests (its limits).
    device_count: Callable[[Target, str], int] = lambda target, stage: 1

    def target_release(self, target: Target) -> str | None:
        """The toolchain release the target expects, in lower case (CANN writes 6.0.RC1 in its package names and
        6.0.rc1 in its image tags); None for a backend without releases."""
        if target.toolchain is None or self.release is None:
            return self.release
        return target.toolchain.version.lower()

    def named_release(self, target: Target) -> str | None:
        """The release a target names when it is not the default one: what its task configs carry."""
        release = self.target_release(target)
        return release if release != self.release else None

    def target_toolchain(self, target: Target) -> str:
        release = self.named_release(target)
        return self.toolchain if release is None else self.toolchain_of(release)

    def target_image(self, target: Target) -> str:
        """The job image of the target's stages: the one of the release it names, else the backend's."""
        release = self.named_release(target)
        return self.image if release is None else self.image_of(release)

    def needs_device(self, stage: str, device: str | None = None) -> bool:
        known = self.devices.get(device or "")
        stages = known.stages if known is not None and known.stages is not None else self.device_stages
        return bool(self.devices) and stage in stages

    def parse_options(self, target: Target) -> Options:
        return self.options.model_validate(target.options)

    def precisions_for(self, device: str | None) -> frozenset[str]:
        known = self.devices.get(device or "")
        return known.precisions if known and known.precisions is not None else self.precisions

    def target_errors(self, target: Target, spec: ModelDeploymentSpec | None) -> FieldErrors:
        """Everything about the target this backend rejects, as (path, message) pairs.

        Without a valid spec around it, only the checks on the target alone run.
        """
        errors: FieldErrors = []
        if self.devices:
            if target.device is None:
                errors.append(("device", f"backend {self.name} needs a device, one of: {', '.join(self.devices)}"))
            elif target.device not in self.devices:
                errors.append(
                    ("device", f"unknown {self.name} device {target.device!r}; known: {', '.join(self.devices)}")
                )
        elif target.device is not None:
            errors.append(("device", f"backend {self.name} runs on CPU nodes and takes no device"))
        errors += self._release_errors(target)
        # Precisions the backend rejects outright are the CRD's CEL rule; this adds what the chip lacks.
        accepted = self.precisions_for(target.device)
        for index, precision in enumerate(target.precisions):
            if precision in self.precisions and precision not in accepted:
                errors.append(
                    (
                        f"precisions[{index}]",
                        f"{target.device} does not support {precision} (supported: {', '.join(sorted(accepted))})",
                    )
                )
        try:
            self.parse_options(target)
        except ValidationError:
            return errors  # reported by the caller with the options' own field paths
        return errors + (self.check(target, spec) if spec is not None else [])


    def _release_errors(self, target: Target) -> FieldErrors:
        if target.toolchain is None:
            return []
        version = target.toolchain.version
        if self.release_pattern is None:
            return [("toolchain.version", (f"backend {self.name} runs the one toolchain of its image "
                                           f"({self.toolchain}): remove toolchain"))]
        if re.fullmatch(self.release_pattern, version, re.IGNORECASE) is None:
            return [("toolchain.version", (f"{version!r} is not a toolchain release of backend {self.name}; "
                                           f"expected one such as {self.release_examples}"))]
        return []


class UnknownBackend(KeyError):
    pass


@cache
def registry() -> Mapping[str, Backend]:
    """All installed backends by name, loaded from the entry-point group."""
    backends: dict[str, Backend] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        backend = entry.load()
        if not isinstance(backend, Backend) or backend.name != entry.name:
            raise TypeError(f"entry point {entry.value} must be a Backend named {entry.name!r}")
        backends[backend.name] = backend
    return dict(sorted(backends.items()))


def get(name: str) -> Backend:
    try:
        return registry()[name]
    except KeyError:
        raise UnknownBackend(name) from None
