"""Training-loop components, registered in MMEngine's root registries: crash-safe checkpoints,
the finite-loss guard, the check of loaded weights, CPU mixed precision and DDP on CPUs (gloo)."""
from .amp import CPUAmpOptimWrapper
from .distributed import CPUDistributedDataParallel
from .hooks import (FiniteLossHook, RankZeroBuffersHook, SafeCheckpointHook,
                    atomic_write_text)
from .weights_check import WeightsCheckHook, WeightsMismatchError

__all__ = ['CPUAmpOptimWrapper', 'CPUDistributedDataParallel', 'SafeCheckpointHook',
           'FiniteLossHook', 'RankZeroBuffersHook', 'atomic_write_text',
           'WeightsCheckHook', 'WeightsMismatchError']
