"""MMDetection's inference API on the project's configs: DetInferencer, init_detector /
inference_detector (file path and numpy image), visualised output, tools/image_demo.py."""
import os.path as osp
import sys

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT, run_tool

DEMO_CFG = osp.join(REPO_ROOT, 'configs/demo/mask_rcnn_shvit_s1_demo.py')
COCO_CFG = osp.join(REPO_ROOT, 'configs/mask_rcnn/shvit_s1.py')


def _checkpoint(config, path, classes):
    """A checkpoint of ``config``'s model as training writes it (random weights, class names)."""
    from shvit_mm.apis.config import build_model
    model = build_model(config)
    torch.save(dict(state_dict=model.state_dict(), meta=dict(dataset_meta=dict(classes=classes))),
               path)
    return str(path)


@pytest.fixture(scope='module')
def picture(tmp_path_factory):
    from shvit_mm.datasets import make_demo_dataset
    root = make_demo_dataset(str(tmp_path_factory.mktemp('demo')), num_train=1, num_val=1,
                             verbose=False)
    return osp.join(root, 'val', '000000.jpg')


@pytest.mark.parametrize('config', [DEMO_CFG, COCO_CFG], ids=['demo', 'coco'])
def test_det_inferencer(config, picture, tmp_path):
    from mmdet.apis import DetInferencer

    from shvit_mm.datasets import DEMO_CLASSES
    classes = DEMO_CLASSES if config == DEMO_CFG else tuple(f'c{i}' for i in range(80))
    ckpt = _checkpoint(config, tmp_path / 'model.pth', classes)
    inferencer = DetInferencer(model=config, weights=ckpt, device='cpu')
    out = inferencer(picture, out_dir=str(tmp_path / 'out'), no_save_pred=False,
                     return_datasamples=False)
    pred = out['predictions'][0]
    assert {'labels', 'scores', 'bboxes', 'masks'} <= set(pred)
    assert len(list((tmp_path / 'out' / 'vis').glob('*.jpg'))) == 1  # painted picture
    assert len(list((tmp_path / 'out' / 'preds').glob('*.json'))) == 1


def test_init_detector_and_inference_detector(picture, tmp_path):
    import mmcv
    from mmdet.apis import inference_detector, init_detector
    from mmdet.registry import VISUALIZERS

    from shvit_mm.datasets import DEMO_CLASSES
    ckpt = _checkpoint(DEMO_CFG, tmp_path / 'model.pth', DEMO_CLASSES)
    model = init_detector(DEMO_CFG, ckpt, device='cpu')
    from_path = inference_detector(model, picture)
    image = mmcv.imread(picture)
    from_array = inference_detector(model, image)
    a, b = from_path.pred_instances, from_array.pred_instances
    assert torch.allclose(a.scores, b.scores) and torch.allclose(a.bboxes, b.bboxes)
    assert a.masks.shape[-2:] == image.shape[:2]
    visualizer = VISUALIZERS.build(model.cfg.visualizer)
    visualizer.dataset_meta = model.dataset_meta
    out_file = tmp_path / 'painted.jpg'
    visualizer.add_datasample('result', image[..., ::-1], data_sample=from_array, draw_gt=False,
                              out_file=str(out_file), pred_score_thr=0.0)
    assert out_file.is_file() and out_file.stat().st_size > 0


def test_image_demo_tool(picture, tmp_path):
    from shvit_mm.datasets import DEMO_CLASSES
    ckpt = _checkpoint(DEMO_CFG, tmp_path / 'model.pth', DEMO_CLASSES)
    out = run_tool([sys.executable, osp.join(REPO_ROOT, 'tools/image_demo.py'), picture, DEMO_CFG,
                    '--weights', ckpt, '--out-dir', str(tmp_path / 'o'), '--device', 'cpu'],
                   cwd=tmp_path)
    assert 'results saved under' in out
    assert len(list((tmp_path / 'o' / 'vis').glob('*.jpg'))) == 1
