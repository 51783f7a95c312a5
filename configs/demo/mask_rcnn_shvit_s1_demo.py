# Demo: Mask R-CNN with an SHViT-S1 backbone trained from scratch on the embedded demo dataset
# (made under data/shvit_demo_1500/ on first use, no download), sized for a 2-core CPU.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    '../_base_/default_runtime_det.py', '../_base_/schedules/demo_adamw.py',
    '../_base_/shvit_variants.py'
]

data_root = 'data/shvit_demo_1500/'
demo_cfg = dict(num_train=1500, num_val=80)  # arguments of shvit_mm.datasets.make_demo_dataset
classes = ('disc', 'square', 'triangle', 'star', 'ring')
img_scale = (256, 256)  # training scale (randomly resized by 0.8-1.2)
test_scale = (320, 320)  # the best of test-scale sweeps on val (the only held-out split)
channels = 64  # FPN and RoI-head width (256 in the COCO configs)
max_epochs = 7

model = dict(
    data_preprocessor=dict(pad_size_divisor=64),
    # SHViT-S1 from scratch: no pretrained weights, BatchNorm statistics train too
    backbone=dict(
        _base_.shvit_variants.s1.backbone, _delete_=True, norm_eval=False, init_cfg=None),
    # strides 16/32/64 from the backbone plus two transposed-conv levels: strides 4, 8, 16, 32, 64
    # BatchNorm in the FPN and mask-head convs: training from scratch converges much faster
    neck=dict(
        _delete_=True, type='SHViTFPN', in_channels=_base_.shvit_variants.s1.channels,
        out_channels=channels, start_level=0, num_outs=5, num_extra_trans_convs=2,
        norm_cfg=dict(type='BN')),
    rpn_head=dict(
        in_channels=channels, feat_channels=channels,
        anchor_generator=dict(scales=[8], ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64])),
    roi_head=dict(
        # 2x2 samples per RoIAlign bin instead of an adaptive count: ~20% less time per step;
        # RoIAlign as one gather over all levels (the same values, about twice as fast forward +
        # backward on the CPU as the compiled kernels: shvit_mm.detection.GatherRoIExtractor)
        bbox_roi_extractor=dict(
            type='GatherRoIExtractor', roi_layer=dict(sampling_ratio=2, use_torchvision=True),
            out_channels=channels, featmap_strides=[4, 8, 16, 32]),
        bbox_head=dict(in_channels=channels, fc_out_channels=512, num_classes=len(classes)),
        # one sample per 14x14 mask bin: the bins of these RoIs are about a feature pixel or less
        # (MMDetection's adaptive default also takes one for them), a quarter of the gather
        mask_roi_extractor=dict(
            type='GatherRoIExtractor', roi_layer=dict(sampling_ratio=1, use_torchvision=True),
            out_channels=channels, featmap_strides=[4, 8, 16, 32]),
        mask_head=dict(num_convs=2, in_channels=channels, conv_out_channels=channels,
                       norm_cfg=dict(type='BN'), num_classes=len(classes))),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=200),
        rcnn=dict(sampler=dict(num=64, pos_fraction=0.5))),  # 64 RoIs a picture (COCO: 512)
    test_cfg=dict(
        rpn=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(score_thr=0.01, max_per_img=100)))

dataset_type = 'SHViTDemoDataset'
backend_args = None
train_pipeline = [
    # missing/corrupt pictures are logged and skipped; gray, RGBA, 16-bit ones repaired
    dict(type='RobustLoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomResize', scale=img_scale, ratio_range=(0.8, 1.2), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    # MMCV's stock loader: MMDetection's inferencers look for it (and a bad test picture must stop
    # the evaluation, naming the file, which it does)
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=test_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,  # loading is cheap here; a worker process would compete for the 2 cores
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type=dataset_type, data_root=data_root, demo_cfg=demo_cfg,
        ann_file='annotations/instances_train.json', data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=4), pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    # one picture per step: a picture's predictions then do not depend on the pictures it is
    # batched (and padded) with, so training's final evaluation (2 processes) and tools/test.py
    # print the same AP (batch 4 moved box AP by up to 0.015 between the two)
    batch_size=1,
    num_workers=0,  # loading is cheap here; a worker process would compete for the 2 cores
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type, data_root=data_root, demo_cfg=demo_cfg,
        ann_file='annotations/instances_val.json', data_prefix=dict(img='val/'),
        test_mode=True, pipeline=test_pipeline, backend_args=backend_args))
test_dataloader = val_dataloader
val_evaluator = dict(
    type='CocoMetric', ann_file=data_root + 'annotations/instances_val.json',
    metric=['bbox', 'segm'], format_only=False, backend_args=backend_args)
test_evaluator = val_evaluator

# AdamW from scratch (lr 2e-3 for 2 processes x 4 pictures; auto_scale_lr halves it for one
# process), linear warm-up then cosine decay; evaluation at the end. Mixed precision is the
# command line's choice: tools/train.py --amp gives MMEngine's fp16 AmpOptimWrapper on a GPU and,
# without one, bfloat16 autocast of the dense parts (shvit_mm's CPUAmpOptimWrapper).
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=2e-3, weight_decay=0.05, fused=True))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=150),
    dict(type='CosineAnnealingLR', eta_min_ratio=0.02, begin=0, end=max_epochs, T_max=max_epochs,
         by_epoch=True, convert_to_iter_based=True),
]
auto_scale_lr = dict(enable=True, base_batch_size=8)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
# One PyTorch thread per process (read by shvit_mm's tools/train.py and tools/test.py): on a 2-core
# CPU a second intra-op thread slows a training step, while two processes
# (bash tools/dist_train.sh CONFIG 2) train about twice the pictures per second.
env_cfg = dict(torch_num_threads=1)
