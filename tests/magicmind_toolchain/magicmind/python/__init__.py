"""Test stand-in for `magicmind.python` (docs/magicmind.md §1.1)."""
