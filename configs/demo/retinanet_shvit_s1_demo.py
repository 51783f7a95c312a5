# Demo: RetinaNet with an SHViT-S1 backbone trained from scratch on the embedded demo dataset, with
# the data, schedule and optimiser of the Mask R-CNN demo (boxes only, COCO box AP on val).
_base_ = './mask_rcnn_shvit_s1_demo.py'

channels = 64
model = dict(
    _delete_=True,
    type='RetinaNet',
    data_preprocessor=dict(
        type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True, pad_size_divisor=64),
    backbone=dict(
        type='SHViT', arch='s1', out_indices=(0, 1, 2), frozen_stages=-1, norm_eval=False,
        init_cfg=None),
    # as for RetinaNet on COCO: one transposed-conv level (stride 8), the three backbone levels and
    # a stride-2 conv on the last backbone output -> strides 8, 16, 32, 64, 128
    neck=dict(
        type='SHViTFPN', in_channels=[128, 224, 320], out_channels=channels, start_level=0,
        add_extra_convs='on_input', num_outs=5, num_extra_trans_convs=1,
        norm_cfg=dict(type='BN')),
    bbox_head=dict(
        type='RetinaHead',
        num_classes=5,
        in_channels=channels,
        stacked_convs=2,
        feat_channels=channels,
        anchor_generator=dict(
            type='AnchorGenerator', octave_base_scale=4, scales_per_octave=3,
            ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128]),
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0],
            target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    train_cfg=dict(
        assigner=dict(
            type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0,
            ignore_iof_thr=-1),
        sampler=dict(type='PseudoSampler'),
        allowed_border=-1,
        pos_weight=-1,
        debug=False),
    test_cfg=dict(
        nms_pre=300, min_bbox_size=0, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
        max_per_img=100))

img_scale = (256, 256)
train_pipeline = [
    # missing/corrupt pictures are logged and skipped; gray, RGBA, 16-bit ones repaired
    dict(type='RobustLoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomResize', scale=img_scale, ratio_range=(0.8, 1.2), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),  # stock loader: the inferencers look for it
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
val_evaluator = dict(metric='bbox')
test_evaluator = dict(metric='bbox')
