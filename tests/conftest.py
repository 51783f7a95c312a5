"""Shared fixtures: synthetic checkpoints in the official SHViT layout (no downloads here)."""
import contextlib
import json
import logging
import os
import os.path as osp
from collections import OrderedDict

import pytest
import torch

# Test data kept in the repository: the official checkpoints' key layout (shvit_official_keys.json,
# read from the release files' state dicts) and the COCO API's fake-results test vector.
DATA_DIR = osp.join(osp.dirname(osp.abspath(__file__)), 'data')
OFFICIAL_KEYS = osp.join(DATA_DIR, 'shvit_official_keys.json')
COCO_FAKE_DIR = osp.join(DATA_DIR, 'coco_fake')


def official_key_layout(arch: str) -> 'OrderedDict[str, list]':
    """Key -> shape of the official ``shvit_{arch}.pth`` state dict (head included)."""
    with open(OFFICIAL_KEYS) as f:
        return OrderedDict(json.load(f)[f'shvit_{arch}'])


def make_official_state_dict(arch: str, seed: int = 0, with_head: bool = True):
    """Random but well-conditioned tensors for every official key (BN stats plausible)."""
    g = torch.Generator().manual_seed(seed)
    sd = OrderedDict()
    for key, shape in official_key_layout(arch).items():
        if not with_head and key.startswith('head.'):
            continue
        shape = tuple(shape)
        if key.endswith('num_batches_tracked'):
            sd[key] = torch.tensor(1000, dtype=torch.long)
        elif key.endswith('running_var'):
            sd[key] = torch.rand(shape, generator=g) * 1.5 + 0.5
        elif key.endswith('running_mean') or key.endswith('bias'):
            sd[key] = torch.randn(shape, generator=g) * 0.1
        elif len(shape) == 1:  # BN / GroupNorm scale
            sd[key] = torch.rand(shape, generator=g) * 0.5 + 0.5
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod()))
            sd[key] = torch.randn(shape, generator=g) * (1.0 / fan_in) ** 0.5
    return sd


@torch.no_grad()
def randomize_norm_stats_(model, seed: int = 0):
    """Give every BatchNorm non-trivial running statistics and affine parameters (in place).

    A freshly initialised SHViT has zero-initialised BN scales on its residual branches, so those
    branches output zeros and a fusion or precision check on it would prove little.
    """
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            if m.running_mean is not None:
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
            if m.weight is not None:
                m.weight.copy_(torch.rand(n, generator=gen) * 0.4 + 0.3)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
        elif isinstance(m, torch.nn.GroupNorm) and m.affine:
            m.weight.copy_(torch.rand(m.num_channels, generator=gen) * 0.5 + 0.75)
            m.bias.copy_(torch.randn(m.num_channels, generator=gen) * 0.1)
    return model


@pytest.fixture(scope='session')
def official_keys_path():
    assert osp.isfile(OFFICIAL_KEYS), f'missing test data {OFFICIAL_KEYS}'
    return OFFICIAL_KEYS


# ---------------------------------------------------------------------------------------------
# Running the real command-line tools on the demo data
# ---------------------------------------------------------------------------------------------
REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def demo_options(data_root: str, num_train: int = 6, num_val: int = 3, max_epochs: int = 1,
                 batch_size: int = 2) -> list:
    """``--cfg-options`` that shrink the demo config to a tiny dataset under ``data_root``."""
    opts = []
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts += [f'{loader}.dataset.data_root={data_root}/', f'{loader}.batch_size={batch_size}',
                 f'{loader}.dataset.demo_cfg.num_train={num_train}',
                 f'{loader}.dataset.demo_cfg.num_val={num_val}']
    for ev in ('val_evaluator', 'test_evaluator'):
        opts.append(f'{ev}.ann_file={data_root}/annotations/instances_val.json')
    opts += [f'train_cfg.max_epochs={max_epochs}', f'train_cfg.val_interval={max_epochs}',
             'default_hooks.checkpoint.interval=1', 'default_hooks.logger.interval=1']
    return opts


def file_tree(root) -> dict:
    """Relative path -> bytes of every file under ``root`` (to compare two made datasets)."""
    files = {}
    for d, _, names in os.walk(root):
        for n in names:
            with open(osp.join(d, n), 'rb') as f:
                files[osp.relpath(osp.join(d, n), root)] = f.read()
    return files


@contextlib.contextmanager
def log_records(logger: logging.Logger):
    """Collect the ``logging.LogRecord`` objects ``logger`` (an MMEngine ``MMLogger`` or a plain
    ``logging`` logger) emits inside the ``with`` block; yields the list they go into."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def run_tool(cmd, cwd, expect_ok: bool = True, timeout: int = 900, env=None) -> str:
    """Run a command line; return stdout+stderr; assert its exit status is 0 (or not, when
    ``expect_ok`` is False)."""
    import subprocess
    full_env = dict(os.environ, PYTHONWARNINGS='ignore', **(env or {}))
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)
    out = proc.stdout + proc.stderr
    if expect_ok:
        assert proc.returncode == 0, out[-5000:]
    else:
        assert proc.returncode != 0, out[-5000:]
    return out


@pytest.fixture(autouse=True)
def _codebase_default_scope(request):
    """Tests under tests/segmentation build MMSegmentation components: MMEngine's registries
    resolve a build through the current default scope, which an earlier test in the same process may
    have set to ``mmdet``; give them the ``mmseg`` scope (restored afterwards)."""
    if f'{os.sep}segmentation{os.sep}' not in str(request.node.fspath):
        yield
        return
    import shvit_mm  # noqa: F401  (registers the segmentation adapter)
    from mmengine.registry import DefaultScope
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmseg'):
        yield
