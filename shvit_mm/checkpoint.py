"""Checkpoint formats, safe loading and conversion for SHViT.

Every checkpoint a user may hold is turned into the official release layout (``patch_embed.*``,
``blocks{1,2,3}.*``, ``head.*``), which is also the layout of :class:`~shvit_mm.models.SHViT`:

* official classification release ``shvit_s{1..4}.pth``: ``{'model': state_dict}``;
* timm hub weights ``shvit_s{1..4}.in1k`` (``.safetensors`` or ``.pth``): ``stages.{i}.downsample.*``
  and ``stages.{i}.blocks.*``;
* a plain state dict, optionally wrapped in ``state_dict`` and/or prefixed by ``module.``;
* MMDetection / MMPretrain checkpoints whose backbone keys carry ``backbone.``.

Loading never executes pickled code: ``torch.load(weights_only=True)`` with a short allow-list of the
plain classes MMEngine's own checkpoints contain (see :func:`register_safe_globals`). A file that needs
anything else is refused with :class:`UnsafeCheckpointError`.
"""
from __future__ import annotations

import logging
import os
import os.path as osp
import pickle
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch

__all__ = [
    'CheckpointFormatError', 'UnsafeCheckpointError', 'safe_load', 'register_safe_globals',
    'unsafe_checkpoint_error',
    'to_official_layout', 'timm_to_official', 'official_to_timm', 'infer_arch',
    'load_backbone_checkpoint',
]


class CheckpointFormatError(ValueError):
    """The file is readable but does not hold weights this model can use."""


class UnsafeCheckpointError(RuntimeError):
    """The file would need arbitrary code to be unpickled; it was not loaded."""


# ---------------------------------------------------------------------------------------------
# Safe reading
# ---------------------------------------------------------------------------------------------
_SAFE_GLOBALS_REGISTERED = False


def _safe_global_candidates() -> List[object]:
    """Plain-data classes that MMEngine / MMDetection checkpoints pickle besides tensors.

    Each is a data container (numpy arrays and dtypes, MMEngine's HistoryBuffer of logged scalars,
    ConfigDict); none runs code on unpickling beyond restoring its own attributes.
    """
    import numpy as np
    found: List[object] = []
    try:  # numpy >= 1.25 keeps the array reconstructor in numpy.core.multiarray / numpy._core
        from numpy.core.multiarray import _reconstruct, scalar
    except Exception:  # pragma: no cover - numpy layout differs
        _reconstruct = scalar = None
    found += [x for x in (_reconstruct, scalar) if x is not None]
    try:
        from numpy._core.multiarray import _reconstruct as _r2, scalar as _s2
        found += [_r2, _s2]
    except Exception:  # pragma: no cover
        pass
    found += [np.ndarray, np.dtype]
    dtypes_mod = getattr(np, 'dtypes', None)
    if dtypes_mod is not None:
        for name in dir(dtypes_mod):
            obj = getattr(dtypes_mod, name)
            if isinstance(obj, type) and name.endswith('DType'):
                found.append(obj)
    try:
        from mmengine.logging.history_buffer import HistoryBuffer
        found.append(HistoryBuffer)
    except Exception:  # pragma: no cover
        pass
    try:
        from mmengine.config import ConfigDict
        found.append(ConfigDict)
    except Exception:  # pragma: no cover
        pass
    import collections
    found += [collections.OrderedDict, collections.defaultdict]
    # HistoryBuffer pickles its statistics as getattr(HistoryBuffer, 'mean') etc. getattr itself
    # would let a file reach any attribute, so resolve that global to a function that only
    # returns HistoryBuffer's own statistics methods.
    found += [(_history_buffer_getattr, 'builtins.getattr'),
              (_history_buffer_getattr, '__builtin__.getattr')]
    return found


def _history_buffer_getattr(obj, name):
    from mmengine.logging.history_buffer import HistoryBuffer
    allowed = set(getattr(HistoryBuffer, '_statistics_methods', {})) | {'min', 'max', 'mean', 'current'}
    if obj is HistoryBuffer and name in allowed:
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'Unsupported global: getattr({getattr(obj, "__name__", type(obj).__name__)}, {name!r}) '
        'is not allowed in a checkpoint')


def register_safe_globals() -> None:
    """Allow-list (once per process) the plain classes MMEngine's checkpoints need.

    This keeps ``weights_only=True`` loading on for every file: only these data classes are added to
    the unpickler's allow-list; any other global in a file is still refused by PyTorch.
    """
    global _SAFE_GLOBALS_REGISTERED
    if _SAFE_GLOBALS_REGISTERED:
        return
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is not None:
        add(_safe_global_candidates())
    _SAFE_GLOBALS_REGISTERED = True


def _download(url: str) -> str:
    """Return a local copy of ``url`` (cached under torch hub's checkpoints directory)."""
    cache_dir = osp.join(torch.hub.get_dir(), 'checkpoints')
    dst = osp.join(cache_dir, osp.basename(url.split('?')[0]))
    if osp.isfile(dst):
        return dst
    os.makedirs(cache_dir, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, dst, progress=False)
    except Exception as e:  # network errors come in many types
        raise RuntimeError(
            f'Could not download checkpoint {url} ({type(e).__name__}: {e}). Download it on a machine '
            f'with internet access, then put it at {dst} or pass its local path as the checkpoint.'
        ) from e
    return dst


def safe_load(filename: str, map_location='cpu') -> dict:
    """Load a checkpoint without executing pickled code.

    Accepts a local path or an http(s) URL; ``.safetensors`` files are read with safetensors.
    Raises FileNotFoundError naming the path, UnsafeCheckpointError for pickles that need code.
    """
    filename = str(filename)
    if filename.startswith(('http://', 'https://')):
        filename = _download(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'Checkpoint file not found: {filename}')
    if filename.endswith('.safetensors'):
        from safetensors.torch import load_file
        device = map_location if isinstance(map_location, str) else 'cpu'
        return load_file(filename, device=device)
    register_safe_globals()
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise unsafe_checkpoint_error(filename, e) from e


def unsafe_checkpoint_error(filename: str, error: Exception) -> UnsafeCheckpointError:
    """The error for a file that PyTorch's weights_only unpickler refused."""
    return UnsafeCheckpointError(
        f'Refused to load {filename}: it contains pickled objects that are not plain weights, '
        f'and unpickling them could execute code ({_unpickler_reason(error)}). Re-save only the '
        'tensors (e.g. torch.save(model.state_dict(), path)) from a trusted source.')


def _unpickler_reason(error: Exception) -> str:
    """The one informative line of PyTorch's weights_only error (which global was refused)."""
    text = str(error)
    m = re.search(r'(Unsupported global: [^\n]*?)(?: was not an allowed global.*)?$', text, re.M)
    if m:
        return m.group(1).strip()
    m = re.search(r'WeightsUnpickler error: ([^\n]*)', text)
    return (m.group(1) if m else text.strip().splitlines()[-1]).strip()


# ---------------------------------------------------------------------------------------------
# Layouts
# ---------------------------------------------------------------------------------------------
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


def _unwrap(obj) -> Dict[str, torch.Tensor]:
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
    sd = _unwrap(checkpoint)
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


def infer_arch(state_dict: Dict[str, torch.Tensor]) -> Optional[str]:
    """Name the SHViT variant (``'s1'``..``'s4'``) an official-layout state dict holds, if any."""
    from shvit_mm.models.backbones.shvit import SHViT
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
    for name, arch in SHViT.arch_zoo.items():
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
    if getattr(model, 'fused', False):
        raise RuntimeError('Load checkpoints before switch_to_deploy(): the fused model has other keys')
    sd, head = to_official_layout(safe_load(filename), prefix=prefix)
    ckpt_arch = infer_arch(sd)
    model_arch = getattr(model, 'arch_name', None)
    if ckpt_arch is not None and model_arch not in (None, 'custom') and ckpt_arch != model_arch:
        raise CheckpointFormatError(
            f'{filename} holds SHViT-{ckpt_arch.upper()} weights but the model is SHViT-'
            f'{model_arch.upper()}: set arch={ckpt_arch!r} or use the {model_arch.upper()} checkpoint')
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


# =============================================================================================
# Official detection release (MMDetection 2.x) -> MMDetection 3.x checkpoints
# =============================================================================================
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

__all__ += ['detect_detector_type', 'official_detector_to_mmdet3', 'convert_official_detector']

SHVIT_ARCHS = ('s1', 's2', 's3', 's4')

#: Modules of each detector as our configs build them (module names, before ``.weight/.bias``).
_DETECTOR_LAYOUTS = {
    'retinanet': dict(
        config='configs/retinanet/shvit_{arch}.py',
        num_extra_trans_convs=1, num_fpn_convs=4,  # 3 levels + 1 stride-2 conv 'on_input'
        heads=[f'bbox_head.{b}_convs.{i}.conv' for b in ('cls', 'reg') for i in range(4)]
        + ['bbox_head.retina_cls', 'bbox_head.retina_reg']),
    'mask_rcnn': dict(
        config='configs/mask_rcnn/shvit_{arch}.py',
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
    from shvit_mm.models.backbones.shvit import SHViT
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
        sd = _unwrap(checkpoint)
    except CheckpointFormatError as e:
        raise CheckpointFormatError(f'{source}: {e}') from None
    sd = OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v)
                     for k, v in sd.items() if isinstance(v, torch.Tensor))
    detector = detect_detector_type(sd)

    backbone = OrderedDict((k[len('backbone.'):], v) for k, v in sd.items()
                           if k.startswith('backbone.'))
    found_arch = infer_arch(backbone)
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
            f'{_DETECTOR_LAYOUTS[detector]["config"].format(arch=found_arch)}')

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
        parts = [f'{source} does not match the SHViT-{found_arch.upper()} {detector} of {config}:']
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
            f'{source}: the neck has {width} output channels; {config} (like the official release) '
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
