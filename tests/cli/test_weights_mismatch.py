"""Weights that do not fit the config's model: an error at test and inference time (how many
tensors, which parts, the likely cause); at ``load_from`` for fine-tuning, differing heads are one
summary line and a differing backbone or neck stops unless the user opts in."""
import os.path as osp
import sys

import pytest
import torch

from conftest import REPO_ROOT, demo_options, run_tool

DET_CFG = osp.join(REPO_ROOT, 'configs/demo/mask_rcnn_shvit_s1_demo.py')
SEG_CFG = osp.join(REPO_ROOT, 'configs/demo/sem_fpn_shvit_s1_demo.py')


def _s2_options():
    from shvit_mm.models.backbones import SHViT
    dims = SHViT.arch_zoo['s2']['embed_dims']
    return ['model.backbone.arch=s2', f'model.neck.in_channels=[{",".join(map(str, dims))}]']


def _save(path, config, options=()):
    """A randomly initialised model of ``config`` (with ``--cfg-options``-style ``options``) saved
    as MMEngine saves it."""
    from mmengine.config import DictAction
    from shvit_mm.apis import build_model
    action = DictAction(option_strings=[], dest='x')
    ns = type('N', (), {})()
    action(None, ns, list(options))
    model = build_model(config, cfg_options=getattr(ns, 'x', None), init=False)
    torch.save(dict(meta=dict(), state_dict=model.state_dict()), path)
    return str(path)


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp('weights')
    return dict(det_s1=_save(root / 'det_s1.pth', DET_CFG),
                det_7cls=_save(root / 'det_7cls.pth', DET_CFG, [
                    'model.roi_head.bbox_head.num_classes=7',
                    'model.roi_head.mask_head.num_classes=7']),
                det_s2=_save(root / 'det_s2.pth', DET_CFG, _s2_options()),
                seg_s1=_save(root / 'seg_s1.pth', SEG_CFG))


def _error_line(out):
    lines = [line for line in out.splitlines() if line.startswith('error:')]
    assert len(lines) == 1, out[-3000:]
    return lines[0]


def _test(ckpt, tmp_path, extra=(), expect_ok=True):
    opts = demo_options(str(tmp_path / 'data'), num_train=2, num_val=2) + list(extra)
    return run_tool([sys.executable, osp.join(REPO_ROOT, 'tools/test.py'), DET_CFG, ckpt,
                     '--work-dir', str(tmp_path / 'w'), '--cfg-options'] + opts, cwd=tmp_path,
                    expect_ok=expect_ok)


@pytest.mark.slow
def test_test_tool_refuses_another_variant_and_takes_the_right_one(checkpoints, tmp_path):
    out = _test(checkpoints['det_s1'], tmp_path, _s2_options(), expect_ok=False)
    line = _error_line(out)
    assert 'does not fit the model of the config' in line and '314 tensors differ' in line
    assert 'mis-shaped (backbone 312, neck 2)' in line, line
    assert 'SHViT-S1 shapes' in line and 'SHViT-S2' in line and 'another variant' in line, line
    assert 'Iter(test)' not in out and 'size mismatch' not in out
    # the checkpoint of the variant evaluates; so does the S1 one under a fused (deploy) backbone,
    # which fuses the training checkpoint's weights as it loads them
    for ckpt, extra in ((checkpoints['det_s2'], _s2_options()),
                        (checkpoints['det_s1'], ['model.backbone.deploy=True'])):
        out = _test(ckpt, tmp_path, extra)
        assert 'coco/bbox_mAP' in out and 'error:' not in out and 'size mismatch' not in out
        assert 'missing keys' not in out and 'unexpected key' not in out, out[-3000:]


@pytest.mark.slow
def test_test_tool_refuses_the_other_codebases_checkpoint(checkpoints, tmp_path):
    opts = []
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts += [f'{loader}.dataset.data_root={tmp_path}/data/',
                 f'{loader}.dataset.demo_cfg.num_train=4', f'{loader}.dataset.demo_cfg.num_val=2']
    out = run_tool([sys.executable, osp.join(REPO_ROOT, 'tools/test.py'), SEG_CFG,
                    checkpoints['det_s1'], '--work-dir', str(tmp_path / 'w'), '--cfg-options']
                   + opts, cwd=tmp_path, expect_ok=False)
    line = _error_line(out)
    assert 'detection model' in line and 'segmentation model' in line
    assert 'checkpoint of the other codebase' in line and 'Iter(test)' not in out


def test_inferencer_refuses_mismatched_weights_and_takes_matching_ones(checkpoints):
    from shvit_mm.apis import build_inferencer
    from shvit_mm.engine.weights_check import WeightsMismatchError
    with pytest.raises(WeightsMismatchError, match=r'tensors differ.*another variant'):
        build_inferencer(DET_CFG, checkpoints['det_s2'], device='cpu')
    with pytest.raises(WeightsMismatchError, match='other codebase'):
        build_inferencer(SEG_CFG, checkpoints['det_s1'], device='cpu')
    inferencer = build_inferencer(DET_CFG, checkpoints['det_s1'], device='cpu')
    want = torch.load(checkpoints['det_s1'])['state_dict']
    got = inferencer.model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in want.items())


def _train(cfg, tmp_path, ckpt, extra=(), expect_ok=True):
    opts = demo_options(str(tmp_path / 'data'), num_train=2, num_val=1, batch_size=1) + [
        f'load_from={ckpt}', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=100'] + list(extra)
    return run_tool([sys.executable, osp.join(REPO_ROOT, 'tools/train.py'), cfg, '--work-dir',
                     str(tmp_path / 'w'), '--cfg-options'] + opts, cwd=tmp_path,
                    expect_ok=expect_ok)


@pytest.mark.slow
def test_finetune_from_another_class_count_says_so_in_one_line(checkpoints, tmp_path):
    out = _train(DET_CFG, tmp_path, checkpoints['det_7cls'])
    lines = [line for line in out.splitlines() if 'load_from' in line and 'tensors differ' in line]
    assert len(lines) == 1, out[-3000:]
    assert '6 mis-shaped (roi_head 6)' in lines[0] and 'another class count' in lines[0], lines
    assert 'size mismatch' not in out  # MMEngine's per-tensor warnings are not repeated
    # a checkpoint that fits: nothing to say
    out = _train(DET_CFG, tmp_path, checkpoints['det_s1'])
    assert 'tensors differ' not in out and 'size mismatch' not in out and 'error:' not in out


@pytest.mark.slow
def test_finetune_with_another_backbone_stops_unless_allowed(checkpoints, tmp_path):
    out = _train(DET_CFG, tmp_path, checkpoints['det_s2'], expect_ok=False)
    line = _error_line(out)
    assert 'backbone and neck do not fit' in line and 'load_from_allow_mismatch=True' in line
    assert 'another variant' in line and 'Epoch(train)' not in out
    out = _train(DET_CFG, tmp_path, checkpoints['det_s2'], ['load_from_allow_mismatch=True'])
    assert 'keep their initialisation (load_from_allow_mismatch=True)' in out
    assert 'Epoch(train)' in out and 'size mismatch' not in out
