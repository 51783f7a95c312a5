# UPerNet with SHViT-S4 on ADE20K (150 classes, 512x512 crops, 160k iterations).
# Recipe: MMSegmentation's UPerNet schedule for Swin on ADE20K
# (swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py): UPerHead (pool
# scales 1/2/3/6, 512 channels) + auxiliary FCNHead (loss weight 0.4), AdamW lr 6e-5, betas
# (0.9, 0.999), weight decay 0.01 and none on normalisation layers, linear warm-up over 1500
# iterations from 1e-6 x lr, then poly decay (power 1.0) to 0 at 160k iterations, 2 images per GPU
# x 8 GPUs, single-scale test. For comparison: Swin-T 44.5 mIoU with this schedule (Liu et al.,
# ICCV 2021), far larger than SHViT; the efficient peers publish Semantic FPN numbers
# (see ../sem_fpn/shvit_s4.py).
# Feature levels: Swin's UPerNet reads a stride 4/8/16/32 pyramid. SHViT's stages are at strides
# 16/32/64, so SHViTFPN (FPN plus two transposed-conv levels, as in the detection configs) makes
# strides 4, 8, 16, 32, 64; UPerHead reads strides 4/8/16/32 (its pyramid pooling on stride 32,
# like Swin's last stage), the auxiliary FCNHead stride 16 (Swin's third stage), all 256 channels.
# MMSegmentation's upernet_r50 model, ade20k data and 160k schedule, with shvit_mm's runtime.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/schedules/schedule_160k.py', '../_base_/default_runtime_seg.py'
]
custom_imports = dict(imports=['shvit_mm'], allow_failed_imports=False)

crop_size = (512, 512)
model = dict(
    # pad training batches to the crop, test images to a multiple of 32 (cropped off again after)
    data_preprocessor=dict(size=crop_size, test_cfg=dict(size_divisor=32)),
    pretrained=None,
    backbone=dict(
        _delete_=True, type='SHViT', arch='s4', out_indices=(0, 1, 2), frozen_stages=-1,
        norm_eval=True,  # ImageNet BN statistics kept, affine parameters trained
        init_cfg=dict(type='Pretrained', checkpoint='https://github.com/ysj9909/SHViT/releases/'
                      'download/v1.0/shvit_s4.pth')),
    neck=dict(
        type='SHViTFPN', in_channels=[224, 336, 448], out_channels=256, num_outs=5,
        num_extra_trans_convs=2),
    decode_head=dict(in_channels=[256, 256, 256, 256], in_index=[0, 1, 2, 3], num_classes=150),
    auxiliary_head=dict(in_channels=256, in_index=2, num_classes=150))
# The neck's stride-64 output feeds no head: its 3x3 conv gets no gradient, which DDP must expect.
find_unused_parameters = True

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
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
