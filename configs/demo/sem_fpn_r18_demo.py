# Demo baseline: the SHViT-S1 segmentation demo (sem_fpn_shvit_s1_demo.py: same data, neck width,
# FPNHead, optimiser and schedule shape) with MMSegmentation's ResNet-18 (ResNetV1c, from scratch).
_base_ = './sem_fpn_shvit_s1_demo.py'

# a ResNet-18 iteration takes about twice as long (docs/segmentation.md): 880 iterations to
# SHViT-S1's 1800 for about the same wall-clock time
max_iters = 880
norm_cfg = dict(type='BN', requires_grad=True)  # as in the SHViT demo
channels = {{_base_.channels}}
model = dict(
    backbone=dict(
        _delete_=True, type='ResNetV1c', depth=18, num_stages=4, out_indices=(0, 1, 2, 3),
        dilations=(1, 1, 1, 1), strides=(1, 2, 2, 2), norm_cfg=norm_cfg,
        norm_eval=False, style='pytorch', contract_dilation=True, init_cfg=None),
    # strides 4, 8, 16, 32 straight from the backbone: MMSegmentation's FPN, same width and norm
    neck=dict(
        _delete_=True, type='FPN', in_channels=[64, 128, 256, 512], out_channels=channels,
        num_outs=4, norm_cfg=norm_cfg))
find_unused_parameters = False  # every neck output feeds the head

train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='PolyLR', eta_min=0., power=0.9, begin=100, end=max_iters, by_epoch=False),
]
default_hooks = dict(checkpoint=dict(interval=max_iters))
