"""MMSegmentation adapter: the segmentation neck (``SHViTSegFPN``, ``type='SHViTFPN'``:
MMSegmentation's FPN plus the transposed-convolution finer levels shared with the detection neck)
and the embedded demo set as a semantic-segmentation dataset (``SHViTDemoSegDataset``).

Importing it registers these in MMSegmentation's registries; :mod:`shvit_mm` imports it only when
MMSegmentation is installed. The backbone is the codebase-neutral
:class:`shvit_mm.models.backbones.SHViT`, which MMSegmentation configs build as ``type='SHViT'``.
"""
from . import datasets, necks  # noqa: F401  (register their components)
from .datasets import SHViTDemoSegDataset
from .necks import SHViTSegFPN

__all__ = ['SHViTDemoSegDataset', 'SHViTSegFPN']
