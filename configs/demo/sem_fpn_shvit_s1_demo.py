# Demo: Semantic FPN with an SHViT-S1 backbone trained from scratch on the embedded demo dataset
# (the detection demo's pictures, label maps painted from their instance masks on first use; no
# download), sized for a 2-core CPU: two processes of one thread with 4 crops of 256x256 each
# (bash tools/dist_train.sh CONFIG 2 --amp), a slim neck and head, high lr.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py', '../_base_/default_runtime_seg.py',
    '../_base_/schedules/demo_adamw.py', '../_base_/shvit_variants.py'
]

data_root = 'data/shvit_demo/'
demo_cfg = dict(num_train=300, num_val=80)  # arguments of shvit_mm.datasets.make_demo_dataset
crop_size = (256, 256)
channels = 32  # neck and head width (256 and 128 in the ADE20K configs)
max_iters = 1800
norm_cfg = dict(type='BN', requires_grad=True)

model = dict(
    data_preprocessor=dict(size=crop_size, test_cfg=dict(size_divisor=32)),
    pretrained=None,
    # SHViT-S1 from scratch: no pretrained weights, BatchNorm statistics train too
    backbone=dict(
        _base_.shvit_variants.s1.backbone, _delete_=True, norm_eval=False, init_cfg=None),
    # strides 16/32/64 plus two transposed-conv levels: 4, 8, 16, 32, 64 (the head reads 4..32);
    # BatchNorm in the neck: training from scratch converges much faster
    neck=dict(
        _delete_=True, type='SHViTFPN', in_channels=_base_.shvit_variants.s1.channels,
        out_channels=channels, num_outs=5, num_extra_trans_convs=2, norm_cfg=norm_cfg),
    # cross-entropy + Dice (MMSegmentation's, over each crop's one-hot map): 0.525 against 0.505
    # mIoU for cross-entropy alone at 2000 iterations (docs/segmentation.md)
    decode_head=dict(
        in_channels=[channels] * 4, channels=channels, num_classes=6, norm_cfg=norm_cfg,
        loss_decode=[dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
                     dict(type='DiceLoss', loss_weight=1.0)]))
# The neck's stride-64 output feeds no head: its 3x3 conv gets no gradient, which DDP must expect
# (bash tools/dist_train.sh CONFIG 2).
find_unused_parameters = True

dataset_type = 'SHViTDemoSegDataset'
train_pipeline = [
    # missing/corrupt pictures are logged and skipped; gray, RGBA, 16-bit ones repaired
    dict(type='RobustLoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=False),
    dict(type='RandomResize', scale=(320, 320), ratio_range=(0.75, 1.25), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [  # pictures at their own size (256-320 px); MMSegInferencer needs this loader
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=False),
    dict(type='PackSegInputs'),
]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='RandomFlip', prob=0., direction='horizontal'),
         dict(type='RandomFlip', prob=1., direction='horizontal')],
        [dict(type='LoadAnnotations', reduce_zero_label=False)],
        [dict(type='PackSegInputs')]]),
]
train_dataloader = dict(
    batch_size=4,  # per process: 8 crops a step in two processes
    num_workers=0,  # loading is cheap here; a worker process would compete for the 2 cores
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type, data_root=data_root, demo_cfg=demo_cfg,
        data_prefix=dict(img_path='train/', seg_map_path='seg_maps/train/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,  # MMSegmentation tests one picture size per batch
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type, data_root=data_root, demo_cfg=demo_cfg,
        data_prefix=dict(img_path='val/', seg_map_path='seg_maps/val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# AdamW from scratch, linear warm-up then poly decay; evaluation at the end.
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
# lr 8e-3 for 8 crops a step (2 processes x 4; auto_scale_lr halves it for one process): the best
# of short sweeps from 2e-3 to 1.6e-2 (docs/segmentation.md)
optim_wrapper = dict(optimizer=dict(lr=8e-3, weight_decay=0.01))
auto_scale_lr = dict(enable=True, base_batch_size=8)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='PolyLR', eta_min=0., power=0.9, begin=100, end=max_iters, by_epoch=False),
]
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='SafeCheckpointHook', by_epoch=False, interval=max_iters,
                    max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    # draws nothing unless tools/test.py --show-dir/--show asks; then every picture
    visualization=dict(type='SegVisualizationHook', interval=1))
# One PyTorch thread per process (read by shvit_mm's tools/train.py and tools/test.py), as in the
# detection demo: two processes (bash tools/dist_train.sh CONFIG 2) use both cores
env_cfg = dict(torch_num_threads=1)
