# Demo baseline: the Mask R-CNN demo (mask_rcnn_shvit_s1_demo.py: same data, heads, neck width,
# optimiser and schedule shape) with MMDetection's ResNet-18, also from scratch.
_base_ = './mask_rcnn_shvit_s1_demo.py'

# a ResNet-18 iteration takes longer: 6 epochs to SHViT-S1's 7 for about the same wall-clock time
max_epochs = 6
model = dict(
    backbone=dict(
        _delete_=True, type='ResNet', depth=18, num_stages=4, out_indices=(0, 1, 2, 3),
        frozen_stages=-1, norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False,
        style='pytorch', init_cfg=None),
    # strides 4-32, and MMDetection's FPN adds stride 64 by max-pooling: the RPN and RoI heads see
    # the same strides 4-64 as with SHViT's transposed levels
    neck=dict(
        _delete_=True, type='FPN', in_channels=[64, 128, 256, 512],
        out_channels={{_base_.channels}}, num_outs=5, norm_cfg=dict(type='BN')))

train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=150),
    dict(type='CosineAnnealingLR', eta_min_ratio=0.02, begin=0, end=max_epochs, T_max=max_epochs,
         by_epoch=True, convert_to_iter_based=True),
]
default_hooks = dict(checkpoint=dict(interval=max_epochs))
