"""Correctness (not speed) of the fast-inference paths: BN folding, channels-last, TorchScript,
torch.compile, bfloat16 and ONNX export run by ONNX Runtime."""
import copy
import warnings

import pytest
import torch

from conftest import randomize_norm_stats_
from shvit_mm.inference import (InferenceModel, OnnxRuntimeModel, compare_outputs, export_onnx,
                                fuse_for_deploy, optimize_for_inference, resolve_dtype)
from shvit_mm.models import SHViT


def _model(arch='s1', seed=0):
    """SHViT with trained-looking BN statistics (see ``randomize_norm_stats_``)."""
    torch.manual_seed(seed)
    return randomize_norm_stats_(SHViT(arch=arch), seed=seed).eval()


def _input(b=2, h=128, w=128, seed=1):
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope='module')
def s1_and_ref():
    model = _model('s1')
    x = _input()
    with torch.no_grad():
        ref = model(x)
    return model, x, ref


def test_randomized_stats_make_every_branch_count(s1_and_ref):
    # Guard for the other tests: with the default zero-initialised BN scales the residual
    # branches would output zeros and a broken fusion of them could go unnoticed.
    model, x, ref = s1_and_ref
    ffn_pw2 = model.blocks1[0].ffn.m.pw2
    assert ffn_pw2.bn.weight.abs().min() > 0.1
    plain = SHViT(arch='s1').eval()
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        ffn_pw2.bn.weight.zero_()
        changed = model(x)
        ffn_pw2.bn.weight.copy_(plain.blocks1[0].ffn.m.pw2.bn.weight)
    assert compare_outputs(ref, changed)['max_rel'] > 1e-3


def test_deploy_fusion_matches_eager(s1_and_ref):
    model, x, ref = s1_and_ref
    fused = copy.deepcopy(model)
    n = fuse_for_deploy(fused)
    assert n == 1 and fused.fused
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    with torch.no_grad():
        out = fused(x)
    cmp = compare_outputs(ref, out)
    assert cmp['max_rel'] < 1e-5, cmp


def test_deploy_fusion_matches_for_s4_at_odd_size():
    model = _model('s4', seed=3)
    x = _input(1, 96, 160)
    with torch.no_grad():
        ref = model(x)
    fused = copy.deepcopy(model)
    fuse_for_deploy(fused)
    with torch.no_grad():
        out = fused(x)
    assert [o.shape for o in out] == [r.shape for r in ref]
    assert compare_outputs(ref, out)['max_rel'] < 1e-5


def test_channels_last_matches_eager(s1_and_ref):
    model, x, ref = s1_and_ref
    fast = optimize_for_inference(model, copy=True, channels_last=True)
    assert isinstance(fast, InferenceModel)
    assert fast.source.patch_embed[0].weight.is_contiguous(memory_format=torch.channels_last)
    out = fast(x)
    # Outputs come back as plain contiguous fp32, a drop-in for the eager backbone.
    assert all(o.dtype == torch.float32 and o.is_contiguous() for o in out)
    cmp = compare_outputs(ref, out)
    assert cmp['max_rel'] < 1e-5, cmp
    # The original model is untouched with copy=True.
    assert not model.fused


def test_jit_path_matches_eager(s1_and_ref):
    model, x, ref = s1_and_ref
    fast = optimize_for_inference(model, x, copy=True, backend='jit')
    assert isinstance(fast.module, torch.jit.ScriptModule)
    cmp = compare_outputs(ref, fast(x))
    assert cmp['max_rel'] < 1e-4, cmp


# A small custom variant keeps Inductor's compile time (minutes for a full S1 on a busy 2-core
# machine) to seconds; the graph has every SHViT block type.
TINY = dict(embed_dims=[16, 32, 48], depths=[1, 1, 1], partial_dims=[8, 8, 16], qk_dims=[4, 4, 4],
            block_types=['i', 's', 's'])


def test_compile_path_matches_eager():
    model = _model(TINY)
    x = _input(1, 64, 64)
    with torch.no_grad():
        ref = model(x)
    fast = optimize_for_inference(model, x, copy=True, backend='compile')
    from torch.profiler import profile
    with profile() as prof:
        out = fast(x)
    cmp = compare_outputs(ref, out)
    assert cmp['max_rel'] < 1e-4, cmp
    if torch.backends.mkldnn.is_available():
        # Inductor's freezing really ran: convolutions became oneDNN kernels fused with the
        # ReLU/add after them (without freezing they stay aten::convolution calls).
        names = {e.name for e in prof.events()}
        assert 'mkldnn::_convolution_pointwise' in names, sorted(n for n in names if 'conv' in n)
        assert 'aten::convolution' not in names


def test_bf16_cosine_against_fp32(s1_and_ref):
    model, x, ref = s1_and_ref
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # "emulated" warning on CPUs without bf16 instructions
        fast = optimize_for_inference(model, copy=True, dtype='bf16', channels_last=True)
    assert fast.source.patch_embed[0].weight.dtype == torch.bfloat16
    out = fast(x)
    assert all(o.dtype == torch.float32 for o in out)  # output_dtype default
    cmp = compare_outputs(ref, out)
    assert cmp['cosine'] >= 0.999, cmp
    # bf16 is really in use: the result is not bit-identical to fp32.
    assert cmp['max_abs'] > 0
    raw = optimize_for_inference(model, copy=True, dtype='bf16', output_dtype=None)(x)
    assert raw[0].dtype == torch.bfloat16


def test_bad_arguments_are_named():
    model = _model('s1')
    with pytest.raises(ValueError, match='example_input'):
        optimize_for_inference(model, backend='jit', copy=True)
    with pytest.raises(ValueError, match='backend'):
        optimize_for_inference(model, backend='tensorrt', copy=True)
    with pytest.raises(ValueError, match='dtype'):
        resolve_dtype('int3')
    fast = optimize_for_inference(model, copy=True)
    with pytest.raises(RuntimeError, match='inference only'):
        fast.train()


def test_compare_outputs_detects_differences():
    a = (torch.ones(2, 3), torch.arange(6.).view(2, 3))
    assert compare_outputs(a, a) == dict(cosine=1.0, max_abs=0.0, max_rel=0.0)
    b = (torch.ones(2, 3), -torch.arange(6.).view(2, 3))
    assert compare_outputs(a, b)['cosine'] < -0.99
    with pytest.raises(ValueError, match='shapes'):
        compare_outputs(a, (torch.ones(2, 3), torch.ones(3, 2)))


def test_onnx_export_matches_pytorch(tmp_path, s1_and_ref):
    model, x, ref = s1_and_ref
    fused = copy.deepcopy(model)
    info = export_onnx(fused, str(tmp_path / 's1.onnx'), x[:1], dynamic=True)
    assert info['outputs'] == ['out0', 'out1', 'out2']
    ort_model = OnnxRuntimeModel(info['path'], threads=1)
    # Same batch and size as PyTorch's reference...
    cmp = compare_outputs(ref, ort_model(x))
    assert cmp['max_rel'] < 1e-4, cmp
    # ... and another batch and input size: the graph's axes are dynamic.
    x2 = _input(3, 96, 160, seed=5)
    with torch.no_grad():
        ref2 = model(x2)
    cmp2 = compare_outputs(ref2, ort_model(x2))
    assert cmp2['max_rel'] < 1e-4, cmp2


def test_onnxruntime_backend_of_optimize_for_inference(tmp_path, s1_and_ref):
    model, x, ref = s1_and_ref
    path = tmp_path / 'backbone.onnx'
    fast = optimize_for_inference(model, x, copy=True, backend='onnxruntime', onnx_path=str(path),
                                  threads=1)
    assert path.is_file() and isinstance(fast.module, OnnxRuntimeModel)
    out = fast(x)
    assert all(o.dtype == torch.float32 for o in out)
    cmp = compare_outputs(ref, out)
    assert cmp['max_rel'] < 1e-4, cmp
    with pytest.raises(ValueError, match='fp32'):
        optimize_for_inference(model, x, copy=True, backend='onnxruntime', dtype='bf16')
