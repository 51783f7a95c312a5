"""SHViTFPN: output strides and sizes, module names, semantics against a hand-written reference."""
import math

import pytest
import torch
import torch.nn.functional as F

import shvit_mm  # noqa: F401  (registers SHViTDetFPN)
from mmdet.models.necks import FPN
from mmdet.registry import MODELS
from shvit_mm.detection.necks import SHViTDetFPN

IN_CH = [12, 20, 28]  # small stand-ins for SHViT's stride-16/32/64 channels
OUT_CH = 8


def _inputs(h, w, channels=IN_CH, batch=1):
    """Backbone-like features of an image of size h x w: strides 16, 32, 64 (ceil division)."""
    torch.manual_seed(0)
    return tuple(torch.randn(batch, c, math.ceil(h / s), math.ceil(w / s))
                 for c, s in zip(channels, (16, 32, 64)))


def _expected_sizes(h, w, num_trans, num_outs):
    """Documented rule: transposed levels are 2**k times the stride-16 map (the image padded to a
    multiple of 16); FPN levels and the extra coarse levels are ceil(side / stride)."""
    h16, w16 = 16 * math.ceil(h / 16), 16 * math.ceil(w / 16)
    sizes = []
    for k in range(num_trans, 0, -1):
        stride = 16 // 2 ** k
        sizes.append((stride, math.ceil(h16 / stride), math.ceil(w16 / stride)))
    for i in range(num_outs - num_trans):
        stride = 16 * 2 ** i
        sizes.append((stride, math.ceil(h / stride), math.ceil(w / stride)))
    return sizes


@pytest.mark.parametrize('num_trans', [0, 1, 2])
@pytest.mark.parametrize('add_extra_convs,num_coarse', [
    (False, 0), (False, 2), ('on_input', 2), ('on_lateral', 1), ('on_output', 2)])
@pytest.mark.parametrize('size', [(128, 192), (200, 333), (97, 130)])
def test_output_strides_and_sizes(num_trans, add_extra_convs, num_coarse, size):
    num_outs = num_trans + 3 + num_coarse
    neck = SHViTDetFPN(IN_CH, OUT_CH, num_outs, add_extra_convs=add_extra_convs,
                    num_extra_trans_convs=num_trans)
    h, w = size
    outs = neck(_inputs(h, w))
    expected = _expected_sizes(h, w, num_trans, num_outs)
    assert len(outs) == num_outs
    assert [tuple(o.shape) for o in outs] == [(1, OUT_CH, eh, ew) for _, eh, ew in expected]
    if h % 16 == 0 and w % 16 == 0:  # the padded sizes MMDetection feeds: exactly ceil(H / stride)
        assert all(o.shape[-2:] == (math.ceil(h / s), math.ceil(w / s))
                   for o, (s, _, _) in zip(outs, expected))
    else:  # never fewer than ceil(H / stride); extra cells only where the 16-padding lies
        for o, (s, _, _) in zip(outs, expected):
            dh, dw = o.shape[-2] - math.ceil(h / s), o.shape[-1] - math.ceil(w / s)
            assert 0 <= dh < max(1, 16 // s) and 0 <= dw < max(1, 16 // s)
            assert (dh, dw) == (0, 0) or s < 16


def test_official_configs_strides_with_real_backbone():
    """RetinaNet / Mask R-CNN necks on SHViT-S1 features of odd-sized images."""
    from shvit_mm.models import SHViT
    backbone = SHViT(arch='s1').eval()
    retina = SHViTDetFPN(backbone.out_channels, 16, 5, add_extra_convs='on_input',
                      num_extra_trans_convs=1)
    mask_rcnn = SHViTDetFPN(backbone.out_channels, 16, 5, num_extra_trans_convs=2)
    for h, w in [(97, 130), (200, 333)]:
        with torch.no_grad():
            feats = backbone(torch.randn(1, 3, h, w))
            assert [f.shape[-2:] for f in feats] == [
                (math.ceil(h / s), math.ceil(w / s)) for s in (16, 32, 64)]
            for neck, strides in ((retina, [8, 16, 32, 64, 128]), (mask_rcnn, [4, 8, 16, 32, 64])):
                outs = neck(feats)
                got = [tuple(o.shape[-2:]) for o in outs]
                want = [s for s, _, _ in _expected_sizes(h, w, neck.num_extra_trans_convs, 5)]
                assert want == strides
                assert got == [(eh, ew) for _, eh, ew in
                               _expected_sizes(h, w, neck.num_extra_trans_convs, 5)]


def test_zero_extra_trans_convs_is_exactly_fpn():
    for kwargs in (dict(num_outs=3), dict(num_outs=5, add_extra_convs='on_input'),
                   dict(num_outs=4), dict(num_outs=2, start_level=1)):
        torch.manual_seed(1)
        ours = SHViTDetFPN(IN_CH, OUT_CH, **kwargs)
        ref = FPN(IN_CH, OUT_CH, **kwargs)
        assert list(ours.state_dict()) == list(ref.state_dict())
        ref.load_state_dict(ours.state_dict())
        x = _inputs(97, 130)
        for a, b in zip(ours(x), ref(x), strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize('kwargs', [
    dict(num_outs=5), dict(num_outs=7, add_extra_convs='on_input'),
    dict(num_outs=6, add_extra_convs='on_lateral', relu_before_extra_convs=True),
    dict(num_outs=7, add_extra_convs='on_output'), dict(num_outs=6, add_extra_convs=True),
    dict(num_outs=4, start_level=1), dict(num_outs=4, end_level=1),
    dict(num_outs=5, upsample_cfg=dict(scale_factor=2, mode='nearest'))])
def test_fpn_levels_are_fpns_with_transposed_levels(kwargs):
    """With transposed levels the FPN part of the output is still exactly MMDetection's FPN."""
    torch.manual_seed(2)
    ours = SHViTDetFPN(IN_CH, OUT_CH, num_extra_trans_convs=2, **kwargs)
    fpn_kwargs = dict(kwargs, num_outs=kwargs['num_outs'] - 2)
    ref = FPN(IN_CH, OUT_CH, **fpn_kwargs)
    ref.load_state_dict({k: v for k, v in ours.state_dict().items() if not k.startswith('extra_')})
    x = _inputs(128, 192)
    outs, expected = ours(x), ref(x)
    assert len(outs) == kwargs['num_outs']
    for a, b in zip(outs[2:], expected, strict=True):
        assert torch.equal(a, b)


def _reference_forward(neck, inputs):
    """The documented semantics written out by hand (nearest top-down, transposed-conv chain)."""
    lat = [conv(x) for conv, x in zip(neck.lateral_convs, inputs)]
    for i in range(len(lat) - 1, 0, -1):
        lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[-2:], mode='nearest')
    chain, x = [], lat[0]
    for trans in neck.extra_trans_convs:  # .0: stride 16 -> 8, .1: 8 -> 4
        x = trans.conv(x)
        chain.append(x)
    finest_first = chain[::-1]
    outs = [neck.extra_fpn_convs[j].conv(finest_first[j]) for j in range(len(chain))]
    outs += [neck.fpn_convs[i].conv(lat[i]) for i in range(len(lat))]
    if neck.add_extra_convs == 'on_input':
        outs.append(neck.fpn_convs[len(lat)].conv(inputs[-1]))
    return outs


@pytest.mark.parametrize('num_trans,extra', [(1, 'on_input'), (2, False), (3, False)])
def test_matches_reference_and_official_ordering(num_trans, extra):
    num_outs = num_trans + 3 + (1 if extra else 0)
    neck = SHViTDetFPN(IN_CH, OUT_CH, num_outs, add_extra_convs=extra,
                    num_extra_trans_convs=num_trans)
    for p in neck.parameters():  # non-trivial biases too
        torch.nn.init.normal_(p, std=0.1)
    x = _inputs(128, 160)
    outs, ref = neck(x), _reference_forward(neck, x)
    assert len(outs) == len(ref) == num_outs
    for a, b in zip(outs, ref):
        torch.testing.assert_close(a, b)
    # extra_fpn_convs.0 makes the finest output; extra_trans_convs.0 reads the stride-16 lateral.
    with torch.no_grad():
        neck.extra_fpn_convs[0].conv.weight.zero_()
        neck.extra_fpn_convs[0].conv.bias.fill_(7.0)
    finest = neck(x)[0]
    assert finest.shape[-1] == 160 // (16 // 2 ** num_trans) and torch.all(finest == 7.0)
    assert neck.extra_trans_convs[0].conv.in_channels == OUT_CH
    assert isinstance(neck.extra_trans_convs[0].conv, torch.nn.ConvTranspose2d)


def test_official_key_names():
    retina = SHViTDetFPN([224, 336, 448], 256, 5, add_extra_convs='on_input',
                         num_extra_trans_convs=1)
    mask_rcnn = SHViTDetFPN([224, 336, 448], 256, 5, num_extra_trans_convs=2)

    def keys(lat, fpn, trans):
        names = [f'lateral_convs.{i}' for i in range(lat)] + [f'fpn_convs.{i}' for i in range(fpn)]
        names += [f'extra_trans_convs.{i}' for i in range(trans)]
        names += [f'extra_fpn_convs.{i}' for i in range(trans)]
        return {f'{n}.conv.{p}' for n in names for p in ('weight', 'bias')}

    assert set(retina.state_dict()) == keys(3, 4, 1)
    assert set(mask_rcnn.state_dict()) == keys(3, 3, 2)
    assert retina.state_dict()['fpn_convs.3.conv.weight'].shape == (256, 448, 3, 3)
    assert mask_rcnn.state_dict()['extra_trans_convs.1.conv.weight'].shape == (256, 256, 2, 2)
    assert retina.num_total_outs == 5 and retina.num_fpn_outs == 4


def test_registry_init_and_backward():
    neck = MODELS.build(dict(type='SHViTFPN', in_channels=IN_CH, out_channels=OUT_CH, num_outs=5,
                             num_extra_trans_convs=2,
                             init_cfg=dict(type='Xavier', layer='Conv2d', distribution='uniform')))
    assert isinstance(neck, SHViTDetFPN)
    neck.init_weights()
    x = [t.requires_grad_() for t in _inputs(64, 96, batch=2)]
    sum(o.square().mean() for o in neck(x)).backward()
    for name, p in neck.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(t.grad is not None for t in x)


@pytest.mark.parametrize('kwargs,match', [
    (dict(num_outs=4, num_extra_trans_convs=2), r'num_outs=4 is too small.*>= 5'),
    (dict(num_outs=5, num_extra_trans_convs=-1), r'num_extra_trans_convs must be an int >= 0'),
    (dict(num_outs=5, num_extra_trans_convs=1.5), r'num_extra_trans_convs must be an int >= 0'),
    (dict(num_outs=5, add_extra_convs='on_top'), r"add_extra_convs must be a bool or one of"),
    (dict(num_outs=5, start_level=3), r'start_level=3 must index one of the 3 input levels'),
    (dict(num_outs=5, end_level=1, num_extra_trans_convs=1), r'num_outs must be exactly 3'),
    (dict(num_outs=5, end_level=7), r'end_level=7 must be -1 or an input level index'),
])
def test_argument_errors(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        SHViTDetFPN(IN_CH, OUT_CH, **kwargs)


def test_bad_channels_and_inputs():
    with pytest.raises(TypeError, match='in_channels must be a non-empty list'):
        SHViTDetFPN(256, OUT_CH, 5)
    with pytest.raises(ValueError, match='out_channels must be a positive int'):
        SHViTDetFPN(IN_CH, 0, 5)
    neck = SHViTDetFPN(IN_CH, OUT_CH, 5, num_extra_trans_convs=2)
    with pytest.raises(ValueError, match='expects 3 input levels'):
        neck(_inputs(64, 64)[:2])
