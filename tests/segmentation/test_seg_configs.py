"""Semantic FPN / UPerNet ADE20K configs and the segmentation demo configs: the ADE20K schedules as
they run, and for every config the pyramid its heads read, one training step (finite loss,
gradients reaching the backbone, `find_unused_parameters` exactly when some parameter gets none)
and a prediction of the input's size for odd and non-square pictures."""
import glob
import os.path as osp
import re

import pytest
import torch

from conftest import REPO_ROOT as ROOT

ADE_CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'sem_fpn', '*.py'))
                     + glob.glob(osp.join(ROOT, 'configs', 'upernet', '*.py')))
DEMO_CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'demo', 'sem_fpn_*.py')))
ALL_CONFIGS = ADE_CONFIGS + DEMO_CONFIGS
_ids = [osp.relpath(p, osp.join(ROOT, 'configs')) for p in ALL_CONFIGS]


@pytest.mark.parametrize('path', [p for p in ADE_CONFIGS if p.endswith('shvit_s4.py')],
                         ids=lambda p: osp.relpath(p, osp.join(ROOT, 'configs')))
def test_ade20k_schedule(path):
    """The learning rate as MMEngine's ParamSchedulerHook steps it over the whole schedule:
    Semantic FPN's poly decay from 2e-4 over 40k iterations, UPerNet's warm-up from 6e-11 to 6e-5
    over 1500 iterations then linear decay to 0 at 160k (the S1-S3 configs inherit them)."""
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import PARAM_SCHEDULERS
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(path)
    wrapper = build_optim_wrapper(torch.nn.Linear(1, 1), cfg.optim_wrapper)
    schedulers = [PARAM_SCHEDULERS.build(dict(s, optimizer=wrapper)) for s in cfg.param_scheduler]
    assert type(wrapper.optimizer) is torch.optim.AdamW
    assert not any(s.by_epoch for s in schedulers)
    lrs = []
    for _ in range(cfg.train_cfg.max_iters):
        lrs.append(wrapper.get_lr()['lr'][0])
        for s in schedulers:
            s.step()
    # MMEngine's schedulers reach their end value at iteration `end - 1`
    if 'sem_fpn' in path:
        expected = {0: 2e-4, 20000: 2e-4 * (19999 / 39999) ** 0.9, 39999: 0.}
    else:
        expected = {0: 6e-11, 1499: 6e-5, 80750: 6e-5 * 79249 / 158499, 159999: 0.}
    for it, lr in expected.items():
        assert lrs[it] == pytest.approx(lr, rel=1e-6, abs=1e-15), it


def test_upernet_no_weight_decay_on_norms(built):
    """UPerNet's recipe: weight decay 0.01, none on any normalisation layer (backbone and heads)."""
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from torch.nn.modules.batchnorm import _BatchNorm
    from torch.nn.modules.instancenorm import _InstanceNorm
    path = osp.join(ROOT, 'configs', 'upernet', 'shvit_s1.py')
    model = built(path)
    wrapper = build_optim_wrapper(model, Config.fromfile(path).optim_wrapper)
    decay = {id(p): g['weight_decay'] for g in wrapper.optimizer.param_groups for p in g['params']}
    norms = (_BatchNorm, _InstanceNorm, torch.nn.GroupNorm, torch.nn.LayerNorm)
    for name, module in model.named_modules():
        for p in module.parameters(recurse=False):
            assert decay[id(p)] == (0 if isinstance(module, norms) else 0.01), name


# ------------------------------------------------------------------------------------------------
# every config: the pyramid the heads read, one training step and predictions of odd / non-square
# pictures
# ------------------------------------------------------------------------------------------------
def _samples(shapes, num_classes, seed=0):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(seed)
    samples = []
    for h, w in shapes:
        s = SegDataSample(metainfo=dict(ori_shape=(h, w), img_shape=(h, w), pad_shape=(h, w)))
        label = torch.randint(0, num_classes, (1, h, w), generator=g)
        label[:, : h // 8] = 255  # some ignored pixels
        s.gt_sem_seg = PixelData(data=label)
        samples.append(s)
    return samples


@pytest.fixture(scope='module')
def built():
    """Each config's model, built once (no pretrained weights), SyncBN reverted to BN as MMEngine's
    Runner does without distributed training."""
    from mmengine.model import revert_sync_batchnorm
    from shvit_mm.apis.config import build_model
    cache = {}

    def get(path):
        if path not in cache:
            cache[path] = revert_sync_batchnorm(build_model(path))
        return cache[path]
    return get


@pytest.mark.parametrize('path', ALL_CONFIGS, ids=_ids)
def test_train_step_and_odd_size_prediction(path, built):
    from mmengine.config import Config
    model = built(path)
    num_classes = model.decode_head.num_classes
    # the decode head reads a stride 4/8/16/32 pyramid (FPNHead: the strides it is told), an
    # auxiliary head stride 16
    model.eval()
    with torch.no_grad():
        feats = model.extract_feat(torch.zeros(1, 3, 64, 128))
    strides = [64 // f.shape[-2] for f in feats]
    head_strides = [strides[i] for i in model.decode_head.in_index]
    assert head_strides == [4, 8, 16, 32]
    assert head_strides == getattr(model.decode_head, 'feature_strides', head_strides)
    if getattr(model, 'auxiliary_head', None) is not None:
        assert strides[model.auxiliary_head.in_index] == 16
    # one training step on a small non-square batch whose sides are no multiple of 16, through the
    # model's loss directly (the data preprocessor would pad it to the 512x512 training crop)
    torch.manual_seed(0)
    model.train()
    h, w = 40, 72
    inputs = torch.randn(2, 3, h, w)
    losses = model.loss(inputs, _samples([(h, w)] * 2, num_classes))
    loss = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(loss) and loss > 0
    model.zero_grad()
    loss.backward()
    backbone = model.backbone
    first = next(p for p in backbone.parameters() if p.requires_grad)
    assert first.grad is not None and first.grad.abs().sum() > 0, 'no gradient at the stem'
    for name, p in backbone.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # DDP must expect unused parameters exactly when the model has some
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert Config.fromfile(path).get('find_unused_parameters', False) == bool(unused), unused
    model.zero_grad()

    # prediction through test_step (data preprocessor included): odd and non-square pictures
    model.eval()
    for h, w in [(33, 70), (70, 47)]:
        img = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
        sample = _samples([(h, w)], num_classes)[0]
        with torch.no_grad():
            out = model.test_step(dict(inputs=[img], data_samples=[sample]))
        pred = out[0].pred_sem_seg.data
        assert pred.shape == (1, h, w), (path, h, w)
        assert pred.min() >= 0 and pred.max() < num_classes
        assert out[0].seg_logits.data.shape == (num_classes, h, w)


def test_parameter_counts_are_reported(built):
    """Backbone / neck / head parameter counts of every config (MMEngine's parameter_count), as
    docs/segmentation.md lists them."""
    from mmengine.analysis import parameter_count
    with open(osp.join(ROOT, 'docs', 'segmentation.md')) as f:
        doc = f.read()
    for path in ADE_CONFIGS:
        counts = parameter_count(built(path))
        heads = counts['decode_head'] + counts.get('auxiliary_head', 0)
        row = re.search(re.escape(osp.relpath(path, ROOT)) + r'`?\s*\|([^\n]+)', doc)
        assert row, f'{path} missing from docs/segmentation.md'
        numbers = [float(x) for x in re.findall(r'(\d+\.\d+)\s*M', row.group(1))]
        assert numbers[:4] == [round(c / 1e6, 2) for c in (
            counts['backbone'], counts['neck'], heads, counts[''])], (path, numbers)
