"""Mixed-precision training on the CPU: bfloat16 autocast where the CPU has native bf16.

MMEngine's ``AmpOptimWrapper`` (fp16 with a loss scaler) needs a GPU. :class:`CPUAmpOptimWrapper`
is its CPU counterpart: on CPUs with AVX-512 BF16 or AMX (:func:`shvit_mm.utils.cpu.cpu_bf16_support`)
the forward of the chosen sub-modules runs under ``torch.autocast('cpu', dtype=torch.bfloat16)``
and hands its outputs on in fp32 (:mod:`shvit_mm.inference.precision`), so losses, target
assignment and the compiled ops between the parts keep fp32. bf16 has fp32's exponent range, so no
loss scaling is needed; parameters, gradients, optimizer state and checkpoints stay fp32. On CPUs
without native bf16 (emulated, slower than fp32) it trains in fp32 and says so in one log line.

``tools/train.py --amp`` (or ``optim_wrapper.type='AmpOptimWrapper'``) selects it on machines
without a GPU; with a GPU MMEngine's ``AmpOptimWrapper`` is used unchanged.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Sequence

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

from shvit_mm.inference.precision import (DENSE_PARTS, autocast_forward, submodules,
                                         unwrap_model, wrap_forward)
from shvit_mm.utils.cpu import cpu_bf16_support

__all__ = ['CPUAmpOptimWrapper']


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(OptimWrapper):
    """``OptimWrapper`` with bfloat16 autocast of selected sub-modules on the CPU.

    Args:
        autocast_modules (Sequence[str]): Dotted paths of the model's sub-modules whose forward
            runs under bf16 autocast; paths the model lacks are skipped. Default:
            :data:`~shvit_mm.inference.precision.DENSE_PARTS`.
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
