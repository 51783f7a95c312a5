"""The embedded demo set for semantic segmentation: label maps painted from the COCO annotations
(deterministic, written atomically on first use, stale maps refused), the MMSegmentation dataset
class, and a tiny demo run end to end through the real tools: train (progress with ETA, mIoU on
val, checkpoint) -> test (same mIoU, painted pictures, predicted label maps)."""
import multiprocessing as mp
import os
import os.path as osp
import re
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT as ROOT, file_tree, run_tool

DEMO_CFG = osp.join(ROOT, 'configs/demo/sem_fpn_shvit_s1_demo.py')
TINY = dict(num_train=6, num_val=3)


@pytest.fixture(scope='module')
def demo_root(tmp_path_factory):
    from shvit_mm.datasets import make_demo_dataset
    return make_demo_dataset(str(tmp_path_factory.mktemp('seg') / 'demo'), verbose=False, **TINY)


def test_label_maps_paint_the_visible_masks(demo_root):
    """Each PNG holds, per pixel, the class of the (visible) instance mask covering it, read here
    with pycocotools' own decoder, and 0 where no object is."""
    import cv2
    from pycocotools.coco import COCO
    from shvit_mm.datasets import DEMO_SEG_CLASSES, make_demo_label_maps
    seg_dir = make_demo_label_maps(demo_root, verbose=False)
    assert seg_dir == osp.join(demo_root, 'seg_maps')
    assert DEMO_SEG_CLASSES == ('background', 'disc', 'square', 'triangle', 'star', 'ring')
    seen = set()
    for split, n in (('train', TINY['num_train']), ('val', TINY['num_val'])):
        coco = COCO(osp.join(demo_root, 'annotations', f'instances_{split}.json'))
        assert len(os.listdir(osp.join(seg_dir, split))) == n
        for img_id in coco.getImgIds():
            info = coco.imgs[img_id]
            label = cv2.imread(osp.join(seg_dir, split, info['file_name'][:-4] + '.png'),
                               cv2.IMREAD_UNCHANGED)
            assert label.dtype == np.uint8 and label.shape == (info['height'], info['width'])
            expected = np.zeros_like(label)
            for ann in coco.imgToAnns[img_id]:
                mask = coco.annToMask(ann).astype(bool)
                assert not expected[mask].any(), 'visible masks must be disjoint'
                name = coco.cats[ann['category_id']]['name']
                expected[mask] = DEMO_SEG_CLASSES.index(name)
            np.testing.assert_array_equal(label, expected)
            seen |= set(np.unique(label).tolist())
    assert 0 in seen and len(seen) >= 4 and max(seen) <= 5 and 255 not in seen


def test_label_maps_are_deterministic_reused_and_checked(tmp_path, demo_root):
    from shvit_mm.datasets import make_demo_dataset, make_demo_label_maps
    a = file_tree(make_demo_label_maps(demo_root, verbose=False))
    other = make_demo_dataset(str(tmp_path / 'b'), verbose=False, **TINY)
    b = file_tree(make_demo_label_maps(other, verbose=False))
    assert a == b  # byte for byte
    # reused, not rewritten
    png = osp.join(other, 'seg_maps', 'train', '000000.png')
    stamp = os.stat(png).st_mtime_ns
    make_demo_label_maps(other, verbose=False)
    assert os.stat(png).st_mtime_ns == stamp
    # maps made for other pictures are refused, naming the folder to delete
    meta = osp.join(other, 'seg_maps', 'meta.json')
    with open(meta) as f:
        text = f.read()
    with open(meta, 'w') as f:
        f.write(text.replace('"label_format": 1', '"label_format": 0'))
    with pytest.raises(RuntimeError, match='Delete that folder'):
        make_demo_label_maps(other, verbose=False)
    # a half-written folder (no meta.json) is refused too
    os.remove(meta)
    with pytest.raises(RuntimeError, match='no complete label maps'):
        make_demo_label_maps(other, verbose=False)
    with pytest.raises(FileNotFoundError, match='no complete demo dataset'):
        make_demo_label_maps(str(tmp_path / 'nothing'), verbose=False)
    assert not [p for p in os.listdir(other) if '.tmp-' in p]


def _make(root, q):
    from shvit_mm.datasets import make_demo_label_maps
    try:
        q.put(make_demo_label_maps(root, verbose=False))
    except Exception as e:  # pragma: no cover - reported by the assertion below
        q.put(repr(e))


def test_label_maps_concurrent_creation(tmp_path):
    from shvit_mm.datasets import make_demo_dataset
    root = make_demo_dataset(str(tmp_path / 'demo'), verbose=False, **TINY)
    ctx = mp.get_context('fork')
    q = ctx.Queue()
    procs = [ctx.Process(target=_make, args=(root, q)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    target = osp.join(root, 'seg_maps')
    assert [q.get(timeout=5) for _ in procs] == [target, target]
    assert not [p for p in os.listdir(root) if '.tmp-' in p]
    assert len(os.listdir(osp.join(target, 'val'))) == TINY['num_val']


def test_dataset_class_creates_and_reads_the_demo(tmp_path):
    from mmengine.registry import DefaultScope
    from mmseg.registry import DATASETS
    from mmseg.utils import register_all_modules
    import shvit_mm  # noqa: F401  (registers the dataset)
    register_all_modules(init_default_scope=False)
    root = str(tmp_path / 'fresh')
    with DefaultScope.overwrite_default_scope('mmseg'):
        ds = DATASETS.build(dict(
            type='SHViTDemoSegDataset', data_root=root, demo_cfg=TINY,
            data_prefix=dict(img_path='val/', seg_map_path='seg_maps/val/'),
            pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                      dict(type='PackSegInputs')]))
        item = ds[0]
    assert osp.isdir(osp.join(root, 'seg_maps', 'val'))  # made on first use
    assert len(ds) == TINY['num_val']
    assert ds.metainfo['classes'] == ('background', 'disc', 'square', 'triangle', 'star', 'ring')
    assert ds.reduce_zero_label is False
    assert tuple(item['inputs'].shape[1:]) == tuple(item['data_samples'].gt_sem_seg.shape)
    with pytest.raises(ValueError, match='reduce_zero_label=False'):
        DATASETS.build(dict(type='SHViTDemoSegDataset', data_root=root, demo_cfg=TINY,
                            reduce_zero_label=True))


# ------------------------------------------------------------------------------------------------
# end to end through tools/train.py and tools/test.py
# ------------------------------------------------------------------------------------------------
def seg_demo_options(data_root, num_train=6, num_val=3, iters=3):
    """``--cfg-options`` that shrink the segmentation demo to a few pictures and iterations."""
    opts = []
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts += [f'{loader}.dataset.data_root={data_root}/',
                 f'{loader}.dataset.demo_cfg.num_train={num_train}',
                 f'{loader}.dataset.demo_cfg.num_val={num_val}']
    return opts + ['train_dataloader.batch_size=2', f'train_cfg.max_iters={iters}',
                   f'train_cfg.val_interval={iters}', f'default_hooks.checkpoint.interval={iters}',
                   'default_hooks.logger.interval=1']


def _miou(out, mode):
    found = re.findall(rf'Iter\({mode}\).*?mIoU: ([0-9.]+)', out)
    assert found, f'no {mode} mIoU line in the output:\n{out[-3000:]}'
    return float(found[-1])


@pytest.mark.slow
def test_seg_demo_end_to_end(tmp_path):
    data_root = str(tmp_path / 'demo_data')
    work = tmp_path / 'work'
    opts = seg_demo_options(data_root)
    out = run_tool([sys.executable, osp.join(ROOT, 'tools/train.py'), DEMO_CFG, '--work-dir',
                    str(work), '--cfg-options'] + opts, cwd=tmp_path)
    assert 'creating the demo dataset' in out and 'semantic label maps' in out  # first use
    assert re.search(r'Iter\(train\)\s+\[2/3\].*eta:', out)  # progress with ETA
    train_miou = _miou(out, 'val')
    ckpt = work / 'iter_3.pth'
    assert ckpt.is_file()
    assert (work / 'last_checkpoint').read_text().strip().endswith('iter_3.pth')

    out = run_tool([sys.executable, osp.join(ROOT, 'tools/test.py'), DEMO_CFG, str(ckpt),
                    '--work-dir', str(work), '--show-dir', str(tmp_path / 'vis'), '--out',
                    str(tmp_path / 'pred'), '--cfg-options'] + opts, cwd=tmp_path)
    assert 'creating the demo dataset' not in out  # reused
    assert _miou(out, 'test') == train_miou  # same checkpoint, same val pictures
    pictures = list((tmp_path / 'vis').rglob('*.png'))
    assert len(pictures) == TINY['num_val']
    import cv2
    preds = sorted((tmp_path / 'pred').glob('*.png'))
    assert [p.name for p in preds] == [f'{i:06d}.png' for i in range(TINY['num_val'])]
    label = cv2.imread(osp.join(data_root, 'seg_maps', 'val', '000000.png'), cv2.IMREAD_UNCHANGED)
    pred = cv2.imread(str(preds[0]), cv2.IMREAD_UNCHANGED)
    assert pred.shape == label.shape and pred.max() <= 5


@pytest.mark.slow
def test_seg_demo_dist_train_two_cpu_processes(tmp_path):
    """tools/dist_train.sh with 2 CPU processes (gloo, CPU DDP) on the segmentation demo: the
    neck's stride-64 output feeds no head, and DDP runs because the config says so
    (find_unused_parameters); without it the second iteration fails."""
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    work = tmp_path / 'work'
    opts = seg_demo_options(str(tmp_path / 'demo_data')) + ['train_dataloader.batch_size=1']
    out = run_tool(['env', f'PORT={port}', f'PYTHON={sys.executable}', 'OMP_NUM_THREADS=1', 'bash',
                    osp.join(ROOT, 'tools/dist_train.sh'), DEMO_CFG, '2', '--work-dir', str(work),
                    '--cfg-options'] + opts, cwd=tmp_path)
    assert 'Distributed training: True' in out
    assert re.search(r'Iter\(train\)\s+\[3/3\]', out)
    _miou(out, 'val')
    assert (work / 'iter_3.pth').is_file()
