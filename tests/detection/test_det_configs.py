"""RetinaNet / Mask R-CNN configs: the official 1x recipe, and one training step + one prediction."""
import glob
import math
import os.path as osp
import re

import pytest
import torch

import shvit_mm  # noqa: F401
from mmengine.config import Config
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs
from mmdet.utils import register_all_modules
from shvit_mm.models import SHViT

from conftest import REPO_ROOT as ROOT
CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'retinanet', '*.py'))
                 + glob.glob(osp.join(ROOT, 'configs', 'mask_rcnn', '*.py')))
CONFIG_IDS = [osp.relpath(p, osp.join(ROOT, 'configs')) for p in CONFIGS]

register_all_modules(init_default_scope=True)


def test_all_eight_configs_present():
    assert CONFIG_IDS == [f'{d}/shvit_s{i}.py' for d in ('mask_rcnn', 'retinanet')
                          for i in (1, 2, 3, 4)]


def _arch(path):
    return re.search(r'shvit_(s\d)\.py$', path).group(1)


def _find(pipeline, type_name):
    found = [t for t in pipeline if t['type'] == type_name]
    assert len(found) == 1, f'{type_name} not found once in {pipeline}'
    return found[0]


@pytest.mark.parametrize('path', CONFIGS, ids=CONFIG_IDS)
def test_recipe(path):
    cfg = Config.fromfile(path)
    arch = _arch(path)
    assert cfg.custom_imports == dict(imports=['shvit_mm'], allow_failed_imports=False)
    model = cfg.model
    # backbone: SHViT variant, frozen BN statistics, ImageNet-pretrained release weights
    assert model.backbone == dict(
        type='SHViT', arch=arch, out_indices=(0, 1, 2), frozen_stages=-1, norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint='https://github.com/ysj9909/SHViT/releases/'
                      f'download/v1.0/shvit_{arch}.pth'))
    assert model.neck.type == 'SHViTFPN'
    assert model.neck.in_channels == SHViT.arch_zoo[arch]['embed_dims']
    assert model.neck.out_channels == 256 and model.neck.num_outs == 5
    if 'retinanet' in path:
        assert model.neck.num_extra_trans_convs == 1 and model.neck.add_extra_convs == 'on_input'
        assert model.bbox_head.anchor_generator.strides == [8, 16, 32, 64, 128]
        assert model.bbox_head.num_classes == 80
    else:
        assert model.neck.num_extra_trans_convs == 2 and not model.neck.get('add_extra_convs')
        assert model.rpn_head.anchor_generator.strides == [4, 8, 16, 32, 64]
        assert model.roi_head.bbox_roi_extractor.featmap_strides == [4, 8, 16, 32]
        assert model.roi_head.mask_roi_extractor.featmap_strides == [4, 8, 16, 32]
        assert model.roi_head.bbox_head.num_classes == 80
    # data: ImageNet mean/std in RGB order, pad to 32
    dp = model.data_preprocessor
    assert dp.mean == [123.675, 116.28, 103.53] and dp.std == [58.395, 57.12, 57.375]
    assert dp.bgr_to_rgb is True and dp.pad_size_divisor == 32
    resize = _find(cfg.train_dataloader.dataset.pipeline, 'Resize')
    assert resize.scale == (1333, 800) and resize.keep_ratio is True
    assert _find(cfg.train_dataloader.dataset.pipeline, 'RandomFlip').prob == 0.5
    test_resize = _find(cfg.test_dataloader.dataset.pipeline, 'Resize')
    assert test_resize.scale == (1333, 800) and test_resize.keep_ratio is True
    assert cfg.train_dataloader.batch_size == 2
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=16)
    assert cfg.train_dataloader.dataset.data_root == 'data/coco/'
    # schedule: AdamW 1e-4, 500-iteration linear warm-up from 0.001, x0.1 at epochs 8 and 11 of 12
    assert cfg.optim_wrapper.optimizer == dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999),
                                               weight_decay=0.05)
    assert cfg.train_cfg.max_epochs == 12
    warmup, steps = cfg.param_scheduler
    assert warmup.type == 'LinearLR' and warmup.start_factor == 0.001
    assert warmup.by_epoch is False and warmup.begin == 0 and warmup.end == 500
    assert steps.type == 'MultiStepLR' and steps.by_epoch is True
    assert steps.milestones == [8, 11] and steps.gamma == 0.1


def _build(path, pad_size_divisor=None):
    cfg = Config.fromfile(path)
    cfg.model.backbone.init_cfg = None  # no network here: random backbone weights
    if pad_size_divisor is not None:
        cfg.model.data_preprocessor.pad_size_divisor = pad_size_divisor
    # Random weights score below the default thresholds; keep every box so the whole
    # post-processing (NMS, box rescaling, mask pasting) runs.
    if 'rcnn' in cfg.model.test_cfg:
        cfg.model.test_cfg.rcnn.score_thr = 0.0
        cfg.model.test_cfg.rcnn.max_per_img = 20
        # Fewer proposals / sampled RoIs than the recipe's 1000 / 512: same code paths, CPU-cheap.
        cfg.model.train_cfg.rpn_proposal.update(nms_pre=200, max_per_img=100)
        cfg.model.train_cfg.rcnn.sampler.num = 32
        cfg.model.test_cfg.rpn.update(nms_pre=200, max_per_img=50)
    else:
        cfg.model.test_cfg.score_thr = 0.0
        cfg.model.test_cfg.max_per_img = 20
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def _batch(with_mask, shapes=((3, 64, 96), (3, 53, 70))):
    return demo_mm_inputs(batch_size=len(shapes), image_shapes=list(shapes), num_items=[2, 3],
                          num_classes=80, with_mask=with_mask)


def _train_and_predict(model, with_mask, shapes=((3, 64, 96), (3, 53, 70))):
    model.train()
    data = model.data_preprocessor(_batch(with_mask, shapes), True)
    losses = model(**data, mode='loss')
    loss, log_vars = model.parse_losses(losses)
    assert torch.isfinite(loss), log_vars
    loss.backward()
    for name in ('backbone.patch_embed.0.c.weight', 'backbone.blocks3.3.ffn.m.pw2.bn.weight',
                 'neck.extra_trans_convs.0.conv.weight', 'neck.extra_fpn_convs.0.conv.weight'):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    # norm_eval: the backbone's BatchNorms stay in eval mode during training
    assert not model.backbone.patch_embed[0].bn.training

    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(_batch(with_mask, shapes), False)
        results = model(**data, mode='predict')
    assert len(results) == len(shapes)
    for res, (_, h, w) in zip(results, shapes):
        pred = res.pred_instances
        assert 0 < len(pred) <= 20
        assert pred.bboxes.shape == (len(pred), 4) and torch.isfinite(pred.bboxes).all()
        assert pred.labels.min() >= 0 and pred.labels.max() < 80
        if with_mask:
            assert pred.masks.shape[0] == len(pred)
            assert tuple(pred.masks.shape[1:]) == tuple(res.ori_shape)
    return results


@pytest.mark.parametrize('path', CONFIGS, ids=CONFIG_IDS)
def test_train_step_and_predict(path):
    _train_and_predict(_build(path), with_mask='mask_rcnn' in path)


@pytest.mark.parametrize('det', ['retinanet', 'mask_rcnn'])
def test_unpadded_odd_sizes(det):
    """Without padding to 32 the transposed levels are one cell larger than ceil(H / stride) for
    odd sizes (documented in SHViTFPN); anchors, valid flags and RoIAlign must cope."""
    model = _build(osp.join(ROOT, 'configs', det, 'shvit_s1.py'), pad_size_divisor=1)
    shapes = ((3, 53, 70), (3, 45, 61))  # batch padded to 53 x 70 only
    data = model.data_preprocessor(_batch(det == 'mask_rcnn', shapes), False)
    feats = model.extract_feat(data['inputs'])
    first_stride = 8 if det == 'retinanet' else 4
    assert feats[0].shape[-2:] == (16 // first_stride * math.ceil(53 / 16),
                                   16 // first_stride * math.ceil(70 / 16))
    assert feats[0].shape[-2] > math.ceil(53 / first_stride)  # the documented extra border
    _train_and_predict(model, with_mask=det == 'mask_rcnn', shapes=shapes)
