# Semantic FPN with SHViT-S1 on ADE20K: the S4 recipe (./shvit_s4.py: recipe, peers' mIoU) with
# the S1 backbone and its channels.
_base_ = './shvit_s4.py'

model = dict(
    backbone=dict(
        arch='s1',
        init_cfg=dict(type='Pretrained', checkpoint='https://github.com/ysj9909/SHViT/releases/'
                      'download/v1.0/shvit_s1.pth')),
    neck=dict(in_channels=[128, 224, 320]))
