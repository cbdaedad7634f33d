"""Test stand-in for Cambricon's `magicmind` wheel (never shipped); see magicmind_standins/__init__.py.

Only the Python API the samples in docs/magicmind.md use exists: `magicmind.python.runtime` (§1, §4) with
`magicmind.python.runtime.parser` and `magicmind.python.common.types`.

The release it reports as `magicmind.__version__` is `MAGICMIND_STANDIN_VERSION` (default 1.7.0), as mm_run does.
"""

from magicmind_standins import magicmind_version

__version__ = ".".join(str(part) for part in magicmind_version())
