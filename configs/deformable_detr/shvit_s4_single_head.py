# Single-head Deformable DETR (r50_single_head.py) on an SHViT-S4 backbone, trained as in the
# official SHViT detection configs (ImageNet weights, norm_eval, no frozen stage).
_base_ = ['./r50_single_head.py', '../_base_/shvit_variants.py']

model = dict(
    num_feature_levels=4,
    backbone=dict(_delete_=True, **_base_.shvit_variants.s4.backbone),
    # The recipe's ChannelMapper on SHViT's strides 16/32/64 plus its stride-2 extra conv: levels
    # 16/32/64/128 (ResNet-50: 8-64). No stride-8 level is synthesised: it would only upsample
    # stride-16 features (the encoder already fuses the scales), quadruple the encoder's tokens
    # (about 22 k against 5.6 k at 800x1333), and 4 levels keep the attention modules and the
    # checkpoint layout of the R-50 model. The price is likely lower small-object AP.
    neck=dict(in_channels=_base_.shvit_variants.s4.channels, num_outs=4))
