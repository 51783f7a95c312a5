"""mIoU as the segmentation configs evaluate it (MMSegmentation's IoUMetric), checked against an
independent implementation: torchmetrics' multiclass Jaccard index, per class, on label maps with
ignored pixels and with classes absent from the ground truth."""
import numpy as np
import pytest
import torch

NUM_CLASSES = 7
IGNORE = 255


def _label_maps(seed=0, n=5):
    """(prediction, ground truth) pairs of different sizes. Ground truth: classes 0-4 only, with
    ignored pixels (255). Predictions: also class 5, which no ground truth has (IoU 0); class 6 in
    neither (no union: IoUMetric leaves it out of the mean); wrong and right guesses everywhere,
    including on the ignored pixels (which must not count)."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        h, w = int(rng.integers(20, 60)), int(rng.integers(20, 60))
        gt = rng.integers(0, 5, size=(h, w))
        gt[rng.random((h, w)) < 0.15] = IGNORE
        gt[: h // 4, : w // 3] = IGNORE  # a block of ignored pixels too
        pred = np.where(rng.random((h, w)) < 0.6, np.where(gt == IGNORE, 0, gt),
                        rng.integers(0, 6, size=(h, w)))
        pred[gt == IGNORE] = rng.integers(0, 6, size=int((gt == IGNORE).sum()))
        pairs.append((torch.from_numpy(pred.astype(np.int64)),
                      torch.from_numpy(gt.astype(np.int64))))
    return pairs


def _reference(pairs):
    """torchmetrics, accumulated over the whole split: per-class IoU and the classes present in
    prediction or ground truth."""
    from torchmetrics.classification import MulticlassJaccardIndex
    jac = MulticlassJaccardIndex(num_classes=NUM_CLASSES, average=None, ignore_index=IGNORE)
    seen = torch.zeros(NUM_CLASSES, dtype=torch.bool)
    for pred, gt in pairs:
        jac.update(pred[None], gt[None])
        valid = gt != IGNORE
        seen |= torch.bincount(pred[valid], minlength=NUM_CLASSES) > 0
        seen |= torch.bincount(gt[valid], minlength=NUM_CLASSES) > 0
    return jac.compute().double(), seen


def _iou_metric(pairs):
    from mmseg.evaluation import IoUMetric
    metric = IoUMetric(ignore_index=IGNORE, iou_metrics=['mIoU'])
    metric.dataset_meta = dict(classes=[f'c{i}' for i in range(NUM_CLASSES)])
    for pred, gt in pairs:
        metric.process({}, [dict(pred_sem_seg=dict(data=pred[None]),
                                 gt_sem_seg=dict(data=gt[None]))])
    return metric


def test_per_class_iou_matches_torchmetrics():
    from mmseg.evaluation import IoUMetric
    pairs = _label_maps()
    ref, seen = _reference(pairs)
    assert not seen[6] and seen[5]  # the fixture has both kinds of absent class
    metric = _iou_metric(pairs)
    # the per-class values IoUMetric's summary is made of, before rounding
    totals = [torch.stack([r[k] for r in metric.results]).sum(0) for k in range(4)]
    per_class = IoUMetric.total_area_to_metrics(*totals, metrics=['mIoU'])['IoU']
    per_class = torch.as_tensor(np.asarray(per_class, dtype=np.float64))
    assert torch.isnan(per_class[6])  # no pixel of class 6 anywhere: no IoU
    torch.testing.assert_close(per_class[seen], ref[seen], rtol=0, atol=1e-12)
    assert per_class[5] == 0 and ref[5] == 0  # predicted, never true


def test_miou_summary_matches_torchmetrics():
    pairs = _label_maps(seed=1, n=4)
    ref, seen = _reference(pairs)
    metric = _iou_metric(pairs)
    summary = metric.compute_metrics(metric.results)
    # IoUMetric reports percentages rounded to 2 decimals, averaged over classes with a union
    assert summary['mIoU'] == pytest.approx(round(float(ref[seen].mean()) * 100, 2), abs=1e-9)
    # pixel accuracy over the non-ignored pixels
    correct = sum(int(((p == g) & (g != IGNORE)).sum()) for p, g in pairs)
    total = sum(int((g != IGNORE).sum()) for _, g in pairs)
    assert summary['aAcc'] == pytest.approx(round(correct / total * 100, 2), abs=1e-9)


def test_split_level_not_per_image_average():
    """IoU sums intersections and unions over the whole split; a per-image mean differs."""
    pairs = _label_maps(seed=2, n=3)
    ref, seen = _reference(pairs)
    metric = _iou_metric(pairs)
    miou = metric.compute_metrics(metric.results)['mIoU']
    per_image = []
    for pair in pairs:
        r, s = _reference([pair])
        per_image.append(float(r[s].mean()))
    assert miou == pytest.approx(round(float(ref[seen].mean()) * 100, 2))
    assert abs(np.mean(per_image) * 100 - miou) > 0.01
