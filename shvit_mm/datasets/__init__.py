"""Codebase-neutral data parts: the embedded demo data generator, its semantic label maps
(:mod:`.demo_seg`) and robust image loading (:mod:`.transforms`, needs MMCV; imported by
:mod:`shvit_mm` when MMCV is installed).
The codebases' dataset classes live in their adapters (:mod:`shvit_mm.detection.datasets`,
:mod:`shvit_mm.segmentation.datasets`)."""
from .demo_data import (DEFAULT_DEMO_ROOT, DEMO_CLASSES, DEMO_PALETTE, demo_dataset_ready,
                        make_demo_dataset)
from .demo_seg import (DEMO_SEG_CLASSES, DEMO_SEG_PALETTE, SEG_MAP_DIR, demo_label_maps_ready,
                       make_demo_label_maps)

__all__ = ['DEFAULT_DEMO_ROOT', 'DEMO_CLASSES', 'DEMO_PALETTE', 'demo_dataset_ready',
           'make_demo_dataset', 'DEMO_SEG_CLASSES', 'DEMO_SEG_PALETTE', 'SEG_MAP_DIR',
           'demo_label_maps_ready', 'make_demo_label_maps']
