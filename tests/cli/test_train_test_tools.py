"""shvit_mm.cli (tools/train.py and tools/test.py): MMDetection 3.3's command lines, the clear
errors for missing COCO / ADE20K data and bad arguments, --amp without a GPU."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from conftest import REPO_ROOT as ROOT

DEMO_CFG = osp.join(ROOT, 'configs/demo/mask_rcnn_shvit_s1_demo.py')
RETINA_DEMO_CFG = osp.join(ROOT, 'configs/demo/retinanet_shvit_s1_demo.py')
COCO_CFG = osp.join(ROOT, 'configs/mask_rcnn/shvit_s4.py')
ADE = 'data/ade/ADEChallengeData2016'

# per codebase: configs without their data, what each tool must list, and the demo to suggest
MISSING_DATA = {
    'COCO': dict(
        train_cfg=COCO_CFG, test_cfg=COCO_CFG, demo_cfg=DEMO_CFG,
        demo='python tools/train.py configs/demo/mask_rcnn_shvit_s1_demo.py',
        train_paths=['data/coco/annotations/instances_train2017.json', 'data/coco/train2017/',
                     'data/coco/annotations/instances_val2017.json'],  # val loader + CocoMetric
        test_paths=['data/coco/annotations/instances_val2017.json', 'data/coco/val2017/'],
        train_only='train2017', instructions='cocodataset.org', other='ADEChallengeData2016'),
    'ADE20K': dict(
        train_cfg=osp.join(ROOT, 'configs/sem_fpn/shvit_s1.py'),
        test_cfg=osp.join(ROOT, 'configs/upernet/shvit_s4.py'),
        demo_cfg=osp.join(ROOT, 'configs/demo/sem_fpn_shvit_s1_demo.py'),
        demo='python tools/train.py configs/demo/sem_fpn_shvit_s1_demo.py',
        train_paths=[f'{ADE}/{sub}' for sub in ('images/training', 'annotations/training',
                                                'images/validation', 'annotations/validation')],
        test_paths=[f'{ADE}/images/validation', f'{ADE}/annotations/validation'],
        train_only='training', instructions='ADEChallengeData2016.zip', other='coco'),
}
DATASETS = pytest.mark.parametrize('dataset', list(MISSING_DATA))


# ------------------------------------------------------------------------------------------------
# missing data
# ------------------------------------------------------------------------------------------------
@DATASETS
def test_train_without_data_fails_at_once_with_clear_message(dataset, tmp_path):
    """The real command line, in a directory without the data: exit status 1, no traceback, the
    message names the paths and the demo command, and nothing was built (no work_dir)."""
    case = MISSING_DATA[dataset]
    env = dict(os.environ, PYTHONWARNINGS='ignore')
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools/train.py'), case['train_cfg']],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = proc.stderr
    assert 'Traceback' not in err, err
    assert 'error: dataset files not found' in err
    for path in case['train_paths']:
        assert path in err, path
    assert str(tmp_path / case['train_paths'][0]) in err  # resolved against the directory
    assert case['instructions'] in err
    assert case['demo'] in err
    assert case['other'].lower() not in err.lower()  # the other codebase's dataset is not mentioned
    assert not (tmp_path / 'work_dirs').exists(), 'the runner was built before the data check'


@DATASETS
def test_test_tool_without_data_names_only_test_paths(dataset, tmp_path, monkeypatch):
    from shvit_mm.cli import DatasetNotFoundError
    from shvit_mm.cli.test import main
    case = MISSING_DATA[dataset]
    monkeypatch.chdir(tmp_path)
    ckpt = tmp_path / 'model.pth'
    ckpt.write_bytes(b'not used: the data check comes first')
    with pytest.raises(DatasetNotFoundError) as e:
        main([case['test_cfg'], str(ckpt)])
    msg = str(e.value)
    listed = msg.split('This config')[0]
    for path in case['test_paths']:
        assert path in listed, path
    assert case['train_only'] not in listed  # only what testing reads is listed
    assert case['demo'] in msg
    assert not (tmp_path / 'work_dirs').exists()


@DATASETS
def test_demo_dataset_is_not_required_up_front(dataset, tmp_path, monkeypatch):
    """The demo configs' datasets create themselves on first use, so the check lets them through."""
    from mmengine.config import Config
    from shvit_mm.apis import setup_registries
    from shvit_mm.cli import check_datasets
    monkeypatch.chdir(tmp_path)
    cfg = Config.fromfile(MISSING_DATA[dataset]['demo_cfg'])
    setup_registries(cfg)
    check_datasets(cfg, ['train_dataloader', 'val_dataloader', 'test_dataloader'],
                   ['val_evaluator', 'test_evaluator'])
    assert not (tmp_path / 'data').exists()  # and the check itself created nothing


def test_missing_data_check_passes_when_files_exist(tmp_path, monkeypatch):
    """The check is not a blanket refusal: with the files in place it stays quiet."""
    from mmengine.config import Config
    from shvit_mm.cli import check_datasets
    monkeypatch.chdir(tmp_path)
    cfg = Config.fromfile(COCO_CFG)
    for p in ['data/coco/annotations/instances_train2017.json',
              'data/coco/annotations/instances_val2017.json']:
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / p).write_text('{}')
    (tmp_path / 'data/coco/train2017').mkdir()
    check_datasets(cfg, ['train_dataloader'])  # train files present
    with pytest.raises(FileNotFoundError, match='val2017/'):
        check_datasets(cfg, ['train_dataloader', 'val_dataloader'], ['val_evaluator'])
    (tmp_path / 'data/coco/val2017').mkdir()
    check_datasets(cfg, ['train_dataloader', 'val_dataloader', 'test_dataloader'],
                   ['val_evaluator', 'test_evaluator'])


# ------------------------------------------------------------------------------------------------
# argument parsing and the resulting config
# ------------------------------------------------------------------------------------------------
def test_train_parse_args():
    from shvit_mm.cli.train import parse_args
    a = parse_args(['c.py'])
    assert (a.config, a.work_dir, a.resume, a.amp, a.auto_scale_lr, a.launcher, a.cfg_options) == \
        ('c.py', None, None, False, False, 'none', None)
    a = parse_args(['c.py', '--resume'])
    assert a.resume == 'auto'
    a = parse_args(['c.py', '--resume', 'w/epoch_3.pth', '--work-dir', 'w', '--amp', '--auto-scale-lr',
                    '--launcher', 'pytorch', '--cfg-options', 'train_cfg.max_epochs=3',
                    'model.neck.in_channels=[1,2,3]', 'optim_wrapper.optimizer.lr=0.01'])
    assert a.resume == 'w/epoch_3.pth' and a.work_dir == 'w' and a.amp and a.auto_scale_lr
    assert a.launcher == 'pytorch'
    assert a.cfg_options == {'train_cfg.max_epochs': 3, 'model.neck.in_channels': [1, 2, 3],
                             'optim_wrapper.optimizer.lr': 0.01}
    with pytest.raises(SystemExit):
        parse_args(['c.py', '--launcher', 'nope'])


def test_test_parse_args():
    from shvit_mm.cli.test import parse_args
    a = parse_args(['c.py', 'm.pth', '--out', 'r.pkl', '--show-dir', 'vis', '--tta', '--work-dir', 'w',
                    '--cfg-options', 'test_dataloader.batch_size=2'])
    assert (a.config, a.checkpoint, a.out, a.show_dir, a.tta, a.work_dir) == \
        ('c.py', 'm.pth', 'r.pkl', 'vis', True, 'w')
    assert a.cfg_options == {'test_dataloader.batch_size': 2}
    # the order dist_test.sh passes them in: CONFIG --launcher pytorch CHECKPOINT [options]
    a = parse_args(['c.py', '--launcher', 'pytorch', 'm.pth', '--fast'])
    assert (a.config, a.checkpoint, a.launcher, a.fast) == ('c.py', 'm.pth', 'pytorch', True)
    with pytest.raises(SystemExit):
        parse_args(['c.py'])  # the checkpoint is required


def test_train_build_config(tmp_path):
    from shvit_mm.cli import ToolError
    from shvit_mm.cli.train import build_config, parse_args

    cfg = build_config(parse_args([DEMO_CFG]))
    assert cfg.work_dir == osp.join('./work_dirs', 'mask_rcnn_shvit_s1_demo')
    assert not cfg.get('resume', False)

    cfg = build_config(parse_args([DEMO_CFG, '--work-dir', str(tmp_path), '--cfg-options',
                                   'train_cfg.max_epochs=3', 'optim_wrapper.optimizer.lr=0.01',
                                   'work_dir=ignored']))
    assert cfg.work_dir == str(tmp_path)  # the command line beats the config
    assert cfg.train_cfg.max_epochs == 3 and cfg.optim_wrapper.optimizer.lr == 0.01

    cfg = build_config(parse_args([DEMO_CFG, '--resume']))
    assert cfg.resume is True and cfg.load_from is None  # latest checkpoint of work_dir

    ckpt = tmp_path / 'epoch_2.pth'
    ckpt.write_bytes(b'x')
    cfg = build_config(parse_args([DEMO_CFG, '--resume', str(ckpt)]))
    assert cfg.resume is True and cfg.load_from == str(ckpt)
    with pytest.raises(ToolError, match='not found'):
        build_config(parse_args([DEMO_CFG, '--resume', str(tmp_path / 'missing.pth')]))

    cfg = build_config(parse_args([DEMO_CFG, '--auto-scale-lr']))
    assert cfg.auto_scale_lr.enable is True
    with pytest.raises(ToolError, match='auto_scale_lr'):
        build_config(parse_args([DEMO_CFG, '--auto-scale-lr', '--cfg-options', 'auto_scale_lr=None']))

    with pytest.raises(ToolError, match='config file not found'):
        build_config(parse_args([str(tmp_path / 'nope.py')]))


def test_train_amp(tmp_path):
    from shvit_mm.cli.train import build_config, parse_args
    cfg = build_config(parse_args([DEMO_CFG, '--amp']))
    if torch.cuda.is_available():  # MMEngine's fp16 AmpOptimWrapper, unchanged
        assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.optim_wrapper.loss_scale == 'dynamic'
    else:  # bf16 autocast on the CPU (fp32 where the CPU has no native bf16)
        assert cfg.optim_wrapper.type == 'CPUAmpOptimWrapper'
    # the same from a config that asks for AmpOptimWrapper itself
    cfg = build_config(parse_args([DEMO_CFG, '--cfg-options', 'optim_wrapper.type=AmpOptimWrapper']))
    assert cfg.optim_wrapper.type == ('AmpOptimWrapper' if torch.cuda.is_available()
                                      else 'CPUAmpOptimWrapper')


def test_test_build_config(tmp_path):
    from shvit_mm.cli import ToolError
    from shvit_mm.cli.test import build_config, parse_args
    ckpt = tmp_path / 'epoch_1.pth'
    ckpt.write_bytes(b'x')
    cfg = build_config(parse_args([DEMO_CFG, str(ckpt), '--show-dir', 'vis']))
    assert cfg.load_from == str(ckpt)
    vis = cfg.default_hooks.visualization
    assert vis.draw is True and vis.test_out_dir == 'vis'
    cfg = build_config(parse_args([RETINA_DEMO_CFG, str(ckpt), '--tta']))
    assert cfg.model.type == 'DetTTAModel' and cfg.model.module.type == 'RetinaNet'
    tta = cfg.test_dataloader.dataset.pipeline[-1]
    assert tta.type == 'TestTimeAug' and tta.transforms[0][0] == dict(type='RandomFlip', prob=1.)
    with pytest.raises(ToolError, match='masks'):  # DetTTAModel cannot merge Mask R-CNN's masks
        build_config(parse_args([DEMO_CFG, str(ckpt), '--tta']))
    with pytest.raises(ToolError, match='pkl'):
        build_config(parse_args([DEMO_CFG, str(ckpt), '--out', 'results.json']))
    with pytest.raises(ToolError, match='checkpoint not found'):
        build_config(parse_args([DEMO_CFG, str(tmp_path / 'missing.pth')]))


@pytest.mark.parametrize('error', ['ToolError', 'LauncherError', 'OnnxModelError'])
def test_cli_turns_user_errors_into_exit_status(error, capsys):
    from shvit_mm.cli import ToolError
    from shvit_mm.cli.common import cli
    from shvit_mm.engine.distributed import LauncherError
    from shvit_mm.inference.deploy_onnx import OnnxModelError

    def failing(argv):
        raise dict(ToolError=ToolError, LauncherError=LauncherError,
                   OnnxModelError=OnnxModelError)[error]('something named clearly')

    with pytest.raises(SystemExit) as e:
        cli(failing)
    assert e.value.code == 1
    assert 'error: something named clearly' in capsys.readouterr().err


@pytest.mark.parametrize('option', ['train_dataloader.batch_size=0',
                                    'train_dataloader.batch_size=2.5',
                                    'val_dataloader.num_workers=-1'])
def test_train_refuses_bad_loader_settings_before_building(option, tmp_path):
    """The real command line: one error line naming the setting and a valid example, exit status
    1, and no work directory written (PyTorch's sampler would raise a traceback later)."""
    env = dict(os.environ, PYTHONWARNINGS='ignore')
    cfg = osp.join(ROOT, 'configs/demo/sem_fpn_shvit_s1_demo.py')
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools/train.py'), cfg, '--work-dir',
                           str(tmp_path / 'w'), '--cfg-options', option],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    key, value = option.split('=')
    assert proc.stderr.strip().splitlines() == [
        f'error: {key} must be a {"positive" if "batch" in key else "non-negative"} integer, '
        f'got {value} (e.g. --cfg-options {key}=2)']
    assert not (tmp_path / 'w').exists() and not (tmp_path / 'data').exists()
