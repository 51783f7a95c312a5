"""Training-loop components: crash-safe checkpoints, the finite-loss guard and CPU mixed
precision; the whole-model fast inference path (registered in MMEngine's root registries)."""
from .amp import CPUAmpOptimWrapper
from .fast_inference import FastInferenceHook, enable_fast_inference
from .hooks import FiniteLossHook, SafeCheckpointHook, atomic_write_text

__all__ = ['CPUAmpOptimWrapper', 'FastInferenceHook', 'enable_fast_inference', 'SafeCheckpointHook',
           'FiniteLossHook', 'atomic_write_text']
