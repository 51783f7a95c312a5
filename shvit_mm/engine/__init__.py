"""Training-loop components: crash-safe checkpoints and the finite-loss guard."""
from .hooks import FiniteLossHook, SafeCheckpointHook, atomic_write_text

__all__ = ['SafeCheckpointHook', 'FiniteLossHook', 'atomic_write_text']
