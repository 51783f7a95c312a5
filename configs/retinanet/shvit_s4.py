# RetinaNet 1x with SHViT-S4: the official SHViT detection recipe, composed from MMDetection's
# retinanet_r50_fpn_1x_coco.py parts.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py', '../_base_/datasets/coco_detection.py',
    '../_base_/schedules/shvit_adamw_1x.py', '../_base_/default_runtime_det.py',
    'mmdet::retinanet/retinanet_tta.py', '../_base_/shvit_variants.py'
]

model = dict(
    # ImageNet mean/std, BGR->RGB and padding to a multiple of 32 come from the base config.
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(_delete_=True, **_base_.shvit_variants.s4.backbone),
    # Backbone strides 16/32/64: one transposed conv adds stride 8, a conv on the stride-64 input
    # adds stride 128 -> strides 8, 16, 32, 64, 128.
    neck=dict(
        _delete_=True, type='SHViTFPN', in_channels=_base_.shvit_variants.s4.channels,
        out_channels=256, start_level=0, add_extra_convs='on_input', num_outs=5,
        num_extra_trans_convs=1),
    bbox_head=dict(anchor_generator=dict(strides=[8, 16, 32, 64, 128])))
train_dataloader = dict(batch_size=2)  # x 8 GPUs
