"""SHViT backbone: shapes, options, parameter counts, FLOPs, deploy mode, registries."""
import math

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

import shvit_mm  # noqa: F401  (registers the components)
from shvit_mm.models import SHViT

ARCHS = ['s1', 's2', 's3', 's4']

# Backbone-only and with-head parameter counts in millions (4 decimals) of the official release's
# S1-S4 classification checkpoints.
PARAMS_BACKBONE = {'s1': 6.0092, 's2': 11.0332, 's3': 13.7954, 's4': 16.1386}
PARAMS_WITH_HEAD = {'s1': 6.3308, 's2': 11.4831, 's3': 14.2453, 's4': 16.5885}
# Paper FLOPs (fvcore) with the head, and the resolution they were measured at.
PAPER_FLOPS = {'s1': (241e6, 224), 's2': (366e6, 224), 's3': (601e6, 224), 's4': (986e6, 256)}


def _expected_hw(h, w, stride):
    # each stride-2 3x3 conv with padding 1 maps n -> ceil(n / 2)
    return math.ceil(h / stride), math.ceil(w / stride)


@pytest.mark.parametrize('arch', ARCHS)
@pytest.mark.parametrize('size', [(224, 224), (97, 130), (64, 64), (200, 333)])
def test_output_shapes(arch, size):
    model = SHViT(arch=arch).eval()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        outs = model(x)
    assert len(outs) == 3
    for out, c, s in zip(outs, SHViT.arch_zoo[arch]['embed_dims'], (16, 32, 64)):
        assert out.shape == (1, c, *_expected_hw(*size, s))
    assert model.out_channels == SHViT.arch_zoo[arch]['embed_dims']


def test_batch_and_training_forward():
    model = SHViT(arch='s1', drop_path_rate=0.1).train()
    outs = model(torch.randn(2, 3, 128, 96))
    loss = sum(o.mean() for o in outs)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize('out_indices,expected', [((0, 1, 2), [0, 1, 2]), ((2,), [2]), ((-1,), [2]),
                                                  ((0, 2), [0, 2]), (1, [1])])
def test_out_indices(out_indices, expected):
    model = SHViT(arch='s1', out_indices=out_indices).eval()
    outs = model(torch.randn(1, 3, 128, 128))
    dims = SHViT.arch_zoo['s1']['embed_dims']
    assert [o.shape[1] for o in outs] == [dims[i] for i in expected]
    assert model.out_channels == [dims[i] for i in expected]


@pytest.mark.parametrize('out_indices,expected', [((2, 1), [1, 2]), ((0, 0), [0]),
                                                  ((-1, 0), [0, 2]), ((1, -2, 0), [0, 1])])
def test_out_indices_out_of_order_or_repeated_as_mmpretrain(out_indices, expected):
    """As MMPretrain's backbones: stage order, each stage once; out_channels describes that."""
    model = SHViT(arch='s1', out_indices=out_indices).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 128, 128))
    assert model.out_indices == expected
    assert [o.shape[1] for o in outs] == model.out_channels
    assert model.out_channels == [SHViT.arch_zoo['s1']['embed_dims'][i] for i in expected]


@pytest.mark.parametrize('size', [(64, 64), (33, 64), (16, 16)])
def test_training_on_a_one_pixel_stride_64_map_says_why(size):
    model = SHViT(arch='s1').train()
    with pytest.raises(ValueError, match=r'stride-64 map .* 1x1.*BatchNorm.*batch of 2 or more.*'
                                         r'norm_eval=True'):
        model(torch.randn(1, 3, *size))


@pytest.mark.parametrize('case', ['batch 2', '1x2 map', 'eval', 'norm_eval', 'all frozen'])
def test_training_at_batch_1_where_batchnorm_does_not_fail(case):
    """The check refuses only inputs on which a training BatchNorm would fail."""
    kwargs = dict(norm_eval=case == 'norm_eval', frozen_stages=3 if case == 'all frozen' else -1)
    model = SHViT(arch='s1', **kwargs).train(case != 'eval')
    shape = {'batch 2': (2, 3, 64, 64), '1x2 map': (1, 3, 64, 65)}.get(case, (1, 3, 64, 64))
    outs = model(torch.randn(shape))
    assert [o.shape[1] for o in outs] == model.out_channels


def test_bad_arguments():
    with pytest.raises(IndexError, match='out_indices'):
        SHViT(arch='s1', out_indices=(3,))
    with pytest.raises(KeyError, match='Unknown SHViT arch'):
        SHViT(arch='s5')
    with pytest.raises(KeyError, match='misses'):
        SHViT(arch=dict(embed_dims=[64, 64, 64]))
    with pytest.raises(ValueError, match='frozen_stages'):
        SHViT(arch='s1', frozen_stages=4)
    for rate in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r'drop_path_rate .* \[0, 1\)'):
            SHViT(arch='s1', drop_path_rate=rate)


def test_custom_arch_dict():
    arch = dict(embed_dims=[64, 96, 128], depths=[1, 1, 1], partial_dims=[16, 24, 32],
                qk_dims=[16, 16, 16], block_types=['i', 's', 's'])
    model = SHViT(arch=arch).eval()
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [64, 96, 128]
    assert SHViT(arch='SHViT_S2').arch_name == 's2'


def test_input_errors():
    model = SHViT(arch='s1').eval()
    with pytest.raises(ValueError, match='3 input channels but got 1'):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match=r'\(N, C, H, W\)'):
        model(torch.randn(3, 64, 64))
    gray = SHViT(arch='s1', in_channels=1).eval()
    assert gray(torch.randn(1, 1, 64, 64))[0].shape[1] == 128


@pytest.mark.parametrize('frozen_stages', [-1, 0, 1, 2, 3])
def test_frozen_stages(frozen_stages):
    model = SHViT(arch='s1', frozen_stages=frozen_stages)
    model.train()
    frozen = ([model.patch_embed] + model.stages[:frozen_stages]) if frozen_stages >= 0 else []
    trainable = [model.patch_embed] + model.stages if frozen_stages < 0 else \
        model.stages[frozen_stages:]
    for m in frozen:
        assert not m.training
        assert all(not p.requires_grad for p in m.parameters())
    for m in trainable:
        assert m.training
        assert all(p.requires_grad for p in m.parameters())
    if frozen_stages == SHViT.num_stages:
        assert not any(p.requires_grad for p in model.parameters())
        return
    # frozen weights do not change after a training step
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    sum(o.mean() for o in model(torch.randn(2, 3, 64, 64))).backward()
    opt.step()
    after = model.state_dict()
    prefixes = ['patch_embed.'] + [f'blocks{i + 1}.' for i in range(max(frozen_stages, 0))]
    if frozen_stages >= 0:
        for k, v in before.items():
            if any(k.startswith(p) for p in prefixes):
                assert torch.equal(v, after[k]), k
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith('blocks3.'))


def test_norm_eval():
    model = SHViT(arch='s1', norm_eval=True)
    model.train()
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert bns and all(not m.training for m in bns)
    assert all(m.weight.requires_grad for m in bns)
    stats = {k: v.clone() for k, v in model.state_dict().items() if 'running' in k}
    model(torch.randn(2, 3, 64, 64))
    for k, v in stats.items():
        assert torch.equal(v, model.state_dict()[k]), k
    # and without norm_eval the statistics do move
    plain = SHViT(arch='s1').train()
    plain(torch.randn(2, 3, 64, 64))
    assert not torch.equal(plain.patch_embed[0].bn.running_mean, torch.zeros(16))


def test_stochastic_depth():
    model = SHViT(arch='s1', drop_path_rate=0.5)
    rates = [m.drop_path for m in model.modules() if hasattr(m, 'drop_path')]
    assert max(rates) == pytest.approx(0.5) and min(rates) == 0.0
    from conftest import make_official_state_dict
    model.load_state_dict(make_official_state_dict('s1', with_head=False))  # non-zero branches
    x = torch.randn(2, 3, 128, 128)
    model.train()
    torch.manual_seed(0)
    a = model(x)[-1]
    torch.manual_seed(1)
    b = model(x)[-1]
    assert not torch.allclose(a, b)
    model.eval()
    assert torch.equal(model(x)[-1], model(x)[-1])


@pytest.mark.parametrize('arch', ARCHS)
def test_parameter_counts(arch):
    model = SHViT(arch=arch)
    n = sum(p.numel() for p in model.parameters())
    assert round(n / 1e6, 4) == PARAMS_BACKBONE[arch]


def _classifier(arch):
    import mmpretrain.models  # noqa: F401  (registers ImageClassifier and friends)
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    dim = SHViT.arch_zoo[arch]['embed_dims'][-1]
    with DefaultScope.overwrite_default_scope('mmpretrain'):  # other tests leave 'mmdet' current
        return MODELS.build(dict(
            type='ImageClassifier',
            backbone=dict(type='SHViT', arch=arch, out_indices=(2,)),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='SHViTClsHead', num_classes=1000, in_channels=dim)))


@pytest.mark.parametrize('arch', ARCHS)
def test_parameter_counts_with_head(arch):
    model = _classifier(arch)
    n = sum(p.numel() for p in model.parameters())
    assert round(n / 1e6, 4) == PARAMS_WITH_HEAD[arch]


@pytest.mark.parametrize('arch', ARCHS)
def test_flops_match_paper(arch):
    """MMEngine's counter (fvcore's method) on backbone + pooling + head, at the paper's resolution."""
    from mmengine.analysis import get_model_complexity_info
    model = _classifier(arch).eval()
    flops, res = PAPER_FLOPS[arch]
    info = get_model_complexity_info(model, input_shape=(3, res, res), show_table=False,
                                     show_arch=False)
    assert abs(info['flops'] - flops) / flops < 0.015, (arch, info['flops'])


def test_classifier_uses_official_head_names():
    model = _classifier('s1')
    keys = model.state_dict().keys()
    assert {'head.bn.weight', 'head.l.weight', 'head.l.bias'} <= set(keys)
    model.eval()
    assert model(torch.randn(2, 3, 64, 64), mode='tensor').shape == (2, 1000)


@pytest.mark.parametrize('arch', ARCHS)
def test_deploy_equals_eager(arch):
    from conftest import make_official_state_dict
    model = SHViT(arch=arch).eval()
    model.load_state_dict(make_official_state_dict(arch, with_head=False))
    x = torch.randn(2, 3, 160, 224)
    with torch.no_grad():
        ref = model(x)
        model.switch_to_deploy()
        fused = model(x)
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())
    for r, f in zip(ref, fused):
        assert ((r - f).abs().max() / r.abs().max()).item() < 1e-5


def _rel_err(ref, out):
    return max(((r - o).abs().max() / r.abs().max()).item() for r, o in zip(ref, out))


def test_deploy_flag_builds_the_fused_structure_at_construction():
    model = SHViT(arch='s1', deploy=True)
    assert model.fused  # at construction, not at some later forward
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())
    keys = set(model.state_dict())
    assert not any('.bn.' in k or '.c.weight' in k for k in keys)
    model.train()
    model(torch.randn(1, 3, 64, 64))  # training mode does not change the structure either
    assert set(model.state_dict()) == keys


def test_deploy_model_loads_unfused_and_fused_weights(tmp_path):
    from conftest import make_official_state_dict
    from shvit_mm.models.backbones import load_backbone_checkpoint
    sd = make_official_state_dict('s1', with_head=False)
    eager = SHViT(arch='s1').eval()
    eager.load_state_dict(sd)
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        ref = eager(x)

    # 1. a trained (unfused) state dict loaded into a deploy model is fused on the way in
    deploy = SHViT(arch='s1', deploy=True).eval()
    result = deploy.load_state_dict(sd)
    assert not result.missing_keys and not result.unexpected_keys
    with torch.no_grad():
        assert _rel_err(ref, deploy(x)) < 1e-5

    # 2. the same inside a detector-style checkpoint (prefix ``backbone.``), as MMEngine loads it
    wrapper = torch.nn.Module()
    wrapper.backbone = SHViT(arch='s1', deploy=True).eval()
    wrapper.load_state_dict({f'backbone.{k}': v for k, v in sd.items()})
    with torch.no_grad():
        assert _rel_err(ref, wrapper.backbone(x)) < 1e-5

    # 3. the release file through init_cfg / load_backbone_checkpoint
    path = tmp_path / 'shvit_s1.pth'
    torch.save({'model': make_official_state_dict('s1')}, path)
    deploy = SHViT(arch='s1', deploy=True).eval()
    load_backbone_checkpoint(deploy, str(path))
    with torch.no_grad():
        assert _rel_err(ref, deploy(x)) < 1e-5

    # 4. a fused state dict (saved from a deploy model) loads as it is
    again = SHViT(arch='s1', deploy=True).eval()
    again.load_state_dict(deploy.state_dict())
    with torch.no_grad():
        assert _rel_err(ref, again(x)) < 1e-5

    # 5. an incomplete unfused state dict is not silently half-fused: PyTorch reports the keys
    partial = {k: v for k, v in sd.items() if not k.startswith('blocks3.')}
    with pytest.raises(RuntimeError, match='Missing key'):
        SHViT(arch='s1', deploy=True).load_state_dict(partial)


def test_eager_model_is_never_fused_behind_the_users_back():
    model = SHViT(arch='s1').eval()
    keys = set(model.state_dict())
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert not model.fused and set(model.state_dict()) == keys
