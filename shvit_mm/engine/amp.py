"""Mixed-precision training on the CPU: bfloat16 autocast where the CPU has native bf16.

MMEngine's ``AmpOptimWrapper`` refuses to run without a GPU (fp16 with a loss scaler is a CUDA
recipe). :class:`CPUAmpOptimWrapper` is its CPU counterpart: on CPUs with AVX-512 BF16 or AMX
(read from what the CPU reports, :func:`shvit_mm.deploy.cpu_bf16_support`) the forward pass of the
chosen sub-modules (by default :data:`DENSE_PARTS`: backbone, neck, dense heads, RoI box and mask
heads, decode heads; the convolutions and linear layers that dominate the time) runs under
``torch.autocast('cpu', dtype=torch.bfloat16)`` and their outputs are handed on in fp32, so losses,
box decoding, target assignment and the compiled ops between the parts (RoIAlign, NMS: no bf16 CPU
kernels) keep fp32. bf16 has fp32's exponent range, so no loss scaling is needed; parameters,
gradients, optimizer state and checkpoints stay fp32. On CPUs without native bf16 (where PyTorch would emulate
it, slower than fp32) it trains in fp32 and says so in one log line.

``tools/train.py --amp`` (or ``optim_wrapper.type='AmpOptimWrapper'``) selects it on machines
without a GPU; with a GPU MMEngine's fp16 ``AmpOptimWrapper`` is used unchanged.
"""
from __future__ import annotations

import functools
import logging
from contextlib import contextmanager
from typing import Any, List, Sequence

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

from shvit_mm.deploy import cpu_bf16_support

__all__ = ['CPUAmpOptimWrapper', 'DENSE_PARTS', 'autocast_forward', 'submodules', 'unwrap_model',
           'wrap_forward']

#: Sub-modules (dotted paths; ModuleLists are expanded; absent ones skipped) whose forward runs
#: in lower precision, in training (:class:`CPUAmpOptimWrapper`) and in the fast inference path.
#: Everything between them (RoI extractors, losses, box coders, NMS, mask pasting) stays fp32.
DENSE_PARTS = ('backbone', 'neck', 'rpn_head', 'bbox_head', 'roi_head.bbox_head',
               'roi_head.mask_head', 'decode_head', 'auxiliary_head', 'head')


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


def wrap_forward(module: nn.Module, fn) -> None:
    """Replace ``module.forward`` (the bound method, so direct ``.forward()`` calls are covered
    too, as in MMSegmentation's decode heads) with ``fn(original_forward, *args, **kwargs)``."""
    original = module.forward
    module.forward = functools.partial(fn, original)


def autocast_forward(device_type: str, dtype: torch.dtype, original, *args, **kwargs) -> Any:
    """``original(*args, **kwargs)`` under ``torch.autocast``, its output handed on in fp32."""
    with torch.autocast(device_type, dtype=dtype):
        out = original(*args, **kwargs)
    return _to_fp32(out)


def _to_fp32(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.float() if out.dtype in (torch.bfloat16, torch.float16) else out
    if isinstance(out, tuple) and hasattr(out, '_fields'):  # namedtuple
        return type(out)(*(_to_fp32(o) for o in out))
    if isinstance(out, (list, tuple)):
        return type(out)(_to_fp32(o) for o in out)
    if isinstance(out, dict):
        return type(out)((k, _to_fp32(v)) for k, v in out.items())
    return out


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(OptimWrapper):
    """``OptimWrapper`` with bfloat16 autocast of selected sub-modules on the CPU.

    Args:
        autocast_modules (Sequence[str]): Dotted paths of the model's sub-modules whose forward
            runs under bf16 autocast; paths the model lacks are skipped. Default:
            :data:`DENSE_PARTS` (on the demo Mask R-CNN one training step took 0.85x the time of
            ``('backbone', 'neck')`` alone and 0.76x fp32's, measured side by side on an Intel
            Xeon with AMX).
        **kwargs: As for :class:`mmengine.optim.OptimWrapper` (``optimizer``, ``clip_grad``,
            ``accumulative_counts``). ``loss_scale`` and ``dtype`` (arguments of
            ``AmpOptimWrapper``) are accepted and ignored: bf16 needs no loss scale.
    """

    def __init__(self, autocast_modules: Sequence[str] = DENSE_PARTS, **kwargs) -> None:
        kwargs.pop('loss_scale', None)
        dtype = kwargs.pop('dtype', None)
        if dtype not in (None, 'bfloat16', torch.bfloat16):
            raise ValueError(f'CPUAmpOptimWrapper trains in bfloat16 only, got dtype={dtype!r} '
                             '(fp16 mixed precision is a GPU recipe: AmpOptimWrapper)')
        super().__init__(**kwargs)
        if isinstance(autocast_modules, str):
            autocast_modules = (autocast_modules, )
        self.autocast_modules = tuple(autocast_modules)
        support = cpu_bf16_support()
        self.enabled = bool(support['fast'])
        self._active = False
        self._hooked = False
        if self.enabled:
            units = ' and '.join(k for k in ('avx512_bf16', 'amx_bf16') if support[k])
            print_log(f'Mixed precision on the CPU: bfloat16 autocast (this CPU has {units}) of '
                      'the parts listed when training starts; the rest in fp32.', logger='current')
        else:
            print_log('Mixed precision requested, but this CPU has neither AVX-512 BF16 nor AMX '
                      '(bf16 would be emulated, slower than fp32): training in fp32.',
                      logger='current', level=logging.WARNING)

    # -- the autocast region around each chosen sub-module's forward -----------------------------
    def _autocast_forward(self, original, *args, **kwargs) -> Any:
        if not self._active:
            return original(*args, **kwargs)
        return autocast_forward('cpu', torch.bfloat16, original, *args, **kwargs)

    def _install(self, model: nn.Module) -> None:
        inner = unwrap_model(model)
        found = []
        for name in self.autocast_modules:
            subs = submodules(inner, name)
            for sub in subs:  # the bound forward: MMSeg's heads call self.forward() directly
                wrap_forward(sub, self._autocast_forward)
            if subs:
                found.append(name)
        if self.enabled and not found:
            raise ValueError(f'CPUAmpOptimWrapper: the model ({type(inner).__name__}) has none of '
                             f'autocast_modules={self.autocast_modules}')
        if self.enabled:
            print_log(f'bfloat16 autocast for: {", ".join(found)}.', logger='current')
        self._hooked = True

    @contextmanager
    def optim_context(self, model: nn.Module):
        if self.enabled and not self._hooked:
            self._install(model)
        with super().optim_context(model):
            self._active = self.enabled
            try:
                yield
            finally:
                self._active = False
