"""shvit_mm: SHViT (Single-Head Vision Transformer, CVPR 2024) for MMDetection and MMPretrain.

``custom_imports = dict(imports=['shvit_mm'], allow_failed_imports=False)`` in a config registers
every component of this package.
"""
from .checkpoint import register_safe_globals
from . import datasets, engine, models  # noqa: F401  (register their components)

__version__ = '0.1.0'

# MMEngine's own checkpoints (resume, load_from) hold a few plain data classes besides tensors;
# allow-list exactly those so PyTorch's weights_only loading can stay on.
register_safe_globals()
