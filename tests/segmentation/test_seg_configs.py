"""Semantic FPN / UPerNet ADE20K configs and the segmentation demo configs: the recipes, and for
every config one training step (finite loss, gradients reaching the backbone) and a prediction of
the input's size for odd and non-square pictures."""
import glob
import os.path as osp
import re

import pytest
import torch

from conftest import REPO_ROOT as ROOT

ADE_CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'sem_fpn', '*.py'))
                     + glob.glob(osp.join(ROOT, 'configs', 'upernet', '*.py')))
DEMO_CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'demo', 'sem_fpn_*.py')))
ALL_CONFIGS = ADE_CONFIGS + DEMO_CONFIGS
_ids = [osp.relpath(p, osp.join(ROOT, 'configs')) for p in ALL_CONFIGS]
RELEASE = 'https://github.com/ysj9909/SHViT/releases/download/v1.0/shvit_{}.pth'
CHANNELS = {'s1': [128, 224, 320], 's2': [128, 308, 448], 's3': [192, 352, 448],
            's4': [224, 336, 448]}


def _cfg(path):
    from mmengine.config import Config
    return Config.fromfile(path)


def _plain(value):
    """A config value as plain dicts/lists, without the ``_scope_`` keys that ``mmseg::`` bases
    add."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k != '_scope_'}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def test_all_configs_present():
    assert _ids == [f'{d}/shvit_s{i}.py' for d in ('sem_fpn', 'upernet') for i in (1, 2, 3, 4)] + [
        'demo/sem_fpn_r18_demo.py', 'demo/sem_fpn_shvit_s1_demo.py']


def _common_ade(cfg, arch):
    assert cfg.default_scope == 'mmseg'
    assert cfg.custom_imports == dict(imports=['shvit_mm'], allow_failed_imports=False)
    m = cfg.model
    assert m.type == 'EncoderDecoder' and m.pretrained is None
    assert _plain(m.backbone) == dict(
        type='SHViT', arch=arch, out_indices=(0, 1, 2), frozen_stages=-1, norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint=RELEASE.format(arch)))
    assert m.neck.type == 'SHViTFPN' and m.neck.in_channels == CHANNELS[arch]
    assert (m.neck.out_channels, m.neck.num_outs, m.neck.num_extra_trans_convs) == (256, 5, 2)
    assert m.decode_head.in_index == [0, 1, 2, 3] and m.decode_head.num_classes == 150
    assert m.data_preprocessor.size == (512, 512)
    assert _plain(m.data_preprocessor.test_cfg) == dict(size_divisor=32)
    assert m.data_preprocessor.mean == [123.675, 116.28, 103.53] and m.data_preprocessor.bgr_to_rgb
    assert cfg.find_unused_parameters is True  # the stride-64 neck output feeds no head
    # ADE20K: 512x512 crops from 2048x512 x [0.5, 2] resizes, cat_max_ratio 0.75, flip, photometric
    ds = cfg.train_dataloader.dataset
    assert ds.type == 'ADE20KDataset' and ds.data_root == 'data/ade/ADEChallengeData2016'
    steps = {t['type']: t for t in ds.pipeline}
    assert steps['RandomResize'].scale == (2048, 512)
    assert steps['RandomResize'].ratio_range == (0.5, 2.0)
    assert steps['RandomCrop'].crop_size == (512, 512) and steps['RandomCrop'].cat_max_ratio == 0.75
    assert 'PhotoMetricDistortion' in steps and steps['LoadAnnotations'].reduce_zero_label
    assert cfg.val_evaluator.type == 'IoUMetric' and cfg.model.test_cfg.mode == 'whole'
    assert cfg.default_hooks.checkpoint.type == 'SafeCheckpointHook'
    assert cfg.default_hooks.checkpoint.by_epoch is False


@pytest.mark.parametrize('arch', ['s1', 's2', 's3', 's4'])
def test_sem_fpn_recipe(arch):
    cfg = _cfg(osp.join(ROOT, f'configs/sem_fpn/shvit_{arch}.py'))
    _common_ade(cfg, arch)
    head = cfg.model.decode_head
    assert head.type == 'FPNHead' and head.feature_strides == [4, 8, 16, 32]
    assert (head.channels, head.dropout_ratio) == (128, 0.1) and 'auxiliary_head' not in cfg.model
    assert _plain(cfg.optim_wrapper.optimizer) == dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999),
                                               weight_decay=1e-4)
    assert _plain(cfg.param_scheduler) == [dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0,
                                        end=40000, by_epoch=False)]
    assert _plain(cfg.train_cfg) == dict(type='IterBasedTrainLoop', max_iters=40000,
                                         val_interval=4000)
    assert cfg.train_dataloader.batch_size == 4
    assert _plain(cfg.auto_scale_lr) == dict(enable=False, base_batch_size=32)


@pytest.mark.parametrize('arch', ['s1', 's2', 's3', 's4'])
def test_upernet_recipe(arch):
    cfg = _cfg(osp.join(ROOT, f'configs/upernet/shvit_{arch}.py'))
    _common_ade(cfg, arch)
    head, aux = cfg.model.decode_head, cfg.model.auxiliary_head
    assert head.type == 'UPerHead' and head.in_channels == [256] * 4
    assert head.pool_scales == (1, 2, 3, 6) and head.channels == 512
    assert aux.type == 'FCNHead' and (aux.in_index, aux.in_channels) == (2, 256)
    assert aux.loss_decode.loss_weight == 0.4 and aux.num_classes == 150
    assert _plain(cfg.optim_wrapper.optimizer) == dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999),
                                               weight_decay=0.01)
    assert _plain(cfg.optim_wrapper.paramwise_cfg) == dict(norm_decay_mult=0.)
    warmup, poly = cfg.param_scheduler
    assert _plain(warmup) == dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
                                  end=1500)
    assert _plain(poly) == dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000,
                        by_epoch=False)
    assert _plain(cfg.train_cfg) == dict(type='IterBasedTrainLoop', max_iters=160000,
                                         val_interval=16000)
    assert cfg.train_dataloader.batch_size == 2
    assert _plain(cfg.auto_scale_lr) == dict(enable=False, base_batch_size=16)


def test_headers_name_recipe_and_peers():
    for path in ADE_CONFIGS:
        with open(path) as f:
            header = f.read().split('_base_')[0]
        assert 'SPEC' not in header and '../shared' not in header
        if path.endswith('shvit_s4.py'):
            if 'sem_fpn' in path:
                for peer in ('PoolFormer-S12 37.2', 'FastViT-SA12 38.0', 'EfficientFormer-L1 38.9',
                             'RepViT-M1.1 40.6', 'EfficientFormerV2-S2 42.4'):
                    assert peer in ' '.join(header.replace('#', ' ').split()), peer
            else:
                swin = 'swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512'
                assert swin in header
        else:
            assert './shvit_s4.py' in header


# ------------------------------------------------------------------------------------------------
# every config: one training step and predictions of odd / non-square pictures
# ------------------------------------------------------------------------------------------------
def _samples(shapes, num_classes, seed=0):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(seed)
    samples = []
    for h, w in shapes:
        s = SegDataSample(metainfo=dict(ori_shape=(h, w), img_shape=(h, w), pad_shape=(h, w)))
        label = torch.randint(0, num_classes, (1, h, w), generator=g)
        label[:, : h // 8] = 255  # some ignored pixels
        s.gt_sem_seg = PixelData(data=label)
        samples.append(s)
    return samples


@pytest.fixture(scope='module')
def built():
    """Each config's model, built once (no pretrained weights), SyncBN reverted to BN as MMEngine's
    Runner does without distributed training."""
    from mmengine.model import revert_sync_batchnorm
    from shvit_mm.apis.config import build_model
    cache = {}

    def get(path):
        if path not in cache:
            cache[path] = revert_sync_batchnorm(build_model(path))
        return cache[path]
    return get


@pytest.mark.parametrize('path', ALL_CONFIGS, ids=_ids)
def test_train_step_and_odd_size_prediction(path, built):
    model = built(path)
    num_classes = model.decode_head.num_classes
    # one training step on a small non-square batch whose sides are no multiple of 16, through the
    # model's loss directly (the data preprocessor would pad it to the 512x512 training crop)
    torch.manual_seed(0)
    model.train()
    h, w = 40, 72
    inputs = torch.randn(2, 3, h, w)
    losses = model.loss(inputs, _samples([(h, w)] * 2, num_classes))
    loss = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(loss) and loss > 0
    model.zero_grad()
    loss.backward()
    backbone = model.backbone
    first = next(p for p in backbone.parameters() if p.requires_grad)
    assert first.grad is not None and first.grad.abs().sum() > 0, 'no gradient at the stem'
    for name, p in backbone.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    model.zero_grad()

    # prediction through test_step (data preprocessor included): odd and non-square pictures
    model.eval()
    for h, w in [(33, 70), (70, 47)]:
        img = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
        sample = _samples([(h, w)], num_classes)[0]
        with torch.no_grad():
            out = model.test_step(dict(inputs=[img], data_samples=[sample]))
        pred = out[0].pred_sem_seg.data
        assert pred.shape == (1, h, w), (path, h, w)
        assert pred.min() >= 0 and pred.max() < num_classes
        assert out[0].seg_logits.data.shape == (num_classes, h, w)


def test_parameter_counts_are_reported(built):
    """Backbone / neck / head parameter counts of every config (MMEngine's parameter_count), as
    docs/segmentation.md lists them."""
    from mmengine.analysis import parameter_count
    with open(osp.join(ROOT, 'docs', 'segmentation.md')) as f:
        doc = f.read()
    for path in ADE_CONFIGS:
        counts = parameter_count(built(path))
        heads = counts['decode_head'] + counts.get('auxiliary_head', 0)
        row = re.search(re.escape(osp.relpath(path, ROOT)) + r'`?\s*\|([^\n]+)', doc)
        assert row, f'{path} missing from docs/segmentation.md'
        numbers = [float(x) for x in re.findall(r'(\d+\.\d+)\s*M', row.group(1))]
        assert numbers[:4] == [round(c / 1e6, 2) for c in (
            counts['backbone'], counts['neck'], heads, counts[''])], (path, numbers)
