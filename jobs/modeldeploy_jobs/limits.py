"""What a stage loads at most: caps on the user's files, set per installation through the Job's environment.

A file is measured by what it declares before anything is decoded or unpacked (an image's header, a
zip's central directory, an ONNX model's external-data entries), so a small file that would expand
into gigabytes is refused before it takes memory. A file beyond a cap is the user's input at fault:
the stage fails with LimitExceeded, naming the file, the cap and the variable that raises it.
docs/limits.md lists the variables and their defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from modeldeploy_jobs.stage import StageError, StageReason

GIB = 1024**3


@dataclass(frozen=True)
class Limit:
    variable: str  # the environment variable that sets it
    default: int
    unit: str

    def value(self) -> int:
        text = os.environ.get(self.variable)
        if text is None or not text.strip():
            return self.default
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:  # the installation's configuration is wrong, not the user's input
            raise ValueError(f"${self.variable} must be a positive integer, not {text!r}")
        return value

    def check(self, amount: int, subject: str) -> None:
        """Refuses when `amount` exceeds the cap; `subject` names the file and ends in a verb ("x.png has")."""
        limit = self.value()
        if amount > limit:
            raise StageError(
                StageReason.LIMIT_EXCEEDED,
                f"{subject} {amount:,} {self.unit}, more than the {limit:,} this installation allows "
                f"(an administrator can raise it with ${self.variable})",
            )


IMAGE_PIXELS = Limit("MODELDEPLOY_MAX_IMAGE_PIXELS", 8192 * 8192, "pixels")
MODEL_BYTES = Limit("MODELDEPLOY_MAX_MODEL_BYTES", 4 * GIB, "bytes")
DATASET_BYTES = Limit("MODELDEPLOY_MAX_DATASET_BYTES", 32 * GIB, "bytes")
DATASET_FILES = Limit("MODELDEPLOY_MAX_DATASET_FILES", 1_000_000, "files")
LIMITS = (IMAGE_PIXELS, MODEL_BYTES, DATASET_BYTES, DATASET_FILES)
