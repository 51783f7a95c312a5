"""shvit_mm: SHViT (Single-Head Vision Transformer, CVPR 2024) for MMDetection, MMSegmentation and
MMPretrain.

``custom_imports = dict(imports=['shvit_mm'], allow_failed_imports=False)`` in a config registers
every component of this package, and nothing else happens on import:

* the codebase-neutral core (:mod:`shvit_mm.models`: the ``SHViT`` backbone, registered once in
  MMEngine's root ``MODELS`` registry, so ``type='SHViT'`` builds it under the ``mmdet``, ``mmseg``
  and ``mmpretrain`` scopes alike), the training hooks (:mod:`shvit_mm.engine`) and the robust image
  loader (:mod:`shvit_mm.datasets.transforms`, when MMCV is installed);
* each codebase's adapter, only when that codebase is installed: :mod:`shvit_mm.detection`
  (MMDetection), :mod:`shvit_mm.segmentation` (MMSegmentation), :mod:`shvit_mm.classification`
  (MMPretrain).

``from shvit_mm.models.backbones import SHViT`` needs only PyTorch and MMEngine.
"""
import importlib

from .utils.safe_load import register_safe_globals
from . import datasets, engine, models  # noqa: F401  (register the codebase-neutral components)

__version__ = '0.1.0'

#: adapter sub-package -> the codebase it needs
ADAPTERS = {'datasets.transforms': 'mmcv', 'detection': 'mmdet', 'segmentation': 'mmseg',
            'classification': 'mmpretrain'}


def _import_adapters() -> None:
    for adapter, codebase in ADAPTERS.items():
        try:
            importlib.import_module(codebase)
        except ImportError:
            continue  # that codebase is not installed: its adapter is not needed
        importlib.import_module(f'{__name__}.{adapter}')


_import_adapters()
# MMEngine's own checkpoints (resume, load_from) hold a few plain data classes besides tensors;
# allow-list exactly those so PyTorch's weights_only loading can stay on.
register_safe_globals()
