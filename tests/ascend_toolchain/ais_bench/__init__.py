"""Test stand-in for the `ais_bench` package (docs/ascend.md §3).

`python3 -m ais_bench ...` runs ais_bench/__main__.py.
"""
