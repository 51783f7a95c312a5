"""Mixed-precision training on the CPU: bfloat16 autocast where the CPU has native bf16.

MMEngine's ``AmpOptimWrapper`` refuses to run without a GPU (fp16 with a loss scaler is a CUDA
recipe). :class:`CPUAmpOptimWrapper` is its CPU counterpart: on CPUs with AVX-512 BF16 or AMX
(read from what the CPU reports, :func:`shvit_mm.deploy.cpu_bf16_support`) the forward pass of the
chosen sub-modules (by default ``backbone`` and ``neck``: the convolutions that dominate the time)
runs under ``torch.autocast('cpu', dtype=torch.bfloat16)`` and their outputs are handed on in fp32,
so heads, losses, box decoding and MMCV's compiled ops (RoIAlign, NMS: no bf16 CPU kernels) keep
fp32. bf16 has fp32's exponent range, so no loss scaling is needed; parameters, gradients,
optimizer state and checkpoints stay fp32. On CPUs without native bf16 (where PyTorch would emulate
it, slower than fp32) it trains in fp32 and says so in one log line.

``tools/train.py --amp`` (or ``optim_wrapper.type='AmpOptimWrapper'``) selects it on machines
without a GPU; with a GPU MMEngine's fp16 ``AmpOptimWrapper`` is used unchanged.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Dict, Sequence

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

from shvit_mm.deploy import cpu_bf16_support

__all__ = ['CPUAmpOptimWrapper']


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
        autocast_modules (Sequence[str]): Attribute names of the model's sub-modules whose forward
            runs under bf16 autocast. Default: ``('backbone', 'neck')``.
        **kwargs: As for :class:`mmengine.optim.OptimWrapper` (``optimizer``, ``clip_grad``,
            ``accumulative_counts``). ``loss_scale`` and ``dtype`` (arguments of
            ``AmpOptimWrapper``) are accepted and ignored: bf16 needs no loss scale.
    """

    def __init__(self, autocast_modules: Sequence[str] = ('backbone', 'neck'), **kwargs) -> None:
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
        self._contexts: Dict[int, list] = {}
        if self.enabled:
            units = ' and '.join(k for k in ('avx512_bf16', 'amx_bf16') if support[k])
            print_log(f'Mixed precision on the CPU: bfloat16 autocast for '
                      f'{", ".join(self.autocast_modules)} (this CPU has {units}); the rest in fp32.',
                      logger='current')
        else:
            print_log('Mixed precision requested, but this CPU has neither AVX-512 BF16 nor AMX '
                      '(bf16 would be emulated, slower than fp32): training in fp32.',
                      logger='current', level=logging.WARNING)

    # -- hooks that open / close the autocast region around each chosen sub-module -------------
    def _pre_hook(self, module: nn.Module, args) -> None:
        if not self._active:
            return
        ctx = torch.autocast('cpu', dtype=torch.bfloat16)
        ctx.__enter__()
        self._contexts.setdefault(id(module), []).append(ctx)

    def _post_hook(self, module: nn.Module, args, output) -> Any:
        stack = self._contexts.get(id(module))
        if not stack:
            return None
        stack.pop().__exit__(None, None, None)
        return _to_fp32(output)

    def _install(self, model: nn.Module) -> None:
        inner = getattr(model, 'module', model)  # DDP wrappers
        found = []
        for name in self.autocast_modules:
            sub = getattr(inner, name, None)
            if isinstance(sub, nn.Module):
                sub.register_forward_pre_hook(self._pre_hook)
                sub.register_forward_hook(self._post_hook, always_call=True)
                found.append(name)
        if self.enabled and not found:
            raise ValueError(f'CPUAmpOptimWrapper: the model ({type(inner).__name__}) has none of '
                             f'autocast_modules={self.autocast_modules}')
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
