"""The embedded demo set as an MMDetection dataset (COCO format, created on first use)."""
from typing import Dict, Optional

from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS

from shvit_mm.datasets.demo_data import (DEFAULT_DEMO_ROOT, DEMO_CLASSES, DEMO_PALETTE,
                                         make_demo_dataset)

__all__ = ['SHViTDemoDataset', 'MISSING_DATA_HELP']


#: what :func:`shvit_mm.cli.check_datasets` adds when a detection config's files are missing: how
#: to provide COCO (when a data root or missing path names it) and the demo that needs no data
MISSING_DATA_HELP = dict(
    dataset='COCO', marker='coco', default_root='data/coco/',
    demo='python tools/train.py configs/demo/mask_rcnn_shvit_s1_demo.py',
    instructions='''
This config reads COCO 2017 from {where}: it must hold annotations/instances_train2017.json,
annotations/instances_val2017.json, train2017/ and val2017/ (download them from
https://cocodataset.org and link the folder there, e.g. `mkdir -p data && ln -s /path/to/coco
data/coco`), or point the config elsewhere with --cfg-options
train_dataloader.dataset.data_root=... val_dataloader.dataset.data_root=...
val_evaluator.ann_file=... (and the test_* counterparts).''')


@DATASETS.register_module()
class SHViTDemoDataset(CocoDataset):
    """:class:`mmdet.datasets.CocoDataset` over the embedded demo set, created on first use.

    Args:
        demo_cfg (dict, optional): arguments of :func:`make_demo_dataset` other than ``root``
            (``num_train``, ``num_val``, ``seed``, ``min_side``, ``max_side``, ``max_objects``).
            The dataset is created under ``data_root`` when it is missing.
        Everything else as for :class:`CocoDataset`, e.g.
        ``data_root='data/shvit_demo/', ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/')``.
    """

    METAINFO = dict(classes=DEMO_CLASSES, palette=DEMO_PALETTE)
    # tools/train.py and tools/test.py do not require the files of such a dataset to exist up front
    creates_data_on_load = True

    def __init__(self, *args, data_root: str = DEFAULT_DEMO_ROOT, demo_cfg: Optional[Dict] = None,
                 **kwargs):
        make_demo_dataset(data_root, **(demo_cfg or {}))
        super().__init__(*args, data_root=data_root, **kwargs)
