"""Checkpoint formats, safe loading and equality with timm's independent SHViT implementation."""
import logging
import pytest
import torch
from conftest import log_records, make_official_state_dict, official_key_layout

import shvit_mm  # noqa: F401
from shvit_mm.models.backbones.shvit_weights import (CheckpointFormatError, infer_arch,
                                                     load_backbone_checkpoint, official_to_timm,
                                                     timm_to_official, to_official_layout)
from shvit_mm.utils.safe_load import UnsafeCheckpointError, safe_load
from shvit_mm.models import SHViT

ARCHS = ['s1', 's2', 's3', 's4']
RELEASE = 'https://github.com/ysj9909/SHViT/releases/download/v1.0/shvit_{}.pth'


def _backbone_keys(arch):
    return [k for k in official_key_layout(arch) if not k.startswith('head.')]


def _assert_loaded(model, sd):
    own = model.state_dict()
    for k in _backbone_keys(model.arch_name):
        assert torch.equal(own[k], sd[k]), k


def _pretrained(arch, path, **kw):
    model = SHViT(arch=arch, init_cfg=dict(type='Pretrained', checkpoint=str(path), **kw))
    model.init_weights()
    return model


@pytest.mark.parametrize('arch', ARCHS)
def test_official_release_layout_loads_exactly(arch, tmp_path):
    sd = make_official_state_dict(arch)
    path = tmp_path / f'shvit_{arch}.pth'
    torch.save({'model': sd}, path)
    model = SHViT(arch=arch)
    report = load_backbone_checkpoint(model, str(path), logger=logging.getLogger('t'))
    assert report['missing'] == [] and report['unexpected'] == []
    assert sorted(report['head']) == sorted(k for k in sd if k.startswith('head.'))
    assert report['arch'] == arch
    _assert_loaded(model, sd)
    # consumed every backbone tensor of the official layout
    assert set(model.state_dict()) == set(_backbone_keys(arch))


def test_pretrained_init_cfg_and_head_log_line(tmp_path):
    sd = make_official_state_dict('s1')
    path = tmp_path / 'shvit_s1.pth'
    torch.save({'model': sd}, path)
    from mmengine.logging import MMLogger
    with log_records(MMLogger.get_instance('shvit_test_head')) as records:
        model = _pretrained('s1', path)
    _assert_loaded(model, sd)
    head_lines = [r for r in records if 'classification-head' in r.getMessage()]
    assert len(head_lines) == 1
    assert not [r for r in records if r.levelno >= logging.WARNING]


def test_timm_layout_safetensors_and_pth(tmp_path):
    from safetensors.torch import save_file
    sd = make_official_state_dict('s2')
    timm_sd = official_to_timm(sd)
    assert any(k.startswith('stages.1.downsample.2.') for k in timm_sd)
    assert timm_to_official(timm_sd) == sd
    st = tmp_path / 'model.safetensors'
    save_file({k: v.contiguous() for k, v in timm_sd.items()}, str(st))
    _assert_loaded(_pretrained('s2', st), sd)
    pth = tmp_path / 'timm.pth'
    torch.save(timm_sd, pth)
    _assert_loaded(_pretrained('s2', pth), sd)


def test_plain_and_wrapped_state_dicts(tmp_path):
    sd = make_official_state_dict('s1', with_head=False)
    for i, obj in enumerate([sd, {'state_dict': sd},
                             {'state_dict': {'module.' + k: v for k, v in sd.items()}}]):
        path = tmp_path / f'plain{i}.pth'
        torch.save(obj, path)
        _assert_loaded(_pretrained('s1', path), sd)


def test_mmdet_checkpoint_with_backbone_prefix(tmp_path):
    sd = make_official_state_dict('s3', with_head=False)
    det = {'backbone.' + k: v for k, v in sd.items()}
    det['neck.lateral_convs.0.conv.weight'] = torch.zeros(256, 192, 1, 1)
    det['bbox_head.retina_cls.weight'] = torch.zeros(720, 256, 3, 3)
    path = tmp_path / 'retinanet.pth'
    torch.save({'state_dict': det, 'meta': {'epoch': 12, 'CLASSES': ('a', 'b')}}, path)
    _assert_loaded(_pretrained('s3', path), sd)
    _assert_loaded(_pretrained('s3', path, prefix='backbone.'), sd)


def test_release_url_uses_local_cache(tmp_path, monkeypatch):
    """A release URL resolves to torch hub's cache; no network is needed when the file is there."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    url = RELEASE.format('s1')
    cache = tmp_path / 'torch_home' / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    sd = make_official_state_dict('s1')
    torch.save({'model': sd}, cache / 'shvit_s1.pth')
    _assert_loaded(_pretrained('s1', url), sd)


def test_unreachable_url_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'th'))
    with pytest.raises(RuntimeError, match='Could not download .*local path'):
        safe_load('https://127.0.0.1:9/shvit_s9.pth')


def test_missing_and_unexpected_keys_reported_by_name(tmp_path):
    sd = make_official_state_dict('s1', with_head=False)
    sd.pop('blocks3.0.0.m.c.weight')
    sd['blocks9.extra.weight'] = torch.zeros(3)
    path = tmp_path / 'partial.pth'
    torch.save(sd, path)
    logger = logging.getLogger('shvit_partial')
    with log_records(logger) as records:
        report = load_backbone_checkpoint(SHViT(arch='s1'), str(path), logger=logger)
    assert report['missing'] == ['blocks3.0.0.m.c.weight']
    assert report['unexpected'] == ['blocks9.extra.weight']
    text = '\n'.join(r.getMessage() for r in records if r.levelno >= logging.WARNING)
    assert 'blocks3.0.0.m.c.weight' in text and 'blocks9.extra.weight' in text


@pytest.mark.parametrize('ckpt_arch,model_arch', [('s2', 's4'), ('s4', 's1'), ('s1', 's2')])
def test_other_variant_names_both(tmp_path, ckpt_arch, model_arch):
    path = tmp_path / 'other.pth'
    torch.save({'model': make_official_state_dict(ckpt_arch)}, path)
    with pytest.raises(CheckpointFormatError) as e:
        _pretrained(model_arch, path)
    msg = str(e.value)
    assert f'SHViT-{ckpt_arch.upper()}' in msg and f'SHViT-{model_arch.upper()}' in msg


def test_infer_arch():
    for arch in ARCHS:
        assert infer_arch(make_official_state_dict(arch), SHViT.arch_zoo) == arch


def test_missing_file_names_path(tmp_path):
    path = tmp_path / 'nope' / 'shvit_s4.pth'
    with pytest.raises(FileNotFoundError, match=str(path)):
        _pretrained('s4', path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / 'junk.pth'
    torch.save({'epoch': 3, 'note': 'no tensors'}, path)
    with pytest.raises(CheckpointFormatError, match='No state dict found'):
        _pretrained('s1', path)


class _Payload:
    """Unpickling this would create a marker file (simulates a malicious checkpoint)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def test_pickle_payload_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    sd = make_official_state_dict('s1', with_head=False)
    torch.save({'model': sd, 'extra': _Payload(str(marker))}, path)
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError, match=r'Refused to load .*GLOBAL .*open'):
        _pretrained('s1', path)
    assert not marker.exists()


def test_getattr_is_only_allowed_for_history_buffer_statistics(tmp_path):
    from mmengine.logging import HistoryBuffer

    class _GetattrPayload:  # an allow-listed class, but an attribute outside its statistics
        def __reduce__(self):
            return (getattr, (HistoryBuffer, 'update'))
    path = tmp_path / 'getattr.pth'
    torch.save({'x': _GetattrPayload()}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"getattr\(HistoryBuffer, 'update'\)"):
        safe_load(str(path))


def test_mmengine_checkpoint_classes_are_allow_listed(tmp_path):
    """MMEngine's own checkpoints (message hub with HistoryBuffer, numpy values) load with weights_only."""
    import numpy as np
    from mmengine.logging import HistoryBuffer
    buf = HistoryBuffer()
    buf.update(1.5)
    buf.update(np.float64(2.0))
    obj = {'state_dict': make_official_state_dict('s1', with_head=False),
           'meta': {'seed': np.int64(3), 'arr': np.arange(4.0), 'dtype': np.dtype('float32')},
           'message_hub': {'log_scalars': {'loss': buf}}}
    path = tmp_path / 'epoch_1.pth'
    torch.save(obj, path)
    loaded = safe_load(str(path))
    assert loaded['message_hub']['log_scalars']['loss'].current() == 2.0
    assert loaded['meta']['arr'].tolist() == [0.0, 1.0, 2.0, 3.0]


# -- equality with timm (an independent implementation), eager and deploy ---------------------
@pytest.mark.parametrize('arch', ARCHS)
def test_stage_outputs_equal_timm(arch):
    import timm  # a test dependency (setup.py extras 'tests'), installed by tools/install.sh
    sd = make_official_state_dict(arch, seed=1)
    ours = SHViT(arch=arch).eval()
    ours.load_state_dict(to_official_layout({'model': sd})[0])
    ref = timm.create_model(f'shvit_{arch}', pretrained=False).eval()
    ref.load_state_dict(official_to_timm(sd), strict=True)
    x = torch.randn(2, 3, 192, 160)
    with torch.no_grad():
        expected = ref.forward_intermediates(x, intermediates_only=True)
        got = ours(x)
        assert len(got) == len(expected) == 3
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
        ours.switch_to_deploy()
        ref.fuse()
        expected = ref.forward_intermediates(x, intermediates_only=True)
        got = ours(x)
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)
