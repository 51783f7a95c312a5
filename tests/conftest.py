"""Shared fixtures: synthetic checkpoints in the official SHViT layout (no downloads here)."""
import json
import os.path as osp
from collections import OrderedDict

import pytest
import torch

# Copies of ../shared/testdata, kept in the repository so a fresh clone tests on its own.
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


@pytest.fixture(scope='session')
def official_keys_path():
    assert osp.isfile(OFFICIAL_KEYS), f'missing test data {OFFICIAL_KEYS}'
    return OFFICIAL_KEYS
