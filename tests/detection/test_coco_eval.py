"""The COCO evaluation path of tools/test.py (MMDetection's CocoMetric) reproduces the reference
numbers of the COCO API's fake-results test vector exactly.

Test vector: tests/data/coco_fake (public data of the COCO API project: 100 val2014 images, fake box and mask results, and
the 12 numbers pycocotools' COCOeval.summarize() prints for each; see its README.md).

Apples to apples:
* CocoMetric maps contiguous labels to COCO category ids through ``cat_ids``, which it takes from
  the ground truth (``get_cat_ids(cat_names=classes)``, in the order of the GT's category list).
  The fake results carry COCO category ids, so they are turned into labels with the same list.
* CocoMetric sets ``COCOeval.params.maxDets = proposal_nums`` (default (100, 300, 1000)), whereas
  the reference uses pycocotools' defaults (1, 10, 100). The AP numbers only differ when an image
  has more than 100 detections (none here has more than 39), but AR@1/AR@10 need maxDets 1 and 10,
  so the metric is built with ``proposal_nums=(1, 10, 100)``: its COCOeval then runs with exactly
  the reference parameters and its 12 ``stats`` must equal the reference's 12 numbers.
* CocoMetric's returned dict rounds to 3 decimals (``bbox_mAP`` etc.); the full-precision numbers
  are read from the COCOeval object CocoMetric itself creates (captured by wrapping the COCOeval
  class it uses), and the dict is compared at 3 decimals.
* Scores are passed as float64 so that they reach the results json unchanged (the file's scores
  have 3 decimals: many ties, and pycocotools orders ties by their position in the results, which
  the per-image grouping below keeps).
"""
import json
import os.path as osp
from collections import defaultdict

import numpy as np
import pytest
import torch

from conftest import COCO_FAKE_DIR as DATA
GT = osp.join(DATA, 'instances_val2014_100.json')
NAMES = ['AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'AR1', 'AR10', 'AR100', 'ARs', 'ARm', 'ARl']


def _reference():
    """The 12 numbers per iouType, read from the README's table (not typed in here)."""
    ref = {}
    with open(osp.join(DATA, 'README.md')) as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip('|').split('|')]
            if cells and cells[0] in ('bbox', 'segm') and len(cells) == 13:
                ref[cells[0]] = [float(c) for c in cells[1:]]
    assert set(ref) == {'bbox', 'segm'}, 'reference table not found in coco_fake/README.md'
    return ref


def _data_samples(results_file, coco_gt, cat_ids, iou_type):
    """The fake results as the per-image prediction dicts CocoMetric.process receives from a
    detector: xyxy boxes, float scores, contiguous labels, masks as RLE."""
    from pycocotools import mask as mask_utils
    with open(results_file) as f:
        dets = json.load(f)
    per_image = defaultdict(list)
    for d in dets:  # keeps the file's order inside each image (ties are ordered by position)
        per_image[d['image_id']].append(d)
    samples = []
    for img_id in coco_gt.getImgIds():
        info = coco_gt.imgs[img_id]
        ds = per_image.get(img_id, [])
        if iou_type == 'bbox':
            xywh = np.array([d['bbox'] for d in ds], dtype=np.float64).reshape(-1, 4)
        else:
            rles = [dict(size=list(d['segmentation']['size']),
                         counts=d['segmentation']['counts'].encode()) for d in ds]
            xywh = np.array([mask_utils.toBbox(r) for r in rles], dtype=np.float64).reshape(-1, 4)
        xyxy = xywh.copy()
        xyxy[:, 2:] += xyxy[:, :2]
        pred = dict(
            bboxes=torch.from_numpy(xyxy),
            scores=torch.tensor([d['score'] for d in ds], dtype=torch.float64),
            labels=torch.tensor([cat_ids.index(d['category_id']) for d in ds], dtype=torch.long))
        if iou_type == 'segm':
            pred['masks'] = rles  # already encoded: CocoMetric passes RLE through unchanged
        samples.append(dict(img_id=img_id, ori_shape=(info['height'], info['width']),
                            pred_instances=pred))
    return samples


@pytest.fixture(scope='module')
def gt_classes():
    from mmdet.datasets.api_wrappers import COCO
    coco = COCO(GT)
    classes = tuple(c['name'] for c in coco.dataset['categories'])
    cat_ids = coco.get_cat_ids(cat_names=classes)  # the list CocoMetric builds
    return coco, classes, cat_ids


@pytest.mark.parametrize('iou_type', ['bbox', 'segm'])
def test_coco_metric_reproduces_reference(iou_type, gt_classes, tmp_path, monkeypatch):
    import mmdet.evaluation.metrics.coco_metric as coco_metric_module
    from mmdet.evaluation import CocoMetric

    captured = []
    base_cls = coco_metric_module.COCOeval

    class RecordingCOCOeval(base_cls):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            captured.append(self)

    monkeypatch.setattr(coco_metric_module, 'COCOeval', RecordingCOCOeval)

    coco, classes, cat_ids = gt_classes
    results = osp.join(DATA, f'instances_val2014_fake{iou_type}100_results.json')
    metric = CocoMetric(ann_file=GT, metric=iou_type, proposal_nums=(1, 10, 100),
                        outfile_prefix=str(tmp_path / 'results'))
    metric.dataset_meta = dict(classes=classes)
    samples = _data_samples(results, coco, cat_ids, iou_type)
    for i in range(0, len(samples), 8):  # in batches, like the test loop
        metric.process({}, samples[i:i + 8])
    out = metric.evaluate(size=len(samples))

    assert len(captured) == 1
    ev = captured[0]
    assert list(ev.params.maxDets) == [1, 10, 100]
    assert ev.params.iouType == iou_type
    assert sorted(ev.params.imgIds) == sorted(coco.getImgIds())
    ref = _reference()[iou_type]
    stats = np.asarray(ev.stats, dtype=np.float64)
    for name, got, want in zip(NAMES, stats, ref):
        assert abs(got - want) <= 1e-12, f'{iou_type} {name}: CocoMetric {got!r} != reference {want!r}'

    # the dict tools/test.py prints: rounded to 3 decimals
    for key, idx in [('mAP', 0), ('mAP_50', 1), ('mAP_75', 2), ('mAP_s', 3), ('mAP_m', 4), ('mAP_l', 5)]:
        assert out[f'coco/{iou_type}_{key}'] == pytest.approx(round(ref[idx], 3), abs=1e-9), key

    # the json CocoMetric wrote is what COCOeval scored: every detection of the file made it through
    with open(results) as f:
        n_dets = len(json.load(f))
    with open(tmp_path / f'results.{iou_type}.json') as f:
        written = json.load(f)
    assert len(written) == n_dets


def test_category_mapping_is_not_identity(gt_classes):
    """Guards the conversion above: COCO ids are not contiguous, so passing category ids as labels
    (a classic mistake) would be caught by the exact comparison."""
    _, _, cat_ids = gt_classes
    assert cat_ids != list(range(len(cat_ids)))
    assert len(cat_ids) == 80
