"""bfloat16 mixed-precision training on the CPU (CPUAmpOptimWrapper): both branches."""
import copy
import os.path as osp

import pytest
import torch

from conftest import REPO_ROOT

DEMO_CFG = osp.join(REPO_ROOT, 'configs/demo/mask_rcnn_shvit_s1_demo.py')


def _batch(model, n=2, size=128, seed=0):
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(n):
        inputs.append(torch.randint(0, 255, (3, size, size), generator=g, dtype=torch.uint8))
        s = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                        scale_factor=(1., 1.), pad_shape=(size, size)))
        boxes = torch.tensor([[10., 12., 70., 80.], [50., 40., 120., 110.]])
        masks = torch.zeros(2, size, size, dtype=torch.uint8)
        for i, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
            masks[i, y0:y1, x0:x1] = 1
        s.gt_instances = InstanceData(bboxes=boxes, labels=torch.tensor([0, 3]),
                                      masks=BitmapMasks(masks.numpy(), size, size))
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def _wrapper(model, monkeypatch, fast):
    import shvit_mm.engine.amp as amp
    monkeypatch.setattr(amp, 'cpu_bf16_support',
                        lambda: dict(avx512_bf16=fast, amx_bf16=False, fast=fast))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    return amp.CPUAmpOptimWrapper(optimizer=opt, loss_scale='dynamic')


def _dtypes_seen(model):
    """Record the dtype of a backbone conv's output, the neck's output and RoIAlign's input."""
    from mmcv.ops import RoIAlign
    seen = {}

    def record(key, tensor):
        seen.setdefault(key, tensor.dtype)  # a hook returning None changes nothing

    conv = model.backbone.patch_embed[0].c
    conv.register_forward_hook(lambda m, a, o: record('backbone conv', o))
    model.rpn_head.register_forward_pre_hook(lambda m, a: record('heads input', a[0][0]))
    for m in model.modules():
        if isinstance(m, RoIAlign):
            m.register_forward_pre_hook(lambda m, a: record('roi_align input', a[0]))
            break
    return seen


@pytest.mark.parametrize('fast', [True, False], ids=['bf16 CPU', 'no bf16: fp32 fallback'])
def test_cpu_amp_trains_with_finite_losses(monkeypatch, fast, capsys):
    from shvit_mm.apis.config import build_model
    model = build_model(DEMO_CFG, mode='train')
    before = copy.deepcopy(model.backbone.state_dict())
    from mmengine.logging import MMLogger
    MMLogger.get_instance(f'test_amp_{fast}')  # a logger writing to this test's captured stdout
    capsys.readouterr()
    wrapper = _wrapper(model, monkeypatch, fast)
    logged = capsys.readouterr().out
    assert ('bfloat16 autocast for backbone, neck' if fast else 'training in fp32') in logged
    seen = _dtypes_seen(model)
    for step in range(2):
        losses = model.train_step(_batch(model, seed=step), wrapper)
        assert all(torch.isfinite(v).all() for v in losses.values()), losses
    expected = torch.bfloat16 if fast else torch.float32
    assert seen['backbone conv'] == expected
    assert seen['heads input'] == torch.float32  # the neck's output is handed on in fp32
    assert seen['roi_align input'] == torch.float32  # MMCV's compiled op gets fp32
    state = model.state_dict()
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
    assert any(not torch.equal(before[k], v) for k, v in model.backbone.state_dict().items()
               if v.is_floating_point())  # it trained
    # outside the training step nothing is autocast (evaluation stays fp32)
    seen.clear()
    model.eval()
    with torch.no_grad():
        model.backbone(torch.randn(1, 3, 64, 64))
    assert seen['backbone conv'] == torch.float32


def test_cpu_amp_rejects_fp16():
    from shvit_mm.engine import CPUAmpOptimWrapper
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match='bfloat16 only'):
        CPUAmpOptimWrapper(optimizer=opt, dtype='float16')
