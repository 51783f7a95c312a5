# Deformable DETR, ResNet-50: the multi-head baseline of the SHViT paper's Table 9, MMDetection's
# model and recipe unchanged, kept here so that the single-head configs compare against exactly it.
_base_ = 'mmdet::deformable_detr/deformable-detr_r50_16xb2-50e_coco.py'

custom_imports = dict(imports=['shvit_mm'], allow_failed_imports=False)
# The hooks of ../_base_/default_runtime_det.py, set here: it cannot be a second base (shared keys).
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
custom_hooks = [
    dict(type='FiniteLossHook'), dict(type='RankZeroBuffersHook')]
# COCO read through SHViTCocoDataset, as in ../_base_/datasets/coco_detection.py.
train_dataloader = dict(dataset=dict(type='SHViTCocoDataset'))
val_dataloader = dict(dataset=dict(type='SHViTCocoDataset'))
test_dataloader = val_dataloader
