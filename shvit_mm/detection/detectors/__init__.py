"""Detectors of shvit_mm (registered in MMDetection's MODELS on import)."""
from .per_layer_deformable_detr import PerLayerDeformableDETR

__all__ = ['PerLayerDeformableDETR']
