"""FLOPs and parameter counts without a dataset, for a backbone or a whole model config.

Counts come from MMEngine's analyzers, the ones behind its ``get_model_complexity_info`` (an
fvcore-style counter: one multiply-add counts as one "FLOP", the convention of the SHViT paper and
of MMDetection's tables). Operators without a FLOP handler (element-wise ops, softmax, NMS,
RoIAlign) are listed, not counted.
A config's model (detector, segmentor or classifier) is run in ``mode='tensor'`` (backbone, neck
and heads, no post-processing) on one synthetic image of the requested size with the
meta-information its heads need, as MMDetection's own ``get_flops.py`` does with a real image.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from shvit_mm.apis.config import build_model, codebase_of, read_config

__all__ = ['parse_shape', 'model_complexity', 'backbone_complexity', 'config_complexity',
           'complexity', 'format_complexity', 'write_json']


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


class _TensorMode(nn.Module):
    """Calls a model in ``mode='tensor'`` with fixed data samples (for tracing)."""

    def __init__(self, model: nn.Module, data_samples: Optional[list]) -> None:
        super().__init__()
        self.model = model
        self.data_samples = data_samples

    def forward(self, x: torch.Tensor) -> Any:
        return self.model(x, self.data_samples, mode='tensor')


#: the config's codebase -> what its ``model`` is called in reports
KINDS = {'mmdet': 'detector', 'mmseg': 'segmentor', 'mmpretrain': 'classifier'}


def _dummy_input(cfg: Any, scope: str, h: int, w: int
                 ) -> Tuple[torch.Tensor, Optional[list], Tuple[int, int]]:
    """One random image padded as the codebase's test-time data preprocessor pads it, the data
    samples its ``mode='tensor'`` forward needs, and the padded (height, width)."""
    pre = cfg.model.get('data_preprocessor') or {}
    if scope == 'mmseg':  # SegDataPreProcessor pads at test time only as its test_cfg says
        divisor = (pre.get('test_cfg') or {}).get('size_divisor')
    else:
        divisor = pre.get('pad_size_divisor')
    divisor = int(divisor or 1)
    ph, pw = -(-h // divisor) * divisor, -(-w // divisor) * divisor
    samples: Optional[list] = None
    if scope == 'mmseg':
        from mmseg.structures import SegDataSample
        samples = [SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                               pad_shape=(ph, pw)))]
    elif scope == 'mmdet':
        from mmdet.structures import DetDataSample
        samples = [DetDataSample(metainfo=dict(
            img_shape=(h, w), ori_shape=(h, w), pad_shape=(ph, pw), batch_input_shape=(ph, pw),
            scale_factor=(1.0, 1.0), img_id=0, flip=False, flip_direction=None))]
    return torch.randn(1, 3, ph, pw), samples, (ph, pw)


def config_complexity(config: Union[str, Any], shape: Union[int, Sequence[int]] = (800, 1333),
                      cfg_options: Optional[dict] = None, deploy: bool = False,
                      show_table: bool = False) -> Dict[str, Any]:
    """Complexity of the ``model`` of an OpenMMLab config (a path, an ``mmdet::``/``mmseg::`` name
    or a ``Config``) at one (3, H, W) image.

    The model is built by :func:`shvit_mm.apis.config.build_model`, the builder of the tools:
    no dataset, no checkpoint and no pretrained download (weights are random; only shapes count).
    The image is padded as the data preprocessor pads it at test time (MMDetection's
    ``pad_size_divisor``, MMSegmentation's ``test_cfg.size_divisor``). Returns totals plus
    ``by_module``: FLOPs and parameters of each top-level child of the model (e.g. backbone, neck,
    heads), the data preprocessor left out.
    """
    from mmengine.analysis import parameter_count

    cfg = read_config(config, cfg_options)
    model = build_model(cfg, init=False)
    scope = codebase_of(cfg)
    if deploy:
        from shvit_mm.deploy import fuse_for_deploy
        fuse_for_deploy(model)

    h, w = parse_shape(shape)
    x, samples, (ph, pw) = _dummy_input(cfg, scope, h, w)
    info = model_complexity(_TensorMode(model, samples).eval(), (x,), show_table=show_table)
    per_module = info.pop('by_module_flops')
    params = parameter_count(model)
    parts = {name: dict(flops=int(per_module.get(f'model.{name}', 0)),
                        params=int(params.get(name, 0)))
             for name, _ in model.named_children() if name != 'data_preprocessor'}
    kind = KINDS[scope]
    info.update(target=config if isinstance(config, str) else 'config', kind=kind, codebase=scope,
                shape=(h, w), padded_shape=(ph, pw), by_module=parts)
    info[kind] = type(model).__name__
    return info


def complexity(target: str, shape: Union[int, Sequence[int], None] = None,
               cfg_options: Optional[dict] = None, deploy: Optional[bool] = None,
               show_table: bool = False) -> Dict[str, Any]:
    """Count a config (``*.py``, ``mmdet::``/``mmseg::`` names too: :func:`config_complexity`) or a
    backbone name (:func:`backbone_complexity`).

    Default shapes: 512x512 for a backbone (the paper's latency crop), 800x1333 for a config
    (MMDetection's usual test scale).
    """
    if target.endswith('.py') or os.path.isfile(target):
        return config_complexity(target, shape if shape is not None else (800, 1333),
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


def write_json(info: Dict[str, Any], path: str) -> str:
    """Write :func:`complexity`'s result (without the printed table) to ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        json.dump({k: v for k, v in info.items() if k != 'table'}, f, indent=1, default=str)
    return path
