"""Training that keeps no wrong state, through tools/train.py on the demo data: the loss guard
refuses non-finite weights, best checkpoints are crash-safe, a full disk does not block --resume,
bad checkpoint files are named for what they are and a broken last_checkpoint falls back.

Faults are injected from inside the training process by test hooks (faults.py below), at an exact
point of the run, as in tests/engine/test_reliability.py."""
import os
import os.path as osp
import signal
import subprocess
import sys

import pytest
import torch

from conftest import REPO_ROOT, demo_options, run_tool

DEMO_CFG = osp.join(REPO_ROOT, 'configs/demo/mask_rcnn_shvit_s1_demo.py')
TRAIN = osp.join(REPO_ROOT, 'tools/train.py')
TEST = osp.join(REPO_ROOT, 'tools/test.py')
BEST = 'best_coco_bbox_mAP_epoch_{}.pth'  # the name SafeCheckpointHook gives a best checkpoint

_FAULTS = '''
import errno
import os
import signal

import torch
from mmengine.fileio.backends import LocalBackend
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class OverflowUpdateHook(Hook):
    """The update of iteration ``at`` overflows: one weight's gradient becomes inf after a finite
    loss (the loss of that iteration is untouched)."""

    def __init__(self, at):
        self.at, self.handle = at, None

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.at:
            weight = next(p for p in runner.model.parameters() if p.requires_grad)
            self.handle = weight.register_hook(lambda g: torch.full_like(g, float('inf')))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if self.handle is not None:
            assert torch.isfinite(outputs['loss']), 'the injected fault must keep the loss finite'
            self.handle.remove()
            self.handle = None


@HOOKS.register_module()
class DiskFullHook(Hook):
    """The disk fills while the file whose name starts with ``name`` is written: half of its bytes
    reach the disk, then the write fails with ENOSPC (inside MMEngine's LocalBackend.put)."""

    def __init__(self, name):
        self.name = name

    def before_train(self, runner):
        put, name = LocalBackend.put, self.name

        def put_then_fail(backend, obj, filepath):
            if os.path.basename(str(filepath)).startswith(name):
                with open(filepath, 'wb') as f:
                    f.write(obj[:len(obj) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filepath))
            return put(backend, obj, filepath)

        LocalBackend.put = put_then_fail


@HOOKS.register_module()
class KillMidWriteHook(Hook):
    """SIGKILL this process half way through writing the file whose name starts with ``name``."""

    def __init__(self, name):
        self.name = name

    def before_train(self, runner):
        save, name = runner.save_checkpoint, self.name

        def save_then_die(out_dir, filename, *args, **kwargs):
            save(out_dir, filename, *args, **kwargs)
            if filename.startswith(name):
                path = os.path.join(out_dir, filename)
                with open(path, 'r+b') as f:
                    f.truncate(os.path.getsize(path) // 2)
                os.kill(os.getpid(), signal.SIGKILL)

        runner.save_checkpoint = save_then_die


@HOOKS.register_module()
class ImprovingScoreHook(Hook):
    """The validation score ``key`` improves every epoch (a tiny demo run scores about 0 each
    time, so no later epoch would be a new best)."""

    priority = 'HIGHEST'  # before the checkpoint hook reads the metrics

    def __init__(self, key):
        self.key = key

    def after_val_epoch(self, runner, metrics=None):
        metrics[self.key] = float(runner.epoch)
'''

# A disk that the stale checkpoint piece fills: while any *.part file is in the work directory,
# opening a file there for writing fails with ENOSPC (imported by the config, before the Runner).
_FULL_DISK = '''
import builtins
import errno
import glob
import os

WORK = os.path.abspath(os.environ['FULL_DISK_WORK_DIR'])
_open = builtins.open


def _open_on_full_disk(file, mode='r', *args, **kwargs):
    if isinstance(file, (str, os.PathLike)) and set(mode) & set('wax+') and \\
            os.path.abspath(file).startswith(WORK) and glob.glob(os.path.join(WORK, '*.part')):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
    return _open(file, mode, *args, **kwargs)


builtins.open = _open_on_full_disk
'''


def _config(tmp_path, name, hooks=(), imports=('faults',)):
    """The demo config plus the given fault hooks (the demo's loss guard kept); its env."""
    (tmp_path / 'faults.py').write_text(_FAULTS)
    (tmp_path / 'full_disk.py').write_text(_FULL_DISK)
    config = tmp_path / f'{name}.py'
    hook_cfgs = ', '.join(["dict(type='FiniteLossHook')"] + [
        f"dict(type={t!r}, " + ', '.join(f'{k}={v!r}' for k, v in kw.items()) + ')'
        for t, kw in hooks])
    config.write_text(f"_base_ = '{DEMO_CFG}'\n"
                      f"custom_imports = dict(imports={['shvit_mm', *imports]!r})\n"
                      f"custom_hooks = [{hook_cfgs}]\n")
    env = dict(PYTHONPATH=f'{tmp_path}{os.pathsep}{os.environ.get("PYTHONPATH", "")}')
    return str(config), env


def _train(config, work, opts, resume=None):
    return [sys.executable, TRAIN, config, '--work-dir', str(work)] + \
        (['--resume'] + ([resume] if resume != 'auto' else []) if resume else []) + \
        ['--cfg-options'] + opts


def _load(path):
    from shvit_mm.utils.safe_load import safe_load
    return safe_load(str(path))


def _all_finite(path):
    return all(torch.isfinite(v).all() for v in _load(path)['state_dict'].values()
               if v.is_floating_point())


def _names(work, pattern='*'):
    return sorted(p.name for p in work.glob(pattern))


def _last_checkpoint(work):
    return (work / 'last_checkpoint').read_text().strip()


# ------------------------------------------------------------------------------------------------
# 1. the loss guard: an update that overflows after a finite loss is never saved
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_overflowing_update_is_never_saved_and_the_named_checkpoint_is_finite(tmp_path):
    config, env = _config(tmp_path, 'overflow', [('OverflowUpdateHook', dict(at=4))])
    work = tmp_path / 'work'
    opts = demo_options(str(tmp_path / 'data'), num_train=8, num_val=2, max_epochs=1) + [
        'train_dataloader.batch_size=1', 'default_hooks.checkpoint.by_epoch=False',
        'default_hooks.checkpoint.interval=2']
    out = run_tool(_train(config, work, opts), cwd=tmp_path, expect_ok=False, env=env)
    assert 'FloatingPointError' in out and 'after iteration 4' in out, out[-3000:]
    assert 'not finite' in out and 'overflowed' in out, out[-3000:]
    # the weights of iteration 4 were refused: iteration 2's checkpoint is the last one, finite,
    # and it is the one the error names
    assert _names(work, 'iter_*') == ['iter_2.pth']
    assert _last_checkpoint(work) == str(work / 'iter_2.pth')
    assert f'the last good checkpoint is {work / "iter_2.pth"}' in out
    assert _all_finite(work / 'iter_2.pth')


# ------------------------------------------------------------------------------------------------
# 2. save_best checkpoints go through the atomic write
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigkill_while_writing_the_best_checkpoint_keeps_the_previous_best(tmp_path):
    score = [('ImprovingScoreHook', dict(key='coco/bbox_mAP'))]
    config, env = _config(tmp_path, 'kill_best',
                          score + [('KillMidWriteHook', dict(name=BEST.format(2)))])
    work = tmp_path / 'work'
    opts = demo_options(str(tmp_path / 'data'), num_train=4, num_val=2, max_epochs=3) + [
        'train_cfg.val_interval=1', 'default_hooks.checkpoint.save_best=coco/bbox_mAP']
    proc = subprocess.run(_train(config, work, opts), cwd=tmp_path, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONWARNINGS='ignore', **env), timeout=900)
    assert proc.returncode == -signal.SIGKILL, (proc.stdout + proc.stderr)[-3000:]
    # killed half way through the new best: the previous best is still there and complete, and no
    # file under a checkpoint name is partial
    assert _names(work, 'best_*') == [BEST.format(1), BEST.format(2) + '.part']
    assert _load(work / BEST.format(1))['meta']['epoch'] == 1

    # resume (the score still improving, no fault; published checkpoints too): the stale piece
    # goes, the new best replaces the old one, every file written is complete
    config, env = _config(tmp_path, 'best', score)
    out = run_tool(_train(config, work, opts + [
        "default_hooks.checkpoint.published_keys=['meta','state_dict']"], resume='auto'),
        cwd=tmp_path, env=env)
    assert 'resumed epoch: 2' in out and 'Removing incomplete file' in out, out[-3000:]
    assert not _names(work, '*.part')
    assert [n for n in _names(work, 'best_*') if '-' not in n] == [BEST.format(3)]
    assert _load(work / BEST.format(3))['meta']['epoch'] == 3
    published = [n for n in _names(work, '*.pth') if '-' in n]
    assert len(published) == 2 and all(set(_load(work / n)) == {'meta', 'state_dict'}
                                       for n in published), published


# ------------------------------------------------------------------------------------------------
# 3. a full disk: the failed write cleans up after itself, and --resume recovers
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_full_disk_during_a_checkpoint_write_then_resume(tmp_path):
    work = tmp_path / 'work'
    opts = demo_options(str(tmp_path / 'data'), num_train=4, num_val=2, max_epochs=2) + [
        'train_cfg.val_interval=100']
    config, env = _config(tmp_path, 'disk_full', [('DiskFullHook', dict(name='epoch_2.'))])
    out = run_tool(_train(config, work, opts), cwd=tmp_path, expect_ok=False, env=env)
    assert 'No space left on device' in out and 'partial file was removed' in out, out[-3000:]
    assert f'the last complete checkpoint is {work / "epoch_1.pth"}' in out
    assert _names(work, '*.pth*') == ['epoch_1.pth']  # no .part holding the space
    assert _last_checkpoint(work) == str(work / 'epoch_1.pth')

    # a write killed while the disk filled leaves its piece (as in test_reliability's kill tests);
    # with that piece holding the space, every write into the work dir fails until it is removed
    data = (work / 'epoch_1.pth').read_bytes()
    (work / 'epoch_2.pth.part').write_bytes(data[:len(data) // 2])
    config, env = _config(tmp_path, 'full_disk', imports=('full_disk',))
    env['FULL_DISK_WORK_DIR'] = str(work)
    out = run_tool(_train(config, work, opts, resume='auto'), cwd=tmp_path, env=env)
    assert 'Removing incomplete file' in out and 'resumed epoch: 1' in out, out[-3000:]
    assert not _names(work, '*.part') and _last_checkpoint(work) == str(work / 'epoch_2.pth')
    assert _load(work / 'epoch_2.pth')['meta']['epoch'] == 2


# ------------------------------------------------------------------------------------------------
# 6. bad checkpoint files, and a last_checkpoint that names one
# ------------------------------------------------------------------------------------------------
def _bad_files(tmp_path):
    """name -> (path, the words the error must use) for the bad files users meet."""
    good = tmp_path / 'good.pth'
    torch.save({'state_dict': {'w': torch.randn(64, 64)}, 'meta': {}}, good)
    data = good.read_bytes()
    contents = {'truncated': (data[:len(data) // 2], 'truncated'), 'empty': (b'', 'empty'),
                'text': (b'model weights are on the shared drive\n', 'not a PyTorch checkpoint'),
                'random': (torch.randint(0, 256, (4096,), dtype=torch.uint8,
                                         generator=torch.Generator().manual_seed(0)).numpy()
                           .tobytes(), 'not a PyTorch checkpoint')}
    files = {}
    for name, (content, words) in contents.items():
        (tmp_path / f'{name}.pth').write_bytes(content)
        files[name] = (tmp_path / f'{name}.pth', words)
    return files


def test_safe_load_says_what_a_bad_file_is(tmp_path):
    from shvit_mm.utils.safe_load import CheckpointFileError, safe_load
    for name, (path, words) in _bad_files(tmp_path).items():
        with pytest.raises(CheckpointFileError) as info:
            safe_load(str(path))
        message = str(info.value)
        assert words in message and str(path) in message and '\n' not in message, (name, message)
        assert 'execute code' not in message


@pytest.mark.slow
@pytest.mark.parametrize('kind', ['truncated', 'empty', 'text', 'random'])
def test_train_resume_from_a_bad_file_says_what_it_is(tmp_path, kind):
    path, words = _bad_files(tmp_path)[kind]
    opts = demo_options(str(tmp_path / 'data'), num_train=4, num_val=2)
    out = run_tool(_train(DEMO_CFG, tmp_path / 'work', opts, resume=str(path)), cwd=tmp_path,
                   expect_ok=False)
    errors = [line for line in out.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and words in errors[0] and str(path) in errors[0], out[-3000:]
    assert 'Traceback' not in out and 'execute code' not in out


@pytest.mark.slow
def test_test_tool_with_a_bad_file_says_what_it_is(tmp_path):
    path, words = _bad_files(tmp_path)['text']
    opts = demo_options(str(tmp_path / 'data'), num_train=4, num_val=2)
    out = run_tool([sys.executable, TEST, DEMO_CFG, str(path), '--work-dir', str(tmp_path / 'w'),
                    '--cfg-options'] + opts, cwd=tmp_path, expect_ok=False)
    errors = [line for line in out.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and words in errors[0] and str(path) in errors[0], out[-3000:]
    assert 'Traceback' not in out


@pytest.mark.slow
def test_resume_falls_back_when_last_checkpoint_is_truncated_or_missing(tmp_path):
    work = tmp_path / 'work'
    opts = demo_options(str(tmp_path / 'data'), num_train=4, num_val=2, max_epochs=2) + [
        'train_cfg.val_interval=100', 'default_hooks.checkpoint.max_keep_ckpts=-1']
    run_tool(_train(DEMO_CFG, work, opts), cwd=tmp_path)
    assert _last_checkpoint(work) == str(work / 'epoch_2.pth')

    # truncated (a copy cut short): resume from the newest complete one, naming both
    data = (work / 'epoch_2.pth').read_bytes()
    (work / 'epoch_2.pth').write_bytes(data[:len(data) // 3])
    out = run_tool(_train(DEMO_CFG, work, opts, resume='auto'), cwd=tmp_path)
    warning = next((line for line in out.splitlines() if 'names' in line and 'resuming from'
                    in line), '')
    assert str(work / 'epoch_2.pth') in warning and 'truncated' in warning, out[-3000:]
    assert f'resuming from {work / "epoch_1.pth"}' in warning
    assert 'resumed epoch: 1' in out
    assert _load(work / 'epoch_2.pth')['meta']['epoch'] == 2  # written again, complete

    # missing (deleted by hand); max_epochs=1: resuming is all this run does
    (work / 'epoch_2.pth').unlink()
    out = run_tool(_train(DEMO_CFG, work, opts + ['train_cfg.max_epochs=1'], resume='auto'),
                   cwd=tmp_path)
    assert 'does not exist' in out and f'resuming from {work / "epoch_1.pth"}' in out, out[-3000:]
    assert 'resumed epoch: 1' in out

    # nothing complete to fall back to: one error line saying so, and what to do
    (work / 'epoch_1.pth').write_bytes(b'')
    (work / 'epoch_2.pth').write_bytes(b'')
    out = run_tool(_train(DEMO_CFG, work, opts, resume='auto'), cwd=tmp_path, expect_ok=False)
    errors = [line for line in out.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and 'no other complete checkpoint' in errors[0], out[-3000:]


def test_checkpoint_hook_checks_every_mmengine_method_it_replaces(monkeypatch):
    from mmengine.hooks import CheckpointHook

    from shvit_mm.engine import SafeCheckpointHook

    def changed(self, runner, metrics, extra):  # an MMEngine whose internals changed
        pass
    monkeypatch.setattr(CheckpointHook, '_save_best_checkpoint', changed)
    with pytest.raises(RuntimeError, match='_save_best_checkpoint.*extra'):
        SafeCheckpointHook(interval=1)
