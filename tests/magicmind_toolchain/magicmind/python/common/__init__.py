"""Test stand-in for `magicmind.python.common` (docs/magicmind.md §1.1)."""
