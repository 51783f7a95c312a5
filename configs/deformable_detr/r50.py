# Deformable DETR, ResNet-50, multi-head baseline of the SHViT paper's Table 9 (paper: 40.0 M
# parameters, 25.4 FPS, 43.8 AP). MMDetection's own model and training recipe, unchanged: 8 heads of
# 32 channels in every multi-scale deformable attention, 300 queries, 4 feature levels (C3-C5 plus one
# stride-2 conv on C5), AdamW lr 2e-4 (x0.1 for the backbone, sampling offsets and reference points),
# 50 epochs with the lr step at epoch 40, 16 GPUs x 2 images.
#
# Kept as a shvit_mm config so that the single-head variant (r50_single_head.py) and the speed
# benchmark (tools/analysis_tools/benchmark_detr.py) compare against exactly this model; its
# checkpoints load into the multi-head layers of the single-head model (see r50_single_head.py).
_base_ = 'mmdet::deformable_detr/deformable-detr_r50_16xb2-50e_coco.py'

custom_imports = dict(imports=['shvit_mm'], allow_failed_imports=False)
# shvit_mm's training safety (as in ../_base_/default_runtime_det.py, which cannot be a second base
# here: MMDetection's config already brings its default runtime): crash-safe checkpoints and a stop
# at the first non-finite loss.
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
custom_hooks = [dict(type='FiniteLossHook')]
