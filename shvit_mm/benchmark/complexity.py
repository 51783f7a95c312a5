"""FLOPs and parameter counts without a dataset, of a backbone or of a whole model config.

MMEngine's analyzers count (those behind ``get_model_complexity_info``: one multiply-add is one
"FLOP", the convention of the SHViT paper and of MMDetection's tables); operators without a FLOP
handler (element-wise ops, softmax, NMS, RoIAlign) are listed, not counted. A config's model runs
in ``mode='tensor'`` (backbone, neck and heads, no post-processing) on one synthetic image with
the meta-information its heads need, as MMDetection's ``get_flops.py`` does with a real image."""
from __future__ import annotations

import functools
import os
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from shvit_mm.apis.config import build_model, codebase_of, read_config
from shvit_mm.inference import fuse_for_deploy

from .harness import synthetic_batch
from .zoo import build_arch


#: the config's codebase -> what its ``model`` is called in reports
KINDS = {'mmdet': 'detector', 'mmseg': 'segmentor', 'mmpretrain': 'classifier'}


def parse_shape(shape: Union[int, Sequence[int]]) -> Tuple[int, int]:
    """``512`` or ``[512]`` -> (512, 512); ``[800, 1333]`` -> (800, 1333) (height, width)."""
    shape = [int(s) for s in ([shape] if isinstance(shape, int) else shape)]
    shape = shape * 2 if len(shape) == 1 else shape
    if len(shape) != 2 or min(shape) <= 0:
        raise ValueError(f'input shape must be one size or (height, width), got {shape}')
    return shape[0], shape[1]


def model_complexity(model: nn.Module, x: torch.Tensor, show_table: bool = False) -> dict:
    """Count ``model(x)`` (eval, no grad): one trace gives the totals, the FLOPs and parameters of
    each top-level child (``by_module``) and the operators without a FLOP handler."""
    from mmengine.analysis import ActivationAnalyzer, FlopAnalyzer, parameter_count
    from mmengine.analysis.print_helper import complexity_stats_table
    model.eval()
    with torch.no_grad():
        flops, acts = FlopAnalyzer(model, x), ActivationAnalyzer(model, x)
        for analyzer in (flops, acts):
            analyzer.unsupported_ops_warnings(False)
            analyzer.uncalled_modules_warnings(False)
        per_module, params = flops.by_module(), parameter_count(model)
        table = '\n' + complexity_stats_table(flops=flops, activations=acts,
                                              show_param_shapes=True) if show_table else ''
        return dict(flops=int(flops.total()), params=int(params['']), activations=int(acts.total()),
                    by_module={name: dict(flops=int(per_module.get(name, 0)),
                                          params=int(params.get(name, 0)))
                               for name, _ in model.named_children()},
                    unsupported_ops=dict(flops.unsupported_ops()),
                    table=table)


def backbone_complexity(name_or_model: Union[str, nn.Module],
                        shape: Union[int, Sequence[int]] = 512, deploy: bool = True,
                        show_table: bool = False) -> Dict[str, Any]:
    """Complexity of a backbone (a module or a name of :data:`~shvit_mm.benchmark.zoo.ARCHS`) at a
    (3, H, W) input; ``deploy`` folds its BatchNorms first, as deployed."""
    h, w = parse_shape(shape)
    named = isinstance(name_or_model, str)
    model = build_arch(name_or_model, (h, w)) if named else name_or_model.eval()
    if deploy:
        fuse_for_deploy(model)
    p = next(model.parameters())
    info = model_complexity(model, torch.randn(1, 3, h, w, dtype=p.dtype, device=p.device),
                            show_table)
    del info['by_module']
    return dict(info, target=name_or_model if named else type(model).__name__, kind='backbone',
                shape=(h, w))


def config_complexity(config: Union[str, Any], shape: Union[int, Sequence[int]] = (800, 1333),
                      cfg_options: Optional[dict] = None, deploy: bool = False,
                      show_table: bool = False) -> Dict[str, Any]:
    """Complexity of the ``model`` of a config (a path, an ``mmdet::``/``mmseg::`` name or a
    ``Config``) at one image of ``shape``, padded as its data preprocessor pads at test time.

    The model comes from :func:`shvit_mm.apis.config.build_model` (no dataset, no checkpoint, no
    pretrained download: only shapes count). ``by_module`` has the FLOPs and parameters of each
    top-level child (backbone, neck, heads; the data preprocessor left out).
    """
    cfg = read_config(config, cfg_options)
    model, scope = build_model(cfg, init=False), codebase_of(cfg)
    if deploy:
        fuse_for_deploy(model)
    h, w = parse_shape(shape)
    x, samples, padded = synthetic_batch(cfg, (h, w))
    # the data samples bound to forward, as MMDetection's get_flops.py does: tracing takes tensors
    model.forward = functools.partial(model.forward, data_samples=samples, mode='tensor')
    info = model_complexity(model, x, show_table)
    info['by_module'].pop('data_preprocessor', None)
    info.update(target=config if isinstance(config, str) else 'config', kind=KINDS[scope],
                codebase=scope, shape=(h, w), padded_shape=padded)
    info[KINDS[scope]] = type(model).__name__
    return info


def complexity(target: str, shape: Union[int, Sequence[int], None] = None,
               cfg_options: Optional[dict] = None, deploy: Optional[bool] = None,
               show_table: bool = False) -> Dict[str, Any]:
    """Count a config (``*.py``, ``mmdet::``/``mmseg::`` names too) or a backbone name; default
    shapes: 800x1333 for a config (MMDetection's test scale), 512x512 for a backbone (the paper's
    latency crop)."""
    if target.endswith('.py') or os.path.isfile(target):
        return config_complexity(target, shape or (800, 1333), cfg_options, bool(deploy),
                                 show_table)
    if cfg_options:
        raise ValueError('--cfg-options only applies to a config file, not to a backbone name')
    return backbone_complexity(target, shape or 512, deploy is not False, show_table)


def _fmt(n: float, unit: str = '') -> str:
    div, suffix = next(((d, s) for d, s in ((1e12, 'T'), (1e9, 'G'), (1e6, 'M'), (1e3, 'K'))
                        if abs(n) >= d), (1, ''))
    return f'{n / div:.3f} {suffix}{unit}' if suffix else f'{n:.0f} {unit}'


def format_complexity(info: Dict[str, Any]) -> str:
    """A short human-readable report of :func:`complexity`'s result."""
    (h, w), padded = info['shape'], tuple(info.get('padded_shape') or info['shape'])
    lines = [f"{info['kind']}: {info['target']}",
             f'input shape: (1, 3, {h}, {w})'
             + (f' (padded to {padded[0]}x{padded[1]})' if padded != (h, w) else ''),
             f"FLOPs (multiply-adds): {_fmt(info['flops'])}  = {info['flops'] / 1e9:.4f} G",
             f"params: {_fmt(info['params'])}  = {info['params'] / 1e6:.4f} M",
             f"activations: {_fmt(info['activations'])}"]
    lines += ['by part:'] * bool(info.get('by_module')) + [
        f"  {name:<14s} FLOPs {d['flops'] / 1e9:9.3f} G   params {d['params'] / 1e6:8.3f} M"
        for name, d in (info.get('by_module') or {}).items()]
    if info.get('unsupported_ops'):
        ops = ', '.join(f'{k} x{v}' for k, v in sorted(info['unsupported_ops'].items()))
        lines.append(f'not counted (no FLOP handler): {ops}')
    return '\n'.join(lines + [info['table']] * bool(info.get('table')))
