# UPerNet with SHViT-S3 on ADE20K: the S4 recipe (./shvit_s4.py: recipe, feature levels) with the
# S3 backbone and its channels.
_base_ = './shvit_s4.py'

model = dict(
    backbone=dict(
        arch='s3',
        init_cfg=dict(type='Pretrained', checkpoint='https://github.com/ysj9909/SHViT/releases/'
                      'download/v1.0/shvit_s3.pth')),
    neck=dict(in_channels=[192, 352, 448]))
