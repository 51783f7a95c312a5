"""tools/train.py and tools/test.py: MMDetection 3.3's command lines, clear errors for missing data,
--amp without a GPU and bad arguments, and --launcher pytorch on a machine without CUDA."""
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest
import torch

from conftest import REPO_ROOT as ROOT
DEMO_CFG = osp.join(ROOT, 'configs/demo/mask_rcnn_shvit_s1_demo.py')
RETINA_DEMO_CFG = osp.join(ROOT, 'configs/demo/retinanet_shvit_s1_demo.py')
COCO_CFG = osp.join(ROOT, 'configs/mask_rcnn/shvit_s4.py')
DEMO_COMMAND = 'python tools/train.py configs/demo/mask_rcnn_shvit_s1_demo.py'


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------
# missing data
# ------------------------------------------------------------------------------------------------
def test_train_without_coco_fails_at_once_with_clear_message(tmp_path):
    """The real command line, in a directory without data/coco: exit status 1, no traceback, the
    message names the COCO paths and the demo command, and nothing was built (no work_dir)."""
    env = dict(os.environ, PYTHONWARNINGS='ignore')
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools/train.py'), COCO_CFG],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = proc.stderr
    assert 'Traceback' not in err, err
    assert 'error: dataset files not found' in err
    assert 'data/coco/annotations/instances_train2017.json' in err
    assert 'data/coco/train2017/' in err
    assert 'data/coco/annotations/instances_val2017.json' in err  # val loader + CocoMetric
    assert str(tmp_path / 'data/coco/annotations/instances_train2017.json') in err  # resolved
    assert DEMO_COMMAND in err
    assert not (tmp_path / 'work_dirs').exists(), 'the runner was built before the data check'


def test_test_tool_without_coco_names_val_paths(tmp_path, monkeypatch):
    from shvit_mm.apis.common import DatasetNotFoundError
    from shvit_mm.apis.test import main
    monkeypatch.chdir(tmp_path)
    ckpt = tmp_path / 'model.pth'
    ckpt.write_bytes(b'not used: the data check comes first')
    with pytest.raises(DatasetNotFoundError) as e:
        main([COCO_CFG, str(ckpt)])
    msg = str(e.value)
    assert 'data/coco/annotations/instances_val2017.json' in msg
    assert 'data/coco/val2017/' in msg
    assert 'train2017' not in msg.split('This config')[0]  # only what testing reads is listed
    assert DEMO_COMMAND in msg
    assert not (tmp_path / 'work_dirs').exists()


def test_missing_data_check_passes_when_files_exist(tmp_path, monkeypatch):
    """The check is not a blanket refusal: with the files in place it stays quiet."""
    from mmengine.config import Config
    from shvit_mm.apis.common import check_datasets
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


def test_demo_dataset_is_not_required_up_front(tmp_path, monkeypatch):
    """The demo config's dataset creates itself on first use, so the check lets it through."""
    from mmengine.config import Config
    from shvit_mm.apis.common import check_datasets, setup_registries
    monkeypatch.chdir(tmp_path)
    cfg = Config.fromfile(DEMO_CFG)
    setup_registries(cfg)
    check_datasets(cfg, ['train_dataloader', 'val_dataloader'], ['val_evaluator'])
    assert not (tmp_path / 'data').exists()  # and the check itself created nothing


# ------------------------------------------------------------------------------------------------
# argument parsing and the resulting config
# ------------------------------------------------------------------------------------------------
def test_train_parse_args():
    from shvit_mm.apis.train import parse_args
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
    from shvit_mm.apis.test import parse_args
    a = parse_args(['c.py', 'm.pth', '--out', 'r.pkl', '--show-dir', 'vis', '--tta', '--work-dir', 'w',
                    '--cfg-options', 'test_dataloader.batch_size=2'])
    assert (a.config, a.checkpoint, a.out, a.show_dir, a.tta, a.work_dir) == \
        ('c.py', 'm.pth', 'r.pkl', 'vis', True, 'w')
    assert a.cfg_options == {'test_dataloader.batch_size': 2}
    with pytest.raises(SystemExit):
        parse_args(['c.py'])  # the checkpoint is required


def test_train_build_config(tmp_path):
    from shvit_mm.apis.common import ToolError
    from shvit_mm.apis.train import build_config, parse_args

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
    from shvit_mm.apis.train import build_config, parse_args
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
    from shvit_mm.apis.common import ToolError
    from shvit_mm.apis.test import build_config, parse_args
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


def test_cli_turns_tool_errors_into_exit_status(capsys):
    from shvit_mm.apis.common import ToolError, cli

    def failing(argv):
        raise ToolError('something named clearly')

    with pytest.raises(SystemExit) as e:
        cli(failing)
    assert e.value.code == 1
    assert 'error: something named clearly' in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# --launcher pytorch without CUDA
# ------------------------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU-only path is only taken without CUDA')
def test_launcher_pytorch_on_cpu_uses_gloo_and_cpu_ddp(monkeypatch):
    import torch.distributed as dist
    from mmengine.config import Config
    from mmengine.registry import MODEL_WRAPPERS
    from shvit_mm.apis.common import ToolError, setup_distributed

    cfg = Config(dict(launcher='pytorch', env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(ToolError, match='torchrun'):
        setup_distributed(cfg)
    with pytest.raises(ToolError, match='pytorch'):
        setup_distributed(Config(dict(launcher='slurm')))

    monkeypatch.setenv('RANK', '0')
    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.setenv('WORLD_SIZE', '1')
    monkeypatch.setenv('MASTER_ADDR', '127.0.0.1')
    monkeypatch.setenv('MASTER_PORT', str(_free_port()))
    assert not dist.is_initialized()
    setup_distributed(cfg)
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
        dist.destroy_process_group()
