"""shvit_mm: SHViT (Single-Head Vision Transformer, CVPR 2024) for MMDetection, MMSegmentation and
MMPretrain.

``custom_imports = dict(imports=['shvit_mm'], allow_failed_imports=False)`` in a config imports it.
Importing it registers, and does nothing else:

* the codebase-neutral components, in MMEngine's root registries so that they build under the
  ``mmdet``, ``mmseg`` and ``mmpretrain`` scopes alike: the ``SHViT`` backbone
  (:mod:`shvit_mm.models`), the training components (:mod:`shvit_mm.engine`),
  ``FastInferenceHook`` (:mod:`shvit_mm.inference`) and the robust image loader
  (:mod:`shvit_mm.datasets.transforms`, when MMCV is installed);
* each installed codebase's adapter: :mod:`shvit_mm.detection` (MMDetection),
  :mod:`shvit_mm.segmentation` (MMSegmentation), :mod:`shvit_mm.classification` (MMPretrain);
* the few plain data classes MMEngine's own checkpoints hold, with PyTorch's ``weights_only``
  unpickler (:func:`shvit_mm.utils.safe_load.register_safe_globals`), so that resuming keeps the
  safe loader on.

``from shvit_mm.models.backbones import SHViT`` needs only PyTorch and MMEngine.
"""
import importlib

from .utils.safe_load import register_safe_globals
from . import datasets, engine, inference, models  # noqa: F401  (register the neutral components)

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
register_safe_globals()
