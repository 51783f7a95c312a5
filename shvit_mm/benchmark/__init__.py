"""Benchmarks: backbone latency (:mod:`.latency`), the models it times (:mod:`.zoo`) and
FLOPs/parameter counts without a dataset (:mod:`.complexity`), and single- vs multi-head
Deformable DETR speed (:mod:`.detr_speed`).

Import the submodules directly; this package imports nothing heavy on its own.
"""
