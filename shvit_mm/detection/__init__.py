"""MMDetection adapter: the detection neck (``SHViTFPN``), the single-head Deformable DETR parts,
the embedded demo dataset class and the official-detector converter.

Importing it registers these in MMDetection's registries; :mod:`shvit_mm` imports it only when
MMDetection is installed.
"""
from . import datasets, detectors, layers, necks  # noqa: F401  (register their components)
from .datasets import SHViTDemoDataset
from .detectors import PerLayerDeformableDETR
from .necks import SHViTFPN

__all__ = ['SHViTDemoDataset', 'PerLayerDeformableDETR', 'SHViTFPN']
