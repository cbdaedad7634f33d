"""Test stand-in for `magicmind.python` (research/magicmind.md §1.1)."""
