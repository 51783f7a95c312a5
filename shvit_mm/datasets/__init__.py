"""Datasets of shvit_mm: the embedded demo set (created on first use, no download) and robust
image loading."""
from .transforms import BadImageError, RobustLoadImageFromFile
from .demo import DEMO_CLASSES, SHViTDemoDataset, demo_dataset_ready, make_demo_dataset

__all__ = ['BadImageError', 'RobustLoadImageFromFile', 'DEMO_CLASSES', 'SHViTDemoDataset',
           'demo_dataset_ready', 'make_demo_dataset']
