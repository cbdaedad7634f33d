"""Test stand-in for Cambricon's `magicmind` wheel (never shipped); see magicmind_standins/__init__.py.

Only the Python API the samples in research/magicmind.md use exists: `magicmind.python.runtime` (§1, §4) with
`magicmind.python.runtime.parser` and `magicmind.python.common.types`.
"""
