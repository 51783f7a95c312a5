# UPerNet with SHViT-S4 on ADE20K (150 classes, 512x512 crops, 160k iterations): MMSegmentation's
# UPerNet schedule for Swin-T, on its upernet_r50 / ade20k / 160k parts.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/schedules/schedule_160k.py', '../_base_/default_runtime_seg.py',
    '../_base_/shvit_variants.py'
]

crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size, test_cfg=dict(size_divisor=32)),  # as in ../sem_fpn
    pretrained=None,
    backbone=dict(_delete_=True, **_base_.shvit_variants.s4.backbone),
    # SHViTFPN turns the backbone's strides 16/32/64 into 4, 8, 16, 32, 64, all 256 channels:
    # UPerHead reads strides 4-32 (its pyramid pooling on 32), as from Swin's four stages, and the
    # auxiliary FCNHead stride 16, where Swin's reads its third stage.
    neck=dict(
        type='SHViTFPN', in_channels=_base_.shvit_variants.s4.channels, out_channels=256,
        num_outs=5, num_extra_trans_convs=2),
    decode_head=dict(in_channels=[256, 256, 256, 256], in_index=[0, 1, 2, 3], num_classes=150),
    auxiliary_head=dict(in_channels=256, in_index=2, num_classes=150))
find_unused_parameters = True  # the stride-64 neck output feeds no head

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    # every BatchNorm/GroupNorm/LayerNorm (backbone and heads) without weight decay
    paramwise_cfg=dict(norm_decay_mult=0.))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False)
]
train_dataloader = dict(batch_size=2)  # x 8 GPUs
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
auto_scale_lr = dict(enable=False, base_batch_size=16)
# crash-safe checkpoints: set here, not in ../_base_/default_runtime_seg.py (see there why)
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
