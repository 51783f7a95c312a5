"""Semantic-segmentation label maps for the embedded demo dataset, made from its COCO annotations.

The demo pictures (:mod:`shvit_mm.datasets.demo_data`) annotate the *visible* part of every
object, so the instance masks of a picture never overlap: painting each mask with its class gives
one label map per picture, with nothing decided twice. Classes: ``0`` background (no object), then
the five shapes in :data:`DEMO_CLASSES` order (``1`` disc ... ``5`` ring). No pixel is marked
ignore (255).

Layout, beside the pictures, as MMSegmentation's ``BaseSegDataset`` reads it (one 8-bit PNG per
picture, same name stem)::

    <root>/seg_maps/train/000000.png ...   <root>/seg_maps/val/000000.png ...
    <root>/seg_maps/meta.json              (the dataset's meta.json and the label-map format)

:func:`make_demo_label_maps` writes them on first use, deterministically (a pure function of the
annotation files), into a temporary sibling folder that is renamed into place when complete, so an
interrupted run or several processes at once never leave a partial set (the staging folder of
:func:`shvit_mm.datasets.demo_data.make_staging_dir`). Maps made from another
version of the pictures are refused with a message saying what to delete.

Codebase-neutral: NumPy, OpenCV and pycocotools only. MMSegmentation uses it through
``SHViTDemoSegDataset`` (:mod:`shvit_mm.segmentation.datasets`).
"""
import json
import os
import os.path as osp
import shutil
from typing import Dict

import numpy as np

from .demo_data import DEMO_CLASSES, DEMO_PALETTE, make_staging_dir

__all__ = ['DEMO_SEG_CLASSES', 'DEMO_SEG_PALETTE', 'SEG_MAP_DIR', 'make_demo_label_maps',
           'demo_label_maps_ready', 'coco_to_label_map']

#: class index = position: 0 background, then the demo's shape classes
DEMO_SEG_CLASSES = ('background', ) + tuple(DEMO_CLASSES)
DEMO_SEG_PALETTE = [(128, 128, 128)] + [tuple(c) for c in DEMO_PALETTE]
#: folder under the demo root holding ``{train,val}/*.png``
SEG_MAP_DIR = 'seg_maps'
# Bump when the way label maps are made changes: older maps are then refused clearly.
_LABEL_FORMAT = 1
_SPLITS = ('train', 'val')


def coco_to_label_map(height: int, width: int, anns, class_of_category: Dict[int, int],
                      where: str = 'picture') -> np.ndarray:
    """One uint8 label map from a picture's COCO annotations with disjoint masks.

    Args:
        height, width: the picture's size.
        anns: its COCO annotations (RLE or polygon ``segmentation``).
        class_of_category: COCO ``category_id`` -> label value.
        where: names the picture in error messages.
    """
    from pycocotools import mask as mask_utils
    label = np.zeros((height, width), np.uint8)
    painted = np.zeros((height, width), bool)
    for ann in anns:
        seg = ann['segmentation']
        if isinstance(seg, list):  # polygons
            rles = mask_utils.frPyObjects(seg, height, width)
            mask = mask_utils.decode(mask_utils.merge(rles)).astype(bool)
        else:
            if isinstance(seg['counts'], list):  # uncompressed RLE
                seg = mask_utils.frPyObjects(seg, height, width)
            mask = mask_utils.decode(seg).astype(bool)
        if mask.shape != (height, width):
            raise ValueError(f'{where}: annotation {ann.get("id")} has a {mask.shape} mask for a '
                             f'{height}x{width} picture')
        if (mask & painted).any():
            raise ValueError(f'{where}: annotation {ann.get("id")} overlaps an earlier one; '
                             'label maps need disjoint (visible-part) masks')
        label[mask] = class_of_category[ann['category_id']]
        painted |= mask
    return label


def _label_meta(root: str) -> Dict:
    with open(osp.join(root, 'meta.json')) as f:
        dataset = json.load(f)
    return dict(label_format=_LABEL_FORMAT, classes=list(DEMO_SEG_CLASSES), dataset=dataset)


def demo_label_maps_ready(root: str) -> bool:
    """Whether complete label maps for the demo dataset at ``root`` exist. Raises when maps made
    from other pictures (another dataset version or spec) are there."""
    meta_file = osp.join(root, SEG_MAP_DIR, 'meta.json')
    if not osp.isfile(meta_file):
        return False
    with open(meta_file) as f:
        found = json.load(f)
    wanted = _label_meta(root)
    if found != wanted:
        raise RuntimeError(
            f'The label maps in {osp.join(osp.abspath(root), SEG_MAP_DIR)} were made for other '
            f'demo pictures or by another version of shvit_mm ({found} instead of {wanted}). '
            f'Delete that folder; it is re-made from the annotations on the next run.')
    return True


def _write_split(root: str, out_dir: str, split: str) -> int:
    import cv2
    with open(osp.join(root, 'annotations', f'instances_{split}.json')) as f:
        coco = json.load(f)
    class_of_category = {}
    for cat in coco['categories']:
        if cat['name'] not in DEMO_SEG_CLASSES[1:]:
            raise ValueError(f'{split}: unknown demo category {cat["name"]!r}')
        class_of_category[cat['id']] = DEMO_SEG_CLASSES.index(cat['name'])
    anns_of = {}
    for ann in coco['annotations']:
        anns_of.setdefault(ann['image_id'], []).append(ann)
    os.makedirs(osp.join(out_dir, split))
    for info in coco['images']:
        name = osp.splitext(info['file_name'])[0] + '.png'
        label = coco_to_label_map(info['height'], info['width'], anns_of.get(info['id'], []),
                                  class_of_category, where=f'{split}/{info["file_name"]}')
        ok, buf = cv2.imencode('.png', label)
        assert ok, 'PNG encoding failed'
        with open(osp.join(out_dir, split, name), 'wb') as f:
            f.write(buf.tobytes())
    return len(coco['images'])


def make_demo_label_maps(root: str, verbose: bool = True) -> str:
    """Write the label maps of the demo dataset at ``root`` unless complete ones are there.

    ``root`` must hold a complete demo dataset (:func:`make_demo_dataset` makes one). Returns the
    absolute path of the label-map folder.
    """
    root = osp.abspath(root)
    if not osp.isfile(osp.join(root, 'meta.json')):
        raise FileNotFoundError(f'{root} holds no complete demo dataset (no meta.json); make it '
                                f'first with shvit_mm.datasets.make_demo_dataset({root!r})')
    target = osp.join(root, SEG_MAP_DIR)
    if demo_label_maps_ready(root):
        return target
    if osp.exists(target) and os.listdir(target):
        raise RuntimeError(f'{target} exists but holds no complete label maps (no meta.json). '
                           'Delete it; it is re-made from the annotations on the next run.')
    tmp = make_staging_dir(target)
    try:
        counts = [_write_split(root, tmp, split) for split in _SPLITS]
        with open(osp.join(tmp, 'meta.json'), 'w') as f:
            json.dump(_label_meta(root), f, indent=1, sort_keys=True)
        if osp.isdir(target) and not os.listdir(target):
            os.rmdir(target)
        try:
            os.rename(tmp, target)
        except OSError:
            # another process finished first: use its maps (made from the same annotations)
            if not demo_label_maps_ready(root):
                raise
        else:
            if verbose:
                print(f'shvit_mm: wrote {counts[0]} + {counts[1]} semantic label maps to {target}',
                      flush=True)
    finally:
        if osp.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return target
