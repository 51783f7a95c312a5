"""tools/image_demo.py on what users give it: a missing input, a folder without pictures, a folder
with a non-picture among pictures, a URL that cannot be read, weights of another variant (one
``error:`` line or a warning naming the file, no traceback), and a large picture (memory bounded:
masks are pasted only for the detections drawn, pictures beyond --max-side are shrunk first)."""
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT, run_tool

DEMO_CFG = osp.join(REPO_ROOT, 'configs/demo/mask_rcnn_shvit_s1_demo.py')
TOOL = osp.join(REPO_ROOT, 'tools/image_demo.py')


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """A config of the demo whose dataset (which DetInferencer builds for its palette) is two
    pictures, a checkpoint of it and one of SHViT-S2 (random weights), and two pictures."""
    import cv2

    from shvit_mm.apis import build_model
    from shvit_mm.datasets import DEMO_CLASSES, make_demo_dataset
    from shvit_mm.models.backbones import SHViT
    root = tmp_path_factory.mktemp('image_demo')
    data = make_demo_dataset(str(root / 'data'), num_train=1, num_val=1, verbose=False)
    cfg = root / 'demo.py'
    cfg.write_text(f'_base_ = {DEMO_CFG!r}\ntest_dataloader = dict(dataset=dict(data_root='
                   f'{data + "/"!r}, demo_cfg=dict(num_train=1, num_val=1)))\n')
    meta = dict(dataset_meta=dict(classes=DEMO_CLASSES))
    ckpt, s2 = root / 'det.pth', root / 'det_s2.pth'
    torch.save(dict(state_dict=build_model(str(cfg)).state_dict(), meta=meta), ckpt)
    dims = SHViT.arch_zoo['s2']['embed_dims']
    torch.save(dict(state_dict=build_model(str(cfg), cfg_options={
        'model.backbone.arch': 's2', 'model.neck.in_channels': dims}).state_dict(), meta=meta), s2)
    pictures = root / 'pictures'
    pictures.mkdir()
    for name in ('a.jpg', 'b.png'):
        cv2.imwrite(str(pictures / name), cv2.imread(osp.join(data, 'val', '000000.jpg')))
    return dict(root=root, cfg=str(cfg), ckpt=str(ckpt), s2=str(s2), pictures=pictures)


def _demo(setup, inputs, tmp_path, *extra, ok=False, weights=None):
    return run_tool([sys.executable, TOOL, str(inputs), setup['cfg'], '--weights',
                     weights or setup['ckpt'], '--out-dir', str(tmp_path / 'out'), '--device',
                     'cpu'] + list(extra), cwd=tmp_path, expect_ok=ok)


def _main(setup, inputs, tmp_path, capsys):
    """``tools/image_demo.py``'s function in this process (quicker than a new process); its exit
    status must be 1. Returns stdout + stderr."""
    from shvit_mm.cli.image_demo import cli_main
    with pytest.raises(SystemExit) as e:
        cli_main([str(inputs), setup['cfg'], '--weights', setup['ckpt'], '--out-dir',
                  str(tmp_path / 'out'), '--device', 'cpu'])
    assert e.value.code == 1
    out = capsys.readouterr()
    return out.out + out.err


def _error_line(out):
    assert 'Traceback' not in out, out[-3000:]
    lines = [line for line in out.splitlines() if line.startswith('error:')]
    assert len(lines) == 1, out[-3000:]
    return lines[0]


def test_missing_input(setup, tmp_path, capsys):
    line = _error_line(_main(setup, tmp_path / 'nope.jpg', tmp_path, capsys))
    assert 'input not found' in line and 'nope.jpg' in line


def test_folder_without_pictures(setup, tmp_path, capsys):
    folder = tmp_path / 'empty'
    folder.mkdir()
    (folder / 'notes.txt').write_text('no picture here')
    out = _main(setup, folder, tmp_path, capsys)
    line = _error_line(out)
    assert 'no pictures in the folder' in line and '1 files' in line
    assert 'results saved' not in out and not (tmp_path / 'out').exists()


def test_non_pictures_in_a_folder_are_skipped_with_a_warning(setup, tmp_path):
    import shutil
    folder = tmp_path / 'mixed'
    shutil.copytree(setup['pictures'], folder)
    (folder / 'notes.txt').write_text('not a picture')
    (folder / 'broken.jpg').write_bytes(b'not a JPEG either')
    out = _demo(setup, folder, tmp_path, ok=True)
    warnings = [line for line in out.splitlines() if line.startswith('warning: skipped')]
    assert len(warnings) == 2 and 'broken.jpg' in warnings[0] and 'notes.txt' in warnings[1]
    assert '2 picture(s) processed' in out
    assert sorted(p.name for p in (tmp_path / 'out' / 'vis').iterdir()) == ['a.jpg', 'b.png']
    assert sorted(p.name for p in (tmp_path / 'out' / 'preds').iterdir()) == ['a.json', 'b.json']


def test_unreachable_url(setup, tmp_path, capsys):
    line = _error_line(_main(setup, 'http://127.0.0.1:9/x.jpg', tmp_path, capsys))
    assert 'cannot read the URL http://127.0.0.1:9/x.jpg' in line


def test_weights_of_another_variant(setup, tmp_path):
    out = _demo(setup, setup['pictures'] / 'a.jpg', tmp_path, weights=setup['s2'])
    line = _error_line(out)
    assert 'does not fit the model of the config' in line and 'another variant' in line
    assert 'size mismatch' not in out and not (tmp_path / 'out').exists()


PEAK = '''import resource, subprocess, sys
p = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stderr.write(p.stdout + p.stderr)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)
raise SystemExit(p.returncode)
'''


def _peak_mb(setup, picture, tmp_path):
    """The tool's peak resident memory (MB) on ``picture``, in a process of its own."""
    proc = subprocess.run([sys.executable, '-c', PEAK, sys.executable, TOOL, str(picture),
                           setup['cfg'], '--weights', setup['ckpt'], '--out-dir',
                           str(tmp_path / 'out'), '--device', 'cpu'],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return int(proc.stdout.split()[-1]), proc.stderr


@pytest.mark.slow
def test_large_picture_memory_is_bounded(setup, tmp_path):
    """A 4000x3000 picture under a randomly initialised Mask R-CNN (100 detections, all scoring
    about 1/6, none drawn at --score-thr 0.3). Before, its 100 masks were pasted at full size
    (1.2 GB) and the visualizer drew on a full-size canvas (1.4 GB more): 2.6 GB above the run on a
    small picture. Now: none pasted, and the picture is shrunk to 2048x1536."""
    import cv2
    small, _ = _peak_mb(setup, setup['pictures'] / 'a.jpg', tmp_path)
    noise = np.random.default_rng(0).integers(0, 255, (75, 100, 3), dtype=np.uint8)
    big = tmp_path / 'big.jpg'
    cv2.imwrite(str(big), cv2.resize(noise, (4000, 3000), interpolation=cv2.INTER_LINEAR))
    peak, out = _peak_mb(setup, big, tmp_path)
    assert peak - small < 800, f'peak RSS {peak} MB on 4000x3000, {small} MB on 320x320'
    assert 'big.jpg: 4000x3000 shrunk to 2048x1536' in out
    assert cv2.imread(str(tmp_path / 'out' / 'vis' / 'big.jpg')).shape == (1536, 2048, 3)
