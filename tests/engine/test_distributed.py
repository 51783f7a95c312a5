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
    finally:
        teardown_distributed()
    assert not dist.is_initialized()
