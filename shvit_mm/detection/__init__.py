"""MMDetection adapter: the detection neck (``SHViTDetFPN``, ``type='SHViTFPN'``), the RoI extractor
as one gather, the single-head Deformable DETR parts and the embedded demo dataset class.

Importing it registers these in MMDetection's registries; :mod:`shvit_mm` imports it only when
MMDetection is installed.
"""
from . import datasets, detectors, layers, necks  # noqa: F401  (register their components)
from .datasets import SHViTDemoDataset
from .detectors import PerLayerDeformableDETR
from .necks import SHViTDetFPN

__all__ = ['SHViTDemoDataset', 'PerLayerDeformableDETR', 'SHViTDetFPN']
