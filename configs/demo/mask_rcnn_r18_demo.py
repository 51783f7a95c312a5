# Demo baseline: the Mask R-CNN demo (mask_rcnn_shvit_s1_demo.py: same data, heads, neck width,
# schedule and optimiser) with MMDetection's ResNet-18 instead of SHViT-S1, also from scratch.
# ResNet-18 gives strides 4/8/16/32 (channels 64/128/256/512); MMDetection's FPN adds stride 64 by
# max-pooling, so the RPN and RoI heads see the same strides 4..64 as with SHViT's transposed levels.
#
#   python tools/train.py configs/demo/mask_rcnn_r18_demo.py
#
# For an equal wall-clock comparison set its epochs from the two models' measured time per
# iteration, e.g. --cfg-options train_cfg.max_epochs=N train_cfg.val_interval=N
# (README: "SHViT-S1 against ResNet-18 at equal CPU time").
_base_ = './mask_rcnn_shvit_s1_demo.py'

model = dict(
    backbone=dict(
        _delete_=True, type='ResNet', depth=18, num_stages=4, out_indices=(0, 1, 2, 3),
        frozen_stages=-1, norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False,
        style='pytorch', init_cfg=None),
    neck=dict(
        _delete_=True, type='FPN', in_channels=[64, 128, 256, 512], out_channels={{_base_.channels}},
        num_outs=5, norm_cfg=dict(type='BN')))
