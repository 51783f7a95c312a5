# Semantic FPN with SHViT-S1 on ADE20K: the S4 recipe with the S1 backbone and its channels.
_base_ = './shvit_s4.py'

model = dict(backbone=_base_.shvit_variants.s1.backbone,
             neck=dict(in_channels=_base_.shvit_variants.s1.channels))
