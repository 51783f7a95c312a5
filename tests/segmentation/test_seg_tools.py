"""tools/train.py and tools/test.py on segmentation configs (MMSegmentation's meanings of the
options; the missing-ADE20K message is tested with COCO's in tests/cli), and MMSegmentation's
MMSegInferencer on every segmentation config."""
import glob
import os.path as osp

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT as ROOT

SEM_FPN = osp.join(ROOT, 'configs/sem_fpn/shvit_s1.py')
UPERNET = osp.join(ROOT, 'configs/upernet/shvit_s4.py')
SEG_DEMO = osp.join(ROOT, 'configs/demo/sem_fpn_shvit_s1_demo.py')
SEG_CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'sem_fpn', '*.py'))
                     + glob.glob(osp.join(ROOT, 'configs', 'upernet', '*.py'))
                     + glob.glob(osp.join(ROOT, 'configs', 'demo', 'sem_fpn_*.py')))


# ------------------------------------------------------------------------------------------------
# the command-line options, MMSegmentation's meanings
# ------------------------------------------------------------------------------------------------
def test_train_build_config_on_seg_configs(tmp_path):
    from shvit_mm.cli.train import build_config, parse_args
    cfg = build_config(parse_args([SEM_FPN]))
    assert cfg.default_scope == 'mmseg'
    assert cfg.work_dir == osp.join('./work_dirs', 'shvit_s1')
    cfg = build_config(parse_args([SEG_DEMO, '--work-dir', str(tmp_path), '--resume',
                                   '--cfg-options', 'train_cfg.max_iters=7']))
    assert cfg.work_dir == str(tmp_path) and cfg.resume is True and cfg.load_from is None
    assert cfg.train_cfg.max_iters == 7


def test_test_build_config_on_seg_configs(tmp_path):
    from shvit_mm.cli import ToolError
    from shvit_mm.cli.test import build_config, parse_args
    ckpt = tmp_path / 'iter_1.pth'
    ckpt.write_bytes(b'x')
    # --out: a directory of predicted label maps (IoUMetric's output_dir)
    cfg = build_config(parse_args([UPERNET, str(ckpt), '--out', str(tmp_path / 'pred')]))
    assert cfg.test_evaluator.output_dir == str(tmp_path / 'pred')
    assert cfg.test_evaluator.keep_results is True
    with pytest.raises(ToolError, match='directory'):
        build_config(parse_args([UPERNET, str(ckpt), '--out', 'results.pkl']))
    # --show-dir: MMSegmentation's visualization hook draws, the visualizer saves there
    cfg = build_config(parse_args([SEG_DEMO, str(ckpt), '--show-dir', 'vis']))
    assert cfg.default_hooks.visualization.draw is True and cfg.visualizer.save_dir == 'vis'
    # --tta: the config's tta_pipeline and SegTTAModel
    cfg = build_config(parse_args([UPERNET, str(ckpt), '--tta']))
    assert cfg.model.type == 'SegTTAModel' and cfg.model.module.type == 'EncoderDecoder'
    assert cfg.test_dataloader.dataset.pipeline[-1].type == 'TestTimeAug'
    with pytest.raises(ToolError, match='tta_pipeline'):
        build_config(parse_args([UPERNET, str(ckpt), '--tta', '--cfg-options', 'tta_pipeline=']))


# ------------------------------------------------------------------------------------------------
# MMSegInferencer
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('path', SEG_CONFIGS,
                         ids=lambda p: osp.relpath(p, osp.join(ROOT, 'configs')))
def test_mmseg_inferencer_on_every_config(path, tmp_path):
    """MMSegmentation's own inferencer with the config and a checkpoint (random weights of the
    config's model, with the dataset meta as MMEngine's Runner saves it) predicts a label map of
    the picture's size. ADE20K configs resize pictures to 2048x512 for testing; the test shrinks
    that resize to keep the CPU time small."""
    from mmengine.config import Config
    from mmseg.apis import MMSegInferencer
    from mmseg.registry import DATASETS
    from shvit_mm.apis import build_model
    cfg = Config.fromfile(path)
    for t in cfg.test_dataloader.dataset.pipeline:
        if t['type'] == 'Resize':
            t['scale'] = (256, 64)
    model = build_model(cfg, init=False)
    dataset_cls = DATASETS.get(cfg.test_dataloader.dataset.type)
    ckpt = tmp_path / 'model.pth'
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(dataset_cls.METAINFO))), ckpt)
    inferencer = MMSegInferencer(model=cfg, weights=str(ckpt), device='cpu')
    img = np.random.default_rng(0).integers(0, 256, (75, 131, 3), dtype=np.uint8)
    result = inferencer(img, return_datasamples=True)
    pred = result.pred_sem_seg.data
    assert pred.shape == (1, 75, 131)
    assert 0 <= int(pred.min()) and int(pred.max()) < len(dataset_cls.METAINFO['classes'])
