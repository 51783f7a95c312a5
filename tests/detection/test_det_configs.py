"""RetinaNet / Mask R-CNN configs: the official 1x schedule as it runs, feature levels matching the
heads, one training step and one prediction."""
import glob
import math
import os.path as osp

import pytest
import torch

import shvit_mm  # noqa: F401
from mmengine.config import Config
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs
from mmdet.utils import register_all_modules

from conftest import REPO_ROOT as ROOT
CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'retinanet', '*.py'))
                 + glob.glob(osp.join(ROOT, 'configs', 'mask_rcnn', '*.py')))
CONFIG_IDS = [osp.relpath(p, osp.join(ROOT, 'configs')) for p in CONFIGS]

register_all_modules(init_default_scope=True)


def _lr_curve(cfg, epoch_length):
    """The learning rate at every iteration of the config's schedule, stepped as MMEngine's
    ParamSchedulerHook steps it (iteration-based schedulers after each iteration, epoch-based ones
    after each epoch), and the optimizer."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import PARAM_SCHEDULERS
    wrapper = build_optim_wrapper(torch.nn.Linear(1, 1), cfg.optim_wrapper)
    schedulers = [PARAM_SCHEDULERS.build(dict(s, optimizer=wrapper)) for s in cfg.param_scheduler]
    lrs = []
    for _ in range(cfg.train_cfg.max_epochs):
        for _ in range(epoch_length):
            lrs.append(wrapper.get_lr()['lr'][0])
            for s in schedulers:
                if not s.by_epoch:
                    s.step()
        for s in schedulers:
            if s.by_epoch:
                s.step()
    return lrs, wrapper.optimizer


@pytest.mark.parametrize('path', CONFIGS, ids=CONFIG_IDS)
def test_official_1x_schedule(path):
    """AdamW at lr 1e-4 (weight decay 0.05), warmed up linearly from 1e-7 over 500 iterations,
    x0.1 after epochs 8 and 11 of 12: the official SHViT detection schedule as it runs."""
    epoch = 600
    lrs, optimizer = _lr_curve(Config.fromfile(path), epoch)
    assert type(optimizer) is torch.optim.AdamW
    assert (optimizer.defaults['weight_decay'], optimizer.defaults['betas']) == (0.05, (0.9, 0.999))
    assert len(lrs) == 12 * epoch
    assert lrs[0] == pytest.approx(1e-7) and lrs[0] < lrs[250] < lrs[498] < 1e-4
    for it, lr in [(499, 1e-4), (8 * epoch - 1, 1e-4), (8 * epoch, 1e-5), (11 * epoch - 1, 1e-5),
                   (11 * epoch, 1e-6), (12 * epoch - 1, 1e-6)]:
        assert lrs[it] == pytest.approx(lr), it


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
    model = _build(path)
    # the neck's levels have the strides the anchor generators and RoI extractors assume
    model.eval()
    with torch.no_grad():
        feats = model.extract_feat(torch.zeros(1, 3, 64, 96))
    head = model.bbox_head if 'retinanet' in path else model.rpn_head
    strides = [sw for sw, _ in head.prior_generator.strides]
    assert [tuple(f.shape[-2:]) for f in feats] == [(math.ceil(64 / s), math.ceil(96 / s))
                                                    for s in strides]
    if 'mask_rcnn' in path:
        assert model.roi_head.bbox_roi_extractor.featmap_strides == strides[:4]
        assert model.roi_head.mask_roi_extractor.featmap_strides == strides[:4]
    _train_and_predict(model, with_mask='mask_rcnn' in path)


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
