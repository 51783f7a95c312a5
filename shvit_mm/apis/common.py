"""Pieces shared by the train and test entry points: config loading, registries, data checks,
distributed set-up on machines without CUDA."""
import os
import os.path as osp
import sys
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config, ConfigDict

from .config import ConfigError, read_config, setup_registries  # noqa: F401  (re-exported)

DEMO_TRAIN_COMMAND = 'python tools/train.py configs/demo/mask_rcnn_shvit_s1_demo.py'
SEG_DEMO_TRAIN_COMMAND = 'python tools/train.py configs/demo/sem_fpn_shvit_s1_demo.py'
#: codebase (a config's default_scope) -> the command that runs its embedded demo
DEMO_COMMANDS = {'mmdet': DEMO_TRAIN_COMMAND, 'mmseg': SEG_DEMO_TRAIN_COMMAND}


class ToolError(RuntimeError):
    """A mistake in the command or the environment; the command line prints it without a traceback."""


class DatasetNotFoundError(ToolError, FileNotFoundError):
    """The files a config's dataset points at are not there."""


def cli(main, argv=None):
    """Run ``main(argv)`` for the command line: a :class:`ToolError` becomes ``error: ...`` on
    stderr and exit status 1 instead of a traceback."""
    from shvit_mm.models.backbones.shvit_weights import CheckpointFormatError
    from shvit_mm.utils.safe_load import UnsafeCheckpointError
    try:
        return main(argv)
    except (ToolError, UnsafeCheckpointError, CheckpointFormatError) as e:
        print(f'error: {e}', file=sys.stderr, flush=True)
        raise SystemExit(1)


def run_guarded(fn, cfg: Config):
    """Run ``fn()`` (``runner.train`` / ``runner.test``); a checkpoint that PyTorch's weights_only
    unpickler refuses (``load_from`` / ``--resume``) becomes an UnsafeCheckpointError naming it."""
    import pickle
    try:
        return fn()
    except pickle.UnpicklingError as e:
        from mmengine.runner import find_latest_checkpoint
        from shvit_mm.utils.safe_load import unsafe_checkpoint_error
        path = cfg.get('load_from') or (cfg.get('resume') and find_latest_checkpoint(cfg.work_dir))
        raise unsafe_checkpoint_error(path or 'the checkpoint', e) from e


def load_config(config: str, cfg_options: Optional[Dict], launcher: str,
                work_dir: Optional[str]) -> Config:
    """Read ``config`` (:func:`shvit_mm.apis.config.read_config`), apply ``--cfg-options`` and choose
    the work_dir as the codebases' tools do (command line > ``work_dir`` in the file >
    ``./work_dirs/<config name>``)."""
    try:
        cfg = read_config(config, cfg_options)
    except ConfigError as e:
        raise ToolError(str(e)) from None
    cfg.launcher = launcher
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])
    return cfg


# ------------------------------------------------------------------------------------------------
# distributed runs without CUDA
# ------------------------------------------------------------------------------------------------
def setup_threads(cfg: Config) -> None:
    """Apply ``env_cfg.torch_num_threads`` (a shvit_mm key; MMEngine ignores it) to PyTorch.

    The demo configs set 1: on this project's 2-core CPU a Mask R-CNN step of small pictures runs
    no faster with two intra-op threads than with one when the machine is idle (0.37-0.58 s versus
    0.43-0.48 s, depending on how OpenMP threads wait), and slower as soon as anything else runs.
    """
    n = (cfg.get('env_cfg') or {}).get('torch_num_threads')
    if n is not None:
        if int(n) < 1:
            raise ToolError(f'env_cfg.torch_num_threads must be >= 1, got {n}')
        torch.set_num_threads(int(n))


def setup_distributed(cfg: Config) -> None:
    """Let ``--launcher pytorch`` run on a machine without CUDA (gloo backend, CPU DDP).

    MMEngine 0.10.7 always calls ``torch.cuda.set_device`` when it initialises the process group
    and gives DDP ``device_ids=[LOCAL_RANK]``; both fail on CPU. Without CUDA we therefore set the
    backend to gloo, initialise the process group ourselves (MMEngine then skips its own
    initialisation) and wrap the model with a DDP that drops ``device_ids`` for CPU modules.
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.cuda.is_available():
        return
    if launcher != 'pytorch':
        raise ToolError(
            f'--launcher {launcher} needs CUDA GPUs (MMEngine sets a CUDA device for it) and this '
            f'machine has none. On CPU use --launcher pytorch under torchrun, e.g. '
            f'`bash tools/dist_train.sh CONFIG 2`.')
    env_cfg = cfg.get('env_cfg') or ConfigDict()
    dist_cfg = env_cfg.get('dist_cfg') or ConfigDict()
    dist_cfg['backend'] = 'gloo'
    env_cfg['dist_cfg'] = dist_cfg
    cfg.env_cfg = env_cfg
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(
            type='CPUDistributedDataParallel',
            broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    _register_cpu_ddp()
    import torch.distributed as dist
    if dist.is_initialized():
        return
    missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT') if k not in os.environ]
    if missing:
        raise ToolError(f'--launcher pytorch expects the environment torchrun sets ({", ".join(missing)} '
                        f'missing); start it with torchrun or tools/dist_train.sh / dist_test.sh.')
    kwargs = {}
    if dist_cfg.get('timeout') is not None:
        import datetime
        kwargs['timeout'] = datetime.timedelta(seconds=dist_cfg['timeout'])
    dist.init_process_group(backend='gloo', rank=int(os.environ['RANK']),
                            world_size=int(os.environ['WORLD_SIZE']), **kwargs)


def teardown_distributed() -> None:
    """End a distributed run cleanly: wait for every rank, then destroy the process group.

    Without it each process exits as soon as its own work is done and the gloo process group is
    torn down by the interpreter's exit: a rank still inside a collective, or still tearing down
    its connections, then sees its peer's sockets close and gloo aborts the process (SIGABRT) even
    though all the work was done.
    """
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _register_cpu_ddp() -> None:
    from mmengine.model import MMDistributedDataParallel
    from mmengine.registry import MODEL_WRAPPERS
    if 'CPUDistributedDataParallel' in MODEL_WRAPPERS.module_dict:
        return

    class CPUDistributedDataParallel(MMDistributedDataParallel):
        """MMEngine's DDP wrapper for CPU modules: DDP rejects ``device_ids`` for them."""

        def __init__(self, module, device_ids=None, **kwargs):
            on_cpu = all(p.device.type == 'cpu' for p in module.parameters())
            super().__init__(module=module, device_ids=None if on_cpu else device_ids, **kwargs)

    MODEL_WRAPPERS.register_module(module=CPUDistributedDataParallel)


# ------------------------------------------------------------------------------------------------
# data checks
# ------------------------------------------------------------------------------------------------
def _is_remote(path: str) -> bool:
    return '://' in str(path)


def _join(root: Optional[str], path: str) -> str:
    if not root or osp.isabs(path) or _is_remote(path):
        return path
    return osp.join(root, path)


def _iter_datasets(dataset_cfg) -> Iterator:
    """Leaf dataset configs under wrappers (RepeatDataset, ConcatDataset, ClassBalancedDataset...)."""
    if dataset_cfg is None:
        return
    if isinstance(dataset_cfg, (list, tuple)):
        for d in dataset_cfg:
            yield from _iter_datasets(d)
        return
    if not isinstance(dataset_cfg, dict):
        return
    if 'datasets' in dataset_cfg:
        yield from _iter_datasets(dataset_cfg['datasets'])
    elif 'dataset' in dataset_cfg:
        yield from _iter_datasets(dataset_cfg['dataset'])
    else:
        yield dataset_cfg


def _creates_own_data(dataset_cfg: dict, scope: str) -> bool:
    import importlib
    DATASETS = importlib.import_module(f'{scope}.registry').DATASETS
    dtype = dataset_cfg.get('type')
    cls = dtype if isinstance(dtype, type) else DATASETS.get(dtype) if dtype else None
    return bool(getattr(cls, 'creates_data_on_load', False))


def _dataset_paths(dataset_cfg: dict) -> List[Tuple[str, str]]:
    """(what, path) pairs the dataset will read, resolved the way BaseDataset resolves them."""
    root = dataset_cfg.get('data_root')
    paths = []
    ann_file = dataset_cfg.get('ann_file')
    if ann_file:
        paths.append(('annotation file', _join(root, ann_file)))
    prefix = dataset_cfg.get('data_prefix') or {}
    if isinstance(prefix, dict):
        for key, value in prefix.items():
            if value:
                paths.append((f'data_prefix.{key} folder', _join(root, value)))
    return paths


def check_datasets(cfg: Config, dataloaders: Sequence[str], evaluators: Sequence[str] = ()) -> None:
    """Fail at once, before anything is built, when a dataset's files are missing.

    The message names every missing path (as written in the config and resolved against the
    current directory), where COCO or ADE20K is expected, and the command that runs the embedded
    demo of the config's codebase (detection or segmentation).
    """
    missing = []
    data_roots = []
    self_made = set()
    for name in dataloaders:
        loader = cfg.get(name)
        if not loader:
            continue
        for ds in _iter_datasets(loader.get('dataset')):
            if ds.get('backend_args') is not None:
                continue  # files live in another storage backend: nothing to check here
            if _creates_own_data(ds, cfg.get('default_scope') or 'mmdet'):
                for what, path in _dataset_paths(ds):
                    self_made.add(osp.abspath(path))
                continue
            if ds.get('data_root'):
                data_roots.append(ds['data_root'])
            for what, path in _dataset_paths(ds):
                if not _is_remote(path) and not osp.exists(path):
                    missing.append((name, what, path))
    for name in evaluators:
        evaluator = cfg.get(name)
        for metric in evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]:
            if not isinstance(metric, dict) or not metric.get('ann_file'):
                continue
            if metric.get('backend_args') is not None:
                continue
            path = metric['ann_file']
            if osp.abspath(path) in self_made or _is_remote(path):
                continue
            if not osp.exists(path):
                missing.append((name, f'{metric.get("type", "metric")} ann_file', path))
    if not missing:
        return
    lines = [f'dataset files not found (current directory: {os.getcwd()}):']
    seen = set()
    for name, what, path in missing:
        if path in seen:
            continue
        seen.add(path)
        lines.append(f'  {path}  ({name}: {what}; absolute: {osp.abspath(path)})')
    roots = sorted(set(data_roots))
    scope = cfg.get('default_scope') or 'mmdet'
    missing_paths = [p for _, _, p in missing]
    if any('ADEChallengeData2016' in str(p) for p in roots + missing_paths):
        where = ', '.join(roots) if roots else 'data/ade/ADEChallengeData2016'
        lines.append(
            f'This config reads ADE20K (ADEChallengeData2016, 150 classes) from {where}: it must '
            f'hold images/training/, annotations/training/, images/validation/ and '
            f'annotations/validation/ (unzip ADEChallengeData2016.zip from '
            f'http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip into '
            f'data/ade/, or link an existing copy: `mkdir -p data/ade && ln -s /path/to/ADEChallengeData2016 '
            f'data/ade/ADEChallengeData2016`), or point the config elsewhere with --cfg-options '
            f'train_dataloader.dataset.data_root=... val_dataloader.dataset.data_root=... '
            f'test_dataloader.dataset.data_root=... .')
    elif any('coco' in str(p).lower() for p in roots + missing_paths):
        where = ', '.join(roots) if roots else 'data/coco/'
        lines.append(
            f'This config reads COCO 2017 from {where}: it must hold annotations/instances_train2017.json, '
            f'annotations/instances_val2017.json, train2017/ and val2017/ (download them from '
            f'https://cocodataset.org and link the folder there, e.g. `mkdir -p data && ln -s '
            f'/path/to/coco data/coco`), or point the config elsewhere with --cfg-options '
            f'train_dataloader.dataset.data_root=... val_dataloader.dataset.data_root=... '
            f'val_evaluator.ann_file=... (and the test_* counterparts).')
    else:
        lines.append('Put the data there or point the config at it with --cfg-options '
                     '<loader>.dataset.data_root=... / ann_file=... .')
    demo = DEMO_COMMANDS.get(scope, DEMO_TRAIN_COMMAND)
    what = {'mmdet': 'COCO', 'mmseg': 'ADE20K'}.get(scope, 'that dataset')
    lines.append(f'To try shvit_mm without {what}, run the embedded demo (it creates its own small '
                 f'dataset on first use, no download): {demo}')
    raise DatasetNotFoundError('\n'.join(lines))
