"""Single-head Deformable DETR (SHViT paper, Appendix C): layers, configs, init, checkpoints."""
import os
from pathlib import Path

import pytest
import torch

import shvit_mm  # noqa: F401  (registers the components)
from mmcv.cnn.bricks.transformer import MultiheadAttention
from mmcv.ops import MultiScaleDeformableAttention
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

from shvit_mm.detection.layers import (SingleHeadMSDeformableAttention, resolve_layer_cfgs,
                                    spread_sampling_offsets)

from conftest import REPO_ROOT as ROOT
CFG_DIR = os.path.join(ROOT, 'configs', 'deformable_detr')
CONFIGS = ['r50.py', 'r50_single_head.py', 'shvit_s4_single_head.py']
SINGLE_HEAD_LAYERS = (1, 2, 3)  # 0-based: the paper's layers 2, 3, 4 of 6
MSDA_KEYS = ('sampling_offsets.weight', 'sampling_offsets.bias', 'attention_weights.weight',
             'attention_weights.bias', 'value_proj.weight', 'value_proj.bias',
             'output_proj.weight', 'output_proj.bias')
NUM_QUERIES = 30  # small for speed; the configs keep the recipe's 300


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    # The CPU is small and shared: one intra-op thread avoids oversubscription stalls.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def load_cfg(name, num_queries=NUM_QUERIES):
    cfg = Config.fromfile(os.path.join(CFG_DIR, name))
    if num_queries is not None:
        cfg.model.num_queries = num_queries
    cfg.model.backbone.init_cfg = None  # nothing can be downloaded here
    return cfg


def build_model(name, seed=0, **kwargs):
    cfg = load_cfg(name, **kwargs)
    init_default_scope('mmdet')
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return cfg, model


def directions(offsets):
    """Angles (degrees, rounded) of offset vectors of shape (..., 2)."""
    ang = torch.rad2deg(torch.atan2(offsets[..., 1], offsets[..., 0]))
    return torch.round(ang.double() % 360, decimals=3)


# ------------------------------------------------------------------------------------------------
# the single-head module
# ------------------------------------------------------------------------------------------------
def test_single_head_module_dims_and_forward():
    attn = SingleHeadMSDeformableAttention(embed_dims=256, num_heads=1, head_dims=64,
                                           batch_first=True)
    assert isinstance(attn, MultiScaleDeformableAttention)
    assert (attn.value_proj.in_features, attn.value_proj.out_features) == (256, 64)
    assert (attn.output_proj.in_features, attn.output_proj.out_features) == (64, 256)
    assert attn.sampling_offsets.out_features == 1 * 4 * 4 * 2
    assert attn.attention_weights.out_features == 1 * 4 * 4

    # CPU (pure-PyTorch) path, 4 levels of small maps; output back at 256 channels.
    shapes = torch.tensor([[8, 10], [4, 5], [2, 3], [1, 2]])
    start = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    num_value = int((shapes[:, 0] * shapes[:, 1]).sum())
    value = torch.randn(2, num_value, 256, requires_grad=True)
    query = torch.randn(2, 7, 256)
    ref = torch.rand(2, 7, 4, 2)
    out = attn(query, value=value, reference_points=ref, spatial_shapes=shapes,
               level_start_index=start)
    assert out.shape == (2, 7, 256)
    out.sum().backward()
    assert value.grad.abs().sum() > 0
    assert all(p.grad is not None for p in attn.parameters())


def test_single_head_module_rejects_inconsistent_ratio():
    with pytest.raises(ValueError, match='value_proj_ratio'):
        SingleHeadMSDeformableAttention(embed_dims=256, num_heads=1, head_dims=64,
                                        value_proj_ratio=1.0)
    # consistent ratio (as MMCV spells it) is accepted
    attn = SingleHeadMSDeformableAttention(embed_dims=256, num_heads=1, head_dims=64,
                                           value_proj_ratio=0.25)
    assert attn.value_proj.out_features == 64


def test_initial_sampling_pattern_is_spread():
    attn = SingleHeadMSDeformableAttention(num_heads=1, head_dims=64, num_levels=4, num_points=4)
    grid = attn.sampling_offsets.bias.detach().view(1, 4, 4, 2)[0]  # (levels, points, xy)
    assert torch.equal(attn.sampling_offsets.weight, torch.zeros_like(attn.sampling_offsets.weight))
    # 16 samples, 16 different directions
    assert directions(grid).unique().numel() == 16
    for lvl in range(4):
        dirs = directions(grid[lvl])
        assert dirs.unique().numel() == 4  # the 4 points of a level point different ways
        # ... covering all four quadrants of the circle
        assert set((dirs // 90).tolist()) == {0.0, 1.0, 2.0, 3.0}
        # ... at radii 1..4 (square norm, as MMCV)
        radii = grid[lvl].abs().amax(-1)
        assert torch.allclose(radii, torch.tensor([1., 2., 3., 4.]))
    # MMCV's stock initialisation with one head is the degenerate pattern this replaces.
    stock = MultiScaleDeformableAttention(num_heads=1)
    stock_grid = stock.sampling_offsets.bias.detach().view(4, 4, 2)
    assert directions(stock_grid).unique().numel() == 1
    # With 8 heads, the spread pattern gives every (head, level, point) its own direction too.
    assert directions(spread_sampling_offsets(8, 4, 4)).unique().numel() == 128


# ------------------------------------------------------------------------------------------------
# per-layer configs
# ------------------------------------------------------------------------------------------------
def test_resolve_layer_cfgs_and_errors():
    base = dict(self_attn_cfg=dict(embed_dims=256, batch_first=True), ffn_cfg=dict(embed_dims=256))
    cfgs = resolve_layer_cfgs(base, 6, [dict(layer_ids=[1, 2], self_attn_cfg=dict(num_heads=1))])
    assert [c['self_attn_cfg'].get('num_heads') for c in cfgs] == [None, 1, 1, None, None, None]
    assert cfgs[1]['self_attn_cfg']['embed_dims'] == 256  # merged, not replaced
    assert base['self_attn_cfg'] == dict(embed_dims=256, batch_first=True)  # input untouched
    with pytest.raises(ValueError, match='0-based'):
        resolve_layer_cfgs(base, 6, [dict(layer_ids=[6], self_attn_cfg=dict(num_heads=1))])
    with pytest.raises(ValueError, match='layer_ids'):
        resolve_layer_cfgs(base, 6, [dict(self_attn_cfg=dict(num_heads=1))])
    with pytest.raises(ValueError, match='one config per layer'):
        resolve_layer_cfgs([base] * 5, 6)


@pytest.mark.parametrize('name', CONFIGS)
def test_attention_layout_per_layer(name):
    _, model = build_model(name)
    single = name != 'r50.py'
    assert len(model.encoder.layers) == 6 and len(model.decoder.layers) == 6
    for i in range(6):
        enc = model.encoder.layers[i].self_attn
        dec_cross = model.decoder.layers[i].cross_attn
        dec_self = model.decoder.layers[i].self_attn
        for attn in (enc, dec_cross):
            if single and i in SINGLE_HEAD_LAYERS:
                assert type(attn) is SingleHeadMSDeformableAttention
                assert attn.num_heads == 1
                assert attn.value_proj.out_features == 64  # one head of 64 channels
                assert attn.output_proj.out_features == 256
            else:
                assert type(attn) is MultiScaleDeformableAttention
                assert attn.num_heads == 8
                assert attn.value_proj.out_features == 256  # 8 heads of 32 channels
            assert attn.embed_dims == 256 and attn.num_levels == 4 and attn.num_points == 4
        # the decoder's own self-attention stays 8-head everywhere
        assert isinstance(dec_self, MultiheadAttention)
        assert dec_self.attn.num_heads == 8 and dec_self.attn.embed_dim == 256
        if single and i in SINGLE_HEAD_LAYERS:
            # the detector's init_weights (xavier on the transformer, then each deformable
            # attention's own init) keeps the spread pattern
            for attn in (enc, dec_cross):
                grid = attn.sampling_offsets.bias.detach().view(4, 4, 2)
                assert directions(grid).unique().numel() == 16


def test_shvit_config_levels():
    cfg, model = build_model('shvit_s4_single_head.py')
    assert cfg.model.neck.in_channels == [224, 336, 448] and cfg.model.neck.num_outs == 4
    feats = model.extract_feat(torch.randn(1, 3, 128, 160))
    # strides 16, 32, 64 from SHViT-S4, stride 128 from the neck's extra conv
    assert [tuple(f.shape[-2:]) for f in feats] == [(8, 10), (4, 5), (2, 3), (1, 2)]
    assert all(f.shape[1] == 256 for f in feats)


# ------------------------------------------------------------------------------------------------
# one training step and one prediction per config
# ------------------------------------------------------------------------------------------------
def _batch(num_images=2, h=128, w=160, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(num_images):
        inputs.append(torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8))
        s = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1., 1.)))
        gt = InstanceData()
        gt.bboxes = torch.tensor([[10., 12., 90., 100.], [60., 20., 150., 70.]])
        gt.labels = torch.tensor([3, 17])
        s.gt_instances = gt
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


@pytest.mark.parametrize('name', CONFIGS)
def test_train_step_and_predict(name):
    cfg, model = build_model(name)
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    layer = model.encoder.layers[1].self_attn
    before = {k: v.detach().clone() for k, v in layer.named_parameters()}
    model.train()
    losses = model.train_step(_batch(), optim_wrapper)
    assert 'loss_cls' in losses and 'loss_bbox' in losses and 'loss_iou' in losses
    assert all(torch.isfinite(v).all() for v in losses.values())
    changed = [k for k, v in layer.named_parameters() if not torch.equal(v, before[k])]
    assert 'value_proj.weight' in changed and 'sampling_offsets.bias' in changed

    model.eval()
    with torch.no_grad():
        results = model.test_step(_batch(seed=1))
    assert len(results) == 2
    for r in results:
        pred = r.pred_instances
        n = cfg.model.test_cfg.max_per_img
        assert pred.bboxes.shape == (min(n, NUM_QUERIES * 80), 4)
        assert pred.scores.shape == pred.labels.shape == (pred.bboxes.shape[0], )
        assert torch.isfinite(pred.bboxes).all()


# ------------------------------------------------------------------------------------------------
# multi-head checkpoints load into the layers that stayed multi-head
# ------------------------------------------------------------------------------------------------
def test_multi_head_checkpoint_loads(tmp_path, capsys):
    """A user's path: ``load_from`` a multi-head MMDetection checkpoint in the single-head config."""
    _, multi = build_model('r50.py', seed=0, num_queries=None)
    assert type(multi).__name__ == 'DeformableDETR'  # MMDetection's own detector
    ckpt = tmp_path / 'deformable_detr_r50.pth'
    torch.save(dict(meta=dict(epoch=50), state_dict=multi.state_dict()), str(ckpt))

    cfg = load_cfg('r50_single_head.py', num_queries=None)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.load_from = str(ckpt)
    torch.manual_seed(1)
    runner = Runner.from_cfg(cfg)
    single = runner.model
    single.init_weights()
    before = {k: v.clone() for k, v in single.state_dict().items()}
    capsys.readouterr()
    runner.load_or_resume()  # what runner.train() / runner.test() do first
    printed = capsys.readouterr()

    src = multi.state_dict()
    # Every tensor of the single-head modules changes shape except output_proj.bias (256).
    expected_skipped = {f'{coder}.layers.{i}.{attn}.{k}'
                        for coder, attn in (('encoder', 'self_attn'), ('decoder', 'cross_attn'))
                        for i in SINGLE_HEAD_LAYERS for k in MSDA_KEYS
                        if k != 'output_proj.bias'}
    assert len(expected_skipped) == 6 * 7
    assert set(single.state_dict()) == set(src)  # same names, only shapes differ
    skipped = set()
    for key, value in single.state_dict().items():
        if value.shape != src[key].shape:
            skipped.add(key)
            assert torch.equal(value, before[key])  # kept its own initialisation
        else:
            assert torch.equal(value, src[key]), key  # loaded exactly
    assert skipped == expected_skipped
    # The layers that stayed multi-head (1, 5, 6) and the decoder self-attentions loaded fully.
    for i in (0, 4, 5):
        for k in MSDA_KEYS:
            assert torch.equal(single.state_dict()[f'encoder.layers.{i}.self_attn.{k}'],
                               src[f'encoder.layers.{i}.self_attn.{k}'])
    # MMEngine tells the user which checkpoint it loaded (log file) and which tensors it skipped
    # (printed as a warning, on the console).
    log = (Path(runner.log_dir) / f'{runner.timestamp}.log').read_text()
    assert f'Load checkpoint from {ckpt}' in log
    warning = printed.out + printed.err
    assert warning.count('size mismatch for ') == len(expected_skipped)
    for key in expected_skipped:
        assert f'size mismatch for {key}:' in warning, key


# ------------------------------------------------------------------------------------------------
# benchmark plumbing (figures come from tools/analysis_tools/benchmark_detr.py, not from tests)
# ------------------------------------------------------------------------------------------------
def test_benchmark_runs_and_counts_parameters(tmp_path):
    from shvit_mm.benchmark.detr_speed import DetrSpeed
    from shvit_mm.benchmark.harness import write_json

    result = DetrSpeed(multi_config=os.path.join(CFG_DIR, 'r50.py'),
                       single_config=os.path.join(CFG_DIR, 'r50_single_head.py'), height=64,
                       width=96, reps=1, warmup=0, threads=1, devices=('cpu', ),
                       stages=('encoder', ), cfg_options={'model.num_queries': NUM_QUERIES}).run()
    cpu = result['devices']['cpu']
    assert set(cpu['parts']) == {'wall', 'cpu'}
    for clock in ('wall', 'cpu'):
        assert set(cpu['parts'][clock]) == {'encoder'}
        assert len(cpu['times'][clock]['multi']['encoder']) == 1
        assert len(cpu['times'][clock]['single']['encoder']) == 1
        assert cpu['parts'][clock]['encoder']['multi_ms'] > 0
        assert cpu['parts'][clock]['encoder']['single_ms'] > 0
    # Parameter difference, from the shapes the paper describes: each of the 6 single-head
    # modules has offsets 256->32, weights 256->16, value 256->64, output 64->256 instead of
    # 256->256, 256->128, 256->256, 256->256 (all with bias).
    multi_msda = 3 * (256 * 256 + 256) + (256 * 128 + 128)
    single_msda = (256 * 32 + 32) + (256 * 16 + 16) + (256 * 64 + 64) + (64 * 256 + 256)
    pm, ps = result['params']['multi'], result['params']['single']
    assert pm['total'] - ps['total'] == 6 * (multi_msda - single_msda)
    assert pm['backbone'] == ps['backbone'] and pm['bbox_head'] == ps['bbox_head']
    assert len(result['not_shared']) == 6 * 7
    assert result['attention']['single']['encoder'] == ['8x32', '1x64', '1x64', '1x64', '8x32',
                                                        '8x32']
    assert result['attention']['single']['decoder'] == result['attention']['single']['encoder']
    assert result['attention']['multi']['decoder'] == ['8x32'] * 6
    text = DetrSpeed.markdown(result)
    assert '| encoder |' in text and '| total |' in text
    write_json(result, str(tmp_path / 'out.json'))
    assert (tmp_path / 'out.json').stat().st_size > 0
