"""SHViT weight formats: every backbone checkpoint a user may hold, in the official layout.

The official release (https://github.com/ysj9909/SHViT) names the backbone's tensors
``patch_embed.*`` and ``blocks{1,2,3}.*`` (plus the classifier ``head.*``); that is also the layout of
:class:`~shvit_mm.models.backbones.SHViT`. This module turns the other layouts into it:

* official classification release ``shvit_s{1..4}.pth``: ``{'model': state_dict}``;
* timm hub weights ``shvit_s{1..4}.in1k`` (``.safetensors`` or ``.pth``): ``stages.{i}.downsample.*``
  and ``stages.{i}.blocks.*``;
* a plain state dict, optionally wrapped in ``state_dict`` and/or prefixed by ``module.``;
* MMDetection / MMSegmentation / MMPretrain checkpoints whose backbone keys carry ``backbone.``;
* the official detection release (RetinaNet / Mask R-CNN trained with MMDetection 2.x), converted
  whole to an MMDetection 3.x checkpoint by :func:`mmdet2_detector_to_mmdet3`.

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
           'infer_arch', 'unwrap_state_dict', 'load_backbone_checkpoint', 'match_state_dict',
           'mmdet2_detector_to_mmdet3']


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


def unwrap_state_dict(obj) -> 'OrderedDict[str, torch.Tensor]':
    """The state dict inside a checkpoint object, its tensors only, without DDP's ``module.``."""
    for _ in range(3):
        if not isinstance(obj, dict):
            break
        if any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in _WRAPPERS if k in obj and isinstance(obj[k], dict)), None)
        if inner is None:
            break
        obj = inner
    if isinstance(obj, dict) and any(isinstance(v, torch.Tensor) for v in obj.values()):
        return OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v)
                           for k, v in obj.items() if isinstance(v, torch.Tensor))
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


def match_state_dict(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor],
                     source: str = 'the checkpoint') -> None:
    """Raise :class:`CheckpointFormatError` unless ``state_dict`` has exactly ``model``'s tensors,
    shape for shape; the message lists the unknown, missing and mis-shaped keys by name."""
    own = model.state_dict()
    unknown = [k for k in state_dict if k not in own]
    missing = [k for k in own if k not in state_dict]
    shapes = [f'{k} {tuple(v.shape)} vs {tuple(own[k].shape)}' for k, v in state_dict.items()
              if k in own and own[k].shape != v.shape]
    problems = [f'{len(keys)} {what}: {_list(keys)}' for what, keys in (
        ('unknown key(s)', unknown), ('missing key(s)', missing),
        ('mis-shaped tensor(s) (checkpoint vs model)', shapes)) if keys]
    if problems:
        raise CheckpointFormatError(f'{source} does not match the {type(model).__name__} of the '
                                    'config: ' + '; '.join(problems))


def _list(keys: List[str], limit: int = 30) -> str:
    more = f' ... and {len(keys) - limit} more' if len(keys) > limit else ''
    return ', '.join(sorted(keys)[:limit]) + more


def _detector_type(state_dict: Mapping[str, torch.Tensor]) -> str:
    prefixes = sorted({k.split('.', 1)[0] for k in state_dict})
    if 'rpn_head' in prefixes and 'roi_head' in prefixes:
        return 'mask_rcnn'
    if 'bbox_head.retina_cls.weight' in state_dict:
        return 'retinanet'
    if prefixes == ['backbone'] or any(k.startswith(('patch_embed.', 'blocks1.'))
                                       for k in state_dict):
        raise CheckpointFormatError(
            'This is a backbone-only (classification) checkpoint, not a detector: use it as the '
            "backbone's init_cfg=dict(type='Pretrained', checkpoint=...) instead of converting it")
    raise CheckpointFormatError(
        'Not a RetinaNet or Mask R-CNN detector checkpoint: expected keys under backbone./neck./'
        f'bbox_head. (RetinaNet) or rpn_head./roi_head. (Mask R-CNN), found prefixes {prefixes}')


def mmdet2_detector_to_mmdet3(checkpoint, arch_zoo: Mapping[str, dict], arch: Optional[str] = 's4',
                              source: str = '<checkpoint>') -> dict:
    """An official SHViT RetinaNet / Mask R-CNN checkpoint (MMDetection 2.x) as an MMDetection 3.x
    checkpoint ``{'state_dict': ..., 'meta': ...}``.

    These detectors' parameter names and output semantics are the same in MMDetection 2.25 and
    3.x, so the tensors carry over unchanged. What changes: the class names move from
    ``meta['CLASSES']`` to ``meta['dataset_meta']['classes']``, and the backbone's ImageNet
    classifier, if the file kept it, is dropped. ``meta`` also names the ``detector``
    (``'retinanet'`` / ``'mask_rcnn'``), the backbone ``arch`` and ``num_classes``.
    :func:`match_state_dict` checks the result against the model of a config.

    Args:
        checkpoint: the loaded file, or its state dict.
        arch_zoo: the variants to recognise (``SHViT.arch_zoo``).
        arch: the SHViT variant the backbone must be (the official release is ``'s4'``); None
            accepts any of ``arch_zoo``.
        source: the file's name, for messages.
    """
    if not isinstance(checkpoint, dict):
        raise CheckpointFormatError(f'{source}: expected a dict checkpoint, got '
                                    f'{type(checkpoint).__name__}')
    src_meta = checkpoint.get('meta') if isinstance(checkpoint.get('meta'), dict) else {}
    try:
        sd = unwrap_state_dict(checkpoint)
    except CheckpointFormatError as e:
        raise CheckpointFormatError(f'{source}: {e}') from None
    detector = _detector_type(sd)
    found = infer_arch({k[len('backbone.'):]: v for k, v in sd.items()
                        if k.startswith('backbone.')}, arch_zoo)
    if found not in arch_zoo:
        raise CheckpointFormatError(
            f'{source}: the backbone is not one of SHViT {sorted(arch_zoo)} in the official '
            f'layout ({found or "no backbone.patch_embed.6 / blocks2.1.conv3 weights"})')
    if arch is not None and found != arch.lower():
        raise CheckpointFormatError(
            f'{source}: the backbone is SHViT-{found.upper()}, expected SHViT-{arch.upper()} (the '
            f"official detection release is S4); to convert it anyway pass arch='{found}' "
            f'(command line: --arch {found})')
    dropped = [k for k in sd if k.startswith(('backbone.head.', 'backbone.head_dist.'))]
    for k in dropped:
        del sd[k]
    if detector == 'retinanet':  # sigmoid: anchors x classes channels, no background
        num_classes = sd['bbox_head.retina_cls.weight'].shape[0] // (
            sd['bbox_head.retina_reg.weight'].shape[0] // 4)
    else:  # softmax: classes + background (last)
        num_classes = sd['roi_head.bbox_head.fc_cls.weight'].shape[0] - 1
    meta = dict(converted_from='MMDetection 2.x official SHViT detection checkpoint',
                source=str(source).rsplit('/', 1)[-1], detector=detector, arch=found,
                num_classes=int(num_classes))
    if dropped:
        meta['dropped_keys'] = dropped
    meta.update({f'source_{k}': src_meta[k] for k in ('mmdet_version', 'mmcv_version', 'epoch',
                                                      'iter') if isinstance(src_meta.get(k), (str, int))})
    classes = src_meta.get('CLASSES', src_meta.get('classes'))
    if isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes):
        meta['dataset_meta'] = dict(classes=tuple(classes))
        palette = src_meta.get('PALETTE')
        if isinstance(palette, (list, tuple)) and len(palette) == len(classes):
            meta['dataset_meta']['palette'] = [tuple(int(x) for x in p) for p in palette]
    return dict(state_dict=sd, meta=meta)
