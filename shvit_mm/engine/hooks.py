"""Training hooks that keep a long run safe: crash-safe checkpoints and a finite-loss guard.

Both are registered in MMEngine's root ``HOOKS`` registry, so MMDetection, MMSegmentation and
MMPretrain configs find them under their own default scope. The project's configs declare them in
their default runtimes (``configs/_base_/``), so ``tools/train.py``, ``Runner.from_cfg(cfg).train()``,
``mim train`` and a user's own script all train with them.
"""
from __future__ import annotations

import glob
import hashlib
import inspect
import os
import os.path as osp
import pickle
from typing import Optional

import mmengine
import torch
from mmengine.dist import broadcast, is_distributed, is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook, Hook
from mmengine.registry import HOOKS
from mmengine.utils import digit_version

try:  # MMDetection's guard, when MMDetection is installed: same name, its `interval` argument
    from mmdet.engine.hooks import CheckInvalidLossHook as _LossGuardBase
except ImportError:  # pragma: no cover - MMSegmentation / MMPretrain without MMDetection
    _LossGuardBase = Hook

#: MMEngine versions whose ``CheckpointHook`` this module was checked against (the methods
#: SafeCheckpointHook replaces and the attributes they use are the same throughout 0.10.x).
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


def remove_incomplete_files(dirs, log) -> None:
    """Remove the ``*.part`` files an interrupted write left in ``dirs``; ``log(message)`` each.

    Called before the Runner is built too (``tools/train.py``): on a full disk such a file holds
    the space that MMEngine needs to write the config into the work directory.
    """
    for stale in sorted({osp.abspath(f) for d in dirs for f in glob.glob(osp.join(d, f'*{TMP_SUFFIX}'))}):
        log(f'Removing incomplete file {stale} left by an interrupted run')
        try:
            os.remove(stale)
        except FileNotFoundError:  # another process of the same launch removed it first
            pass


def last_complete_checkpoint(work_dir: Optional[str]) -> Optional[str]:
    """The checkpoint ``<work_dir>/last_checkpoint`` names (written only once it is complete)."""
    path = osp.join(work_dir, 'last_checkpoint') if work_dir else None
    if path is None or not osp.isfile(path):
        return None
    with open(path) as f:
        return f.read().strip() or None


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """MMEngine's ``CheckpointHook`` made crash-safe for local work directories.

    A process killed at any moment (SIGKILL included) or a failed write (a full disk) never leaves a
    partial file under a checkpoint name, and ``last_checkpoint`` always names a complete checkpoint:

    * each checkpoint (regular, ``save_best`` and published ones) is written to ``<name>.part``,
      flushed to disk, then renamed into place; a write that fails removes its ``.part`` file;
    * ``last_checkpoint`` is replaced the same way, after the checkpoint it names exists;
    * checkpoints beyond ``max_keep_ckpts`` and the previous best checkpoint are removed only after
      the new one is complete (MMEngine removes them before writing the new one);
    * stale ``*.part`` files from an earlier crash are removed when training starts.

    Arguments are those of ``CheckpointHook``. Remote back-ends fall back to its behaviour.

    It replaces the non-public methods of ``CheckpointHook`` that name and write checkpoint files
    (``_save_checkpoint_with_step``, ``_save_best_checkpoint``, ``_publish_model``), so it refuses to
    start on an MMEngine outside :data:`SUPPORTED_MMENGINE` or whose methods have other signatures.
    """

    def __init__(self, *args, **kwargs) -> None:
        check_mmengine_internals()
        super().__init__(*args, **kwargs)

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if self._is_local() and is_main_process():
            remove_incomplete_files({self.out_dir, runner.work_dir}, runner.logger.warning)

    def _is_local(self) -> bool:
        return isinstance(getattr(self, 'file_backend', None), LocalBackend)

    def _write_atomic(self, runner, final: str, write) -> None:
        """``write(tmp)`` (a file name), flush it to disk and rename it to ``final``; on failure
        remove the partial file and say what was written last."""
        tmp = final + TMP_SUFFIX
        try:
            write(tmp)
            if is_main_process():
                _fsync_file(tmp)
                os.replace(tmp, final)
        except BaseException as e:
            if is_main_process() and osp.exists(tmp):
                os.remove(tmp)
            if not isinstance(e, OSError):
                raise
            last = last_complete_checkpoint(runner.work_dir)
            raise OSError(e.errno, f'Could not write checkpoint {final} ({e.strerror or e}); the '
                          f'partial file was removed, the last complete checkpoint is '
                          f'{last or "(none saved yet)"}. Free space (or fix the cause) and '
                          'continue with --resume.') from e

    def _save_with_runner(self, runner, filename: str, **kwargs) -> str:
        final = osp.join(self.out_dir, filename)
        self._write_atomic(runner, final, lambda tmp: runner.save_checkpoint(
            self.out_dir, osp.basename(tmp), self.file_client_args,
            backend_args=self.backend_args, **kwargs))
        return final

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

        self._save_with_runner(
            runner, ckpt_filename, save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler, meta=meta, by_epoch=self.by_epoch,
            **self.args)
        if not is_main_process():
            return
        atomic_write_text(osp.join(runner.work_dir, 'last_checkpoint'), final)
        # Only now that the new checkpoint is complete, drop the ones beyond max_keep_ckpts.
        for old_step in to_remove:
            old = osp.join(self.out_dir, self.filename_tmpl.format(old_step))
            if osp.isfile(old) and old != final:
                os.remove(old)

    def _save_best_checkpoint(self, runner, metrics) -> None:
        """MMEngine's ``_save_best_checkpoint`` with the atomic write, removing the previous best
        checkpoint only once the new one is complete."""
        if not self._is_local() or not self.save_best:
            return super()._save_best_checkpoint(runner, metrics)
        step = runner.epoch if self.by_epoch else runner.iter
        meta = dict(epoch=runner.epoch, iter=runner.iter)
        if 'auto' in self.key_indicators:
            self._init_rule(self.rules, [list(metrics.keys())[0]])
        single, updated = len(self.key_indicators) == 1, False
        for key, rule in zip(self.key_indicators, self.rules):
            score_key, path_key = ('best_score', 'best_ckpt') if single else \
                (f'best_score_{key}', f'best_ckpt_{key}')
            best_score = runner.message_hub.get_info(score_key, self.init_value_map[rule])
            score = metrics[key]
            if score is None or not self.is_better_than[key](score, best_score):
                continue
            updated = True
            runner.message_hub.update_info(score_key, score)
            previous = self.best_ckpt_path if single else self.best_ckpt_path_dict[key]
            name = f'best_{key}_{self.filename_tmpl.format(step)}'.replace('/', '_')
            path = osp.join(self.out_dir, name)
            if single:
                self.best_ckpt_path = path
            else:
                self.best_ckpt_path_dict[key] = path
            runner.message_hub.update_info(path_key, path)
            self._save_with_runner(runner, name, save_optimizer=False, save_param_scheduler=False,
                                   meta=meta, by_epoch=False)
            runner.logger.info(f'The best checkpoint with {score:0.4f} {key} at {step} '
                               f'{"epoch" if self.by_epoch else "iter"} is saved to {name}.')
            if previous and previous != path and is_main_process() and osp.isfile(previous):
                os.remove(previous)
                runner.logger.info(f'The previous best checkpoint {previous} is removed')
        # as MMEngine: save the regular checkpoint again so that its message hub names the new best
        if updated and self.last_ckpt is not None:
            self._save_checkpoint_with_step(runner, step, meta)

    def _publish_model(self, runner, ckpt_path: str) -> None:
        """MMEngine's ``_publish_model`` (keep ``published_keys``, name the file by its hash) with
        the atomic write."""
        if not self._is_local():
            return super()._publish_model(runner, ckpt_path)
        if not is_main_process():
            return
        from shvit_mm.utils.safe_load import safe_load
        checkpoint = {k: v for k, v in safe_load(ckpt_path).items() if k in self.published_keys}
        sha = hashlib.sha256(pickle.dumps(checkpoint)).hexdigest()
        final = osp.splitext(ckpt_path)[0] + f'-{sha[:8]}.pth'
        self._write_atomic(runner, final, lambda tmp: torch.save(checkpoint, tmp))
        runner.logger.info(f'The checkpoint ({ckpt_path}) is published to {final}.')


#: The non-public CheckpointHook methods SafeCheckpointHook replaces, with their parameters.
_REPLACED_METHODS = {'_save_checkpoint_with_step': ['self', 'runner', 'step', 'meta'],
                     '_save_best_checkpoint': ['self', 'runner', 'metrics'],
                     '_publish_model': ['self', 'runner', 'ckpt_path'],
                     '_init_rule': ['self', 'rules', 'key_indicators']}


def check_mmengine_internals() -> None:
    """Raise RuntimeError unless MMEngine's CheckpointHook is the one SafeCheckpointHook extends."""
    low, high = SUPPORTED_MMENGINE
    version = mmengine.__version__
    found = {name: list(inspect.signature(getattr(CheckpointHook, name)).parameters)
             if hasattr(CheckpointHook, name) else 'no such method' for name in _REPLACED_METHODS}
    if not digit_version(low) <= digit_version(version) < digit_version(high) or \
            found != _REPLACED_METHODS:
        expected = ', '.join(f'{k}({", ".join(v[1:])})' for k, v in _REPLACED_METHODS.items())
        changed = {k: v for k, v in found.items() if v != _REPLACED_METHODS[k]}
        raise RuntimeError(
            f'SafeCheckpointHook supports MMEngine >= {low}, < {high} (it replaces these '
            f'CheckpointHook methods: {expected}); the installed MMEngine {version} has '
            f'{changed or "the same methods"}. '
            f'Install a supported MMEngine (pip install "mmengine>={low},<{high}") or set '
            "default_hooks.checkpoint.type='CheckpointHook' (not crash-safe) in the config.")


@HOOKS.register_module()
class FiniteLossHook(_LossGuardBase):
    """Stop training at the first non-finite loss or weight, naming the iteration, what is
    non-finite and the last good checkpoint.

    MMDetection's ``CheckInvalidLossHook`` (whose public ``after_train_iter`` it overrides) asserts
    every ``interval`` iterations and logs a bare message; this one checks the loss every iteration
    by default and raises a ``FloatingPointError`` that names the iteration, the non-finite loss
    terms, the last good checkpoint and what to try. It runs before the checkpoint hook of the same
    iteration, so nothing computed from a non-finite loss is saved.

    A finite loss can still give an update that overflows and leaves non-finite weights. Every
    checkpoint is therefore checked before it is written (``before_save_checkpoint``, whatever the
    ``interval``): one holding a non-finite tensor is refused the same way. So every checkpoint
    written under this hook is finite, and the one ``last_checkpoint`` names is the last good one.

    Args:
        interval (int): Check the loss every ``interval`` training iterations. Default: 1.
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self, interval: int = 1) -> None:
        if not isinstance(interval, int) or interval < 1:
            raise ValueError(f'FiniteLossHook: interval must be a positive int, got {interval!r}')
        self.interval = interval

    @staticmethod
    def _stop(runner, what: str) -> None:
        last = last_complete_checkpoint(getattr(runner, 'work_dir', None))
        raise FloatingPointError(
            f'{what}. Training stopped before saving anything from this iteration; the last good '
            f'checkpoint is {last or "(none saved yet)"}. Lower the learning rate, add gradient '
            'clipping (optim_wrapper.clip_grad) or check the annotations, then resume from it '
            'with --resume.')

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
        self._stop(runner, f'Non-finite loss {float(loss)} at iteration {runner.iter + 1} (epoch '
                   f'{runner.epoch + 1}, batch {batch_idx + 1}); non-finite terms: {bad}')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        bad = [f'{part}.{k}' for part in ('state_dict', 'ema_state_dict')
               for k, v in (checkpoint.get(part) or {}).items()
               if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            names = ', '.join(bad[:5]) + (f' and {len(bad) - 5} more' if len(bad) > 5 else '')
            done = (checkpoint.get('meta') or {}).get('iter', runner.iter)
            self._stop(runner, f'Refused to save a checkpoint after iteration {done}: {len(bad)} '
                       f'weight tensors are not finite ({names}): an update (or a running '
                       'statistic) overflowed although the loss was finite')


@HOOKS.register_module()
class RankZeroBuffersHook(Hook):
    """Before each validation, give every process rank 0's buffers (BatchNorm statistics).

    DDP copies rank 0's buffers to the other ranks at the start of each forward, so after the last
    training step every other rank holds statistics that its own last batch has moved on. A
    validation split across processes would then score part of the pictures with statistics that
    are in no checkpoint. Rank 0's are the ones its checkpoints hold, so with this hook validation
    during training gives what ``tools/test.py`` gives on the checkpoint. (MMEngine's
    ``SyncBuffersHook`` averages them instead, after the checkpoint of an iteration-based loop is
    written.) Nothing happens in a single process.
    """

    priority = 'VERY_HIGH'

    def before_val_epoch(self, runner) -> None:
        if is_distributed():
            for buffer in runner.model.buffers():
                broadcast(buffer, src=0)
