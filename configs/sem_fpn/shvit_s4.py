# Semantic FPN with SHViT-S4 on ADE20K (150 classes, 512x512 crops, 40k iterations).
# Recipe: the Semantic FPN setting in which efficient backbones report ADE20K results (PVT's, as
# PoolFormer's segmentation/configs/sem_fpn/PoolFormer/fpn_poolformer_s12_ade20k_40k.py writes it
# for MMSegmentation 0.x): AdamW lr 2e-4, weight decay 1e-4, poly decay (power 0.9) to 0 over 40k
# iterations, 4 images per GPU x 8 GPUs, evaluation every 4k iterations, single-scale test.
# Neither the SHViT paper nor its official release reports segmentation. ADE20K val mIoU of peers
# with this recipe: PoolFormer-S12 37.2 (Yu et al., CVPR 2022, github.com/sail-sg/poolformer),
# FastViT-SA12 38.0 (Vasu et al., ICCV 2023), EfficientFormer-L1 38.9 (Li et al., NeurIPS 2022,
# github.com/snap-research/EfficientFormer), RepViT-M1.1 40.6 (Wang et al., CVPR 2024,
# github.com/THU-MIG/RepViT), EfficientFormerV2-S2 42.4 (Li et al., ICCV 2023).
# MMSegmentation's fpn_r50 model, ade20k data and 40k schedule, with shvit_mm's runtime.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/schedules/schedule_40k.py', '../_base_/default_runtime_seg.py'
]
custom_imports = dict(imports=['shvit_mm'], allow_failed_imports=False)

crop_size = (512, 512)
model = dict(
    # pad training batches to the crop, test images to a multiple of 32 (cropped off again after)
    data_preprocessor=dict(size=crop_size, test_cfg=dict(size_divisor=32)),
    pretrained=None,
    backbone=dict(
        _delete_=True, type='SHViT', arch='s4', out_indices=(0, 1, 2), frozen_stages=-1,
        norm_eval=True,  # ImageNet BN statistics kept, affine parameters trained
        init_cfg=dict(type='Pretrained', checkpoint='https://github.com/ysj9909/SHViT/releases/'
                      'download/v1.0/shvit_s4.pth')),
    # Backbone strides 16/32/64 plus two transposed-conv levels: strides 4, 8, 16, 32, 64. The
    # head reads the first four (in_index=[0, 1, 2, 3], feature_strides=[4, 8, 16, 32]).
    neck=dict(
        _delete_=True, type='SHViTFPN', in_channels=[224, 336, 448], out_channels=256,
        num_outs=5, num_extra_trans_convs=2),
    decode_head=dict(num_classes=150))
# The neck's stride-64 output feeds no head: its 3x3 conv gets no gradient, which DDP must expect.
find_unused_parameters = True

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=1e-4))
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=40000, by_epoch=False)
]
train_dataloader = dict(batch_size=4)  # x 8 GPUs
auto_scale_lr = dict(enable=False, base_batch_size=32)
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
