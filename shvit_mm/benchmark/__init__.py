"""Benchmarks on one harness (:mod:`.harness`): backbone latency (:mod:`.latency`, the models it
times in :mod:`.zoo`), FLOPs and parameters without a dataset (:mod:`.complexity`), single- vs
multi-head Deformable DETR (:mod:`.detr_speed`), whole-model inference (:mod:`.model_speed`) and
training-step time (:mod:`.train_step`). Published figures to compare with are arguments, held by
the scripts in ``tools/analysis_tools/``. Import the submodules directly; this package imports
nothing heavy.
"""
