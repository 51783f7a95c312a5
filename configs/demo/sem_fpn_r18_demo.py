# Demo comparison: the SHViT-S1 demo (./sem_fpn_shvit_s1_demo.py) with MMSegmentation's ResNet-18
# (ResNetV1c, depth 18, from scratch) in place of the backbone: same data, neck width, FPNHead,
# optimiser and schedule shape. It trains fewer iterations so that both runs take about the same
# wall-clock time on a 2-core CPU: a training iteration (batch 8, 256x256, 1 thread, data loading
# included) took 1.65-1.73 s here against SHViT-S1's 0.50-0.56 s (model step alone: 1.41 s against
# 0.43 s), about 3.2x, so 470 iterations here for the SHViT demo's 1500.
#
#   python tools/train.py configs/demo/sem_fpn_r18_demo.py
#   python tools/test.py configs/demo/sem_fpn_r18_demo.py work_dirs/sem_fpn_r18_demo/iter_470.pth
_base_ = './sem_fpn_shvit_s1_demo.py'

max_iters = 470
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
