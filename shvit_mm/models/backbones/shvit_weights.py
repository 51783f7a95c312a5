"""SHViT weight formats: every backbone checkpoint a user may hold, in the official layout.

The official release (https://github.com/ysj9909/SHViT) names the backbone's tensors
``patch_embed.*`` and ``blocks{1,2,3}.*`` (plus the classifier ``head.*``); that is also the layout of
:class:`~shvit_mm.models.backbones.SHViT`. This module turns the other layouts into it:

* official classification release ``shvit_s{1..4}.pth``: ``{'model': state_dict}``;
* timm hub weights ``shvit_s{1..4}.in1k`` (``.safetensors`` or ``.pth``): ``stages.{i}.downsample.*``
  and ``stages.{i}.blocks.*``;
* a plain state dict, optionally wrapped in ``state_dict`` and/or prefixed by ``module.``;
* MMDetection / MMSegmentation / MMPretrain checkpoints whose backbone keys carry ``backbone.``.

Files are read with :func:`shvit_mm.utils.safe_load` (no pickled code runs).
"""
from __future__ import annotations

import logging
import re
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Tuple

import torch

from shvit_mm.utils.safe_load import safe_load

__all__ = ['CheckpointFormatError', 'to_official_layout', 'timm_to_official', 'official_to_timm',
           'infer_arch', 'unwrap_state_dict', 'load_backbone_checkpoint']


class CheckpointFormatError(ValueError):
    """The file is readable but does not hold weights this model can use."""


_TIMM_DOWNSAMPLE = {  # timm stages.{i}.downsample.{j} -> official blocks{i+1} sub-path
    '0': '0.0', '1': '0.1', '2': '1', '3': '2.0', '4': '2.1'}
_OFFICIAL_DOWNSAMPLE = {v: k for k, v in _TIMM_DOWNSAMPLE.items()}


def timm_to_official(state_dict: Dict[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    """Rename timm's ``stages.*`` keys to the official ``blocks{k}.*`` layout (others unchanged)."""
    out = OrderedDict()
    for key, value in state_dict.items():
        m = re.match(r'^stages\.(\d+)\.(downsample|blocks)\.(\d+)\.(.*)$', key)
        if m is None:
            out[key] = value
            continue
        stage, kind, idx, rest = int(m.group(1)), m.group(2), m.group(3), m.group(4)
        if kind == 'downsample':
            if idx not in _TIMM_DOWNSAMPLE:
                raise CheckpointFormatError(f'Unexpected timm downsample key {key!r}')
            new = f'blocks{stage + 1}.{_TIMM_DOWNSAMPLE[idx]}.{rest}'
        else:
            offset = 0 if stage == 0 else 3  # stages 2 and 3 start with three downsample entries
            new = f'blocks{stage + 1}.{int(idx) + offset}.{rest}'
        out[new] = value
    return out


def official_to_timm(state_dict: Dict[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    """Inverse of :func:`timm_to_official`."""
    out = OrderedDict()
    for key, value in state_dict.items():
        m = re.match(r'^blocks(\d)\.(\d+)\.(.*)$', key)
        if m is None:
            out[key] = value
            continue
        stage, idx, rest = int(m.group(1)) - 1, int(m.group(2)), m.group(3)
        if stage > 0 and idx < 3:
            sub = rest.split('.', 1)
            path = f'{idx}.{sub[0]}' if idx in (0, 2) else '1'
            tail = sub[1] if idx in (0, 2) else rest
            out[f'stages.{stage}.downsample.{_OFFICIAL_DOWNSAMPLE[path]}.{tail}'] = value
        else:
            out[f'stages.{stage}.blocks.{idx - (3 if stage > 0 else 0)}.{rest}'] = value
    return out


_WRAPPERS = ('state_dict', 'model', 'model_ema', 'module')


def unwrap_state_dict(obj) -> Dict[str, torch.Tensor]:
    """Find the state dict inside a checkpoint object."""
    for _ in range(3):
        if not isinstance(obj, dict):
            break
        if any(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        inner = next((obj[k] for k in _WRAPPERS if k in obj and isinstance(obj[k], dict)), None)
        if inner is None:
            break
        obj = inner
    if isinstance(obj, dict) and any(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    keys = list(obj.keys())[:10] if isinstance(obj, dict) else type(obj).__name__
    raise CheckpointFormatError(
        f'No state dict found in checkpoint (top-level keys: {keys}); expected a state dict or a dict '
        f'holding one under one of {list(_WRAPPERS)}')


def to_official_layout(checkpoint, prefix: Optional[str] = None
                       ) -> Tuple['OrderedDict[str, torch.Tensor]', List[str]]:
    """Return ``(backbone_state_dict, head_keys)`` in the official layout from any known format.

    ``prefix`` (e.g. ``'backbone.'``) selects and strips the keys under it; without it a ``backbone.``
    prefix is detected automatically. Classification-head keys (``head.*``) are returned apart.
    """
    sd = unwrap_state_dict(checkpoint)
    sd = OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v) for k, v in sd.items())
    if prefix is None and any(k.startswith('backbone.') for k in sd):
        prefix = 'backbone.'
    if prefix:
        selected = OrderedDict((k[len(prefix):], v) for k, v in sd.items() if k.startswith(prefix))
        if not selected:
            raise CheckpointFormatError(f'No key in the checkpoint starts with prefix {prefix!r}')
        sd = selected
    if any(k.startswith('stages.') for k in sd):
        sd = timm_to_official(sd)
    head = [k for k in sd if k.startswith('head.') or k.startswith('head_dist.')]
    for k in head:
        sd.pop(k)
    return sd, head


def infer_arch(state_dict: Dict[str, torch.Tensor], arch_zoo: Mapping[str, dict]) -> Optional[str]:
    """Name the variant of ``arch_zoo`` (e.g. ``SHViT.arch_zoo``: ``'s1'``..``'s4'``) that an
    official-layout state dict holds; ``'custom(...)'`` for other widths/depths, None if not SHViT."""
    try:
        dims = [state_dict['patch_embed.6.c.weight'].shape[0],
                state_dict['blocks2.1.conv3.c.weight'].shape[0],
                state_dict['blocks3.1.conv3.c.weight'].shape[0]]
    except KeyError:
        return None
    depths = []
    for s in (1, 2, 3):
        idx = {int(m.group(1)) for k in state_dict for m in [re.match(rf'^blocks{s}\.(\d+)\.', k)] if m}
        depths.append(len(idx) - (3 if s > 1 else 0))
    for name, arch in arch_zoo.items():
        if list(arch['embed_dims']) == dims and list(arch['depths']) == depths:
            return name
    return f'custom(embed_dims={dims}, depths={depths})'


def load_backbone_checkpoint(model: torch.nn.Module, filename: str, prefix: Optional[str] = None,
                             logger: Optional[logging.Logger] = None) -> dict:
    """Load any supported checkpoint into an :class:`SHViT` backbone.

    Returns a report ``dict(missing=[...], unexpected=[...], head=[...], arch=...)``. Missing or
    unexpected keys are logged by name; a checkpoint of another variant raises CheckpointFormatError.
    """
    logger = logger or logging.getLogger(__name__)
    sd, head = to_official_layout(safe_load(filename), prefix=prefix)
    ckpt_arch = infer_arch(sd, type(model).arch_zoo)
    model_arch = getattr(model, 'arch_name', None)
    if ckpt_arch is not None and model_arch not in (None, 'custom') and ckpt_arch != model_arch:
        raise CheckpointFormatError(
            f'{filename} holds SHViT-{ckpt_arch.upper()} weights but the model is SHViT-'
            f'{model_arch.upper()}: set arch={ckpt_arch!r} or use the {model_arch.upper()} checkpoint')
    if getattr(model, 'fused', False):  # a deploy-structure model: fuse the weights on the way in
        sd = model.fuse_state_dict(sd)
    own = model.state_dict()
    mismatched = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                  for k, v in sd.items() if k in own and own[k].shape != v.shape]
    if mismatched:
        raise CheckpointFormatError(f'{filename}: shape mismatch for {len(mismatched)} tensors: '
                                    + '; '.join(mismatched[:5]))
    result = model.load_state_dict(sd, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if head:
        logger.info(f'{filename}: ignored {len(head)} classification-head tensors ({head[0]}, ...)')
    if missing:
        logger.warning(f'{filename}: {len(missing)} backbone tensors missing from the checkpoint: '
                       + ', '.join(missing))
    if unexpected:
        logger.warning(f'{filename}: {len(unexpected)} unexpected tensors not loaded: '
                       + ', '.join(unexpected))
    logger.info(f'Loaded {len(sd) - len(unexpected)} tensors into SHViT-{str(model_arch).upper()} '
                f'from {filename}')
    return dict(missing=missing, unexpected=unexpected, head=head, arch=ckpt_arch)
