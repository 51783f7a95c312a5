"""Training-loop components: crash-safe checkpoints, the finite-loss guard and CPU mixed
precision (registered in MMEngine's root registries)."""
from .amp import CPUAmpOptimWrapper
from .hooks import FiniteLossHook, SafeCheckpointHook, atomic_write_text

__all__ = ['CPUAmpOptimWrapper', 'SafeCheckpointHook', 'FiniteLossHook', 'atomic_write_text']
