"""FLOPs and parameter counts without a dataset, for a backbone or a whole detector config.

Counts come from MMEngine's analyzers, the ones behind its ``get_model_complexity_info`` (an
fvcore-style counter: one multiply-add counts as one "FLOP", the convention of the SHViT paper and
of MMDetection's tables). Operators without a FLOP handler (element-wise ops, softmax, NMS,
RoIAlign) are listed, not counted.
A detector is run in ``mode='tensor'`` (backbone, neck and heads, no post-processing) on one
synthetic image of the requested size with the meta-information its heads need, as MMDetection's
own ``get_flops.py`` does with a real image.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

__all__ = ['parse_shape', 'model_complexity', 'backbone_complexity', 'detector_complexity',
           'complexity', 'format_complexity']


def parse_shape(shape: Union[int, Sequence[int]]) -> Tuple[int, int]:
    """``512`` or ``[512]`` -> (512, 512); ``[800, 1333]`` -> (800, 1333) (height, width)."""
    if isinstance(shape, int):
        shape = [shape]
    shape = [int(s) for s in shape]
    if len(shape) == 1:
        shape = shape * 2
    if len(shape) != 2 or min(shape) <= 0:
        raise ValueError(f'input shape must be one size or (height, width), got {shape}')
    return shape[0], shape[1]


def model_complexity(model: nn.Module, inputs: Tuple[Any, ...], show_table: bool = False
                     ) -> Dict[str, Any]:
    """Count ``model(*inputs)`` (eval, no grad) with MMEngine's analyzers.

    The same counters as ``mmengine.analysis.get_model_complexity_info``, used directly so one
    trace also yields the per-module split and the operators that have no FLOP handler.
    """
    from mmengine.analysis import ActivationAnalyzer, FlopAnalyzer, parameter_count
    from mmengine.analysis.print_helper import complexity_stats_table
    model.eval()
    with torch.no_grad():
        flops = FlopAnalyzer(model, inputs)
        flops.unsupported_ops_warnings(False)
        flops.uncalled_modules_warnings(False)
        acts = ActivationAnalyzer(model, inputs)
        acts.unsupported_ops_warnings(False)
        acts.uncalled_modules_warnings(False)
        info = dict(flops=int(flops.total()), params=int(parameter_count(model)['']),
                     activations=int(acts.total()), by_module_flops=dict(flops.by_module()),
                     unsupported_ops=dict(flops.unsupported_ops()))
        info['table'] = ('\n' + complexity_stats_table(flops=flops, activations=acts,
                                                       show_param_shapes=True)) if show_table else ''
    return info


def backbone_complexity(name_or_model: Union[str, nn.Module], shape: Union[int, Sequence[int]] = 512,
                        deploy: bool = True, show_table: bool = False) -> Dict[str, Any]:
    """Complexity of a backbone at a (3, H, W) input.

    ``name_or_model`` is a module or a name the benchmark knows (``shvit_s1``..``shvit_s4``,
    ``resnet50``, ``efficientnet_b0``, ``mobilenet_v3_large``, ``efficientformer_l1``,
    ``poolformer_s12``, ``timm_shvit_s4``). ``deploy`` fuses BatchNorms first (their element-wise
    work then disappears from the count, as in the deployed model).
    """
    from shvit_mm.deploy import fuse_for_deploy
    h, w = parse_shape(shape)
    if isinstance(name_or_model, str):
        from .zoo import build_arch
        model = build_arch(name_or_model, (h, w))
        label = name_or_model
    else:
        model = name_or_model
        label = type(model).__name__
    model.eval()
    if deploy:
        fuse_for_deploy(model)
    dtype = next(model.parameters()).dtype
    x = torch.randn(1, 3, h, w, dtype=dtype, device=next(model.parameters()).device)
    info = model_complexity(model, (x,), show_table=show_table)
    info.pop('by_module_flops')
    info.update(target=label, kind='backbone', shape=(h, w))
    return info


class _TensorModeDetector(nn.Module):
    """Calls a detector in ``mode='tensor'`` with fixed data samples (for tracing)."""

    def __init__(self, detector: nn.Module, data_samples: list) -> None:
        super().__init__()
        self.detector = detector
        self.data_samples = data_samples

    def forward(self, x: torch.Tensor) -> Any:
        return self.detector(x, self.data_samples, mode='tensor')


def _load_config(config: str, cfg_options: Optional[dict] = None):
    from mmengine.config import Config
    if not os.path.isfile(config):
        raise FileNotFoundError(f'config file {config!r} does not exist')
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def detector_complexity(config: Union[str, Any], shape: Union[int, Sequence[int]] = (800, 1333),
                        cfg_options: Optional[dict] = None, deploy: bool = False,
                        show_table: bool = False) -> Dict[str, Any]:
    """Complexity of the ``model`` of an MMDetection config at one (3, H, W) image.

    The image is padded up to the data preprocessor's ``pad_size_divisor`` (as at test time).
    No dataset and no checkpoint are needed (weights are initialised at random; only shapes count).
    Returns totals plus ``by_module``: FLOPs and parameters of the top-level parts (backbone,
    neck, heads).
    """
    from mmengine.analysis import parameter_count
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample

    cfg = _load_config(config, cfg_options) if isinstance(config, str) else config
    if 'model' not in cfg:
        raise KeyError(f'config {config!r} has no `model` entry; is it a detector config?')
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model_cfg = cfg.model.copy()
    model_cfg.pop('pretrained', None)
    # No checkpoint files here: shapes alone decide FLOPs.
    _strip_pretrained(model_cfg)
    model = MODELS.build(model_cfg)
    model.eval()
    if deploy:
        from shvit_mm.deploy import fuse_for_deploy
        fuse_for_deploy(model)

    h, w = parse_shape(shape)
    divisor = int((cfg.model.get('data_preprocessor') or {}).get('pad_size_divisor', 1) or 1)
    ph, pw = -(-h // divisor) * divisor, -(-w // divisor) * divisor
    meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(ph, pw), batch_input_shape=(ph, pw),
                scale_factor=(1.0, 1.0), img_id=0, flip=False, flip_direction=None)
    sample = DetDataSample(metainfo=meta)
    x = torch.randn(1, 3, ph, pw)
    wrapper = _TensorModeDetector(model, [sample]).eval()
    info = model_complexity(wrapper, (x,), show_table=show_table)
    per_module = info.pop('by_module_flops')
    params = parameter_count(model)
    parts = {}
    for name, _ in model.named_children():
        if name == 'data_preprocessor':
            continue
        parts[name] = dict(flops=int(per_module.get(f'detector.{name}', 0)),
                           params=int(params.get(name, 0)))
    info.update(target=config if isinstance(config, str) else 'config', kind='detector',
                shape=(h, w), padded_shape=(ph, pw), detector=type(model).__name__,
                by_module=parts)
    return info


def _strip_pretrained(cfg: Any) -> None:
    """Drop ``init_cfg=dict(type='Pretrained', ...)`` entries (recursively) from a model config."""
    if isinstance(cfg, dict):
        init = cfg.get('init_cfg')
        if isinstance(init, dict) and init.get('type') == 'Pretrained':
            cfg['init_cfg'] = None
        elif isinstance(init, list):
            cfg['init_cfg'] = [i for i in init if not (isinstance(i, dict)
                                                       and i.get('type') == 'Pretrained')] or None
        for v in cfg.values():
            _strip_pretrained(v)
    elif isinstance(cfg, (list, tuple)):
        for v in cfg:
            _strip_pretrained(v)


def complexity(target: str, shape: Union[int, Sequence[int], None] = None,
               cfg_options: Optional[dict] = None, deploy: Optional[bool] = None,
               show_table: bool = False) -> Dict[str, Any]:
    """Count a config file (``*.py``: :func:`detector_complexity`) or a backbone name
    (:func:`backbone_complexity`).

    Default shapes: 512x512 for a backbone (the paper's latency crop), 800x1333 for a detector
    (MMDetection's usual test scale).
    """
    if target.endswith('.py') or os.path.isfile(target):
        return detector_complexity(target, shape if shape is not None else (800, 1333),
                                   cfg_options=cfg_options, deploy=bool(deploy),
                                   show_table=show_table)
    if cfg_options:
        raise ValueError('--cfg-options only applies to a config file, not to a backbone name')
    return backbone_complexity(target, shape if shape is not None else 512,
                               deploy=True if deploy is None else deploy, show_table=show_table)


def _fmt(n: float, unit: str = '') -> str:
    for div, suffix in ((1e12, 'T'), (1e9, 'G'), (1e6, 'M'), (1e3, 'K')):
        if abs(n) >= div:
            return f'{n / div:.3f} {suffix}{unit}'
    return f'{n:.0f} {unit}'


def format_complexity(info: Dict[str, Any]) -> str:
    """A short human-readable report of :func:`complexity`'s result."""
    h, w = info['shape']
    lines = [f"{info['kind']}: {info['target']}",
             f'input shape: (1, 3, {h}, {w})'
             + (f" (padded to {info['padded_shape'][0]}x{info['padded_shape'][1]})"
                if info.get('padded_shape') and tuple(info['padded_shape']) != (h, w) else ''),
             f"FLOPs (multiply-adds): {_fmt(info['flops'])}  = {info['flops'] / 1e9:.4f} G",
             f"params: {_fmt(info['params'])}  = {info['params'] / 1e6:.4f} M",
             f"activations: {_fmt(info['activations'])}"]
    if info.get('by_module'):
        lines.append('by part:')
        for name, d in info['by_module'].items():
            lines.append(f"  {name:<14s} FLOPs {d['flops'] / 1e9:9.3f} G   "
                         f"params {d['params'] / 1e6:8.3f} M")
    if info.get('unsupported_ops'):
        ops = ', '.join(f'{k} x{v}' for k, v in sorted(info['unsupported_ops'].items()))
        lines.append(f'not counted (no FLOP handler): {ops}')
    if info.get('table'):
        lines.append(info['table'])
    return '\n'.join(lines)
