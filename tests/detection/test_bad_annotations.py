"""Bad COCO annotation files stop with the file and the annotation id named (SHViTCocoDataset, which
the demo dataset and configs/_base_/datasets build on), and what MMDetection drops is counted in
one log line per dataset; through tools/train.py and on the dataset class."""
import json
import os.path as osp
import shutil
import sys

import pytest

from conftest import REPO_ROOT, demo_options, log_records, run_tool

DEMO_CFG = osp.join(REPO_ROOT, 'configs/demo/mask_rcnn_shvit_s1_demo.py')
TRAIN = osp.join(REPO_ROOT, 'tools/train.py')
TINY = dict(num_train=4, num_val=2)


@pytest.fixture(scope='module')
def pristine(tmp_path_factory):
    from shvit_mm.datasets import make_demo_dataset
    return make_demo_dataset(str(tmp_path_factory.mktemp('ann') / 'demo'), verbose=False, **TINY)


@pytest.fixture
def demo(pristine, tmp_path):
    """A fresh copy of the tiny demo set and its train annotations (edit, then ``save()``)."""
    root = str(tmp_path / 'demo')
    shutil.copytree(pristine, root)
    ann_file = osp.join(root, 'annotations', 'instances_train.json')
    with open(ann_file) as f:
        coco = json.load(f)
    return root, ann_file, coco


def _save(ann_file, coco):
    with open(ann_file, 'w') as f:
        f.write(coco if isinstance(coco, str) else json.dumps(coco))


def _spoil(case, coco):
    """Apply one bad-annotation case; returns (file contents, metainfo classes or None, the
    annotation id the error must name or None)."""
    ann = coco['annotations'][1]
    img = next(i for i in coco['images'] if i['id'] == ann['image_id'])
    if case == 'rle_size':  # the mask of a picture of another size
        ann['segmentation']['size'] = [img['height'] // 2, img['width']]
    elif case == 'rle_counts':  # uncompressed counts that do not cover the picture
        ann['segmentation']['counts'] = [5, img['height'] * img['width']]
    elif case == 'bbox_short':
        ann['bbox'] = ann['bbox'][:3]
    elif case == 'bbox_nan':
        ann['bbox'][2] = float('nan')
    elif case == 'no_category':
        del ann['category_id']
    elif case == 'json':  # a write cut short
        return json.dumps(coco)[:500], None, None
    elif case == 'not_a_dict':
        return json.dumps([coco]), None, None
    elif case == 'no_images':
        coco['images'], coco['annotations'] = [], []
        return coco, None, None
    else:  # the config's classes against the file's categories
        names = [c['name'] for c in coco['categories']]
        classes = dict(classes_none=('cat', 'dog'), classes_typo=[names[0], 'sqare'] + names[2:],
                       classes_order=names[::-1])[case]
        return coco, tuple(classes), None
    return coco, None, ann['id']


CASES = ['rle_size', 'rle_counts', 'bbox_short', 'bbox_nan', 'no_category', 'json', 'not_a_dict',
         'no_images', 'classes_none', 'classes_typo', 'classes_order']


@pytest.mark.parametrize('case', CASES)
def test_bad_annotation_file_is_named(demo, case):
    from shvit_mm.detection.datasets import AnnotationError, SHViTCocoDataset
    root, ann_file, coco = demo
    names = tuple(c['name'] for c in coco['categories'])
    contents, classes, ann_id = _spoil(case, coco)
    _save(ann_file, contents)
    with pytest.raises(AnnotationError) as err:
        SHViTCocoDataset(data_root=root, ann_file=ann_file, data_prefix=dict(img='train/'),
                         pipeline=[], metainfo=dict(classes=classes or names))
    message = str(err.value)
    assert message.startswith(ann_file), message
    if ann_id is not None:
        assert f'annotation id {ann_id} ' in message, message
    if classes:  # the classes asked for and the file's categories
        assert str(classes) in message and 'square' in message, message


def test_dropped_annotations_counted_and_data_as_mmdet(demo):
    from mmdet.datasets import CocoDataset
    from mmengine.logging import MMLogger
    from shvit_mm.detection.datasets import SHViTCocoDataset
    root, ann_file, coco = demo
    names = [c['name'] for c in coco['categories']]
    anns, img = coco['annotations'], coco['images'][0]
    base = dict(image_id=img['id'], category_id=coco['categories'][0]['id'], iscrowd=0, area=25)
    new = [dict(bbox=[3, 3, 0, 5]), dict(bbox=[3, 3, 5, 0.5]), dict(bbox=[3, 3, 5, 5], area=0),
           dict(bbox=[img['width'] + 2, 3, 5, 5]), dict(bbox=[3, 3, 5, 5], image_id=10 ** 6),
           dict(bbox=[3, 3, 5, 5], ignore=True)]
    start = max(a['id'] for a in anns) + 1
    anns += [dict(base, id=start + i, **extra) for i, extra in enumerate(new)]
    _save(ann_file, coco)
    classes = (names[0], names[2])  # objects of the other categories are dropped too
    other = sum(a['category_id'] not in (coco['categories'][0]['id'], coco['categories'][2]['id'])
                for a in anns)
    kw = dict(data_root=root, ann_file=ann_file, data_prefix=dict(img='train/'), pipeline=[],
              metainfo=dict(classes=classes), filter_cfg=dict(filter_empty_gt=True, min_size=4))
    with log_records(MMLogger.get_current_instance()) as records:
        ours = SHViTCocoDataset(**kw)
    assert [ours.get_data_info(i) for i in range(len(ours))] == \
        [d.get_data_info(i) for d in [CocoDataset(**kw)] for i in range(len(d))]
    lines = [(r.levelname, r.getMessage()) for r in records if ann_file in r.getMessage()]
    assert other > 0 and lines == [('WARNING', (
        f'{ann_file}: dropped {6 + other} of {len(anns)} annotations, as MMDetection does: 3 with '
        'width or height < 1 px or area <= 0, 1 outside the picture, 1 of an image_id not in '
        f'"images", 1 marked ignore, {other} of categories not in classes'))], lines


# ------------------------------------------------------------------------------------------------
# through tools/train.py
# ------------------------------------------------------------------------------------------------
def _train(root, tmp_path, extra=(), expect_ok=True):
    opts = demo_options(root, max_epochs=1, **TINY) + list(extra)
    cmd = [sys.executable, TRAIN, DEMO_CFG, '--work-dir', str(tmp_path / 'work'), '--cfg-options']
    return run_tool(cmd + opts, cwd=tmp_path, expect_ok=expect_ok)


@pytest.mark.slow
@pytest.mark.parametrize('case', ['rle_size', 'classes_none', 'json'])
def test_train_stops_naming_file_and_annotation(demo, tmp_path, case):
    root, ann_file, coco = demo
    contents, classes, ann_id = _spoil(case, coco)
    _save(ann_file, contents)
    extra = [f'train_dataloader.dataset.metainfo.classes={",".join(classes)}'] if classes else []
    out = _train(root, tmp_path, extra, expect_ok=False)
    last = out.strip().splitlines()[-1]  # the error itself (the log above repeats the config)
    assert 'AnnotationError' in last and ann_file in last, out[-3000:]
    if ann_id is not None:
        assert f'annotation id {ann_id} ' in last, last


@pytest.mark.slow
def test_train_counts_dropped_annotations_in_one_line(demo, tmp_path):
    root, ann_file, coco = demo
    img = coco['images'][0]
    start = max(a['id'] for a in coco['annotations']) + 1
    for i, bbox in enumerate([[3, 3, 0, 5], [3, 3, 5, 0.2], [-40, 3, 10, 5]]):
        coco['annotations'].append(dict(id=start + i, image_id=img['id'], bbox=bbox, area=25,
                                        category_id=coco['categories'][0]['id'], iscrowd=0))
    _save(ann_file, coco)
    out = _train(root, tmp_path)
    lines = [line for line in out.splitlines() if f'{ann_file}: dropped' in line]
    assert len(lines) == 1 and 'WARNING' in lines[0], out[-3000:]
    assert lines[0].endswith(f'dropped 3 of {len(coco["annotations"])} annotations, as '
                             'MMDetection does: 2 with width or height < 1 px or area <= 0, '
                             '1 outside the picture'), lines
    assert osp.isfile(tmp_path / 'work' / 'epoch_1.pth')


@pytest.mark.parametrize('config', ['mask_rcnn/shvit_s1.py', 'retinanet/shvit_s4.py',
                                    'deformable_detr/shvit_s4_single_head.py'])
def test_shipped_coco_configs_read_through_checked_dataset(config):
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs', config))
    for split in ('train', 'val', 'test'):
        dataset = cfg[f'{split}_dataloader'].dataset
        assert dataset.type == 'SHViTCocoDataset', (split, dataset.type)
        assert dataset.ann_file.startswith('annotations/instances_')
