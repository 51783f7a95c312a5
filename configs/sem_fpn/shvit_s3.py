# Semantic FPN with SHViT-S3 on ADE20K: the S4 recipe with the S3 backbone and its channels.
_base_ = './shvit_s4.py'

model = dict(backbone=_base_.shvit_variants.s3.backbone,
             neck=dict(in_channels=_base_.shvit_variants.s3.channels))
