"""The backbones the latency benchmark times, and the ways each can run: an entry ``ARCH:MODE``
(e.g. ``shvit_s4:deploy``) is one of :data:`ARCHS` (this package's SHViT and the SHViT paper's
Table 5 peers that this software stack carries) run in one of :data:`MODES`; :func:`describe`
lists them and the :data:`PRESETS`."""
from __future__ import annotations

import copy
import importlib
import importlib.util
from collections import namedtuple
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from shvit_mm.inference import optimize_for_inference
from shvit_mm.utils.cpu import cpu_bf16_support

ArchInfo = namedtuple('ArchInfo', 'label source builder requires')
ModeInfo = namedtuple('ModeInfo', 'label description fuse channels_last backend dtype',
                      defaults=(True, False, 'eager', None))


def _shvit(arch: str) -> ArchInfo:
    @torch.no_grad()
    def build(size: Tuple[int, int]) -> nn.Module:
        from shvit_mm.models import SHViT
        model = SHViT(arch=arch, out_indices=(0, 1, 2))
        # A new SHViT zero-initialises the last BatchNorm of each residual branch; trained-looking
        # statistics let the precision check see every branch (the speed is the same).
        gen = torch.Generator().manual_seed(int(arch[-1]))
        for bn in (m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)):
            for t, low, span in ((bn.running_mean, -.1, .2), (bn.running_var, .5, 1.5),
                                 (bn.weight, .3, .4), (bn.bias, -.1, .2)):
                t.copy_(torch.rand(t.shape, generator=gen) * span + low)
        return model
    return ArchInfo(f'SHViT-S{arch[-1]}', 'shvit_mm', build, ())


def _mmpretrain(label: str, name: str, arch: str) -> ArchInfo:
    return ArchInfo(label, 'MMPretrain', lambda size: getattr(
        importlib.import_module('mmpretrain.models.backbones'), name)(arch=arch), ('mmpretrain', ))


def _resnet50(size: Tuple[int, int]) -> nn.Module:
    from mmdet.models.backbones import ResNet
    return ResNet(depth=50, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=1,
                  norm_cfg=dict(type='BN', requires_grad=True), norm_eval=True, style='pytorch')


@torch.no_grad()
def _efficientformer_l1(size: Tuple[int, int]) -> nn.Module:
    """EfficientFormer-L1 with its attention re-built for a (size/32)^2 token grid (the bias table
    is tied to 224x224 inputs), projections kept: the model's cost at this size."""
    from mmpretrain.models.backbones import EfficientFormer
    from mmpretrain.models.backbones.efficientformer import AttentionWithBias
    (h, w), model = size, EfficientFormer(arch='l1')
    if h != w or h % 32:
        raise ValueError(f'EfficientFormer needs a square input divisible by 32, got {h}x{w}')
    for parent in list(model.modules()):
        for name, old in list(parent.named_children()):
            if isinstance(old, AttentionWithBias):
                new = AttentionWithBias(old.qkv.in_features, num_heads=old.num_heads,
                                        key_dim=old.key_dim, attn_ratio=old.attn_ratio,
                                        resolution=h // 32)
                new.qkv.load_state_dict(old.qkv.state_dict())
                new.proj.load_state_dict(old.proj.state_dict())
                setattr(parent, name, new)
    return model


def _timm_shvit_s4(size: Tuple[int, int]) -> nn.Module:
    import timm
    model = timm.create_model('shvit_s4', pretrained=False, num_classes=0)
    model.forward = model.forward_features  # the backbone part
    return model


ARCHS: Dict[str, ArchInfo] = {
    **{f'shvit_s{i}': _shvit(f's{i}') for i in range(1, 5)},
    'resnet50': ArchInfo('ResNet-50', 'MMDetection', _resnet50, ('mmdet', )),
    'efficientnet_b0': _mmpretrain('EfficientNet-B0', 'EfficientNet', 'b0'),
    'mobilenet_v3_large': _mmpretrain('MobileNetV3-L', 'MobileNetV3', 'large'),
    'efficientformer_l1': ArchInfo('EfficientFormer-L1', 'MMPretrain', _efficientformer_l1,
                                   ('mmpretrain', )),
    'poolformer_s12': _mmpretrain('PoolFormer-S12', 'PoolFormer', 's12'),
    'timm_shvit_s4': ArchInfo('timm shvit_s4', 'timm', _timm_shvit_s4, ('timm', )),
}
MODES: Dict[str, ModeInfo] = {
    'eager': ModeInfo('eager', 'as built: fp32, NCHW, BN not folded', fuse=False),
    'deploy': ModeInfo('deploy', 'BN folded (switch_to_deploy), fp32 NCHW eager'),
    'cl': ModeInfo('deploy+CL', 'deploy + channels-last, eager', channels_last=True),
    'compile': ModeInfo('deploy+CL+compile', 'deploy + channels-last + torch.compile (freezing), '
                        'fp32', channels_last=True, backend='compile'),
    'jit': ModeInfo('deploy+CL+jit', 'deploy + channels-last + TorchScript trace/freeze, fp32',
                    channels_last=True, backend='jit'),
    'bf16': ModeInfo('deploy+CL+compile bf16', 'as compile, bfloat16 weights and activations',
                     channels_last=True, backend='compile', dtype='bf16'),
    'bf16-eager': ModeInfo('deploy+CL bf16', 'deploy + channels-last, bfloat16, eager',
                           channels_last=True, dtype='bf16'),
    'onnx': ModeInfo('deploy, ONNX Runtime', 'deploy, exported to ONNX, run by ONNX Runtime (CPU)',
                     backend='onnxruntime'),
}
#: Named sets of entries for ``--models``.
PRESETS: Dict[str, List[str]] = {
    'paper': [f'shvit_s{i}:{m}' for i in range(1, 5) for m in ('eager', 'deploy')]
    + ['shvit_s4:cl', 'shvit_s4:compile', 'shvit_s4:bf16', 'shvit_s4:onnx', 'resnet50:eager',
       'resnet50:compile', 'efficientnet_b0:eager', 'mobilenet_v3_large:eager',
       'efficientformer_l1:eager', 'poolformer_s12:eager', 'timm_shvit_s4:eager'],
    'plot': ['shvit_s4:deploy', 'shvit_s4:compile', 'resnet50:eager', 'efficientnet_b0:eager',
             'mobilenet_v3_large:eager', 'efficientformer_l1:eager', 'poolformer_s12:eager'],
    'shvit': [f'shvit_s{i}:{m}' for i in range(1, 5)
              for m in ('eager', 'deploy', 'compile', 'bf16')],
    'peers': ['resnet50:eager', 'efficientnet_b0:eager', 'mobilenet_v3_large:eager',
              'efficientformer_l1:eager', 'poolformer_s12:eager', 'timm_shvit_s4:eager'],
}


class BenchEntry(NamedTuple):
    """One row of the latency table: an architecture run in a mode."""
    arch: str
    mode: str
    key = property(lambda e: f'{e.arch}:{e.mode}')
    label = property(lambda e: f'{ARCHS[e.arch].label} ({MODES[e.mode].label})')
    mode_info = property(lambda e: MODES[e.mode])
    compute_dtype = property(lambda e: MODES[e.mode].dtype or 'fp32')


def parse_entries(items: Sequence[str]) -> List[BenchEntry]:
    """Expand preset names and ``ARCH[:MODE]`` items (MODE defaults to ``eager``; commas or
    spaces separate), keeping the first occurrence of each."""
    out: Dict[str, BenchEntry] = {}
    for part in ' '.join(map(str, items)).replace(',', ' ').split():
        arch, _, mode = part.partition(':')
        if part in PRESETS:
            entries = parse_entries(PRESETS[part])
        elif arch not in ARCHS:
            raise KeyError(f'Unknown backbone {arch!r}; known: {", ".join(ARCHS)} '
                           f'(or a preset: {", ".join(PRESETS)})')
        elif (mode or 'eager') not in MODES:
            raise KeyError(f'Unknown mode {mode!r} in {part!r}; known: {", ".join(MODES)}')
        else:
            entries = [BenchEntry(arch, mode or 'eager')]
        for e in entries:
            out.setdefault(e.key, e)
    return list(out.values())


def describe() -> str:
    """The backbones, modes and presets, one a line (``benchmark_backbone.py --list``)."""
    return '\n'.join(['backbones:'] + [f'  {k:20s} {a.label} ({a.source})'
                                       for k, a in ARCHS.items()]
                     + ['modes:'] + [f'  {k:12s} {m.description}' for k, m in MODES.items()]
                     + ['presets:'] + [f'  {k:8s} {" ".join(v)}' for k, v in PRESETS.items()])


def skip_reason(entry: BenchEntry, device: str) -> Optional[str]:
    """Why ``entry`` cannot run here, or None."""
    mode = entry.mode_info
    onnx = mode.backend == 'onnxruntime'
    missing = [m for m in ARCHS[entry.arch].requires + ('onnx', 'onnxruntime') * onnx
               if importlib.util.find_spec(m) is None]
    if missing:
        return f'{missing[0]} is not installed (pip install {" ".join(missing)})'
    if onnx and device != 'cpu':
        return 'the ONNX Runtime path is timed on the CPU only'
    if mode.dtype == 'bf16' and device == 'cpu' and not cpu_bf16_support()['fast']:
        return 'this CPU has neither AVX-512 BF16 nor AMX (bf16 would be emulated)'
    return None


def build_arch(arch: str, size: Tuple[int, int]) -> nn.Module:
    """The fp32 eval-mode model of ``arch`` for inputs of ``size`` (height, width)."""
    if arch not in ARCHS:
        raise KeyError(f'Unknown backbone {arch!r}; known: {", ".join(ARCHS)}')
    torch.manual_seed(0)
    model = ARCHS[arch].builder(size)
    model.eval()  # (some backbones' train() returns None)
    return model.requires_grad_(False)


def build_candidate(entry: BenchEntry, example: torch.Tensor, device: str = 'cpu',
                    threads: Optional[int] = None, keep_reference: bool = True
                    ) -> Tuple[nn.Module, int, Optional[nn.Module]]:
    """``entry`` prepared by :func:`shvit_mm.inference.optimize_for_inference` for inputs like
    ``example`` (a full batch on ``device``); also its parameter count (before folding) and, with
    ``keep_reference``, the fp32 eager model with the same weights."""
    model = build_arch(entry.arch, tuple(example.shape[-2:])).to(device)
    params = sum(p.numel() for p in model.parameters())
    reference, m = copy.deepcopy(model) if keep_reference else None, entry.mode_info
    return optimize_for_inference(model, example, fuse=m.fuse, channels_last=m.channels_last,
                                  dtype=m.dtype, backend=m.backend, output_dtype=None,
                                  threads=threads or 1), params, reference
