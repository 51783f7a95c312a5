"""Training hooks that keep a long run safe: crash-safe checkpoints and a finite-loss guard.

Both are registered in MMEngine's root ``HOOKS`` registry, so MMDetection, MMSegmentation and
MMPretrain configs find them under their own default scope. The project's configs declare them in
their default runtimes (``configs/_base_/``), so ``tools/train.py``, ``Runner.from_cfg(cfg).train()``,
``mim train`` and a user's own script all train with them.
"""
from __future__ import annotations

import glob
import inspect
import os
import os.path as osp
from typing import Optional

import mmengine
import torch
from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook, Hook
from mmengine.registry import HOOKS
from mmengine.utils import digit_version

try:  # MMDetection's guard, when MMDetection is installed: same name, its `interval` argument
    from mmdet.engine.hooks import CheckInvalidLossHook as _LossGuardBase
except ImportError:  # pragma: no cover - MMSegmentation / MMPretrain without MMDetection
    _LossGuardBase = Hook

#: MMEngine versions whose ``CheckpointHook._save_checkpoint_with_step`` this module was checked
#: against (the method and the attributes it uses are the same throughout 0.10.x).
SUPPORTED_MMENGINE = ('0.10.0', '0.11.0')

TMP_SUFFIX = '.part'


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see either the old or the new content."""
    tmp = f'{path}{TMP_SUFFIX}'
    with open(tmp, 'w') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """MMEngine's ``CheckpointHook`` made crash-safe for local work directories.

    A process killed at any moment (SIGKILL included) never leaves a partial file under a checkpoint
    name, and ``last_checkpoint`` always names a complete checkpoint:

    * each checkpoint is written to ``<name>.part``, flushed to disk, then renamed into place;
    * ``last_checkpoint`` is replaced the same way, after the checkpoint it names exists;
    * checkpoints beyond ``max_keep_ckpts`` are removed only after the new one is complete
      (MMEngine removes the oldest one before writing the new one);
    * stale ``*.part`` files from an earlier crash are removed when training starts.

    Arguments are those of ``CheckpointHook``. Remote back-ends fall back to its behaviour.

    It replaces one non-public method of ``CheckpointHook`` (``_save_checkpoint_with_step``, the
    only place where a checkpoint file is named and written), so it refuses to start on an MMEngine
    outside :data:`SUPPORTED_MMENGINE` or whose method has another signature.
    """

    def __init__(self, *args, **kwargs) -> None:
        check_mmengine_internals()
        super().__init__(*args, **kwargs)

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if self._is_local() and is_main_process():
            stale_files = {osp.abspath(f) for d in {self.out_dir, runner.work_dir}
                           for f in glob.glob(osp.join(d, f'*{TMP_SUFFIX}'))}
            for stale in sorted(stale_files):
                runner.logger.warning(f'Removing incomplete file {stale} left by an interrupted run')
                os.remove(stale)

    def _is_local(self) -> bool:
        return isinstance(getattr(self, 'file_backend', None), LocalBackend)

    def _save_checkpoint_with_step(self, runner, step, meta):
        if not self._is_local():
            return super()._save_checkpoint_with_step(runner, step, meta)
        ckpt_filename = self.filename_tmpl.format(step)
        final = osp.join(self.out_dir, ckpt_filename)
        self.last_ckpt = final
        runner.message_hub.update_info('last_ckpt', final)
        to_remove = []
        if self.max_keep_ckpts > 0 and (not self.keep_ckpt_ids or self.keep_ckpt_ids[-1] != step):
            # MMEngine's deque has maxlen=max_keep_ckpts: note what falls out, delete it later.
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                to_remove.append(self.keep_ckpt_ids[0])
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        runner.save_checkpoint(
            self.out_dir, ckpt_filename + TMP_SUFFIX, self.file_client_args,
            save_optimizer=self.save_optimizer, save_param_scheduler=self.save_param_scheduler,
            meta=meta, by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        _fsync_file(final + TMP_SUFFIX)
        os.replace(final + TMP_SUFFIX, final)
        atomic_write_text(osp.join(runner.work_dir, 'last_checkpoint'), final)
        # Only now that the new checkpoint is complete, drop the ones beyond max_keep_ckpts.
        for old_step in to_remove:
            old = osp.join(self.out_dir, self.filename_tmpl.format(old_step))
            if osp.isfile(old) and old != final:
                os.remove(old)


def check_mmengine_internals() -> None:
    """Raise RuntimeError unless MMEngine's CheckpointHook is the one SafeCheckpointHook extends."""
    low, high = SUPPORTED_MMENGINE
    version = mmengine.__version__
    method = getattr(CheckpointHook, '_save_checkpoint_with_step', None)
    params = list(inspect.signature(method).parameters) if method is not None else None
    if not digit_version(low) <= digit_version(version) < digit_version(high) or \
            params != ['self', 'runner', 'step', 'meta']:
        raise RuntimeError(
            f'SafeCheckpointHook supports MMEngine >= {low}, < {high} (it extends '
            f'CheckpointHook._save_checkpoint_with_step(runner, step, meta)); the installed MMEngine '
            f'{version} has {params if params is not None else "no such method"}. Install a '
            f'supported MMEngine (pip install "mmengine>={low},<{high}") or set '
            "default_hooks.checkpoint.type='CheckpointHook' (not crash-safe) in the config.")


@HOOKS.register_module()
class FiniteLossHook(_LossGuardBase):
    """Stop training at the first non-finite loss, naming the iteration and the loss terms.

    MMDetection's ``CheckInvalidLossHook`` (whose public ``after_train_iter`` it overrides) asserts
    every ``interval`` iterations and logs a bare message; this one checks every iteration by
    default, raises a ``FloatingPointError`` that names the iteration, the non-finite loss terms,
    the last good checkpoint and what to try. It runs before the checkpoint hook of the same
    iteration, so nothing computed from a non-finite loss is ever saved: the last checkpoint on
    disk stays the last good one.

    Args:
        interval (int): Check every ``interval`` training iterations. Default: 1.
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self, interval: int = 1) -> None:
        if not isinstance(interval, int) or interval < 1:
            raise ValueError(f'FiniteLossHook: interval must be a positive int, got {interval!r}')
        self.interval = interval

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        if not outputs or 'loss' not in outputs:
            return
        if not self.every_n_train_iters(runner, self.interval):
            return
        loss = outputs['loss']
        if torch.isfinite(torch.as_tensor(loss)).all():
            return
        bad = {k: float(v) for k, v in outputs.items()
               if isinstance(v, torch.Tensor) and v.numel() == 1 and not torch.isfinite(v).all()}
        last = runner.message_hub.get_info('last_ckpt')
        raise FloatingPointError(
            f'Non-finite loss {float(loss)} at iteration {runner.iter + 1} (epoch {runner.epoch + 1}, '
            f'batch {batch_idx + 1}); non-finite terms: {bad}. Training stopped before saving anything '
            f'from this iteration; the last good checkpoint is {last or "(none saved yet)"}. '
            'Lower the learning rate, add gradient clipping (optim_wrapper.clip_grad) or check the '
            'annotations, then resume with --resume.')
