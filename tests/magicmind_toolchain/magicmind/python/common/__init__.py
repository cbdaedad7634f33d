"""Test stand-in for `magicmind.python.common` (research/magicmind.md §1.1)."""
