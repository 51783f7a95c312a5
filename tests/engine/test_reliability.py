"""Reliability through the real tools on the demo data: crash-safe checkpoints and resume, hostile
checkpoint files, bad images and annotations, non-finite losses, determinism."""
import json
import os
import os.path as osp
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from conftest import REPO_ROOT, demo_options, run_tool

DEMO_CFG = osp.join(REPO_ROOT, 'configs/demo/mask_rcnn_shvit_s1_demo.py')
TRAIN = osp.join(REPO_ROOT, 'tools/train.py')
TEST = osp.join(REPO_ROOT, 'tools/test.py')


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def _loadable(path):
    from shvit_mm.utils.safe_load import safe_load
    ckpt = safe_load(path)
    return 'state_dict' in ckpt and 'message_hub' in ckpt


# ------------------------------------------------------------------------------------------------
# 1. crash-safe checkpoints and resume, through tools/train.py and through a plain MMEngine Runner
# ------------------------------------------------------------------------------------------------
# Faults are injected by a hook inside the training process, at an exact point of the run: no
# timing, no polling, nothing a loaded machine can miss.
_KILL_HOOK = """
import os
import signal

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class KillSelfHook(Hook):
    \"\"\"Test fault injection: SIGKILL this process at iteration ``at_iter``, or in the middle of
    writing checkpoint ``epoch_<mid_checkpoint_epoch>`` (after half of the file is on disk).\"\"\"

    priority = 'LOWEST'

    def __init__(self, at_iter=None, mid_checkpoint_epoch=None):
        self.at_iter = at_iter
        self.mid_checkpoint_epoch = mid_checkpoint_epoch

    def before_train(self, runner):
        if self.mid_checkpoint_epoch is None:
            return
        save = runner.save_checkpoint
        target = f'epoch_{self.mid_checkpoint_epoch}.'

        def save_then_die(out_dir, filename, *args, **kwargs):
            save(out_dir, filename, *args, **kwargs)
            if filename.startswith(target):
                path = os.path.join(out_dir, filename)
                with open(path, 'r+b') as f:
                    f.truncate(os.path.getsize(path) // 2)  # the write got half way
                os.kill(os.getpid(), signal.SIGKILL)

        runner.save_checkpoint = save_then_die

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if self.at_iter is not None and runner.iter + 1 == self.at_iter:
            os.kill(os.getpid(), signal.SIGKILL)
"""

# A user's own script: MMEngine's Runner on the config, nothing of tools/train.py.
_PLAIN_RUNNER = """
import argparse

import torch
from mmengine.config import Config, DictAction
from mmengine.runner import Runner

torch.set_num_threads(1)  # as tools/train.py does for the demo config (env_cfg.torch_num_threads)

parser = argparse.ArgumentParser()
parser.add_argument('config')
parser.add_argument('--work-dir')
parser.add_argument('--resume', action='store_true')
parser.add_argument('--cfg-options', nargs='+', action=DictAction)
args = parser.parse_args()
cfg = Config.fromfile(args.config)
cfg.merge_from_dict(args.cfg_options or {})
cfg.work_dir = args.work_dir
cfg.resume = args.resume
Runner.from_cfg(cfg).train()
"""


def _train_cmd(work, opts):
    return [sys.executable, TRAIN, DEMO_CFG, '--work-dir', str(work), '--cfg-options'] + opts


def _crash_setup(tmp_path, **kill):
    """A config that is the demo config plus KillSelfHook(**kill); the env that finds the hook."""
    (tmp_path / 'kill_hook.py').write_text(_KILL_HOOK)
    (tmp_path / 'plain_runner.py').write_text(_PLAIN_RUNNER)
    config = tmp_path / 'crashing.py'
    args = ', '.join(f'{k}={v!r}' for k, v in kill.items())
    config.write_text(f"_base_ = '{DEMO_CFG}'\n"
                      "custom_imports = dict(imports=['shvit_mm', 'kill_hook'])\n"
                      "custom_hooks = [dict(type='FiniteLossHook'), "
                      f"dict(type='KillSelfHook', {args})]\n")
    env = dict(PYTHONPATH=f'{tmp_path}{os.pathsep}{os.environ.get("PYTHONPATH", "")}')
    return str(config), env


def _launch(how, config, work, opts, tmp_path, resume=False):
    script = TRAIN if how == 'tools/train.py' else str(tmp_path / 'plain_runner.py')
    return [sys.executable, script, config, '--work-dir', str(work)] + \
        (['--resume'] if resume else []) + ['--cfg-options'] + opts


def _run_killed(cmd, cwd, env):
    proc = subprocess.run(cmd, cwd=cwd, env=dict(os.environ, PYTHONWARNINGS='ignore', **env),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, (proc.stdout + proc.stderr)[-3000:])


@pytest.mark.slow
@pytest.mark.parametrize('how', ['tools/train.py', 'plain Runner'])
def test_sigkill_during_checkpoint_write_then_resume(tmp_path, how):
    work = tmp_path / 'work'
    config, env = _crash_setup(tmp_path, mid_checkpoint_epoch=2)
    opts = demo_options(str(tmp_path / 'data'), num_train=8, num_val=2, max_epochs=3) + [
        'train_cfg.val_interval=100', 'default_hooks.checkpoint.max_keep_ckpts=1']
    _run_killed(_launch(how, config, work, opts, tmp_path), tmp_path, env)

    # killed half way through writing epoch 2: only epoch 1 carries a checkpoint name
    assert sorted(p.name for p in work.iterdir() if '.pth' in p.name) == \
        ['epoch_1.pth', 'epoch_2.pth.part']
    assert _loadable(str(work / 'epoch_1.pth'))
    assert (work / 'last_checkpoint').read_text().strip() == str(work / 'epoch_1.pth')

    # resume (without the fault) from the last complete checkpoint
    out = run_tool(_launch(how, DEMO_CFG, work, opts, tmp_path, resume=True), cwd=tmp_path)
    assert 'resumed epoch: 1' in out, out[-3000:]
    assert 'Removing incomplete file' in out
    assert not [p for p in work.iterdir() if p.name.endswith('.part')]
    assert _loadable(str(work / 'epoch_3.pth'))
    assert sorted(p.name for p in work.glob('epoch_*.pth')) == ['epoch_3.pth']  # max_keep_ckpts=1
    assert (work / 'last_checkpoint').read_text().strip() == str(work / 'epoch_3.pth')


@pytest.mark.slow
@pytest.mark.parametrize('how', ['tools/train.py', 'plain Runner'])
def test_sigkill_between_checkpoints_then_resume(tmp_path, how):
    """Killed inside epoch 2 (iteration 6 of 4 per epoch), --resume continues from epoch 1."""
    work = tmp_path / 'work'
    config, env = _crash_setup(tmp_path, at_iter=6)
    opts = demo_options(str(tmp_path / 'data'), num_train=8, num_val=2, max_epochs=3) + [
        'train_cfg.val_interval=100']
    _run_killed(_launch(how, config, work, opts, tmp_path), tmp_path, env)
    assert sorted(p.name for p in work.iterdir() if '.pth' in p.name) == ['epoch_1.pth']
    assert _loadable(str(work / 'epoch_1.pth'))
    out = run_tool(_launch(how, DEMO_CFG, work, opts, tmp_path, resume=True), cwd=tmp_path)
    assert 'resumed epoch: 1, iter: 4' in out, out[-3000:]
    assert _loadable(str(work / 'epoch_3.pth'))


# ------------------------------------------------------------------------------------------------
# 2. hostile files
# ------------------------------------------------------------------------------------------------
def _evil_checkpoint(tmp_path):
    from conftest import make_official_state_dict
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': make_official_state_dict('s1', with_head=False),
                'payload': _Payload(str(marker))}, path)
    return path, marker


@pytest.mark.slow
def test_hostile_checkpoint_refused_by_train_test_and_converter(tmp_path):
    path, marker = _evil_checkpoint(tmp_path)
    opts = demo_options(str(tmp_path / 'data'), num_train=4, num_val=2, max_epochs=1)
    runs = {
        'load_from': _train_cmd(tmp_path / 'w1', opts + [f'load_from={path}']),
        'resume': _train_cmd(tmp_path / 'w2', opts) + ['--resume', str(path)],
        'test': [sys.executable, TEST, DEMO_CFG, str(path), '--work-dir', str(tmp_path / 'w3'),
                 '--cfg-options'] + opts,
        'converter': [sys.executable, osp.join(REPO_ROOT, 'tools/model_converters/official_det_to_mmdet3.py'),
                      str(path), str(tmp_path / 'out.pth')],
    }
    for what, cmd in runs.items():
        out = run_tool(cmd, cwd=tmp_path, expect_ok=False)
        assert 'Refused to load' in out and str(path) in out, (what, out[-2000:])
        assert 'Traceback' not in out, (what, out[-2000:])
        assert not marker.exists(), what
    assert not (tmp_path / 'out.pth').exists()


# ------------------------------------------------------------------------------------------------
# 3. bad data
# ------------------------------------------------------------------------------------------------
def _spoil_dataset(root):
    """Turn a small demo split into a collection of the bad inputs users meet. Returns file names."""
    ann_file = osp.join(root, 'annotations', 'instances_train.json')
    with open(ann_file) as f:
        coco = json.load(f)
    imgs = coco['images']
    img_dir = osp.join(root, 'train')
    names = {}
    # missing and corrupt files
    os.remove(osp.join(img_dir, imgs[0]['file_name']))
    names['missing'] = imgs[0]['file_name']
    with open(osp.join(img_dir, imgs[1]['file_name']), 'r+b') as f:
        f.truncate(100)
    names['corrupt'] = imgs[1]['file_name']
    # grayscale, RGBA and 16-bit pictures (PNG)
    for i, kind in zip((2, 3, 4), ('gray', 'rgba', 'sixteen')):
        src = cv2.imread(osp.join(img_dir, imgs[i]['file_name']))
        new = imgs[i]['file_name'].replace('.jpg', f'_{kind}.png')
        if kind == 'gray':
            pic = cv2.cvtColor(src, cv2.COLOR_BGR2GRAY)
        elif kind == 'rgba':
            pic = np.concatenate([src, np.full(src.shape[:2] + (1,), 200, np.uint8)], axis=2)
        else:
            pic = src.astype(np.uint16) * 257
        cv2.imwrite(osp.join(img_dir, new), pic)
        imgs[i]['file_name'] = new
        names[kind] = new
    # degenerate and out-of-image boxes on picture 5
    img5 = imgs[5]
    base = dict(image_id=img5['id'], category_id=coco['categories'][0]['id'], iscrowd=0,
                segmentation=[[1, 1, 2, 1, 2, 2]])
    next_id = max(a['id'] for a in coco['annotations']) + 1
    for k, (bbox, area) in enumerate([([10, 10, 0, 5], 0), ([10, 10, -4, 5], 0),
                                      ([img5['width'] + 5, 3, 10, 10], 100),
                                      ([-20, -20, 30, 30], 100), ([5, 5, 1e-3, 1e-3], 1e-6)]):
        coco['annotations'].append(dict(base, id=next_id + k, bbox=bbox, area=area))
    # an image without annotations, an extreme aspect ratio and a tiny picture
    for kind, (h, w) in (('empty', (96, 128)), ('thin', (24, 900)), ('tiny', (40, 30))):
        new_id = max(i['id'] for i in imgs) + 1
        fname = f'{kind}.jpg'
        rng = np.random.default_rng(new_id)
        cv2.imwrite(osp.join(img_dir, fname), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        imgs.append(dict(id=new_id, file_name=fname, height=h, width=w))
        names[kind] = fname
        if kind != 'empty':
            x0, y0, bw, bh = w // 4, h // 4, max(2, w // 2), max(2, h // 2)
            coco['annotations'].append(dict(
                id=max(a['id'] for a in coco['annotations']) + 1, image_id=new_id,
                category_id=coco['categories'][1]['id'], iscrowd=0, bbox=[x0, y0, bw, bh],
                area=bw * bh, segmentation=[[x0, y0, x0 + bw, y0, x0 + bw, y0 + bh, x0, y0 + bh]]))
    with open(ann_file, 'w') as f:
        json.dump(coco, f)
    return names


@pytest.fixture
def spoiled_demo(tmp_path):
    from shvit_mm.datasets import make_demo_dataset
    root = make_demo_dataset(str(tmp_path / 'data'), num_train=8, num_val=2, verbose=False)
    return root, _spoil_dataset(root)


@pytest.mark.slow
def test_bad_images_and_annotations_are_skipped_or_repaired(tmp_path, spoiled_demo):
    root, names = spoiled_demo
    work = tmp_path / 'work'
    opts = demo_options(root, num_train=8, num_val=2, max_epochs=2) + [
        'train_dataloader.batch_size=1', 'train_dataloader.sampler.shuffle=False']
    out = run_tool(_train_cmd(work, opts), cwd=tmp_path)
    for kind in ('missing', 'corrupt'):
        assert f'Cannot use image' in out and names[kind] in out, kind
    assert (work / 'epoch_2.pth').is_file()
    # the repaired pictures went through the model: every loss logged is finite
    scalars = [json.loads(line) for line in open(next(work.glob('*/vis_data/scalars.json')))]
    losses = [s['loss'] for s in scalars if 'loss' in s]
    assert losses and all(np.isfinite(losses))


@pytest.mark.slow
def test_bad_image_with_stock_loader_names_the_file(tmp_path, spoiled_demo):
    root, names = spoiled_demo
    opts = demo_options(root, num_train=8, num_val=2, max_epochs=1) + [
        'train_dataloader.dataset.pipeline.0.type=LoadImageFromFile',
        'train_dataloader.sampler.shuffle=False']
    out = run_tool(_train_cmd(tmp_path / 'work', opts), cwd=tmp_path, expect_ok=False)
    assert names['missing'] in out


def test_repairs_of_unusual_images():
    from shvit_mm.datasets.transforms import to_3channel_uint8
    gray16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    out = to_3channel_uint8(gray16)
    assert out.shape == (3, 4, 3) and out.dtype == np.uint8 and out[2, 3, 0] == round(55000 / 257)
    rgba = np.zeros((2, 2, 4), np.uint8)
    assert to_3channel_uint8(rgba).shape == (2, 2, 3)
    assert to_3channel_uint8(np.zeros((2, 2, 2), np.uint8)).shape == (2, 2, 3)


_NAN_HOOK = '''
import torch
from mmengine.hooks import Hook
from mmdet.registry import HOOKS


@HOOKS.register_module()
class PoisonWeightsHook(Hook):
    """Test fault injection: turn the weights into NaN before iteration ``at``."""

    def __init__(self, at):
        self.at = at

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.at:
            with torch.no_grad():
                for p in runner.model.parameters():
                    p.fill_(float('nan'))
'''


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    (tmp_path / 'poison_hook.py').write_text(_NAN_HOOK)
    config = tmp_path / 'poisoned.py'
    config.write_text(f"_base_ = '{DEMO_CFG}'\n"
                      "custom_imports = dict(imports=['shvit_mm', 'poison_hook'])\n"
                      # a child's custom_hooks replace the base's: keep the demo's loss guard
                      "custom_hooks = [dict(type='FiniteLossHook'), "
                      "dict(type='PoisonWeightsHook', at=4)]\n")
    work = tmp_path / 'work'
    opts = demo_options(str(tmp_path / 'data'), num_train=8, num_val=2, max_epochs=1) + [
        'train_dataloader.batch_size=1', 'default_hooks.checkpoint.by_epoch=False',
        'default_hooks.checkpoint.interval=2']
    env_path = f'{tmp_path}{os.pathsep}{os.environ.get("PYTHONPATH", "")}'
    cmd = [sys.executable, TRAIN, str(config), '--work-dir', str(work), '--cfg-options'] + opts
    out = run_tool(cmd, cwd=tmp_path, expect_ok=False, env=dict(PYTHONPATH=env_path))
    assert 'Non-finite loss' in out and 'at iteration 4' in out, out[-3000:]
    assert sorted(p.name for p in work.glob('iter_*.pth')) == ['iter_2.pth']
    assert (work / 'last_checkpoint').read_text().strip() == str(work / 'iter_2.pth')
    from shvit_mm.utils.safe_load import safe_load
    state = safe_load(str(work / 'iter_2.pth'))['state_dict']
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


# ------------------------------------------------------------------------------------------------
# 5. determinism
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_fixed_seed_gives_identical_first_20_losses(tmp_path):
    root = str(tmp_path / 'data')
    opts = demo_options(root, num_train=40, num_val=2, max_epochs=1) + [
        'train_dataloader.batch_size=2', 'randomness.seed=0', 'randomness.deterministic=True',
        'default_hooks.logger.interval=1', 'train_cfg.val_interval=100']
    losses = []
    for run in ('a', 'b'):
        work = tmp_path / run
        run_tool(_train_cmd(work, opts), cwd=tmp_path)
        scalars = [json.loads(line) for line in open(next(work.glob('*/vis_data/scalars.json')))]
        losses.append([(s['iter'], s['loss']) for s in scalars if 'loss' in s][:20])
    assert len(losses[0]) == 20
    assert losses[0] == losses[1]
