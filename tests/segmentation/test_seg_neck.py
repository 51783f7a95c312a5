"""MMSegmentation's SHViTSegFPN: the detection neck's transposed-conv levels on MMSegmentation's FPN
(one implementation), registered for mmseg configs; output sizes for odd inputs, fed to FPNHead and
UPerHead; MMSegmentation's reading of ``end_level``; clear errors."""
import math

import pytest
import torch

import shvit_mm  # noqa: F401  (registers the necks)
from shvit_mm.models.necks.transposed_fpn import TransposedFPNMixin

IN_CH = [12, 20, 28]  # small stand-ins for SHViT's stride-16/32/64 channels
OUT_CH = 8
SIZES = [(128, 192), (97, 130), (200, 333), (65, 64)]


def _inputs(h, w, channels=IN_CH, batch=1):
    """Backbone-like features of an h x w image: strides 16, 32, 64 (ceil division, as SHViT)."""
    torch.manual_seed(0)
    return tuple(torch.randn(batch, c, math.ceil(h / s), math.ceil(w / s))
                 for c, s in zip(channels, (16, 32, 64)))


def _seg_neck(**kwargs):
    from shvit_mm.segmentation.necks import SHViTSegFPN
    args = dict(in_channels=IN_CH, out_channels=OUT_CH, num_outs=5, num_extra_trans_convs=2)
    args.update(kwargs)
    return SHViTSegFPN(**args)


def test_registered_for_mmseg_configs_and_shared_with_detection():
    from mmseg.models.necks import FPN as SegFPN
    from mmseg.registry import MODELS as SEG_MODELS
    from shvit_mm.segmentation.necks import SHViTSegFPN
    assert SEG_MODELS.get('SHViTFPN') is SHViTSegFPN
    assert issubclass(SHViTSegFPN, SegFPN) and issubclass(SHViTSegFPN, TransposedFPNMixin)
    # the transposed levels are the mixin's code, not a copy
    assert SHViTSegFPN.forward is TransposedFPNMixin.forward
    assert SHViTSegFPN.__init__ is TransposedFPNMixin.__init__
    neck = SEG_MODELS.build(dict(type='SHViTFPN', in_channels=IN_CH, out_channels=OUT_CH,
                                 num_outs=5, num_extra_trans_convs=2))
    assert type(neck) is SHViTSegFPN


def test_same_function_as_the_detection_neck():
    """Same weights -> same outputs as the detection neck (only the FPN underneath differs)."""
    pytest.importorskip('mmdet')
    from shvit_mm.detection.necks import SHViTDetFPN
    seg = _seg_neck().eval()
    det = SHViTDetFPN(IN_CH, OUT_CH, 5, num_extra_trans_convs=2).eval()
    assert sorted(seg.state_dict()) == sorted(det.state_dict())
    det.load_state_dict(seg.state_dict())
    feats = _inputs(97, 130)
    with torch.no_grad():
        for a, b in zip(seg(feats), det(feats)):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize('size', SIZES)
def test_output_strides_and_sizes(size):
    """Strides 4, 8, 16, 32, 64; the transposed levels are 2x and 4x the stride-16 level (the map of
    the image padded to a multiple of 16), the others ceil(side / stride)."""
    h, w = size
    outs = _seg_neck()(_inputs(h, w))
    h16, w16 = math.ceil(h / 16), math.ceil(w / 16)
    expected = [(4 * h16, 4 * w16), (2 * h16, 2 * w16)] + [
        (math.ceil(h / s), math.ceil(w / s)) for s in (16, 32, 64)]
    assert [tuple(o.shape) for o in outs] == [(1, OUT_CH) + e for e in expected]
    for o, s in zip(outs, (4, 8, 16, 32, 64)):  # never smaller than ceil(side / stride) ...
        dh, dw = o.shape[-2] - math.ceil(h / s), o.shape[-1] - math.ceil(w / s)
        assert 0 <= dh < max(1, 16 // s) and 0 <= dw < max(1, 16 // s)
        if h % 32 == 0 and w % 32 == 0:  # ... and exact on the configs' padded test inputs
            assert (dh, dw) == (0, 0)


def _head(kind):
    from mmseg.registry import MODELS
    common = dict(in_channels=[OUT_CH] * 4, in_index=[0, 1, 2, 3], channels=16, num_classes=5,
                  norm_cfg=dict(type='BN'), align_corners=False)
    if kind == 'FPNHead':
        return MODELS.build(dict(type='FPNHead', feature_strides=[4, 8, 16, 32], **common))
    return MODELS.build(dict(type='UPerHead', pool_scales=(1, 2, 3, 6), **common))


@pytest.mark.parametrize('kind', ['FPNHead', 'UPerHead'])
@pytest.mark.parametrize('size', [(97, 130), (65, 64)])
def test_heads_take_the_levels_of_odd_inputs(kind, size):
    """The heads read strides 4/8/16/32 and give logits of the stride-4 map's size, which
    MMSegmentation then resizes to the (padded) input."""
    h, w = size
    neck, head = _seg_neck().eval(), _head(kind).eval()
    with torch.no_grad():
        feats = neck(_inputs(h, w, batch=2))
        logits = head(feats)
    assert logits.shape == (2, 5) + tuple(feats[0].shape[-2:])
    assert torch.isfinite(logits).all()


def test_gradients_reach_every_used_level():
    neck, head = _seg_neck().train(), _head('FPNHead').train()
    feats = [f.requires_grad_() for f in _inputs(97, 130, batch=2)]
    head(neck(feats)).sum().backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in feats)
    for name, p in neck.named_parameters():
        if name.startswith('fpn_convs.2.'):  # the stride-64 output, which the head does not read
            assert p.grad is None
        else:
            assert p.grad is not None, name


def test_mmsegmentation_end_level_is_exclusive():
    """MMSegmentation's FPN reads end_level as one past the last input used (MMDetection's as the
    last one): end_level=2 uses inputs 0 and 1, so 2 transposed + 2 FPN levels."""
    neck = _seg_neck(num_outs=4, end_level=2)
    assert len(neck.lateral_convs) == 2
    outs = neck(_inputs(128, 192))
    assert [o.shape[-1] for o in outs] == [48, 24, 12, 6]
    full = _seg_neck(num_outs=5, end_level=3)  # all three inputs, given explicitly
    assert len(full.lateral_convs) == 3
    with pytest.raises(ValueError, match=r'end_level=3 must be -1 or in \[1, 2\]'):
        _seg_neck(num_outs=5, end_level=3, start_level=0, in_channels=IN_CH[:2])
    with pytest.raises(ValueError, match='num_outs must be exactly 4'):
        _seg_neck(num_outs=5, end_level=2)


def test_clear_errors():
    with pytest.raises(ValueError, match='num_outs=3 is too small'):
        _seg_neck(num_outs=3)
    with pytest.raises(TypeError, match='in_channels must be a non-empty list'):
        _seg_neck(in_channels=224)
    with pytest.raises(ValueError, match='num_extra_trans_convs must be an int >= 0'):
        _seg_neck(num_extra_trans_convs=-1)
    with pytest.raises(ValueError, match='expects 3 input levels'):
        _seg_neck()(_inputs(64, 64)[:2])
