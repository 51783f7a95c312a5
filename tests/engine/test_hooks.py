"""The training safety is declared by the configs (not injected by the tools) and built on the
public hook interfaces of MMEngine / MMDetection."""
import glob
import os.path as osp

import pytest
import torch

from conftest import REPO_ROOT

PROJECT_CONFIGS = sorted(
    p for p in glob.glob(osp.join(REPO_ROOT, 'configs', '**', '*.py'), recursive=True)
    if '_base_' not in p and '_deploy_' not in p)


def test_there_are_project_configs():
    assert len(PROJECT_CONFIGS) >= 12


@pytest.mark.parametrize('path', PROJECT_CONFIGS, ids=lambda p: osp.relpath(p, REPO_ROOT))
def test_every_config_declares_the_safety_hooks(path):
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    assert cfg.default_hooks.checkpoint.type == 'SafeCheckpointHook'
    assert [h['type'] for h in cfg.custom_hooks].count('FiniteLossHook') == 1
    assert [h['type'] for h in cfg.custom_hooks].count('RankZeroBuffersHook') == 1
    # checkpoints are counted in the unit the training loop runs in (epochs or iterations)
    by_epoch = cfg.train_cfg.get('by_epoch', cfg.train_cfg.get('type') != 'IterBasedTrainLoop')
    assert cfg.default_hooks.checkpoint.get('by_epoch', True) == by_epoch


@pytest.mark.parametrize('config', ['configs/mask_rcnn/shvit_s4.py', 'configs/sem_fpn/shvit_s1.py'])
def test_plain_runner_from_cfg_has_them(config, tmp_path):
    """MMEngine's Runner on a COCO and an ADE20K config, without tools/train.py."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    from shvit_mm.engine import FiniteLossHook, SafeCheckpointHook
    cfg = Config.fromfile(osp.join(REPO_ROOT, config))
    cfg.work_dir = str(tmp_path)
    runner = Runner.from_cfg(cfg)  # builds the model and hooks; data are read only by train()
    kinds = [type(h) for h in runner.hooks]
    assert SafeCheckpointHook in kinds and FiniteLossHook in kinds
    # the loss guard runs before the checkpoint hook of the same iteration
    assert kinds.index(FiniteLossHook) < kinds.index(SafeCheckpointHook)


def test_loss_guard_extends_mmdetections_hook():
    from mmdet.engine.hooks import CheckInvalidLossHook

    from shvit_mm.engine import FiniteLossHook
    assert issubclass(FiniteLossHook, CheckInvalidLossHook)
    with pytest.raises(ValueError, match='interval'):
        FiniteLossHook(interval=0)


class _Runner:
    """Just what FiniteLossHook reads from a runner."""

    def __init__(self, it):
        from mmengine.logging import MessageHub
        self.iter, self.epoch = it, 0
        self.message_hub = MessageHub.get_instance('test_hooks')


def test_loss_guard_checks_every_interval_and_names_the_iteration():
    from shvit_mm.engine import FiniteLossHook
    bad = dict(loss=torch.tensor(float('nan')), loss_cls=torch.tensor(float('nan')),
               loss_bbox=torch.tensor(0.5))
    FiniteLossHook().after_train_iter(_Runner(3), 0, outputs=dict(loss=torch.tensor(1.0)))
    with pytest.raises(FloatingPointError, match=r"iteration 4 .*'loss_cls'"):
        FiniteLossHook().after_train_iter(_Runner(3), 0, outputs=bad)
    FiniteLossHook(interval=5).after_train_iter(_Runner(3), 0, outputs=bad)  # not a check step
    with pytest.raises(FloatingPointError):
        FiniteLossHook(interval=5).after_train_iter(_Runner(4), 0, outputs=bad)


def test_checkpoint_hook_refuses_an_mmengine_it_was_not_checked_against(monkeypatch):
    import mmengine

    from shvit_mm.engine import SafeCheckpointHook
    SafeCheckpointHook(interval=1)  # the installed MMEngine is supported
    monkeypatch.setattr(mmengine, '__version__', '0.11.3')
    with pytest.raises(RuntimeError, match=r'0\.11\.3.*pip install'):
        SafeCheckpointHook(interval=1)
    monkeypatch.undo()

    from mmengine.hooks import CheckpointHook

    def renamed(self, runner, step, meta, extra):  # an MMEngine whose internals changed
        pass
    monkeypatch.setattr(CheckpointHook, '_save_checkpoint_with_step', renamed)
    with pytest.raises(RuntimeError, match='extra'):
        SafeCheckpointHook(interval=1)
