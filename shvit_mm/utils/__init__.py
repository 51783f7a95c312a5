"""Small codebase-neutral utilities."""
from .safe_load import UnsafeCheckpointError, register_safe_globals, safe_load, unsafe_checkpoint_error

__all__ = ['UnsafeCheckpointError', 'register_safe_globals', 'safe_load', 'unsafe_checkpoint_error']
