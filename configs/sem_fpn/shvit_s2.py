# Semantic FPN with SHViT-S2 on ADE20K: the S4 recipe with the S2 backbone and its channels.
_base_ = './shvit_s4.py'

model = dict(backbone=_base_.shvit_variants.s2.backbone,
             neck=dict(in_channels=_base_.shvit_variants.s2.channels))
