"""``tools/train.py``: train a detector or a segmentor, with MMDetection 3.3's command line and
behaviour, which contains MMSegmentation 1.2.2's (``--work-dir``, ``--resume``, ``--amp``,
``--cfg-options``, ``--launcher``). The codebase follows from the config (its ``default_scope``).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--auto-scale-lr]
                                 [--cfg-options k=v ...] [--launcher {none,pytorch,slurm,mpi}]

Additions over the codebases' scripts: shvit_mm's components are registered (plain MMDetection
configs work unchanged), a dataset whose files are missing is reported before anything is built,
``--amp`` without a GPU trains with bfloat16 autocast on CPUs that support it (fp32 otherwise),
and ``--launcher pytorch`` also works on a machine without CUDA (gloo backend, CPU DDP).
"""
import argparse
import logging
import os

import torch
from mmengine.config import DictAction
from mmengine.logging import print_log

from .common import (ToolError, check_datasets, cli, load_config, run_guarded, setup_distributed,
                     setup_registries, setup_threads, teardown_distributed)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train a detector or segmentor (MMDetection 3.x / MMSegmentation 1.x + shvit_mm)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--amp', action='store_true', default=False,
        help='enable automatic-mixed-precision training (needs a GPU)')
    parser.add_argument('--auto-scale-lr', action='store_true', help='enable automatically scaling LR.')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from the given checkpoint; without a path, resume from the latest checkpoint '
        'in the work directory')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override some settings in the used config, the key-value pair in xxx=yyy format will '
        'be merged into config file. If the value to be overwritten is a list, it should be like '
        'key="[a,b]" or key=a,b. It also allows nested list/tuple values, e.g. '
        'key="[(a,b),(c,d)]". Note that the quotation marks are necessary and that no white space '
        'is allowed.')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (PyTorch >= 2.0) or --local_rank; torchrun
    # sets LOCAL_RANK in the environment instead.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def _accelerator_available() -> bool:
    from mmengine.device import (is_cuda_available, is_mlu_available, is_musa_available,
                                 is_npu_available)
    return is_cuda_available() or is_npu_available() or is_mlu_available() or is_musa_available()


def build_config(args):
    """The training config after every command-line option is applied."""
    cfg = load_config(args.config, args.cfg_options, args.launcher, args.work_dir)
    setup_registries(cfg)

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
    if cfg.get('optim_wrapper', {}).get('type') == 'AmpOptimWrapper' and not _accelerator_available():
        # MMEngine's AmpOptimWrapper (fp16 + loss scaling) needs a GPU; on the CPU train with
        # bfloat16 autocast where the CPU has native bf16, in fp32 otherwise (one log line says
        # which): shvit_mm.engine.CPUAmpOptimWrapper.
        cfg.optim_wrapper.type = 'CPUAmpOptimWrapper'

    if args.auto_scale_lr:
        auto_scale_lr = cfg.get('auto_scale_lr')
        if isinstance(auto_scale_lr, dict) and 'enable' in auto_scale_lr and \
                'base_batch_size' in auto_scale_lr:
            cfg.auto_scale_lr.enable = True
        else:
            raise ToolError('Can not find "auto_scale_lr" or "auto_scale_lr.enable" or '
                            '"auto_scale_lr.base_batch_size" in your configuration file.')

    # resume is determined in this priority: a given checkpoint > the latest one in work_dir
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        if not os.path.isfile(args.resume) and '://' not in args.resume:
            raise ToolError(f'--resume checkpoint not found: {args.resume}')
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def main(argv=None):
    args = parse_args(argv)
    cfg = build_config(args)
    if cfg.default_scope == 'mmdet':
        from mmdet.utils import setup_cache_size_limit_of_dynamo
        setup_cache_size_limit_of_dynamo()  # fewer repeated compilations, as in MMDetection
    dataloaders = ['train_dataloader']
    evaluators = []
    if cfg.get('val_cfg') is not None and cfg.get('val_dataloader') is not None:
        dataloaders.append('val_dataloader')
        evaluators.append('val_evaluator')
    check_datasets(cfg, dataloaders, evaluators)
    setup_threads(cfg)
    setup_distributed(cfg)

    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    run_guarded(runner.train, cfg)
    teardown_distributed()
    return runner


def cli_main(argv=None):
    return cli(main, argv)


if __name__ == '__main__':
    cli_main()
