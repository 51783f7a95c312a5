"""The embedded demo dataset (deterministic, valid COCO, written atomically) and a short demo run
end to end through the real command-line tools: train -> COCO AP on val -> checkpoint -> test
(same AP again, painted pictures, dumped predictions), also under torchrun on the CPU."""
import multiprocessing as mp
import os
import os.path as osp
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT as ROOT, file_tree
DEMO_CFG = osp.join(ROOT, 'configs/demo/mask_rcnn_shvit_s1_demo.py')
TINY = dict(num_train=6, num_val=3)


# ------------------------------------------------------------------------------------------------
# dataset
# ------------------------------------------------------------------------------------------------
def test_demo_dataset_is_deterministic(tmp_path):
    from shvit_mm.datasets import make_demo_dataset
    a = file_tree(make_demo_dataset(str(tmp_path / 'a'), verbose=False, **TINY))
    b = file_tree(make_demo_dataset(str(tmp_path / 'b'), verbose=False, **TINY))
    assert sorted(a) == sorted(b)
    assert len([k for k in a if k.endswith('.jpg')]) == TINY['num_train'] + TINY['num_val']
    for k in a:
        assert a[k] == b[k], f'{k} differs between two creations'
    # another seed gives other pictures; a larger set starts with the same pictures
    c = file_tree(make_demo_dataset(str(tmp_path / 'c'), seed=1, verbose=False, **TINY))
    assert c['train/000000.jpg'] != a['train/000000.jpg']
    d = file_tree(make_demo_dataset(str(tmp_path / 'd'), num_train=7, num_val=3, verbose=False))
    assert d['train/000005.jpg'] == a['train/000005.jpg'] and 'train/000006.jpg' in d


def test_demo_dataset_is_valid_coco(tmp_path):
    import cv2
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from shvit_mm.datasets import DEMO_CLASSES, make_demo_dataset
    root = make_demo_dataset(str(tmp_path / 'demo'), num_train=12, num_val=5, verbose=False)
    seen_classes = set()
    for split, n in [('train', 12), ('val', 5)]:
        coco = COCO(osp.join(root, 'annotations', f'instances_{split}.json'))
        assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(DEMO_CLASSES)
        assert len(coco.getImgIds()) == n
        for img_id in coco.getImgIds():
            info = coco.imgs[img_id]
            img = cv2.imread(osp.join(root, split, info['file_name']))
            assert img is not None and img.shape[:2] == (info['height'], info['width'])
            assert 256 <= min(img.shape[:2]) and max(img.shape[:2]) <= 320
            anns = coco.imgToAnns[img_id]
            assert 1 <= len(anns) <= 6
            for ann in anns:
                seen_classes.add(ann['category_id'])
                m = coco.annToMask(ann)
                assert m.shape == (info['height'], info['width'])
                assert m.sum() == ann['area'] > 0
                x, y, w, h = ann['bbox']
                assert 0 <= x and 0 <= y and x + w <= info['width'] and y + h <= info['height']
                ys, xs = np.nonzero(m)  # the box is the tight box of the visible mask
                assert [x, y, x + w, y + h] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
                assert mask_utils.area(ann['segmentation']) == ann['area']
                assert ann['iscrowd'] == 0
    assert len(seen_classes) >= 4
    # train and val are different pictures
    tr = file_tree(osp.join(root, 'train'))
    va = file_tree(osp.join(root, 'val'))
    assert not set(tr.values()) & set(va.values())


def test_demo_dataset_reuse_and_clear_errors(tmp_path):
    from shvit_mm.datasets import make_demo_dataset
    root = make_demo_dataset(str(tmp_path / 'demo'), verbose=False, **TINY)
    stamp = os.stat(osp.join(root, 'train', '000000.jpg')).st_mtime_ns
    assert make_demo_dataset(root, verbose=False, **TINY) == root  # reused, not rewritten
    assert os.stat(osp.join(root, 'train', '000000.jpg')).st_mtime_ns == stamp
    with pytest.raises(RuntimeError, match='was made with'):
        make_demo_dataset(root, num_train=7, num_val=3, verbose=False)
    junk = tmp_path / 'junk'
    junk.mkdir()
    (junk / 'half_written.jpg').write_bytes(b'')
    with pytest.raises(RuntimeError, match='no complete demo dataset'):
        make_demo_dataset(str(junk), verbose=False, **TINY)
    assert [p for p in os.listdir(tmp_path) if '.tmp-' in p] == []  # no temporary leftovers


def _make(root, q):
    from shvit_mm.datasets import make_demo_dataset
    try:
        q.put(make_demo_dataset(root, verbose=False, **TINY))
    except Exception as e:  # pragma: no cover - reported by the assertion below
        q.put(repr(e))


def test_demo_dataset_concurrent_creation(tmp_path):
    """Two processes creating the same dataset at once both succeed and leave one complete copy."""
    root = str(tmp_path / 'demo')
    ctx = mp.get_context('fork')
    q = ctx.Queue()
    procs = [ctx.Process(target=_make, args=(root, q)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [q.get(timeout=5) for _ in procs] == [root, root]
    assert sorted(os.listdir(tmp_path)) == ['demo']
    assert len(os.listdir(osp.join(root, 'train'))) == TINY['num_train']


# ------------------------------------------------------------------------------------------------
# end to end through tools/train.py and tools/test.py
# ------------------------------------------------------------------------------------------------
def _tiny_options(data_root):
    opts = []
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts += [f'{loader}.dataset.data_root={data_root}/', f'{loader}.batch_size=2']
        opts += [f'{loader}.dataset.demo_cfg.{k}={v}' for k, v in TINY.items()]
    for ev in ('val_evaluator', 'test_evaluator'):
        opts.append(f'{ev}.ann_file={data_root}/annotations/instances_val.json')
    opts += ['train_cfg.max_epochs=1', 'train_cfg.val_interval=1', 'default_hooks.checkpoint.interval=1',
             'default_hooks.logger.interval=1']
    return opts


def _run(args, cwd, timeout=600):
    env = dict(os.environ, PYTHONWARNINGS='ignore')
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    return out


def _copypaste(out, kind):
    found = re.findall(rf'{kind}_mAP_copypaste: ([-0-9. ]+)', out)
    assert found, f'no {kind} AP line in the output'
    return found[-1].split()


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    data_root = str(tmp_path / 'demo_data')
    work = tmp_path / 'work'
    opts = _tiny_options(data_root)
    out = _run([sys.executable, osp.join(ROOT, 'tools/train.py'), DEMO_CFG, '--work-dir', str(work),
                '--cfg-options'] + opts, cwd=tmp_path)
    assert 'creating the demo dataset' in out  # made on first use by the plain train command
    assert re.search(r'Epoch\(train\)\s+\[1\]\[\d+/3\].*eta:', out)  # progress with ETA
    train_bbox, train_segm = _copypaste(out, 'bbox'), _copypaste(out, 'segm')
    assert len(train_bbox) == 6 and len(train_segm) == 6
    ckpt = work / 'epoch_1.pth'
    assert ckpt.is_file()
    assert (work / 'last_checkpoint').read_text().strip().endswith('epoch_1.pth')

    out = _run([sys.executable, osp.join(ROOT, 'tools/test.py'), DEMO_CFG, str(ckpt), '--work-dir',
                str(work), '--show-dir', 'vis', '--out', str(tmp_path / 'preds.pkl'), '--cfg-options']
               + opts, cwd=tmp_path)
    assert 'creating the demo dataset' not in out  # reused
    # same checkpoint, same val pictures: the test tool reprints the AP of the training run
    assert _copypaste(out, 'bbox') == train_bbox
    assert _copypaste(out, 'segm') == train_segm
    pictures = [p for p in work.glob('*/vis/*.jpg')]
    assert len(pictures) == TINY['num_val']
    import pickle
    with open(tmp_path / 'preds.pkl', 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == TINY['num_val']
    assert {'bboxes', 'scores', 'labels', 'masks'} <= set(preds[0]['pred_instances'])

    # --resume without a path: continue from the latest checkpoint in work_dir (optimizer, schedule
    # and message hub come back: this loads with PyTorch's weights_only protection on)
    out = _run([sys.executable, osp.join(ROOT, 'tools/train.py'), DEMO_CFG, '--work-dir', str(work),
                '--resume', '--cfg-options'] + opts + ['train_cfg.max_epochs=2', 'train_cfg.val_interval=5'],
               cwd=tmp_path)
    assert f'Auto resumed from the latest checkpoint {ckpt}' in out
    assert 'resumed epoch: 1, iter: 3' in out
    assert re.search(r'Epoch\(train\)\s+\[2\]\[3/3\]', out)
    assert (work / 'epoch_2.pth').is_file()


def _run_dist(args, cwd, log_dir, timeout=600):
    """Run dist_train.sh / dist_test.sh with each rank's output kept under ``log_dir``; on failure
    the assertion shows every rank's own log, not only torchrun's summary."""
    env = dict(os.environ, PYTHONWARNINGS='ignore', LOG_DIR=str(log_dir))
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        logs = []
        for path in sorted(p for p in log_dir.rglob('*') if p.is_file()):
            logs.append(f'===== {path.relative_to(log_dir)} =====\n{path.read_text(errors="replace")[-4000:]}')
        pytest.fail(f'exit status {proc.returncode}\n{out[-3000:]}\n'
                    + ('\n'.join(logs) or f'(no per-rank logs under {log_dir})'))
    return out


@pytest.mark.slow
def test_demo_dist_train_two_cpu_processes(tmp_path):
    """tools/dist_train.sh with 2 processes on a machine without GPUs: gloo + CPU DDP, one step."""
    data_root = str(tmp_path / 'demo_data')
    work = tmp_path / 'work'
    opts = _tiny_options(data_root) + ['train_dataloader.batch_size=1', 'val_dataloader.batch_size=1',
                                       'test_dataloader.batch_size=1']
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    env_cmd = ['env', f'PORT={port}', f'PYTHON={sys.executable}', 'OMP_NUM_THREADS=1']
    out = _run_dist(env_cmd + ['bash', osp.join(ROOT, 'tools/dist_train.sh'), DEMO_CFG, '2',
                               '--work-dir', str(work), '--cfg-options'] + opts, cwd=tmp_path,
                    log_dir=tmp_path / 'train_logs')
    assert re.search(r"Distributed launcher: pytorch", out)
    assert 'Distributed training: True' in out
    assert re.search(r'Epoch\(train\)\s+\[1\]\[3/3\]', out)  # 6 pictures / (2 processes x 1)
    _copypaste(out, 'bbox')
    # one checkpoint, written once by rank 0 (no second copy, no partial file left behind)
    assert sorted(p.name for p in work.iterdir() if '.pth' in p.name) == ['epoch_1.pth']
    assert (work / 'epoch_1.pth').is_file()

    # tools/dist_test.sh: each process predicts part of the val split; the results are gathered
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    env_cmd = ['env', f'PORT={port}', f'PYTHON={sys.executable}', 'OMP_NUM_THREADS=1']
    preds_file = tmp_path / 'dist_preds.pkl'
    out = _run_dist(env_cmd + ['bash', osp.join(ROOT, 'tools/dist_test.sh'), DEMO_CFG,
                               str(work / 'epoch_1.pth'), '2', '--work-dir', str(work), '--out',
                               str(preds_file), '--cfg-options'] + opts, cwd=tmp_path,
                    log_dir=tmp_path / 'test_logs')
    _copypaste(out, 'bbox')
    import pickle
    with open(preds_file, 'rb') as f:
        preds = pickle.load(f)
    from pycocotools.coco import COCO
    val_ids = set(COCO(osp.join(data_root, 'annotations', 'instances_val.json')).getImgIds())
    assert len(preds) == TINY['num_val'] and {p['img_id'] for p in preds} == val_ids


# ------------------------------------------------------------------------------------------------
# configs
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('name', ['mask_rcnn_shvit_s1_demo', 'mask_rcnn_r18_demo',
                                  'retinanet_shvit_s1_demo'])
def test_demo_schedule_ends_with_training(name):
    """The decay reaches its floor at the last epoch, the one evaluated and checkpointed (a
    baseline trained for fewer epochs than the base config must not stop mid-schedule)."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(ROOT, 'configs/demo', name + '.py'))
    epochs = cfg.train_cfg.max_epochs
    assert cfg.train_cfg.val_interval == epochs
    assert cfg.default_hooks.checkpoint.interval == epochs
    decay = cfg.param_scheduler[-1]
    assert decay.by_epoch and decay.end == epochs and decay.get('T_max', epochs) == epochs


def test_demo_roi_extractors_gather():
    """The Mask R-CNN demos pool RoIs with GatherRoIExtractor at fixed sampling (the gather's
    fast path; sampling_ratio=0 would fall back to the compiled kernels)."""
    from mmengine.config import Config
    for name in ('mask_rcnn_shvit_s1_demo', 'mask_rcnn_r18_demo'):
        roi = Config.fromfile(osp.join(ROOT, 'configs/demo', name + '.py')).model.roi_head
        for ext in (roi.bbox_roi_extractor, roi.mask_roi_extractor):
            assert ext.type == 'GatherRoIExtractor' and ext.roi_layer.sampling_ratio > 0
