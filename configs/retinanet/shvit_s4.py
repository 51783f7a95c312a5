# RetinaNet 1x with SHViT-S4, the official SHViT detection recipe (github.com/ysj9909/SHViT,
# MMDetection 2.25): 38.8 box AP on COCO val2017 (paper, Table 5).
# MMDetection's retinanet_r50_fpn_1x_coco.py composed from the same parts, with shvit_mm's runtime.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py', 'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py', '../_base_/default_runtime_det.py',
    'mmdet::retinanet/retinanet_tta.py'
]
custom_imports = dict(imports=['shvit_mm'], allow_failed_imports=False)

model = dict(
    # ImageNet mean/std, BGR->RGB and padding to a multiple of 32 come from the base config.
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(
        _delete_=True, type='SHViT', arch='s4', out_indices=(0, 1, 2), frozen_stages=-1,
        norm_eval=True,  # BN statistics frozen, affine parameters trained
        init_cfg=dict(type='Pretrained', checkpoint='https://github.com/ysj9909/SHViT/releases/'
                      'download/v1.0/shvit_s4.pth')),
    # Backbone strides 16/32/64: one transposed conv adds stride 8, a conv on the stride-64 input
    # adds stride 128 -> strides 8, 16, 32, 64, 128.
    neck=dict(
        _delete_=True, type='SHViTFPN', in_channels=[224, 336, 448], out_channels=256,
        start_level=0, add_extra_convs='on_input', num_outs=5, num_extra_trans_convs=1),
    bbox_head=dict(anchor_generator=dict(strides=[8, 16, 32, 64, 128])))

# AdamW, 500-iteration linear warm-up from 0.001, steps at epochs 8 and 11 of 12 (schedule_1x),
# 2 images per GPU x 8 GPUs.
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05))
train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(enable=False, base_batch_size=16)
