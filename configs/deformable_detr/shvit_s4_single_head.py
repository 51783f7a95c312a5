# Single-head Deformable DETR (as r50_single_head.py) on an SHViT-S4 backbone: single-head
# attention in the detector's transformer as well as in the backbone.
#
# Feature levels. SHViT has three stages, at strides 16, 32 and 64 (channels 224, 336, 448).
# We keep Deformable DETR's 4 levels and its neck exactly: the three backbone stages go through the
# recipe's ChannelMapper (1x1 conv + GroupNorm to 256 channels each) and its one extra level is the
# recipe's 3x3 stride-2 conv on the coarsest input, here at stride 128 -> levels 16/32/64/128
# (ResNet-50 gives 8/16/32/64). Why not add a finer (stride-8) level, e.g. with SHViTFPN's
# transposed convolution:
#   * SHViT's point is its stride-16 macro design; a stride-8 map would be synthesised by upsampling
#     stride-16 features (no new detail), and Deformable DETR's encoder already fuses the scales
#     (the job an FPN top-down path would do);
#   * the encoder runs on every token of every level: at 800x1333 levels 16/32/64/128 give about
#     5.6 k tokens against about 22 k for 8/16/32/64, a 4x smaller encoder cost, which is what a
#     single-head, speed-oriented detector is after;
#   * the stride-128 level keeps 4 levels, so the attention modules, their initialisation and the
#     multi-head checkpoint layout stay those of the R-50 model.
# The price is likely lower small-object AP (no stride-8 map); the paper reports no SHViT + DETR
# result to compare against.
#
# Backbone training settings follow the official SHViT detection configs: ImageNet weights, BN
# statistics frozen (norm_eval) with trainable affine parameters, no frozen stage. The recipe's
# lr_mult=0.1 for 'backbone' parameters applies as for ResNet-50.
_base_ = './r50.py'

single_head_layers = [1, 2, 3]  # 0-based: the paper's layers 2, 3 and 4 of 6
single_head_attn = dict(type='SingleHeadMSDeformableAttention', num_heads=1, head_dims=64)

model = dict(
    type='PerLayerDeformableDETR',
    num_feature_levels=4,
    backbone=dict(
        _delete_=True,
        type='SHViT',
        arch='s4',
        out_indices=(0, 1, 2),
        frozen_stages=-1,
        norm_eval=True,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/ysj9909/SHViT/releases/download/v1.0/shvit_s4.pth')),
    neck=dict(in_channels=[224, 336, 448], num_outs=4),
    encoder=dict(layer_overrides=[
        dict(layer_ids=single_head_layers, self_attn_cfg=single_head_attn)
    ]),
    decoder=dict(layer_overrides=[
        dict(layer_ids=single_head_layers, cross_attn_cfg=single_head_attn)
    ]))
