# Demo: Semantic FPN with an SHViT-S1 backbone trained from scratch on the embedded demo dataset.
#
#   python tools/train.py configs/demo/sem_fpn_shvit_s1_demo.py
#   python tools/test.py configs/demo/sem_fpn_shvit_s1_demo.py \
#       work_dirs/sem_fpn_shvit_s1_demo/iter_1500.pth --show-dir vis
#
# The pictures are the detection demo's (300 train + 80 val, five shape classes pasted on
# scikit-image photographs, made in data/shvit_demo/ on first use, no download); the first run also
# paints one label map per picture from their instance masks (0 background, 1-5 the shapes). Sized
# for a 2-core CPU (1500 iterations of about 0.5 s, about 14 minutes): no pretrained weights,
# 256x256 crops of batch 8, a slim neck and head (32 channels), a high AdamW learning rate.
# Training logs progress with ETA, evaluates mIoU (IoUMetric) on val at the end and saves the
# checkpoint.
# Short runs on this CPU (700 iterations, 32 channels): lr 8e-3 reached 36.4 val mIoU, 2e-3 32.2,
# 1.6e-2 35.7; 64 channels in the same time 33.3. Batch 4, crops of pictures scaled 0.75x (192 px)
# or 1.5x, and an auxiliary FCN head changed little or did worse (tried at 64 channels).
# The ResNet-18 comparison with the same head and time budget: ./sem_fpn_r18_demo.py.
_base_ = ['mmseg::_base_/models/fpn_r50.py', '../_base_/default_runtime_seg.py']
custom_imports = dict(imports=['shvit_mm'], allow_failed_imports=False)

data_root = 'data/shvit_demo/'
demo_cfg = dict(num_train=300, num_val=80)  # arguments of shvit_mm.datasets.make_demo_dataset
crop_size = (256, 256)
channels = 32  # neck and head width (256 and 128 in the ADE20K configs)
max_iters = 1500
norm_cfg = dict(type='BN', requires_grad=True)

model = dict(
    data_preprocessor=dict(size=crop_size, test_cfg=dict(size_divisor=32)),
    pretrained=None,
    backbone=dict(
        _delete_=True, type='SHViT', arch='s1', out_indices=(0, 1, 2), frozen_stages=-1,
        norm_eval=False,  # from scratch: BatchNorm statistics train too
        init_cfg=None),
    # strides 16/32/64 plus two transposed-conv levels: 4, 8, 16, 32, 64 (the head reads 4..32);
    # BatchNorm in the neck: training from scratch converges much faster
    neck=dict(
        _delete_=True, type='SHViTFPN', in_channels=[128, 224, 320], out_channels=channels,
        num_outs=5, num_extra_trans_convs=2, norm_cfg=norm_cfg),
    decode_head=dict(
        in_channels=[channels] * 4, channels=channels, num_classes=6, norm_cfg=norm_cfg))
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
    batch_size=8,
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
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=8e-3, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.),
    clip_grad=dict(max_norm=10., norm_type=2))
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
randomness = dict(seed=0)
# One PyTorch thread (read by shvit_mm's tools/train.py and tools/test.py), as in the detection
# demo: on a 2-core CPU shared with anything else a second intra-op thread costs more than it gains.
# To use both cores, run two processes instead: bash tools/dist_train.sh CONFIG 2
env_cfg = dict(torch_num_threads=1)
