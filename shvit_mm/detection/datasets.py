"""COCO-format datasets for MMDetection: ``SHViTCocoDataset`` (MMDetection's ``CocoDataset`` that
names the file and annotation id of a bad annotation and logs what it drops) and the embedded demo
set built on it (created on first use)."""
import logging
import math
from collections import Counter
from typing import Dict, Optional

from mmdet.datasets import CocoDataset
from mmdet.datasets.api_wrappers import COCO
from mmdet.registry import DATASETS
from mmengine.logging import print_log

from shvit_mm.datasets.demo_data import (DEFAULT_DEMO_ROOT, DEMO_CLASSES, DEMO_PALETTE,
                                         make_demo_dataset)

__all__ = ['AnnotationError', 'SHViTCocoDataset', 'SHViTDemoDataset', 'MISSING_DATA_HELP']


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


class AnnotationError(ValueError):
    """An annotation file that cannot be used as it is; the message names the file, the annotation
    and what to fix."""


# what each image, annotation and category needs (MMDetection's CocoDataset reads these keys)
_REQUIRED = dict(images=('id', 'file_name', 'height', 'width'),
                 annotations=('id', 'image_id', 'category_id', 'bbox', 'area'),
                 categories=('id', 'name'))
# why MMDetection drops annotations, in the order of the log line; the first three are data problems
_DROPPED = ('with width or height < 1 px or area <= 0', 'outside the picture',
            'of an image_id not in "images"', 'marked ignore', 'of categories not in classes')


class _CheckedCOCO(COCO):
    """MMDetection's COCO API with errors that name the file: it does not parse, an entry lacks a
    key; and ``get_cat_ids(cat_names=classes)`` refuses classes that are not the file's categories
    one to one in the file's order (MMDetection numbers the labels in the file's order, so a class
    missing, repeated or out of order would silently give objects another class's name)."""

    def __init__(self, annotation_file=None):
        self.file = annotation_file
        try:
            super().__init__(annotation_file)
        except AnnotationError:
            raise
        except (ValueError, AssertionError) as e:  # json.JSONDecodeError is a ValueError
            raise AnnotationError(
                f'{annotation_file} is not a COCO annotation file ({type(e).__name__}: {e}): it '
                'must be complete JSON holding a dict with "images", "annotations" and '
                '"categories" (a download or a write cut short leaves such files)') from None

    def createIndex(self):
        for key, needs in _REQUIRED.items():
            items = self.dataset.setdefault(key, [])
            for i, item in enumerate(items if isinstance(items, list) else [items]):
                lacks = [k for k in needs if k not in item] if isinstance(item, dict) else needs
                if lacks or not isinstance(items, list):
                    what = f'id {item["id"]}' if 'id' in needs and 'id' not in lacks else f'#{i}'
                    raise AnnotationError(
                        f'{self.file}: "{key}" must be a list of dicts with the keys '
                        f'{list(needs)}, but {key[:-1]} {what} lacks {list(lacks)}: '
                        f'{str(item)[:80]}; fix or remove it')
        super().createIndex()

    def get_cat_ids(self, cat_names=[], sup_names=[], cat_ids=[]):
        ids = super().get_cat_ids(cat_names, sup_names, cat_ids)
        if cat_names and [self.cats[i]['name'] for i in ids] != list(cat_names):
            names = [c['name'] for c in self.dataset['categories']]
            missing = [c for c in cat_names if c not in names]
            why = (f'{len(missing)} of them ({", ".join(map(repr, missing[:20]))}) are not '
                   'categories of the file' if missing else 'they are repeated or in another order')
            raise AnnotationError(
                f'{self.file}: the dataset\'s classes must be the names of the file\'s categories '
                f'in the file\'s order, but {why}. Classes asked for ({len(cat_names)}): '
                f'{tuple(cat_names)}; categories in the file ({len(names)}): {tuple(names)}. Set '
                'the dataset\'s metainfo=dict(classes=(...)) (and the heads\' num_classes) to the '
                'categories you train on, in the file\'s order, or fix the file.')
        return ids


@DATASETS.register_module()
class SHViTCocoDataset(CocoDataset):
    """:class:`mmdet.datasets.CocoDataset` that stops with the file and the annotation id named
    where MMDetection gives a bare traceback, and says what it drops.

    * An annotation file that does not parse, an entry without the keys COCO needs, a box that is
      not 4 finite numbers, an RLE mask whose size is not its picture's, classes that do not match
      the file's categories (see ``_CheckedCOCO``), no image left: :class:`AnnotationError`.
    * Annotations MMDetection drops (boxes under 1 px wide or high or of area <= 0, outside the
      picture, of images not listed, marked ``ignore``, of categories not in ``classes``) are
      counted in one log line per dataset, a warning when any of the first three kinds is there.

    Everything else is :class:`CocoDataset`'s, e.g. ``type='SHViTCocoDataset'`` in place of
    ``type='CocoDataset'`` in a config.
    """
    COCOAPI = _CheckedCOCO

    def load_data_list(self):
        self._dropped = Counter()
        data_list = super().load_data_list()
        if not data_list:
            raise AnnotationError(f'{self.ann_file} lists no images')
        total, dropped = self._dropped['in file'], self._dropped
        dropped[_DROPPED[2]] = total - dropped['parsed']
        if any(dropped[why] for why in _DROPPED):
            print_log(f'{self.ann_file}: dropped {sum(dropped[why] for why in _DROPPED)} of '
                      f'{total} annotations, as MMDetection does: ' + ', '.join(
                          f'{dropped[why]} {why}' for why in _DROPPED if dropped[why]),
                      logger='current', level=logging.WARNING if any(
                          dropped[why] for why in _DROPPED[:3]) else logging.INFO)
        return data_list

    def filter_data(self):
        kept = super().filter_data()
        if self.data_list and not kept:
            raise AnnotationError(
                f'{self.ann_file}: filter_cfg={self.filter_cfg} keeps none of its '
                f'{len(self.data_list)} images (none with an annotation that is kept, or all '
                'smaller than min_size)')
        return kept

    def parse_data_info(self, raw_data_info: dict):
        img = raw_data_info['raw_img_info']
        self._dropped['in file'] = len(self.coco.dataset['annotations'])
        for ann in raw_data_info['raw_ann_info']:
            self._dropped['parsed'] += 1
            why = self._check(ann, img)
            if why:
                self._dropped[why] += 1
        return super().parse_data_info(raw_data_info)

    def _check(self, ann: dict, img: dict) -> Optional[str]:
        """Raise for what would break later; else why MMDetection drops ``ann`` (None: kept)."""
        if ann.get('ignore', False):
            return _DROPPED[3]
        where = (f'{self.ann_file}: annotation id {ann["id"]} (image id {img["id"]}, '
                 f'{img["file_name"]})')
        box, (h, w) = ann['bbox'], (img['height'], img['width'])
        if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(
                isinstance(v, (int, float)) and math.isfinite(v) for v in [*box, ann['area']])):
            raise AnnotationError(f'{where}: bbox must be 4 finite numbers [x, y, width, height] '
                                  f'and area one, got {box!r} and {ann["area"]!r}; fix or remove '
                                  'the annotation')
        x, y, bw, bh = box
        if ann['area'] <= 0 or bw < 1 or bh < 1:
            return _DROPPED[0]
        if max(0, min(x + bw, w) - max(x, 0)) * max(0, min(y + bh, h) - max(y, 0)) == 0:
            return _DROPPED[1]
        if ann['category_id'] not in self.cat_ids:
            return _DROPPED[4]
        seg = ann.get('segmentation')
        if isinstance(seg, dict):  # RLE: LoadAnnotations decodes it at the size it states
            size, counts = seg.get('size'), seg.get('counts')
            if list(size or ()) != [h, w] or not isinstance(counts, (str, list)) or (
                    isinstance(counts, list) and sum(counts) != h * w):
                raise AnnotationError(
                    f'{where}: its RLE mask (size {size}, counts {str(counts)[:20]}...) does not '
                    f'fit the picture of {h}x{w} pixels: "size" must be [height, width] = '
                    f'{[h, w]} and "counts" a string or a list summing to {h * w}; re-encode the '
                    'mask at the picture\'s size or remove the segmentation')
        elif seg and not isinstance(seg, list):
            raise AnnotationError(f'{where}: segmentation must be polygons (a list of lists) or '
                                  f'an RLE dict, got {str(seg)[:80]}')
        return None


@DATASETS.register_module()
class SHViTDemoDataset(SHViTCocoDataset):
    """:class:`SHViTCocoDataset` over the embedded demo set, created on first use.

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
