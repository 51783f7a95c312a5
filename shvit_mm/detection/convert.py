"""Official SHViT detection release (MMDetection 2.x) -> MMDetection 3.x checkpoints.

The library side of ``tools/model_converters/official_det_to_mmdet3.py``.
"""
from __future__ import annotations

import os
import os.path as osp
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch

from shvit_mm.models.backbones import SHViT
from shvit_mm.models.backbones.shvit_weights import (CheckpointFormatError, infer_arch,
                                                     unwrap_state_dict)
from shvit_mm.utils.safe_load import safe_load

# The official SHViT detection code trained RetinaNet and Mask R-CNN with MMDetection 2.25. Its
# checkpoints hold ``{'state_dict': ..., 'meta': {...}}`` with keys ``backbone.*`` (the official
# backbone layout, which is our layout), ``neck.*`` (the official FPN-with-transposed-convs, whose
# module names :class:`~shvit_mm.models.necks.SHViTFPN` reproduces) and the head keys.
#
# What changed between MMDetection 2.25 and 3.3 for these detectors, checked against both sources:
#
# * Parameter names: nothing. ``RetinaHead`` (``cls_convs.{i}.conv``, ``reg_convs.{i}.conv``,
#   ``retina_cls``, ``retina_reg``), ``RPNHead`` (``rpn_conv``, ``rpn_cls``, ``rpn_reg`` with one
#   conv), ``Shared2FCBBoxHead`` (``shared_fcs.{0,1}``, ``fc_cls``, ``fc_reg``) and ``FCNMaskHead``
#   (``convs.{i}.conv``, ``upsample``, ``conv_logits``) keep their 2.x names and shapes.
#   (MMDetection's ``upgrade_model_version.py`` only concerns checkpoints older than v2.5.)
# * Output semantics: unchanged since v2.0. RetinaNet and RPN use sigmoid scores without a
#   background channel, ``fc_cls`` keeps background as the last of ``num_classes + 1`` classes,
#   ``fc_reg`` / ``conv_logits`` are class-specific in the same order, the anchor generator keeps
#   ``center_offset=0`` and the same base anchors, and ``DeltaXYWHBBoxCoder`` decodes identically.
# * Data side (configs, not weights): MMDetection 3.x normalises and pads in the model's
#   ``data_preprocessor`` (ImageNet mean/std, BGR->RGB, pad to 32 with zeros after normalising),
#   which is what the 2.x pipeline's Normalize + Pad did.
# * Checkpoint meta: 2.x stores the class names as ``meta['CLASSES']``; 3.x reads
#   ``meta['dataset_meta']['classes']``. The converter moves them.
#
# So the weights carry over one to one; the converter's work is to check that the file really is a
# SHViT RetinaNet / Mask R-CNN of the expected layout and to write a clean 3.x checkpoint.

__all__ = ['detect_detector_type', 'official_detector_to_mmdet3', 'convert_official_detector']

SHVIT_ARCHS = ('s1', 's2', 's3', 's4')

#: Modules of each detector as our configs build them (module names, before ``.weight/.bias``).
_DETECTOR_LAYOUTS = {
    'retinanet': dict(
        config='retinanet/shvit_{arch}.py',
        num_extra_trans_convs=1, num_fpn_convs=4,  # 3 levels + 1 stride-2 conv 'on_input'
        heads=[f'bbox_head.{b}_convs.{i}.conv' for b in ('cls', 'reg') for i in range(4)]
        + ['bbox_head.retina_cls', 'bbox_head.retina_reg']),
    'mask_rcnn': dict(
        config='mask_rcnn/shvit_{arch}.py',
        num_extra_trans_convs=2, num_fpn_convs=3,
        heads=['rpn_head.rpn_conv', 'rpn_head.rpn_cls', 'rpn_head.rpn_reg',
               'roi_head.bbox_head.shared_fcs.0', 'roi_head.bbox_head.shared_fcs.1',
               'roi_head.bbox_head.fc_cls', 'roi_head.bbox_head.fc_reg']
        + [f'roi_head.mask_head.convs.{i}.conv' for i in range(4)]
        + ['roi_head.mask_head.upsample', 'roi_head.mask_head.conv_logits']),
}
_DETECTOR_NECK_CHANNELS = 256

#: Renames from MMDetection 2.x to 3.x keys for these detectors: none are needed (see above); the
#: table is where one would go.
_MMDET2_TO_MMDET3_RENAMES: List[Tuple[str, str]] = []


def _expected_detector_keys(detector: str, arch: str) -> set:
    """Every state-dict key of our ``detector`` config built with SHViT-``arch``."""
    layout = _DETECTOR_LAYOUTS[detector]
    keys = {f'backbone.{k}' for k in SHViT(arch=arch).state_dict()}
    modules = [f'neck.lateral_convs.{i}.conv' for i in range(SHViT.num_stages)]
    modules += [f'neck.fpn_convs.{i}.conv' for i in range(layout['num_fpn_convs'])]
    for name in ('extra_trans_convs', 'extra_fpn_convs'):
        modules += [f'neck.{name}.{i}.conv' for i in range(layout['num_extra_trans_convs'])]
    modules += layout['heads']
    keys.update(f'{m}.{p}' for m in modules for p in ('weight', 'bias'))
    return keys


def _list_keys(keys: List[str], limit: int = 30) -> str:
    keys = sorted(keys)
    more = f' ... and {len(keys) - limit} more' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def detect_detector_type(state_dict: Dict[str, torch.Tensor]) -> str:
    """``'retinanet'`` or ``'mask_rcnn'`` from a detector state dict's head keys."""
    prefixes = sorted({k.split('.', 1)[0] for k in state_dict})
    if 'rpn_head' in prefixes and 'roi_head' in prefixes:
        return 'mask_rcnn'
    if 'bbox_head.retina_cls.weight' in state_dict:
        return 'retinanet'
    if prefixes == ['backbone'] or (not {'neck', 'bbox_head', 'rpn_head'} & set(prefixes)
                                    and any(k.startswith(('patch_embed.', 'blocks1.'))
                                            for k in state_dict)):
        raise CheckpointFormatError(
            'This is a backbone-only (classification) checkpoint, not a detector: use it as the '
            "backbone's init_cfg=dict(type='Pretrained', checkpoint=...) instead of converting it")
    raise CheckpointFormatError(
        'Not a RetinaNet or Mask R-CNN detector checkpoint: expected keys under backbone./neck./'
        f'bbox_head. (RetinaNet) or rpn_head./roi_head. (Mask R-CNN), found prefixes {prefixes}')


def official_detector_to_mmdet3(checkpoint, arch: Optional[str] = 's4',
                                source: str = '<checkpoint>') -> dict:
    """Convert an official MMDetection 2.x SHViT RetinaNet / Mask R-CNN checkpoint (as loaded).

    Args:
        checkpoint: the loaded file: ``{'state_dict': ..., 'meta': ...}`` or a bare state dict.
        arch: SHViT variant the backbone must be (``'s1'``..``'s4'``; the official release is
            ``'s4'``), or None to accept any of them.
        source: name of the file, for messages.

    Returns:
        ``{'state_dict': OrderedDict, 'meta': dict}`` loadable by ``configs/<detector>/shvit_<arch>.py``
        with nothing missing or unexpected. ``meta`` holds ``dataset_meta`` (class names when the
        source had them), ``detector``, ``arch``, ``config``, ``num_classes`` and provenance.

    Raises:
        CheckpointFormatError: not a detector checkpoint, backbone not SHViT or another variant than
            ``arch``, or keys that the target model does not have / lacks (listed by name).
    """
    if not isinstance(checkpoint, dict):
        raise CheckpointFormatError(f'{source}: expected a dict checkpoint, got '
                                    f'{type(checkpoint).__name__}')
    src_meta = checkpoint.get('meta') if isinstance(checkpoint.get('meta'), dict) else {}
    try:
        sd = unwrap_state_dict(checkpoint)
    except CheckpointFormatError as e:
        raise CheckpointFormatError(f'{source}: {e}') from None
    sd = OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v)
                     for k, v in sd.items() if isinstance(v, torch.Tensor))
    detector = detect_detector_type(sd)

    backbone = OrderedDict((k[len('backbone.'):], v) for k, v in sd.items()
                           if k.startswith('backbone.'))
    found_arch = infer_arch(backbone, SHViT.arch_zoo)
    if found_arch is None:
        raise CheckpointFormatError(
            f'{source}: the backbone is not SHViT in the official layout (no backbone.patch_embed.6 '
            '/ backbone.blocks2.1.conv3 / backbone.blocks3.1.conv3 weights)')
    if found_arch not in SHVIT_ARCHS:
        raise CheckpointFormatError(f'{source}: backbone is a non-standard SHViT {found_arch}; '
                                    f'only {list(SHVIT_ARCHS)} have configs')
    if arch is not None and found_arch != arch.lower():
        raise CheckpointFormatError(
            f'{source}: the backbone is SHViT-{found_arch.upper()}, expected SHViT-{arch.upper()} '
            f'(the official detection release is S4). To convert it anyway pass '
            f"arch='{found_arch}' (CLI: --arch {found_arch}) and use "
            f'configs/{_DETECTOR_LAYOUTS[detector]["config"].format(arch=found_arch)}')

    # The backbone's ImageNet classifier, if the training code kept it, is not part of a detector.
    dropped = [k for k in sd if k.startswith(('backbone.head.', 'backbone.head_dist.'))]
    for k in dropped:
        sd.pop(k)
    for pattern, repl in _MMDET2_TO_MMDET3_RENAMES:
        sd = OrderedDict((re.sub(pattern, repl, k), v) for k, v in sd.items())

    expected = _expected_detector_keys(detector, found_arch)
    unknown = [k for k in sd if k not in expected]
    missing = [k for k in expected if k not in sd]
    layout = _DETECTOR_LAYOUTS[detector]
    config = layout['config'].format(arch=found_arch)
    if unknown or missing:
        parts = [f'{source} does not match the SHViT-{found_arch.upper()} {detector} of configs/{config}:']
        if unknown:
            parts.append(f'{len(unknown)} unknown key(s): {_list_keys(unknown)}')
        if missing:
            parts.append(f'{len(missing)} missing key(s): {_list_keys(missing)}')
        parts.append(f'(expected neck: num_extra_trans_convs={layout["num_extra_trans_convs"]}, '
                     f'{layout["num_fpn_convs"]} fpn_convs)')
        raise CheckpointFormatError(' '.join(parts))
    width = sd['neck.lateral_convs.0.conv.weight'].shape[0]
    if width != _DETECTOR_NECK_CHANNELS:
        raise CheckpointFormatError(
            f'{source}: the neck has {width} output channels; configs/{config} (like the official release) '
            f'uses {_DETECTOR_NECK_CHANNELS}')

    if detector == 'retinanet':  # sigmoid: anchors x classes channels, no background
        num_anchors = sd['bbox_head.retina_reg.weight'].shape[0] // 4
        num_classes = sd['bbox_head.retina_cls.weight'].shape[0] // num_anchors
    else:  # softmax: classes + background (last)
        num_classes = sd['roi_head.bbox_head.fc_cls.weight'].shape[0] - 1

    meta = dict(
        converted_from='MMDetection 2.x official SHViT detection checkpoint',
        source=osp.basename(str(source)), detector=detector, arch=found_arch, config=config,
        num_classes=int(num_classes))
    if dropped:
        meta['dropped_keys'] = list(dropped)
    for k in ('mmdet_version', 'mmcv_version', 'epoch', 'iter'):
        if isinstance(src_meta.get(k), (str, int)):
            meta[f'source_{k}'] = src_meta[k]
    classes = src_meta.get('CLASSES', src_meta.get('classes'))
    if isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes):
        meta['dataset_meta'] = dict(classes=tuple(classes))
        palette = src_meta.get('PALETTE')
        if isinstance(palette, (list, tuple)) and len(palette) == len(classes):
            meta['dataset_meta']['palette'] = [tuple(int(x) for x in p) for p in palette]
    return dict(state_dict=sd, meta=meta)


def convert_official_detector(src: str, dst: str, arch: Optional[str] = 's4') -> dict:
    """Convert the official MMDetection 2.x detection checkpoint ``src`` and save it to ``dst``.

    Loads ``src`` safely (:func:`safe_load`), converts it with :func:`official_detector_to_mmdet3`
    and writes ``{'state_dict': ..., 'meta': ...}`` with ``torch.save``. Returns the meta dict.
    """
    converted = official_detector_to_mmdet3(safe_load(src), arch=arch, source=str(src))
    dst_dir = osp.dirname(osp.abspath(dst))
    os.makedirs(dst_dir, exist_ok=True)
    torch.save(converted, dst)
    return converted['meta']
