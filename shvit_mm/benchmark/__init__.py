"""Benchmarks: backbone latency (:mod:`.latency`), the models it times (:mod:`.zoo`) and
FLOPs/parameter counts without a dataset (:mod:`.complexity`).

Import the submodules directly; this package imports nothing heavy on its own.
"""
