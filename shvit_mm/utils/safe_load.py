"""Loading checkpoint files without executing pickled code.

``torch.load(weights_only=True)`` with a short allow-list of the plain classes MMEngine's own
checkpoints contain (see :func:`register_safe_globals`); ``.safetensors`` through safetensors; http(s)
addresses downloaded once into torch hub's cache. A file that needs anything else is refused with
:class:`UnsafeCheckpointError` and nothing in it runs; a file that is not a complete checkpoint
(empty, truncated, text, another format) is named as such by :class:`CheckpointFileError`.
"""
from __future__ import annotations

import os
import os.path as osp
import pickle
import re
import zipfile
from typing import List, Optional

import torch

__all__ = ['UnsafeCheckpointError', 'CheckpointFileError', 'safe_load', 'register_safe_globals',
           'unsafe_checkpoint_error', 'checkpoint_file_problem', 'check_checkpoint_file']


class UnsafeCheckpointError(RuntimeError):
    """The file would need arbitrary code to be unpickled; it was not loaded."""


class CheckpointFileError(ValueError):
    """The file is not a complete checkpoint (missing, empty, truncated, another format)."""


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
    check_checkpoint_file(filename)
    register_safe_globals()
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise unsafe_checkpoint_error(filename, e) from e
    except (EOFError, RuntimeError) as e:  # a record cut short or damaged, the file's head intact
        if not isinstance(e, EOFError) and not re.search('PytorchStreamReader|EOF|corrupt', str(e)):
            raise
        raise CheckpointFileError(f'Cannot load checkpoint {filename}: it is truncated or damaged '
                                  f'({(str(e) or type(e).__name__).splitlines()[0]})') from e


#: The first bytes of PyTorch's pre-1.6 (non-zip) checkpoint format: its pickled magic number.
_LEGACY_HEAD = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)[:-1]


def checkpoint_file_problem(filename: str) -> Optional[str]:
    """What keeps ``filename`` from being a complete PyTorch checkpoint, in a few words (None when
    nothing does). Reads the file's first bytes and its zip directory, not the tensors; a
    ``.safetensors`` file is left to safetensors."""
    if not osp.isfile(filename):
        return 'does not exist'
    size = osp.getsize(filename)
    if size == 0:
        return 'is empty (0 bytes)'
    if filename.endswith('.safetensors'):
        return None
    with open(filename, 'rb') as f:
        head = f.read(32)
    if zipfile.is_zipfile(filename):
        with zipfile.ZipFile(filename) as z:
            if any(n.endswith('data.pkl') for n in z.namelist()):
                return None
        return f'is a zip archive, not a PyTorch checkpoint ({size} bytes, no data.pkl in it)'
    if head.startswith(b'PK\x03\x04'):
        return (f'is a truncated PyTorch checkpoint ({size} bytes, the end of the file is missing: '
                'the write was interrupted or the copy is incomplete)')
    if head.startswith(_LEGACY_HEAD):
        return None
    try:
        text = all(c.isprintable() or c.isspace() for c in head.decode('utf-8'))
    except UnicodeDecodeError:
        text = False
    kind = 'text' if text else 'binary data of another format'
    return f'is not a PyTorch checkpoint ({kind}, {size} bytes, starting {head[:16]!r})'


def check_checkpoint_file(filename: str) -> None:
    """Raise :class:`CheckpointFileError` (one line: what the file is) unless ``filename`` is a
    complete checkpoint file; see :func:`checkpoint_file_problem`."""
    problem = checkpoint_file_problem(filename)
    if problem is not None:
        raise CheckpointFileError(f'Cannot load checkpoint {filename}: it {problem}.')


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
