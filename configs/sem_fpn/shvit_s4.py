# Semantic FPN with SHViT-S4 on ADE20K (150 classes, 512x512 crops, 40k iterations): the recipe in
# which efficient backbones report ADE20K, on MMSegmentation's fpn_r50 / ade20k / 40k parts.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/schedules/schedule_40k.py', '../_base_/default_runtime_seg.py',
    '../_base_/shvit_variants.py'
]

crop_size = (512, 512)
model = dict(
    # pad training batches to the crop, test images to a multiple of 32 (cropped off again after)
    data_preprocessor=dict(size=crop_size, test_cfg=dict(size_divisor=32)),
    pretrained=None,
    backbone=dict(_delete_=True, **_base_.shvit_variants.s4.backbone),
    # Backbone strides 16/32/64 plus two transposed-conv levels: strides 4, 8, 16, 32, 64. The
    # head reads the first four (in_index=[0, 1, 2, 3], feature_strides=[4, 8, 16, 32]).
    neck=dict(
        _delete_=True, type='SHViTFPN', in_channels=_base_.shvit_variants.s4.channels,
        out_channels=256, num_outs=5, num_extra_trans_convs=2),
    decode_head=dict(num_classes=150))
# The neck's stride-64 output feeds no head: its 3x3 conv gets no gradient, which DDP must expect.
find_unused_parameters = True

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=1e-4))
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=40000, by_epoch=False)
]
train_dataloader = dict(batch_size=4)  # x 8 GPUs
auto_scale_lr = dict(enable=False, base_batch_size=32)
# crash-safe checkpoints: set here, not in ../_base_/default_runtime_seg.py (see there why)
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
