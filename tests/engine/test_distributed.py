"""shvit_mm.engine.distributed: --launcher pytorch on a machine without CUDA (gloo, CPU DDP)."""
import socket

import pytest
import torch


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_cpu_ddp_wrapper_is_registered_on_import():
    import shvit_mm  # noqa: F401
    from mmengine.registry import MODEL_WRAPPERS
    from shvit_mm.engine import CPUDistributedDataParallel
    assert MODEL_WRAPPERS.get('CPUDistributedDataParallel') is CPUDistributedDataParallel


@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU-only path is only taken without CUDA')
def test_launcher_pytorch_on_cpu_uses_gloo_and_cpu_ddp(monkeypatch):
    import torch.distributed as dist
    from mmengine.config import Config
    from mmengine.registry import MODEL_WRAPPERS
    from shvit_mm.engine.distributed import LauncherError, setup_cpu_distributed, teardown_distributed

    cfg = Config(dict(launcher='pytorch', env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(LauncherError, match='torchrun'):
        setup_cpu_distributed(cfg)
    with pytest.raises(LauncherError, match='pytorch'):
        setup_cpu_distributed(Config(dict(launcher='slurm')))

    monkeypatch.setenv('RANK', '0')
    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.setenv('WORLD_SIZE', '1')
    monkeypatch.setenv('MASTER_ADDR', '127.0.0.1')
    monkeypatch.setenv('MASTER_PORT', str(_free_port()))
    assert not dist.is_initialized()
    setup_cpu_distributed(cfg)
    runner = None
    try:
        assert dist.is_initialized() and dist.get_backend() == 'gloo'
        assert cfg.env_cfg.dist_cfg.backend == 'gloo'
        assert cfg.model_wrapper_cfg.type == 'CPUDistributedDataParallel'
        # MMEngine's Runner passes device_ids=[LOCAL_RANK]; the wrapper must accept a CPU module
        net = torch.nn.Linear(3, 2)
        wrapped = MODEL_WRAPPERS.build(dict(cfg.model_wrapper_cfg), default_args=dict(
            module=net, device_ids=[0]))
        out = wrapped(torch.ones(4, 3))
        out.sum().backward()
        assert net.weight.grad is not None
        runner = type('Runner', (), {})()
        runner.model = wrapped
        del wrapped
    finally:
        teardown_distributed(runner)
    assert not dist.is_initialized()
    # the DDP wrapper (whose reducer holds the process group) is gone before the group
    assert runner.model is net


_DUMP_HOOK = '''
import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class DumpStateBeforeVal(Hook):
    priority = 'LOWEST'  # after every other before_val_epoch

    def before_val_epoch(self, runner):
        model = getattr(runner.model, 'module', runner.model)
        torch.save(model.state_dict(), f'{runner.work_dir}/val_state_rank{get_rank()}.pt')
'''


@pytest.mark.slow
def test_two_process_validation_uses_the_checkpoints_batchnorm_statistics(tmp_path):
    """bash tools/dist_train.sh CONFIG 2: every rank validates with rank 0's buffers, which are the
    checkpoint's, so the final evaluation equals tools/test.py on the checkpoint (without
    RankZeroBuffersHook rank 1's BatchNorm statistics differ, moved on by its own last batch)."""
    import os.path as osp
    import sys

    from conftest import REPO_ROOT, run_tool
    (tmp_path / 'dump_hook.py').write_text(_DUMP_HOOK)
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(
        f"_base_ = '{REPO_ROOT}/configs/demo/sem_fpn_shvit_s1_demo.py'\n"
        "custom_imports = dict(imports=['shvit_mm', 'dump_hook'], allow_failed_imports=False)\n"
        "custom_hooks = _base_.custom_hooks + [dict(type='DumpStateBeforeVal')]\n")
    opts = []
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts += [f'{loader}.dataset.data_root={tmp_path}/data/',
                 f'{loader}.dataset.demo_cfg.num_train=8', f'{loader}.dataset.demo_cfg.num_val=4']
    opts += ['train_dataloader.batch_size=2', 'train_cfg.max_iters=3', 'train_cfg.val_interval=3',
             'default_hooks.checkpoint.interval=3']
    run_tool(['env', f'PORT={_free_port()}', f'PYTHON={sys.executable}', 'OMP_NUM_THREADS=1',
              f'PYTHONPATH={tmp_path}', 'bash', osp.join(REPO_ROOT, 'tools/dist_train.sh'),
              str(cfg), '2', '--work-dir', str(tmp_path / 'work'), '--cfg-options'] + opts,
             cwd=tmp_path)
    work = tmp_path / 'work'
    ranks = [torch.load(work / f'val_state_rank{r}.pt') for r in (0, 1)]
    ckpt = torch.load(work / 'iter_3.pth', weights_only=False)['state_dict']
    stats = [k for k in ckpt if 'running_' in k]
    assert stats
    for key in ckpt:
        assert torch.equal(ranks[0][key], ckpt[key]) and torch.equal(ranks[1][key], ckpt[key]), key
