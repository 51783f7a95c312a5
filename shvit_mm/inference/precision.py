"""Mixed precision for whole models, shared by CPU AMP training and the fast inference path, and
the one walker over a model's output tree.

The dense parts (:data:`DENSE_PARTS`) run under ``torch.autocast`` and hand their outputs on in
fp32, so whatever lies between them (RoIAlign, NMS, box coders, losses, mask pasting) stays fp32.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn

from shvit_mm.utils.cpu import cpu_bf16_support

__all__ = ['DENSE_PARTS', 'submodules', 'unwrap_model', 'wrap_forward', 'autocast_forward',
           'mixed_precision_dtype', 'resolve_dtype', 'map_tensors', 'flatten_outputs',
           'compare_outputs']

#: Sub-modules (dotted paths; ModuleLists are expanded; absent ones skipped) whose forward runs
#: in lower precision: the convolutions and linear layers that dominate the time.
DENSE_PARTS = ('backbone', 'neck', 'rpn_head', 'bbox_head', 'roi_head.bbox_head',
               'roi_head.mask_head', 'decode_head', 'auxiliary_head', 'head')

_DTYPES = {'fp32': torch.float32, 'float32': torch.float32, 'float': torch.float32,
           'bf16': torch.bfloat16, 'bfloat16': torch.bfloat16,
           'fp16': torch.float16, 'float16': torch.float16, 'half': torch.float16}


def resolve_dtype(dtype: Union[None, str, torch.dtype]) -> Optional[torch.dtype]:
    """``'bf16'``/``'fp16'``/``'fp32'``/a ``torch.dtype``/None -> ``torch.dtype`` or None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype).lower() not in _DTYPES:
        raise ValueError(f'Unknown dtype {dtype!r}; use one of fp32, bf16, fp16 (or a torch.dtype)')
    return _DTYPES[str(dtype).lower()]


def mixed_precision_dtype(device: torch.device) -> Optional[torch.dtype]:
    """bfloat16 on a CPU with AVX-512 BF16 or AMX, float16 on CUDA, None (stay fp32) otherwise."""
    if device.type == 'cuda':
        return torch.float16
    if device.type == 'cpu' and cpu_bf16_support()['fast']:
        return torch.bfloat16
    return None


def submodules(model: nn.Module, path: str) -> List[nn.Module]:
    """The sub-module at dotted ``path`` (a ModuleList expanded to its members); [] if absent."""
    obj: Any = model
    for part in path.split('.'):
        obj = getattr(obj, part, None)
        if obj is None:
            return []
    if isinstance(obj, nn.ModuleList):
        return [m for m in obj if isinstance(m, nn.Module)]
    return [obj] if isinstance(obj, nn.Module) else []


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside a DDP / MMDistributedDataParallel wrapper (the model itself otherwise)."""
    return getattr(model, 'module', model)


def wrap_forward(module: nn.Module, fn: Callable) -> None:
    """Replace ``module.forward`` (the bound method, so direct ``.forward()`` calls are covered
    too, as in MMSegmentation's decode heads) with ``fn(original_forward, *args, **kwargs)``."""
    module.forward = functools.partial(fn, module.forward)


def map_tensors(obj: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """``obj`` with ``fn`` applied to every tensor in its (nested) tuples, lists and dicts."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, tuple) and hasattr(obj, '_fields'):  # namedtuple
        return type(obj)(*(map_tensors(o, fn) for o in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_tensors(o, fn) for o in obj)
    if isinstance(obj, dict):
        return type(obj)((k, map_tensors(v, fn)) for k, v in obj.items())
    return obj


def flatten_outputs(obj: Any) -> Tuple[torch.Tensor, ...]:
    """All tensors of a (nested) output, in order."""
    found: List[torch.Tensor] = []
    map_tensors(obj, found.append)
    return tuple(found)


def _to_fp32(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def autocast_forward(device_type: str, dtype: torch.dtype, original, *args, **kwargs) -> Any:
    """``original(*args, **kwargs)`` under ``torch.autocast``, its output handed on in fp32."""
    with torch.autocast(device_type, dtype=dtype):
        out = original(*args, **kwargs)
    return map_tensors(out, _to_fp32)


@torch.no_grad()
def compare_outputs(reference: Any, candidate: Any) -> Dict[str, float]:
    """Compare two model outputs tensor by tensor.

    Returns ``cosine`` (the smallest cosine similarity over the outputs, each flattened),
    ``max_abs`` (largest absolute difference) and ``max_rel`` (largest absolute difference divided
    by the largest magnitude of the reference output it belongs to).
    """
    ref, cand = flatten_outputs(reference), flatten_outputs(candidate)
    if len(ref) != len(cand):
        raise ValueError(f'outputs differ in number: {len(ref)} reference vs {len(cand)} candidate')
    if not ref:
        raise ValueError('no tensors to compare in the outputs')
    cos, max_abs, max_rel = 1.0, 0.0, 0.0
    for r, c in zip(ref, cand):
        if tuple(r.shape) != tuple(c.shape):
            raise ValueError(f'output shapes differ: {tuple(r.shape)} vs {tuple(c.shape)}')
        r64 = r.detach().to('cpu', torch.float64).flatten()
        c64 = c.detach().to('cpu', torch.float64).flatten()
        denom = (r64.norm() * c64.norm()).item()
        cos = min(cos, (r64 @ c64).item() / denom if denom > 0 else float(torch.equal(r64, c64)))
        diff, scale = (r64 - c64).abs().max().item(), r64.abs().max().item()
        max_abs = max(max_abs, diff)
        max_rel = max(max_rel, diff / scale if scale > 0 else diff)
    return dict(cosine=cos, max_abs=max_abs, max_rel=max_rel)
