# Mask R-CNN 1x with SHViT-S4: the official SHViT detection recipe, composed from MMDetection's
# mask-rcnn_r50_fpn_1x_coco.py parts.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py', '../_base_/datasets/coco_instance.py',
    '../_base_/schedules/shvit_adamw_1x.py', '../_base_/default_runtime_det.py',
    '../_base_/shvit_variants.py'
]

model = dict(
    # ImageNet mean/std, BGR->RGB and padding to a multiple of 32 come from the base config.
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(_delete_=True, **_base_.shvit_variants.s4.backbone),
    # Backbone strides 16/32/64: two transposed convs add strides 8 and 4 -> strides 4, 8, 16,
    # 32, 64 (RPN uses all five levels, the RoI extractors the first four).
    neck=dict(
        _delete_=True, type='SHViTFPN', in_channels=_base_.shvit_variants.s4.channels,
        out_channels=256, start_level=0, num_outs=5, num_extra_trans_convs=2),
    rpn_head=dict(anchor_generator=dict(strides=[4, 8, 16, 32, 64])),
    roi_head=dict(
        bbox_roi_extractor=dict(featmap_strides=[4, 8, 16, 32]),
        mask_roi_extractor=dict(featmap_strides=[4, 8, 16, 32])))
train_dataloader = dict(batch_size=2)  # x 8 GPUs
