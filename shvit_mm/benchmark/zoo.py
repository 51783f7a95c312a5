"""The backbones the latency benchmark knows, and the ways each can be run.

A benchmark entry is ``ARCH:MODE``, e.g. ``shvit_s4:deploy`` or ``resnet50:eager``.

Architectures (the paper's Table 5 peers that this software stack carries):

========================  ==========================================================
``shvit_s1`` .. ``s4``    this package's :class:`~shvit_mm.models.SHViT`
``resnet50``              MMDetection's ``ResNet`` (depth 50, as its detectors use it)
``efficientnet_b0``       MMPretrain ``EfficientNet(arch='b0')``
``mobilenet_v3_large``    MMPretrain ``MobileNetV3(arch='large')``
``efficientformer_l1``    MMPretrain ``EfficientFormer(arch='l1')`` (attention bias sized
                          for the input, see :func:`_resize_efficientformer`)
``poolformer_s12``        MMPretrain ``PoolFormer(arch='s12')``
``timm_shvit_s4``         timm's ``shvit_s4`` port (only when timm is installed)
========================  ==========================================================

Modes (:data:`MODES`): ``eager`` (as built: fp32, NCHW, BatchNorms unfused), ``deploy`` (every
``switch_to_deploy()`` applied: BN folded into convs; fp32 NCHW eager, the paper's setting),
``cl`` (deploy + channels-last), ``compile`` (deploy + channels-last + ``torch.compile`` with
freezing, fp32), ``jit`` (deploy + channels-last + TorchScript freeze, fp32), ``bf16`` (as
``compile`` in bfloat16; only on CPUs with AVX-512 BF16 or AMX, or on CUDA), ``bf16-eager``
(deploy + channels-last + bfloat16 without compilation) and ``onnx`` (deploy, exported to ONNX and
run by ONNX Runtime on the CPU).
"""
from __future__ import annotations

import copy
import importlib.util
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from shvit_mm.deploy import (cpu_bf16_support, fuse_for_deploy, optimize_for_inference,
                             randomize_norm_stats_)

__all__ = ['ARCHS', 'MODES', 'PRESETS', 'BenchEntry', 'parse_entries', 'describe', 'build_arch',
           'build_runner', 'Runner', 'skip_reason']


@dataclass(frozen=True)
class ArchInfo:
    label: str
    source: str
    builder: Callable[[Tuple[int, int]], nn.Module]
    requires: Tuple[str, ...] = ()


def _shvit(arch: str) -> Callable[[Tuple[int, int]], nn.Module]:
    def build(size: Tuple[int, int]) -> nn.Module:
        from shvit_mm.models import SHViT
        model = SHViT(arch=arch, out_indices=(0, 1, 2))
        # Trained-looking BN statistics, so that precision checks see every branch (speed is the same).
        return randomize_norm_stats_(model, seed=int(arch[-1]))
    return build


def _resnet50(size: Tuple[int, int]) -> nn.Module:
    from mmdet.models.backbones import ResNet
    return ResNet(depth=50, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=1,
                  norm_cfg=dict(type='BN', requires_grad=True), norm_eval=True, style='pytorch')


def _efficientnet_b0(size: Tuple[int, int]) -> nn.Module:
    from mmpretrain.models.backbones import EfficientNet
    return EfficientNet(arch='b0')


def _mobilenet_v3_large(size: Tuple[int, int]) -> nn.Module:
    from mmpretrain.models.backbones import MobileNetV3
    return MobileNetV3(arch='large')


def _poolformer_s12(size: Tuple[int, int]) -> nn.Module:
    from mmpretrain.models.backbones import PoolFormer
    return PoolFormer(arch='s12')


@torch.no_grad()
def _resize_efficientformer(model: nn.Module, size: Tuple[int, int]) -> nn.Module:
    """Re-build EfficientFormer's attention (its relative-position bias table is tied to a
    7x7 token grid, i.e. 224x224 inputs) for a (size/32)^2 grid, keeping the projections.

    The bias values do not change the cost, so the latency is that of the model at this size.
    """
    from mmpretrain.models.backbones.efficientformer import AttentionWithBias
    h, w = size
    if h != w or h % 32:
        raise ValueError(f'EfficientFormer needs a square input divisible by 32, got {h}x{w}')
    res = h // 32
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, AttentionWithBias):
                new = AttentionWithBias(child.qkv.in_features, num_heads=child.num_heads,
                                        key_dim=child.key_dim, attn_ratio=child.attn_ratio,
                                        resolution=res)
                new.qkv.load_state_dict(child.qkv.state_dict())
                new.proj.load_state_dict(child.proj.state_dict())
                setattr(parent, name, new)
    return model


def _efficientformer_l1(size: Tuple[int, int]) -> nn.Module:
    from mmpretrain.models.backbones import EfficientFormer
    return _resize_efficientformer(EfficientFormer(arch='l1'), size)


class _TimmFeatures(nn.Module):
    """timm classification model -> its ``forward_features`` (the backbone part)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def _timm_shvit_s4(size: Tuple[int, int]) -> nn.Module:
    import timm
    return _TimmFeatures(timm.create_model('shvit_s4', pretrained=False, num_classes=0))


ARCHS: Dict[str, ArchInfo] = {
    'shvit_s1': ArchInfo('SHViT-S1', 'shvit_mm', _shvit('s1')),
    'shvit_s2': ArchInfo('SHViT-S2', 'shvit_mm', _shvit('s2')),
    'shvit_s3': ArchInfo('SHViT-S3', 'shvit_mm', _shvit('s3')),
    'shvit_s4': ArchInfo('SHViT-S4', 'shvit_mm', _shvit('s4')),
    'resnet50': ArchInfo('ResNet-50', 'MMDetection', _resnet50, ('mmdet',)),
    'efficientnet_b0': ArchInfo('EfficientNet-B0', 'MMPretrain', _efficientnet_b0, ('mmpretrain',)),
    'mobilenet_v3_large': ArchInfo('MobileNetV3-L', 'MMPretrain', _mobilenet_v3_large,
                                   ('mmpretrain',)),
    'efficientformer_l1': ArchInfo('EfficientFormer-L1', 'MMPretrain', _efficientformer_l1,
                                   ('mmpretrain',)),
    'poolformer_s12': ArchInfo('PoolFormer-S12', 'MMPretrain', _poolformer_s12, ('mmpretrain',)),
    'timm_shvit_s4': ArchInfo('timm shvit_s4', 'timm', _timm_shvit_s4, ('timm',)),
}


@dataclass(frozen=True)
class ModeInfo:
    label: str
    fuse: bool = True
    channels_last: bool = False
    backend: str = 'eager'
    dtype: Optional[str] = None
    onnx: bool = False
    description: str = ''


MODES: Dict[str, ModeInfo] = {
    'eager': ModeInfo('eager', fuse=False, description='as built: fp32, NCHW, BN not folded'),
    'deploy': ModeInfo('deploy', description='BN folded (switch_to_deploy), fp32 NCHW eager'),
    'cl': ModeInfo('deploy+CL', channels_last=True, description='deploy + channels-last, eager'),
    'compile': ModeInfo('deploy+CL+compile', channels_last=True, backend='compile',
                        description='deploy + channels-last + torch.compile (freezing), fp32'),
    'jit': ModeInfo('deploy+CL+jit', channels_last=True, backend='jit',
                    description='deploy + channels-last + TorchScript trace/freeze, fp32'),
    'bf16': ModeInfo('deploy+CL+compile bf16', channels_last=True, backend='compile', dtype='bf16',
                     description='as compile, bfloat16 weights and activations'),
    'bf16-eager': ModeInfo('deploy+CL bf16', channels_last=True, dtype='bf16',
                           description='deploy + channels-last, bfloat16, eager'),
    'onnx': ModeInfo('deploy, ONNX Runtime', onnx=True,
                     description='deploy, exported to ONNX, run by ONNX Runtime (CPU)'),
}

#: Named sets of entries for ``--models``.
PRESETS: Dict[str, List[str]] = {
    'paper': (['shvit_s1:eager', 'shvit_s1:deploy', 'shvit_s2:eager', 'shvit_s2:deploy',
               'shvit_s3:eager', 'shvit_s3:deploy', 'shvit_s4:eager', 'shvit_s4:deploy',
               'shvit_s4:cl', 'shvit_s4:compile', 'shvit_s4:bf16', 'shvit_s4:onnx',
               'resnet50:eager', 'resnet50:compile', 'efficientnet_b0:eager',
               'mobilenet_v3_large:eager', 'efficientformer_l1:eager', 'poolformer_s12:eager',
               'timm_shvit_s4:eager']),
    'plot': ['shvit_s4:deploy', 'shvit_s4:compile', 'resnet50:eager',
             'efficientnet_b0:eager', 'mobilenet_v3_large:eager', 'efficientformer_l1:eager',
             'poolformer_s12:eager'],
    'shvit': [f'shvit_s{i}:{m}' for i in range(1, 5) for m in ('eager', 'deploy', 'compile', 'bf16')],
    'peers': ['resnet50:eager', 'efficientnet_b0:eager', 'mobilenet_v3_large:eager',
              'efficientformer_l1:eager', 'poolformer_s12:eager', 'timm_shvit_s4:eager'],
}


@dataclass(frozen=True)
class BenchEntry:
    arch: str
    mode: str

    @property
    def key(self) -> str:
        return f'{self.arch}:{self.mode}'

    @property
    def label(self) -> str:
        return f'{ARCHS[self.arch].label} ({MODES[self.mode].label})'

    @property
    def info(self) -> ArchInfo:
        return ARCHS[self.arch]

    @property
    def mode_info(self) -> ModeInfo:
        return MODES[self.mode]

    @property
    def compute_dtype(self) -> str:
        return self.mode_info.dtype or 'fp32'


def parse_entries(items: Sequence[str]) -> List[BenchEntry]:
    """Expand preset names and ``ARCH[:MODE]`` items (MODE defaults to ``eager``), keeping order."""
    out: List[BenchEntry] = []
    for item in items:
        for part in str(item).replace(',', ' ').split():
            if part in PRESETS:
                out.extend(parse_entries(PRESETS[part]))
                continue
            arch, _, mode = part.partition(':')
            mode = mode or 'eager'
            if arch not in ARCHS:
                raise KeyError(f'Unknown backbone {arch!r}; known: {", ".join(ARCHS)} '
                               f'(or a preset: {", ".join(PRESETS)})')
            if mode not in MODES:
                raise KeyError(f'Unknown mode {mode!r} in {part!r}; known: {", ".join(MODES)}')
            out.append(BenchEntry(arch, mode))
    seen, unique = set(), []
    for e in out:
        if e.key not in seen:
            seen.add(e.key)
            unique.append(e)
    return unique


def describe() -> str:
    """The backbones, modes and presets, one a line (``benchmark_backbone.py --list``)."""
    lines = ['backbones:'] + [f'  {k:20s} {a.label} ({a.source})' for k, a in ARCHS.items()]
    lines += ['modes:'] + [f'  {k:12s} {m.description}' for k, m in MODES.items()]
    lines += ['presets:'] + [f'  {k:8s} {" ".join(v)}' for k, v in PRESETS.items()]
    return '\n'.join(lines)


def skip_reason(entry: BenchEntry, device: str) -> Optional[str]:
    """Why ``entry`` cannot run here, or None."""
    for mod in entry.info.requires:
        if importlib.util.find_spec(mod) is None:
            return f'{mod} is not installed'
    mode = entry.mode_info
    if mode.onnx:
        if device != 'cpu':
            return 'the ONNX Runtime path is timed on the CPU only'
        for mod in ('onnx', 'onnxruntime'):
            if importlib.util.find_spec(mod) is None:
                return f'{mod} is not installed (pip install onnx onnxruntime)'
    if mode.dtype == 'bf16' and device == 'cpu' and not cpu_bf16_support()['fast']:
        return 'this CPU has neither AVX-512 BF16 nor AMX (bf16 would be emulated)'
    return None


def build_arch(arch: str, size: Tuple[int, int]) -> nn.Module:
    """The fp32 eval-mode model of ``arch`` for inputs of ``size`` (height, width)."""
    if arch not in ARCHS:
        raise KeyError(f'Unknown backbone {arch!r}; known: {", ".join(ARCHS)}')
    for mod in ARCHS[arch].requires:
        if importlib.util.find_spec(mod) is None:
            raise ImportError(f'{arch} needs the {mod} package, which is not installed')
    torch.manual_seed(0)
    model = ARCHS[arch].builder(size)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@dataclass
class Runner:
    """A ready-to-time callable plus what the report needs to know about it."""
    entry: BenchEntry
    fn: Callable[[torch.Tensor], Any]
    params: int
    reference: Optional[nn.Module] = None  # fp32 eager model with the same weights
    notes: List[str] = field(default_factory=list)
    tmpdir: Optional[Any] = None  # keeps an ONNX file alive

    def __call__(self, x: torch.Tensor) -> Any:
        return self.fn(x)

    def close(self) -> None:
        if self.tmpdir is not None:
            self.tmpdir.cleanup()
            self.tmpdir = None


def build_runner(entry: BenchEntry, example: torch.Tensor, device: str = 'cpu',
                 threads: Optional[int] = None, keep_reference: bool = True) -> Runner:
    """Build ``entry`` for inputs like ``example`` (a full benchmark batch on ``device``)."""
    size = tuple(example.shape[-2:])
    model = build_arch(entry.arch, size)
    params = sum(p.numel() for p in model.parameters())
    reference = copy.deepcopy(model).to(device) if keep_reference else None
    mode = entry.mode_info
    notes: List[str] = []
    if mode.onnx:
        tmp = tempfile.TemporaryDirectory(prefix='shvit_onnx_')
        runner = optimize_for_inference(model, example.cpu(), backend='onnxruntime',
                                        onnx_path=os.path.join(tmp.name, f'{entry.arch}.onnx'),
                                        threads=threads or 1, output_dtype=None)
        return Runner(entry, runner, params, reference, notes, tmp)
    model.to(device)
    if mode.fuse:
        n = fuse_for_deploy(model)
        if n == 0:
            notes.append('nothing to fuse')
    if mode.channels_last or mode.backend != 'eager' or mode.dtype:
        fast = optimize_for_inference(model, example, fuse=False, channels_last=mode.channels_last,
                                      dtype=mode.dtype, backend=mode.backend, output_dtype=None)
        return Runner(entry, fast, params, reference, notes)

    def run(x: torch.Tensor, _m=model) -> Any:
        with torch.inference_mode():
            return _m(x)
    return Runner(entry, run, params, reference, notes)
