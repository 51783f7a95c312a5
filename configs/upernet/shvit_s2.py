# UPerNet with SHViT-S2 on ADE20K: the S4 recipe (./shvit_s4.py: recipe, feature levels) with the
# S2 backbone and its channels.
_base_ = './shvit_s4.py'

model = dict(
    backbone=dict(
        arch='s2',
        init_cfg=dict(type='Pretrained', checkpoint='https://github.com/ysj9909/SHViT/releases/'
                      'download/v1.0/shvit_s2.pth')),
    neck=dict(in_channels=[128, 308, 448]))
