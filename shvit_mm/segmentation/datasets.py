"""The embedded demo set as an MMSegmentation dataset: the demo pictures with one label map each
(background + the five shapes), both created on first use, no download."""
from typing import Dict, Optional

from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from shvit_mm.datasets.demo_data import DEFAULT_DEMO_ROOT, make_demo_dataset
from shvit_mm.datasets.demo_seg import DEMO_SEG_CLASSES, DEMO_SEG_PALETTE, make_demo_label_maps

__all__ = ['SHViTDemoSegDataset', 'MISSING_DATA_HELP']


#: what :func:`shvit_mm.cli.check_datasets` adds when a segmentation config's files are missing: how
#: to provide ADE20K (when a data root or missing path names it) and the demo that needs no data
MISSING_DATA_HELP = dict(
    dataset='ADE20K', marker='adechallengedata2016', default_root='data/ade/ADEChallengeData2016',
    demo='python tools/train.py configs/demo/sem_fpn_shvit_s1_demo.py',
    instructions='''
This config reads ADE20K (ADEChallengeData2016, 150 classes) from {where}: it must hold
images/training/, annotations/training/, images/validation/ and annotations/validation/ (unzip
ADEChallengeData2016.zip from
http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip into data/ade/, or link an
existing copy: `mkdir -p data/ade && ln -s /path/to/ADEChallengeData2016
data/ade/ADEChallengeData2016`), or point the config elsewhere with --cfg-options
train_dataloader.dataset.data_root=... val_dataloader.dataset.data_root=...
test_dataloader.dataset.data_root=... .''')


@DATASETS.register_module()
class SHViTDemoSegDataset(BaseSegDataset):
    """:class:`mmseg.datasets.BaseSegDataset` over the embedded demo set, created on first use.

    Classes ``('background', 'disc', 'square', 'triangle', 'star', 'ring')``; label 0 is the
    background, a class like the others (``reduce_zero_label=False``), and no pixel is ignored.
    The pictures are the detection demo's (``<data_root>/{train,val}/*.jpg``), the label maps
    ``<data_root>/seg_maps/{train,val}/*.png`` are made from its COCO annotations
    (:func:`shvit_mm.datasets.make_demo_label_maps`).

    Args:
        demo_cfg (dict, optional): arguments of :func:`shvit_mm.datasets.make_demo_dataset`
            other than ``root`` (``num_train``, ``num_val``, ``seed``, ``min_side``,
            ``max_side``, ``max_objects``). Pictures and label maps are created under
            ``data_root`` when missing.
        Everything else as for :class:`BaseSegDataset`, e.g. ``data_root='data/shvit_demo/',
        data_prefix=dict(img_path='val/', seg_map_path='seg_maps/val/')``.
    """

    METAINFO = dict(classes=DEMO_SEG_CLASSES, palette=DEMO_SEG_PALETTE)
    # tools/train.py and tools/test.py do not require the files of such a dataset to exist up front
    creates_data_on_load = True

    def __init__(self, data_root: str = DEFAULT_DEMO_ROOT, demo_cfg: Optional[Dict] = None,
                 img_suffix: str = '.jpg', seg_map_suffix: str = '.png',
                 reduce_zero_label: bool = False, **kwargs) -> None:
        if reduce_zero_label:
            raise ValueError('SHViTDemoSegDataset: label 0 is the background class of the demo '
                             'label maps, not "ignore"; use reduce_zero_label=False')
        if not isinstance(demo_cfg, (dict, type(None))):
            raise TypeError(f'SHViTDemoSegDataset: demo_cfg must be a dict of make_demo_dataset '
                            f'arguments, got {demo_cfg!r}')
        make_demo_label_maps(make_demo_dataset(data_root, **(demo_cfg or {})))
        super().__init__(data_root=data_root, img_suffix=img_suffix,
                         seg_map_suffix=seg_map_suffix, reduce_zero_label=False, **kwargs)
