"""``tools/train.py``: train a detector or a segmentor with MMDetection 3.3's command line, which
contains MMSegmentation 1.2.2's; the codebase follows from the config's ``default_scope``.

Besides the codebases' script: shvit_mm's components are registered, missing data is reported
before anything is built, ``--amp`` without a GPU trains in CPU mixed precision
(:class:`shvit_mm.engine.CPUAmpOptimWrapper`) and ``--launcher pytorch`` works without CUDA.
``--resume`` recovers from an interrupted or failed checkpoint write: ``*.part`` files are removed
before the Runner writes into the work directory, and a ``last_checkpoint`` that names a missing or
incomplete file falls back to the newest complete checkpoint.
"""
import logging
import os
import os.path as osp
import re

from mmengine.device import get_device
from mmengine.logging import print_log

from shvit_mm.engine.hooks import (SafeCheckpointHook, last_complete_checkpoint,
                                   remove_incomplete_files)
from shvit_mm.engine.weights_check import add_weights_check
from shvit_mm.utils.safe_load import checkpoint_file_problem
from .common import (ToolError, build_runner, cli, load_config, parse_tool_args, run_guarded,
                     tool_parser)


def parse_args(argv=None):
    parser = tool_parser(
        'train', 'Train a detector or segmentor (MMDetection 3.x / MMSegmentation 1.x + shvit_mm)',
        'the dir to save logs and models')
    parser.add_argument(
        '--amp', action='store_true', default=False,
        help='enable automatic-mixed-precision training: fp16 on a GPU; on a CPU, bf16 autocast '
        'on CPUs with AVX-512 BF16 or AMX, fp32 otherwise')
    parser.add_argument('--auto-scale-lr', action='store_true', help='enable automatically scaling LR.')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from the given checkpoint; without a path, resume from the latest checkpoint '
        'in the work directory')
    return parse_tool_args(parser, argv)


def build_config(args):
    """The training config after every command-line option is applied."""
    cfg = load_config(args)
    if args.amp:
        optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if optim_wrapper == 'AmpOptimWrapper':
            print_log('AMP training is already enabled in your config.', logger='current',
                      level=logging.WARNING)
        elif optim_wrapper != 'OptimWrapper':
            raise ToolError('`--amp` is only supported when the optimizer wrapper type is '
                            f'`OptimWrapper` but got {optim_wrapper}.')
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    # MMEngine's AmpOptimWrapper (fp16 + loss scaling) needs an accelerator; on a CPU, bf16
    # autocast where the CPU has native bf16, fp32 otherwise (one log line says which)
    if cfg.get('optim_wrapper', {}).get('type') == 'AmpOptimWrapper' and \
            get_device() in ('cpu', 'mps'):
        cfg.optim_wrapper.type = 'CPUAmpOptimWrapper'

    if args.auto_scale_lr:
        auto_scale_lr = cfg.get('auto_scale_lr')
        if not (isinstance(auto_scale_lr, dict) and 'enable' in auto_scale_lr
                and 'base_batch_size' in auto_scale_lr):
            raise ToolError('Can not find "auto_scale_lr" or "auto_scale_lr.enable" or '
                            '"auto_scale_lr.base_batch_size" in your configuration file.')
        cfg.auto_scale_lr.enable = True

    # resume from: a given checkpoint > the latest one in work_dir
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, _auto_resume_fallback(cfg)
    elif args.resume is not None:
        if not os.path.isfile(args.resume) and '://' not in args.resume:
            raise ToolError(f'--resume checkpoint not found: {args.resume}')
        cfg.resume, cfg.load_from = True, args.resume
    add_weights_check(cfg, 'finetune')  # load_from: heads may differ, backbone/neck not
    return cfg


def _checkpoint_hook(cfg) -> dict:
    return (cfg.get('default_hooks') or {}).get('checkpoint') or {}


def _warn(message: str) -> None:
    print_log(message, logger='current', level=logging.WARNING)


def _auto_resume_fallback(cfg):
    """None when the checkpoint ``<work_dir>/last_checkpoint`` names is complete (MMEngine resumes
    from it) or there is none; otherwise the newest complete checkpoint beside it, with a warning
    naming both. Checkpoints are found by the checkpoint hook's ``filename_tmpl``, so best and
    published checkpoints (without optimizer states) are not taken."""
    named = last_complete_checkpoint(cfg.work_dir)
    problem = checkpoint_file_problem(named) if named and '://' not in named else None
    if problem is None:
        return None
    hook = _checkpoint_hook(cfg)
    tmpl = hook.get('filename_tmpl') or ('epoch_{}.pth' if hook.get('by_epoch', True) else
                                         'iter_{}.pth')
    pattern = re.compile(re.escape(tmpl).replace(r'\{\}', r'(\d+)'))
    folder = osp.dirname(named) or cfg.work_dir
    found = [(int(m.group(1)), osp.join(folder, f)) for f in
             (os.listdir(folder) if osp.isdir(folder) else []) if (m := pattern.fullmatch(f))]
    fallback = next((p for _, p in sorted(found, reverse=True)
                     if p != named and checkpoint_file_problem(p) is None), None)
    record = osp.join(cfg.work_dir, 'last_checkpoint')
    if fallback is None:
        raise ToolError(f'--resume: {record} names {named}, which {problem}, and {folder} holds no '
                        'other complete checkpoint. Train without --resume to start over, or pass '
                        'a checkpoint: --resume PATH.')
    _warn(f'--resume: {record} names {named}, which {problem}; resuming from {fallback} instead '
          f'(the newest complete checkpoint in {folder}).')
    return fallback


def main(argv=None):
    """Train; returns the Runner."""
    cfg = build_config(parse_args(argv))
    hook = _checkpoint_hook(cfg)
    if hook.get('type') in ('SafeCheckpointHook', SafeCheckpointHook):
        # before the Runner writes its config and logs: on a full disk a stale .part holds the space
        out_dir = hook.get('out_dir')
        dirs = {cfg.work_dir} | ({osp.join(out_dir, osp.basename(cfg.work_dir.rstrip(osp.sep)))}
                                 if out_dir and '://' not in out_dir else set())
        remove_incomplete_files(dirs, _warn)
    dataloaders, evaluators = ['train_dataloader'], []
    if cfg.get('val_cfg') is not None and cfg.get('val_dataloader') is not None:
        dataloaders.append('val_dataloader')
        evaluators.append('val_evaluator')
    runner = build_runner(cfg, dataloaders, evaluators)
    run_guarded(runner.train, cfg)
    return runner


def cli_main(argv=None):
    """:func:`main` for the command line: user errors exit with status 1 and an ``error:`` line."""
    return cli(main, argv)
