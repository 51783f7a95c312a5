"""Models of shvit_mm. Importing this registers every component in MMDetection's ``MODELS``
registry (each module registers itself), and the backbone and its classification head in
MMPretrain's ``MODELS`` registry too."""
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS

from . import layers, necks  # noqa: F401  (register their components)
from . import detectors  # noqa: F401  (PerLayerDeformableDETR)
from .backbones import SHViT
from .heads import SHViTClsHead

MMPRETRAIN_MODELS.register_module(module=SHViT)
MMPRETRAIN_MODELS.register_module(module=SHViTClsHead)

__all__ = ['SHViT', 'SHViTClsHead']
