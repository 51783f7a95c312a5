"""MMPretrain adapter: SHViT's ImageNet classification head (``SHViTClsHead``, registered in
MMPretrain's ``MODELS``). The backbone itself is the codebase-neutral
:class:`shvit_mm.models.backbones.SHViT`, which MMPretrain configs build as ``type='SHViT'``."""
from .heads import SHViTClsHead

__all__ = ['SHViTClsHead']
