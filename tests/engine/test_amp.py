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
    """Record the dtypes of a backbone conv's output, the neck's output, the RoI extractor's input,
    a conv / linear output inside the RPN and the RoI box and mask heads, and the heads' outputs."""
    seen = {}

    def record(key, tensor):
        seen.setdefault(key, tensor.dtype)  # a hook returning None changes nothing

    conv = model.backbone.patch_embed[0].c
    conv.register_forward_hook(lambda m, a, o: record('backbone conv', o))
    model.rpn_head.register_forward_pre_hook(lambda m, a: record('heads input', a[0][0]))
    model.rpn_head.rpn_conv.register_forward_hook(lambda m, a, o: record('rpn conv', o))
    model.rpn_head.register_forward_hook(lambda m, a, o: record('rpn output', o[0][0]))
    roi = model.roi_head
    roi.bbox_roi_extractor.register_forward_pre_hook(lambda m, a: record('roi input', a[0][0]))
    roi.bbox_head.shared_fcs[0].register_forward_hook(lambda m, a, o: record('box fc', o))
    roi.bbox_head.register_forward_hook(lambda m, a, o: record('box output', o[0]))
    roi.mask_head.convs[0].conv.register_forward_hook(lambda m, a, o: record('mask conv', o))
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
    assert ('bfloat16 autocast' if fast else 'training in fp32') in logged
    seen = {}
    for step in range(2):
        if step == 1:  # recorders run after the wrapper's own hooks (installed by step 0)
            seen = _dtypes_seen(model)
        losses = model.train_step(_batch(model, seed=step), wrapper)
        assert all(torch.isfinite(v).all() for v in losses.values()), losses
    expected = torch.bfloat16 if fast else torch.float32
    for part in ('backbone conv', 'rpn conv', 'box fc', 'mask conv'):  # the dense parts
        assert seen[part] == expected, part
    # what the parts hand on is fp32: losses, box coding, RoIAlign and NMS run in fp32
    for part in ('heads input', 'rpn output', 'roi input', 'box output'):
        assert seen[part] == torch.float32, part
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


def test_cpu_amp_reaches_heads_called_through_forward(monkeypatch):
    """MMSegmentation's decode heads compute their loss through ``self.forward()`` (no module
    call, so no module hooks): the wrapper still runs them in bf16 and hands fp32 to the loss."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    from shvit_mm.apis.config import build_model
    model = build_model(osp.join(REPO_ROOT, 'configs/demo/sem_fpn_shvit_s1_demo.py'), mode='train')
    wrapper = _wrapper(model, monkeypatch, True)
    seen = {}
    conv = next(m for m in model.decode_head.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda m, a, o: seen.setdefault('decode conv', o.dtype) and None)
    loss_fn = model.decode_head.loss_by_feat
    monkeypatch.setattr(model.decode_head, 'loss_by_feat', lambda logits, *a, **k: (
        seen.setdefault('logits', logits.dtype), loss_fn(logits, *a, **k))[1])
    g = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(2):
        s = SegDataSample(metainfo=dict(ori_shape=(64, 64), img_shape=(64, 64), pad_shape=(64, 64)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, 2, (1, 64, 64), generator=g))
        samples.append(s)
    data = dict(inputs=[torch.randint(0, 255, (3, 64, 64), generator=g, dtype=torch.uint8)
                        for _ in samples], data_samples=samples)
    losses = model.train_step(data, wrapper)
    assert all(torch.isfinite(v).all() for v in losses.values()), losses
    assert seen == {'decode conv': torch.bfloat16, 'logits': torch.float32}
