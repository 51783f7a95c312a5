"""What ``tools/train.py`` and ``tools/test.py`` share: user errors, the shared options, config
loading, the missing-data check and building and running MMEngine's Runner."""
import argparse
import importlib
import os
import os.path as osp
import pickle
import sys
from typing import Iterator, List, Sequence, Tuple

import torch
from mmengine.config import Config, DictAction

from shvit_mm.apis.config import ConfigError, read_config, setup_registries
from shvit_mm.engine.distributed import LauncherError, setup_cpu_distributed, teardown_distributed
from shvit_mm.inference.deploy_onnx import OnnxModelError
from shvit_mm.models.backbones.shvit_weights import CheckpointFormatError
from shvit_mm.utils.safe_load import (CheckpointFileError, UnsafeCheckpointError,
                                      check_checkpoint_file, unsafe_checkpoint_error)


class ToolError(RuntimeError):
    """A mistake in the command or the environment; the command line prints it without a traceback."""


class DatasetNotFoundError(ToolError, FileNotFoundError):
    """The files a config's dataset points at are not there."""


def cli(main, argv=None):
    """Run ``main(argv)`` for the command line: a user error (:class:`ToolError`, a launcher this
    machine cannot run, an unsafe, malformed or incomplete checkpoint file, an ``.onnx`` file that
    does not fit the config) becomes ``error: ...`` on stderr and exit status 1 instead of a
    traceback."""
    try:
        return main(argv)
    except (ToolError, LauncherError, UnsafeCheckpointError, CheckpointFormatError,
            CheckpointFileError, OnnxModelError) as e:
        print(f'error: {e}', file=sys.stderr, flush=True)
        raise SystemExit(1)


def tool_parser(kind: str, description: str, work_dir_help: str) -> argparse.ArgumentParser:
    """A parser with the tools' first options: ``config`` and ``--work-dir``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config', help=f'{kind} config file path')
    parser.add_argument('--work-dir', help=work_dir_help)
    return parser


def parse_tool_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Add the tools' last options (``--cfg-options``, ``--launcher``, ``--local-rank``), parse
    ``argv`` and export ``--local-rank`` as LOCAL_RANK unless the launcher set it."""
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override some settings in the used config, the key-value pair in xxx=yyy format will '
        'be merged into config file. If the value to be overwritten is a list, it should be like '
        'key="[a,b]" or key=a,b. It also allows nested list/tuple values, e.g. '
        'key="[(a,b),(c,d)]". Note that the quotation marks are necessary and that no white space '
        'is allowed.')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (PyTorch >= 2.0) or --local_rank; torchrun sets
    # LOCAL_RANK in the environment instead.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def load_config(args: argparse.Namespace) -> Config:
    """``args.config`` with ``--cfg-options`` applied, the codebase's and shvit_mm's registries set
    up, ``launcher`` and ``work_dir`` chosen as the codebases' tools do (command line > ``work_dir``
    in the file > ``./work_dirs/<config name>``)."""
    try:
        cfg = read_config(args.config, args.cfg_options)
    except ConfigError as e:
        raise ToolError(str(e)) from None
    setup_registries(cfg)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def setup_threads(cfg: Config) -> None:
    """Apply ``env_cfg.torch_num_threads`` (a shvit_mm key; MMEngine ignores it) to PyTorch: on a
    small CPU shared with other work, fewer intra-op threads than cores can train faster."""
    n = (cfg.get('env_cfg') or {}).get('torch_num_threads')
    if n is not None:
        if int(n) < 1:
            raise ToolError(f'env_cfg.torch_num_threads must be >= 1, got {n}')
        torch.set_num_threads(int(n))


def build_runner(cfg: Config, dataloaders: Sequence[str], evaluators: Sequence[str] = ()):
    """Check the data and the ``load_from`` file (empty, truncated, not a checkpoint: one line
    saying which), set threads and CPU distributed up, then build the config's Runner."""
    if cfg.default_scope == 'mmdet':
        from mmdet.utils import setup_cache_size_limit_of_dynamo
        setup_cache_size_limit_of_dynamo()  # fewer repeated compilations, as in MMDetection
    check_loader_settings(cfg, dataloaders)
    check_datasets(cfg, dataloaders, evaluators)
    if cfg.get('load_from') and not _is_remote(cfg.load_from):
        check_checkpoint_file(cfg.load_from)
    setup_threads(cfg)
    setup_cpu_distributed(cfg)
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    return Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)


def check_loader_settings(cfg: Config, dataloaders: Sequence[str]) -> None:
    """Raise :class:`ToolError` for a ``batch_size`` that is not a positive integer or a
    ``num_workers`` that is not a non-negative one, before anything is built or written."""
    for name in dataloaders:
        loader = cfg.get(name) or {}
        for key, least in (('batch_size', 1), ('num_workers', 0)):
            value = loader.get(key, least)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                kind = 'a positive' if least else 'a non-negative'
                raise ToolError(f'{name}.{key} must be {kind} integer, got {value!r} (e.g. '
                                f'--cfg-options {name}.{key}={max(least, 2)})')


def run_guarded(fn, cfg: Config):
    """Run ``fn()`` (``runner.train`` / ``runner.test``), then end a distributed run cleanly. A
    checkpoint that PyTorch's weights_only unpickler refuses (``load_from`` / ``--resume``) becomes
    an UnsafeCheckpointError naming it."""
    try:
        result = fn()
    except pickle.UnpicklingError as e:
        from mmengine.runner import find_latest_checkpoint
        path = cfg.get('load_from') or (cfg.get('resume') and find_latest_checkpoint(cfg.work_dir))
        raise unsafe_checkpoint_error(path or 'the checkpoint', e) from e
    teardown_distributed(getattr(fn, '__self__', None))  # the runner of runner.train / test
    return result


# ------------------------------------------------------------------------------------------------
# the missing-data check
# ------------------------------------------------------------------------------------------------
def _is_remote(path: str) -> bool:
    return '://' in str(path)


def _join(root, path: str) -> str:
    return path if not root or osp.isabs(path) or _is_remote(path) else osp.join(root, path)


def _iter_datasets(dataset_cfg) -> Iterator[dict]:
    """Leaf dataset configs under wrappers (RepeatDataset, ConcatDataset, ClassBalancedDataset...)."""
    if isinstance(dataset_cfg, (list, tuple)):
        for d in dataset_cfg:
            yield from _iter_datasets(d)
    elif isinstance(dataset_cfg, dict):
        key = next((k for k in ('datasets', 'dataset') if k in dataset_cfg), None)
        if key is None:
            yield dataset_cfg
        else:
            yield from _iter_datasets(dataset_cfg[key])


def _creates_own_data(dataset_cfg: dict, scope: str) -> bool:
    datasets = importlib.import_module(f'{scope}.registry').DATASETS
    dtype = dataset_cfg.get('type')
    cls = dtype if isinstance(dtype, type) else datasets.get(dtype) if dtype else None
    return bool(getattr(cls, 'creates_data_on_load', False))


def _dataset_paths(dataset_cfg: dict) -> List[Tuple[str, str]]:
    """(what, path) pairs the dataset will read, resolved the way BaseDataset resolves them."""
    root = dataset_cfg.get('data_root')
    paths = []
    if dataset_cfg.get('ann_file'):
        paths.append(('annotation file', _join(root, dataset_cfg['ann_file'])))
    prefix = dataset_cfg.get('data_prefix') or {}
    if isinstance(prefix, dict):
        paths += [(f'data_prefix.{k} folder', _join(root, v)) for k, v in prefix.items() if v]
    return paths


def _missing_data_help(scope: str, roots: List[str], paths: List[str]) -> List[str]:
    """The lines under the missing files: how to provide the codebase's dataset when the paths name
    it (``MISSING_DATA_HELP`` of ``shvit_mm.detection.datasets`` / ``shvit_mm.segmentation.datasets``)
    and the codebase's demo, which needs no data."""
    adapter = {'mmdet': 'detection', 'mmseg': 'segmentation'}.get(scope)
    info = importlib.import_module(f'shvit_mm.{adapter}.datasets').MISSING_DATA_HELP if adapter else {}
    lines = []
    if info and any(info['marker'] in str(p).lower() for p in roots + paths):
        how = ' '.join(info['instructions'].split())  # prose: its line breaks are spaces
        lines.append(how.format(where=', '.join(roots) or info['default_root']))
    else:
        lines.append('Put the data there or point the config at it with --cfg-options '
                     '<loader>.dataset.data_root=... / ann_file=... .')
    if info:
        lines.append(f'To try shvit_mm without {info["dataset"]}, run the embedded demo (it creates '
                     f'its own small dataset on first use, no download): {info["demo"]}')
    return lines


def check_datasets(cfg: Config, dataloaders: Sequence[str], evaluators: Sequence[str] = ()) -> None:
    """Raise :class:`DatasetNotFoundError` before anything is built when files that the named
    dataloaders or evaluators read are missing.

    The message names every missing path (as written in the config and resolved against the
    current directory), how to provide COCO or ADE20K, and the command that runs the embedded demo
    of the config's codebase. Datasets that create their own files (``creates_data_on_load``) and
    files in another storage backend (``backend_args``) are not checked.
    """
    scope = cfg.get('default_scope') or 'mmdet'
    missing, roots, self_made = [], set(), set()
    for name in dataloaders:
        for ds in _iter_datasets((cfg.get(name) or {}).get('dataset')):
            if ds.get('backend_args') is not None:
                continue
            if _creates_own_data(ds, scope):
                self_made.update(osp.abspath(path) for _, path in _dataset_paths(ds))
                continue
            if ds.get('data_root'):
                roots.add(ds['data_root'])
            missing += [(name, what, path) for what, path in _dataset_paths(ds)
                        if not _is_remote(path) and not osp.exists(path)]
    for name in evaluators:
        evaluator = cfg.get(name)
        for metric in evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]:
            if not isinstance(metric, dict) or not metric.get('ann_file') or \
                    metric.get('backend_args') is not None:
                continue
            path = metric['ann_file']
            if osp.abspath(path) not in self_made and not _is_remote(path) and not osp.exists(path):
                missing.append((name, f'{metric.get("type", "metric")} ann_file', path))
    if not missing:
        return
    lines = [f'dataset files not found (current directory: {os.getcwd()}):']
    seen = set()
    for name, what, path in missing:
        if path not in seen:
            seen.add(path)
            lines.append(f'  {path}  ({name}: {what}; absolute: {osp.abspath(path)})')
    lines += _missing_data_help(scope, sorted(roots), [p for _, _, p in missing])
    raise DatasetNotFoundError('\n'.join(lines))
