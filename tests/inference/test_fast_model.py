"""The whole-model fast inference path: BatchNorm folding, channels-last, mixed precision; the
switch through tools/test.py (FastInferenceHook), the inferencers and Python."""
import copy
import logging
import os.path as osp
import sys

import pytest
import torch
import torch.nn as nn

from conftest import REPO_ROOT, demo_options, log_records, run_tool

DEMO_CFG = osp.join(REPO_ROOT, 'configs/demo/mask_rcnn_shvit_s1_demo.py')
SEG_DEMO_CFG = osp.join(REPO_ROOT, 'configs/demo/sem_fpn_shvit_s1_demo.py')
R18_DEMO_CFG = osp.join(REPO_ROOT, 'configs/demo/mask_rcnn_r18_demo.py')


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item()


def _randomized(model):
    """Eval-mode model whose BatchNorms have non-trivial statistics and affine parameters (a
    freshly built one has mean 0 / var 1, which folding would reproduce even if it were wrong)."""
    from conftest import randomize_norm_stats_
    torch.manual_seed(0)
    randomize_norm_stats_(model)
    return model.eval()


# ---------------------------------------------------------------------------------------------
# folding
# ---------------------------------------------------------------------------------------------
def test_fold_batchnorm_conv_module_sequential_and_transposed():
    from mmcv.cnn import ConvModule

    from shvit_mm.inference import fold_batchnorm
    torch.manual_seed(0)
    model = nn.Sequential(
        ConvModule(3, 8, 3, padding=1, norm_cfg=dict(type='BN')),
        nn.Sequential(nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8), nn.ReLU()),
        nn.Sequential(nn.ConvTranspose2d(8, 4, 2, stride=2), nn.BatchNorm2d(4)),
        # pre-norm: BatchNorm before the convolution, must be left alone
        ConvModule(4, 4, 3, padding=1, norm_cfg=dict(type='BN'), order=('norm', 'conv', 'act')))
    _randomized(model)
    x = torch.randn(2, 3, 16, 16)
    ref = model(x)
    assert fold_batchnorm(model) == 3
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 1  # the pre-norm one
    assert _rel(ref, model(x)) < 1e-5


# ---------------------------------------------------------------------------------------------
# whole models: fp32 equality, mixed precision closeness
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def det_pair():
    from mmdet.structures import DetDataSample

    from shvit_mm.apis.config import build_model
    eager = _randomized(build_model(DEMO_CFG))
    fast = copy.deepcopy(eager)
    x = torch.randn(1, 3, 256, 320) * 50
    sample = DetDataSample(metainfo=dict(img_shape=(256, 320), ori_shape=(256, 320),
                                         batch_input_shape=(256, 320), pad_shape=(256, 320),
                                         scale_factor=(1.0, 1.0)))
    return eager, fast, x, sample


def _roi_outputs(model, feats, rois):
    rh = model.roi_head
    bbox_feats = rh.bbox_roi_extractor(feats[:rh.bbox_roi_extractor.num_inputs], rois)
    cls, reg = rh.bbox_head(bbox_feats)
    mask = rh.mask_head(rh.mask_roi_extractor(feats[:rh.mask_roi_extractor.num_inputs], rois))
    return [cls, reg, mask]


@torch.no_grad()
def test_detector_fast_path_fp32_equals_eager(det_pair):
    from shvit_mm.inference import enable_fast_inference
    eager, fast, x, sample = det_pair
    model = copy.deepcopy(fast)
    report = enable_fast_inference(model)
    assert report['folded'] >= 4 and report['deploy_switched'] >= 1 and report['dtype'] is None
    assert model.neck.fpn_convs[0].conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert enable_fast_inference(model) is report  # idempotent
    fe, ff = eager.extract_feat(x), model.extract_feat(x)
    assert ff[0].is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(fe, ff):
        assert _rel(a, b) < 1e-4
    rpn_e, rpn_f = eager.rpn_head(fe), model.rpn_head(ff)
    for la, lb in zip(rpn_e, rpn_f):
        for a, b in zip(la, lb):
            assert _rel(a, b) < 1e-4
    rois = torch.tensor([[0, 10., 12., 90., 80.], [0, 100., 40., 240., 200.],
                         [0, 30., 150., 300., 250.]])
    for a, b in zip(_roi_outputs(eager, fe, rois), _roi_outputs(model, ff, rois)):
        assert _rel(a, b) < 1e-4
    # end to end: the same detections (box scores of random weights are close together, so
    # compare the leading ones, whose order small numeric differences cannot swap)
    pe = eager.predict(x, [sample.clone()])[0].pred_instances
    pf = model.predict(x, [sample.clone()])[0].pred_instances
    assert len(pe) == len(pf) and len(pe) > 0
    assert _rel(pe.scores, pf.scores) < 1e-4


@torch.no_grad()
def test_detector_fast_path_bf16_close_to_eager(det_pair):
    from shvit_mm.inference import enable_fast_inference
    from shvit_mm.utils.cpu import cpu_bf16_support
    if not cpu_bf16_support()['fast']:
        pytest.skip('this CPU has no native bf16 (the fp32 fallback is tested separately)')
    eager, fast, x, sample = det_pair
    model = copy.deepcopy(fast)
    report = enable_fast_inference(model, amp=True)
    assert report['dtype'] == 'bfloat16'
    assert {'backbone', 'neck', 'rpn_head', 'roi_head.bbox_head', 'roi_head.mask_head'} <= \
        set(report['autocast_parts'])
    fe, ff = eager.extract_feat(x), model.extract_feat(x)
    assert all(f.dtype == torch.float32 for f in ff)  # handed on in fp32
    from shvit_mm.inference import compare_outputs
    assert compare_outputs(fe, ff)['cosine'] > 0.99
    pf = model.predict(x, [sample.clone()])[0].pred_instances
    assert pf.bboxes.dtype == torch.float32 and torch.isfinite(pf.bboxes).all()
    assert len(pf) > 0


def test_mixed_precision_falls_back_to_fp32_without_native_bf16(monkeypatch, det_pair):
    import shvit_mm.inference.precision as precision
    from shvit_mm.inference import enable_fast_inference
    monkeypatch.setattr(precision, 'cpu_bf16_support',
                        lambda: dict(avx512_bf16=False, amx_bf16=False, fast=False))
    model = copy.deepcopy(det_pair[1])
    from mmengine.logging import MMLogger
    with log_records(MMLogger.get_instance('fast_inference_test')) as records:
        report = enable_fast_inference(model, amp=True, logger='fast_inference_test')
    assert report['dtype'] is None and report['autocast_parts'] == []
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and 'running in fp32' in warnings[0]


@torch.no_grad()
def test_segmentor_fast_path(monkeypatch):
    from mmengine.registry import DefaultScope
    from mmseg.structures import SegDataSample
    from mmseg.utils import register_all_modules

    from shvit_mm.apis.config import build_model
    from shvit_mm.inference import compare_outputs, enable_fast_inference
    from shvit_mm.utils.cpu import cpu_bf16_support
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmseg'):
        eager = _randomized(build_model(SEG_DEMO_CFG))
        x = torch.randn(1, 3, 256, 256) * 50
        meta = dict(img_shape=(256, 256), ori_shape=(256, 256), pad_shape=(256, 256))
        ref = eager.predict(x, [SegDataSample(metainfo=meta)])[0].seg_logits.data
        fast = copy.deepcopy(eager)
        report = enable_fast_inference(fast)
        assert report['folded'] > 0 and report['channels_last']
        out = fast.predict(x, [SegDataSample(metainfo=meta)])[0].seg_logits.data
        assert _rel(ref, out) < 1e-4
        if cpu_bf16_support()['fast']:
            mixed = copy.deepcopy(eager)
            assert 'decode_head' in enable_fast_inference(mixed, amp=True)['autocast_parts']
            out = mixed.predict(x, [SegDataSample(metainfo=meta)])[0].seg_logits.data
            assert out.dtype == torch.float32 and compare_outputs(ref, out)['cosine'] > 0.99


def test_resnet_peer_folds_every_batchnorm():
    """The R50/R18 peers go through the same path: every BatchNorm of ResNet folds."""
    from shvit_mm.apis.config import build_model
    from shvit_mm.inference import enable_fast_inference
    model = _randomized(build_model(R18_DEMO_CFG))
    x = torch.randn(1, 3, 128, 128) * 50
    with torch.no_grad():
        ref = model.extract_feat(x)
        enable_fast_inference(model)
        out = model.extract_feat(x)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    for a, b in zip(ref, out):
        assert _rel(a, b) < 1e-4


# ---------------------------------------------------------------------------------------------
# the switch: tools/test.py, inferencers
# ---------------------------------------------------------------------------------------------
def test_test_tool_fast_flag_adds_the_hook(tmp_path):
    from shvit_mm.cli.test import build_config, parse_args
    ckpt = tmp_path / 'x.pth'
    ckpt.write_bytes(b'')
    cfg = build_config(parse_args([DEMO_CFG, str(ckpt), '--amp', '--work-dir', str(tmp_path)]))
    hooks = [h for h in cfg.custom_hooks if h['type'] == 'FastInferenceHook']
    assert hooks == [dict(type='FastInferenceHook', amp=True)]
    # the config's own hooks are kept
    assert any(h['type'] == 'FiniteLossHook' for h in cfg.custom_hooks)
    from shvit_mm.cli import ToolError
    with pytest.raises(ToolError, match='--tta'):
        build_config(parse_args([DEMO_CFG, str(ckpt), '--fast', '--tta']))


@pytest.mark.slow
def test_test_tool_fast_and_amp_evaluate_the_demo(tmp_path):
    """tools/test.py --fast and --amp run the whole evaluation (CocoMetric) on the demo."""
    root = str(tmp_path / 'data')
    opts = demo_options(root, num_train=2, num_val=2)
    from shvit_mm.apis.config import build_model
    from shvit_mm.datasets import DEMO_CLASSES
    ckpt = tmp_path / 'model.pth'
    torch.save(dict(state_dict=_randomized(build_model(DEMO_CFG)).state_dict(),
                    meta=dict(dataset_meta=dict(classes=DEMO_CLASSES))), ckpt)
    for flags in (['--fast'], ['--amp']):
        out = run_tool([sys.executable, osp.join(REPO_ROOT, 'tools/test.py'), DEMO_CFG, str(ckpt),
                        '--work-dir', str(tmp_path / 'w'), *flags, '--cfg-options', *opts],
                       cwd=tmp_path)
        assert 'Fast inference:' in out and 'BatchNorms folded' in out
        assert 'coco/bbox_mAP' in out


def test_build_inferencer_fast(tmp_path):
    from shvit_mm.apis.config import build_model
    from shvit_mm.apis.inference import build_inferencer
    from shvit_mm.datasets import DEMO_CLASSES, make_demo_dataset
    ckpt = tmp_path / 'model.pth'
    torch.save(dict(state_dict=build_model(DEMO_CFG).state_dict(),
                    meta=dict(dataset_meta=dict(classes=DEMO_CLASSES))), ckpt)
    root = make_demo_dataset(str(tmp_path / 'demo'), num_train=1, num_val=1, verbose=False)
    inferencer = build_inferencer(DEMO_CFG, str(ckpt), 'cpu', fast=True)
    assert inferencer.model._shvit_fast_inference['channels_last']
    out = inferencer(osp.join(root, 'val', '000000.jpg'), return_datasamples=False)
    assert {'labels', 'scores', 'bboxes', 'masks'} <= set(out['predictions'][0])
