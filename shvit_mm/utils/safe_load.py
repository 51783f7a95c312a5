"""Loading checkpoint files without executing pickled code.

``torch.load(weights_only=True)`` with a short allow-list of the plain classes MMEngine's own
checkpoints contain (see :func:`register_safe_globals`); ``.safetensors`` through safetensors; http(s)
addresses downloaded once into torch hub's cache. A file that needs anything else is refused with
:class:`UnsafeCheckpointError` and nothing in it runs.
"""
from __future__ import annotations

import os
import os.path as osp
import pickle
import re
from typing import List

import torch

__all__ = ['UnsafeCheckpointError', 'safe_load', 'register_safe_globals', 'unsafe_checkpoint_error']


class UnsafeCheckpointError(RuntimeError):
    """The file would need arbitrary code to be unpickled; it was not loaded."""


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
