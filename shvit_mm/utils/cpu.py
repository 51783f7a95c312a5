"""What the CPU reports about itself: feature flags, model name and native bfloat16 support."""
from __future__ import annotations

import platform
from typing import Dict

import torch

__all__ = ['cpu_flags', 'cpu_model', 'cpu_bf16_support']


def _cpuinfo_field(name: str) -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith(name):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return ''


def cpu_flags() -> set:
    """The CPU feature flags the kernel reports (``/proc/cpuinfo``); empty where unavailable."""
    return set(_cpuinfo_field('flags').split())


def cpu_model() -> str:
    """The CPU's model name, e.g. ``'AMD EPYC 7B13'``."""
    return _cpuinfo_field('model name') or platform.processor() or 'unknown CPU'


def cpu_bf16_support() -> Dict[str, bool]:
    """Which native bfloat16 instructions this CPU has.

    Returns ``avx512_bf16``, ``amx_bf16`` and ``fast`` (either of them: oneDNN then runs bf16 at
    least as fast as fp32; without them PyTorch emulates bf16, slower than fp32).
    """
    flags = cpu_flags()
    cpu = getattr(torch, 'cpu', None)  # PyTorch's own probes cover machines without /proc

    def probe(name: str) -> bool:
        fn = getattr(cpu, name, None)
        return bool(fn is not None and fn())

    avx512_bf16 = 'avx512_bf16' in flags or probe('_is_avx512_bf16_supported')
    amx = 'amx_bf16' in flags or probe('_is_amx_tile_supported')
    return dict(avx512_bf16=avx512_bf16, amx_bf16=amx, fast=avx512_bf16 or amx)
