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
        raise UnsafeCheckpointError(
            f'Refused to load {filename}: it contains pickled objects that are not plain weights, '
            f'and unpickling them could execute code ({_unpickler_reason(e)}). Re-save only the '
            'tensors (e.g. torch.save(model.state_dict(), path)) from a trusted source.') from e


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
