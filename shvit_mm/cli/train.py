"""``tools/train.py``: train a detector or a segmentor with MMDetection 3.3's command line, which
contains MMSegmentation 1.2.2's; the codebase follows from the config's ``default_scope``.

Besides the codebases' script: shvit_mm's components are registered, missing data is reported
before anything is built, ``--amp`` without a GPU trains in CPU mixed precision
(:class:`shvit_mm.engine.CPUAmpOptimWrapper`) and ``--launcher pytorch`` works without CUDA.
"""
import logging
import os

from mmengine.device import get_device
from mmengine.logging import print_log

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
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        if not os.path.isfile(args.resume) and '://' not in args.resume:
            raise ToolError(f'--resume checkpoint not found: {args.resume}')
        cfg.resume, cfg.load_from = True, args.resume
    return cfg


def main(argv=None):
    """Train; returns the Runner."""
    cfg = build_config(parse_args(argv))
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
