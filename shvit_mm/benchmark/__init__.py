"""Benchmarks: backbone latency (:mod:`.latency`), the models it times (:mod:`.zoo`),
FLOPs/parameter counts without a dataset (:mod:`.complexity`), single- vs multi-head Deformable
DETR speed (:mod:`.detr_speed`) and training-step time (:mod:`.train_step`).

Models of configs are built by :func:`shvit_mm.apis.config.build_model`, as the tools build them;
published figures and project targets to compare with are arguments, held by the scripts in
``tools/analysis_tools/``. Import the submodules directly; this package imports nothing heavy.
"""
