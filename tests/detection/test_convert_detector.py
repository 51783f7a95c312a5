"""Official MMDetection 2.x SHViT detection checkpoints -> MMDetection 3.x (synthetic files)."""
import functools
import os.path as osp
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch
from conftest import make_official_state_dict

import shvit_mm  # noqa: F401
from mmengine.config import Config
from mmengine.runner import load_checkpoint
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs
from mmdet.utils import register_all_modules
from shvit_mm.models.backbones import SHViT
from shvit_mm.models.backbones.shvit_weights import (CheckpointFormatError, match_state_dict,
                                                     mmdet2_detector_to_mmdet3)
from shvit_mm.utils.safe_load import safe_load

from conftest import REPO_ROOT as ROOT
register_all_modules(init_default_scope=True)
convert = functools.partial(mmdet2_detector_to_mmdet3, arch_zoo=SHViT.arch_zoo)
TOOL = osp.join(ROOT, 'tools', 'model_converters', 'official_det_to_mmdet3.py')
COCO_CLASSES = tuple(f'class_{i}' for i in range(80))


def _official_neck_and_head_keys(det):
    """Module names of the official MMDetection 2.25 models (official SHViT neck per the release,
    MMDetection 2.25's RetinaHead / RPNHead / Shared2FCBBoxHead / FCNMaskHead), written out here
    independently of the converter."""
    mods = [f'neck.lateral_convs.{i}.conv' for i in range(3)]
    if det == 'retinanet':
        mods += [f'neck.fpn_convs.{i}.conv' for i in range(4)]  # 3 levels + extra 'on_input'
        mods += ['neck.extra_trans_convs.0.conv', 'neck.extra_fpn_convs.0.conv']
        mods += [f'bbox_head.{b}_convs.{i}.conv' for b in ('cls', 'reg') for i in range(4)]
        mods += ['bbox_head.retina_cls', 'bbox_head.retina_reg']
    else:
        mods += [f'neck.fpn_convs.{i}.conv' for i in range(3)]
        mods += [f'neck.extra_trans_convs.{i}.conv' for i in range(2)]
        mods += [f'neck.extra_fpn_convs.{i}.conv' for i in range(2)]
        mods += ['rpn_head.rpn_conv', 'rpn_head.rpn_cls', 'rpn_head.rpn_reg']
        mods += ['roi_head.bbox_head.shared_fcs.0', 'roi_head.bbox_head.shared_fcs.1',
                 'roi_head.bbox_head.fc_cls', 'roi_head.bbox_head.fc_reg']
        mods += [f'roi_head.mask_head.convs.{i}.conv' for i in range(4)]
        mods += ['roi_head.mask_head.upsample', 'roi_head.mask_head.conv_logits']
    return [f'{m}.{p}' for m in mods for p in ('weight', 'bias')]


def _config(det, arch='s4'):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', det, f'shvit_{arch}.py'))
    cfg.model.backbone.init_cfg = None
    return cfg


@functools.lru_cache(maxsize=None)
def _build(det, arch='s4'):
    """One model per detector/variant for the whole module (every test loads all its weights)."""
    torch.manual_seed(0)
    return MODELS.build(_config(det, arch).model)


@pytest.fixture(params=['retinanet', 'mask_rcnn'])
def det_model(request):
    return request.param, _build(request.param)


def _official_checkpoint(det, model, arch='s4', seed=0):
    """A 2.x checkpoint in the official layout: backbone keys from the release's key list, neck and
    head keys from the 2.25 module names; shapes of the neck/head taken from our model by name."""
    sd = OrderedDict((f'backbone.{k}', v) for k, v in
                     make_official_state_dict(arch, seed=seed, with_head=False).items())
    own = model.state_dict()
    g = torch.Generator().manual_seed(seed + 1)
    for key in _official_neck_and_head_keys(det):
        assert key in own, f'official key {key} has no counterpart in our model'
        sd[key] = torch.randn(own[key].shape, generator=g) * 0.05
    meta = dict(mmdet_version='2.25.0', mmcv_version='1.6.0', epoch=12, iter=87960,
                CLASSES=COCO_CLASSES, PALETTE=[(i, i, i) for i in range(80)],
                config='model = dict(...)')
    return dict(state_dict=sd, meta=meta)


@functools.lru_cache(maxsize=None)
def _tool():
    from importlib.util import module_from_spec, spec_from_file_location
    spec = spec_from_file_location('official_det_to_mmdet3', TOOL)
    tool = module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def _convert_file(src: dict, tmp_path) -> str:
    """Write ``src``, convert it with the command-line tool, return the output's path."""
    torch.save(src, tmp_path / 'official.pth')
    _tool().main([str(tmp_path / 'official.pth'), str(tmp_path / 'out.pth')])
    return str(tmp_path / 'out.pth')


def test_convert_loads_strictly_and_tensors_match(det_model, tmp_path):
    det, model = det_model
    src = _official_checkpoint(det, model)
    meta = convert(src)['meta']
    assert meta['detector'] == det and meta['arch'] == 's4' and meta['num_classes'] == 80
    assert meta['dataset_meta']['classes'] == COCO_CLASSES

    out = safe_load(_convert_file(src, tmp_path))  # weights_only: the output is plain data
    assert set(out) == {'state_dict', 'meta'} and out['meta']['source'] == 'official.pth'
    assert {k: v for k, v in out['meta'].items() if k != 'source'} == {
        k: v for k, v in meta.items() if k != 'source'}
    converted = out['state_dict']
    # strict: nothing missing, nothing unexpected
    result = model.load_state_dict(converted, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    loaded = model.state_dict()
    assert set(converted) == set(loaded)
    for key, value in src['state_dict'].items():  # every tensor is the one it came from
        assert torch.equal(converted[key], value), key
        assert torch.equal(loaded[key], value), key


def test_round_trip_predictions(det_model, tmp_path):
    """Converted file loaded through MMEngine == the same weights loaded directly."""
    det, model = det_model
    src = _official_checkpoint(det, model, seed=3)
    out_path = _convert_file(src, tmp_path)
    model.eval()
    if det == 'mask_rcnn':
        model.test_cfg.rcnn.score_thr = 0.0
    else:
        model.test_cfg.score_thr = 0.0
    batch = demo_mm_inputs(batch_size=1, image_shapes=[(3, 64, 96)], num_items=[2],
                           num_classes=80, with_mask=det == 'mask_rcnn')

    def predict():
        with torch.no_grad():
            return model(**model.data_preprocessor(batch, False), mode='predict')[0].pred_instances

    model.load_state_dict(src['state_dict'], strict=True)
    a = predict()
    with torch.no_grad():  # wipe, so the file load below has to restore every tensor
        for t in model.state_dict().values():
            t.zero_()
    ckpt = load_checkpoint(model, out_path, map_location='cpu', strict=True)
    assert ckpt['meta']['dataset_meta']['classes'] == COCO_CLASSES
    b = predict()
    assert len(a) > 0 and len(a) == len(b)
    for field in ('bboxes', 'scores', 'labels') + (('masks',) if det == 'mask_rcnn' else ()):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


def test_errors_name_the_problem(det_model):
    det, model = det_model
    good = _official_checkpoint(det, model)

    # a classification checkpoint
    backbone_only = {'model': make_official_state_dict('s4')}
    with pytest.raises(CheckpointFormatError, match='backbone-only'):
        convert(backbone_only)
    # something else entirely
    with pytest.raises(CheckpointFormatError, match='Not a RetinaNet or Mask R-CNN'):
        convert({'state_dict': {'encoder.w': torch.zeros(1)}})
    with pytest.raises(CheckpointFormatError, match='expected a dict'):
        convert([torch.zeros(1)])
    # an unknown head key and a missing one are listed by name
    bad = dict(state_dict=OrderedDict(good['state_dict']), meta=good['meta'])
    head_prefix = 'bbox_head' if det == 'retinanet' else 'roi_head.bbox_head'
    bad['state_dict'][f'{head_prefix}.fc_extra.weight'] = torch.zeros(3)
    removed = 'neck.extra_fpn_convs.0.conv.bias'
    del bad['state_dict'][removed]
    with pytest.raises(CheckpointFormatError) as info:
        match_state_dict(model, convert(bad)['state_dict'])
    assert f'{head_prefix}.fc_extra.weight' in str(info.value) and removed in str(info.value)
    assert 'unknown key' in str(info.value) and 'missing key' in str(info.value)
    # the backbone's classifier is dropped, not an error
    extra = dict(state_dict=OrderedDict(good['state_dict']))
    extra['state_dict']['backbone.head.l.weight'] = torch.zeros(1000, 448)
    out = convert(extra)
    assert 'backbone.head.l.weight' not in out['state_dict']
    assert out['meta']['dropped_keys'] == ['backbone.head.l.weight']
    assert 'dataset_meta' not in out['meta']  # no class names in the source


def test_other_variant_is_refused_unless_asked():
    det = 'retinanet'
    model_s1 = _build(det, 's1')
    s1 = _official_checkpoint(det, model_s1, arch='s1')
    with pytest.raises(CheckpointFormatError, match=r'SHViT-S1, expected SHViT-S4.*--arch s1'):
        convert(s1)
    out = convert(s1, arch='s1')
    assert out['meta']['arch'] == 's1'
    model_s1.load_state_dict(out['state_dict'], strict=True)
    # a RetinaNet S4 checkpoint with the wrong number of transposed convs (a Mask R-CNN neck)
    model = _build(det)
    wrong = _official_checkpoint(det, model)
    wrong['state_dict']['neck.extra_trans_convs.1.conv.weight'] = torch.zeros(256, 256, 2, 2)
    with pytest.raises(CheckpointFormatError, match=r'neck\.extra_trans_convs\.1\.conv\.weight'):
        match_state_dict(model, convert(wrong)['state_dict'])


def test_cli(tmp_path, capsys):
    tool = TOOL
    model = _build('retinanet', 's1')
    torch.save(_official_checkpoint('retinanet', model, arch='s1'), tmp_path / 'official.pth')
    ok = subprocess.run([sys.executable, tool, str(tmp_path / 'official.pth'),
                         str(tmp_path / 'sub' / 'out.pth'), '--arch', 's1'],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert 'configs/retinanet/shvit_s1.py' in ok.stdout
    model.load_state_dict(safe_load(str(tmp_path / 'sub' / 'out.pth'))['state_dict'], strict=True)

    cli = _tool()
    torch.save({'model': make_official_state_dict('s4')}, tmp_path / 'cls.pth')
    with pytest.raises(SystemExit, match='backbone-only'):
        cli.main([str(tmp_path / 'cls.pth'), str(tmp_path / 'x.pth')])
    with pytest.raises(SystemExit, match=r'SHViT-S1, expected SHViT-S4'):
        cli.main([str(tmp_path / 'official.pth'), str(tmp_path / 'x.pth')])
    with pytest.raises(SystemExit, match='not found'):
        cli.main([str(tmp_path / 'missing.pth'), str(tmp_path / 'x.pth')])
    assert not osp.exists(tmp_path / 'x.pth')
