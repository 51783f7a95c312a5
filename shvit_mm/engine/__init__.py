"""Training-loop components, registered in MMEngine's root registries: crash-safe checkpoints,
the finite-loss guard, CPU mixed precision and DDP on CPUs (gloo)."""
from .amp import CPUAmpOptimWrapper
from .distributed import CPUDistributedDataParallel
from .hooks import (FiniteLossHook, RankZeroBuffersHook, SafeCheckpointHook,
                    atomic_write_text)

__all__ = ['CPUAmpOptimWrapper', 'CPUDistributedDataParallel', 'SafeCheckpointHook',
           'FiniteLossHook', 'RankZeroBuffersHook', 'atomic_write_text']
