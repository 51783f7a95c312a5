"""``--launcher pytorch`` on a machine without CUDA: gloo process group and a DDP wrapper for CPU
modules (``CPUDistributedDataParallel``, registered in MMEngine's ``MODEL_WRAPPERS``).

MMEngine 0.10 calls ``torch.cuda.set_device`` when it initialises the process group and gives DDP
``device_ids=[LOCAL_RANK]``; both fail on a CPU. :func:`setup_cpu_distributed` therefore switches
the backend to gloo, initialises the process group itself (MMEngine then skips its own) and selects
the wrapper below.
"""
import datetime
import gc
import os
from typing import Any

import torch
import torch.distributed as dist
from mmengine.config import Config, ConfigDict
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS

__all__ = ['CPUDistributedDataParallel', 'LauncherError', 'setup_cpu_distributed',
           'teardown_distributed']


class LauncherError(RuntimeError):
    """A launcher this machine cannot run, or a process not started the way the launcher needs."""


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """MMEngine's DDP wrapper, dropping ``device_ids`` for a CPU module (DDP rejects them)."""

    def __init__(self, module, device_ids=None, **kwargs):
        on_cpu = all(p.device.type == 'cpu' for p in module.parameters())
        super().__init__(module=module, device_ids=None if on_cpu else device_ids, **kwargs)


def setup_cpu_distributed(cfg: Config) -> None:
    """Without CUDA and with ``cfg.launcher == 'pytorch'``: gloo backend, ``model_wrapper_cfg``
    (unless the config has one) and the process group from torchrun's environment. Does nothing
    with CUDA or without a launcher; any other launcher raises :class:`LauncherError`."""
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.cuda.is_available():
        return
    if launcher != 'pytorch':
        raise LauncherError(
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
            type='CPUDistributedDataParallel', broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    if dist.is_initialized():
        return
    missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT') if k not in os.environ]
    if missing:
        raise LauncherError(
            f'--launcher pytorch expects the environment torchrun sets ({", ".join(missing)} '
            f'missing); start it with torchrun or tools/dist_train.sh / dist_test.sh.')
    kwargs = {}
    if dist_cfg.get('timeout') is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=dist_cfg['timeout'])
    dist.init_process_group(backend='gloo', rank=int(os.environ['RANK']),
                            world_size=int(os.environ['WORLD_SIZE']), **kwargs)


def teardown_distributed(runner: Any = None) -> None:
    """Wait for every rank, then destroy the process group. Left to the interpreter's exit, a rank
    still inside a collective sees its peers' sockets close and gloo aborts it (SIGABRT) although
    the work is done. ``runner``'s DDP wrapper is replaced by the model it wraps first: the
    wrapper's reducer holds the process group, which would otherwise outlive
    ``destroy_process_group`` and be freed, with gloo's threads, while the interpreter shuts down."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        model = getattr(runner, 'model', None)
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            runner.model = model.module
            del model
            gc.collect()
        dist.destroy_process_group()
