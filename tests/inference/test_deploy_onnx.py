"""Whole-model ONNX export through MMDeploy (shvit_mm.inference.deploy_onnx, tools/deploy.py).

Each model (the demo Mask R-CNN, the COCO RetinaNet with 5 classes, the single-head Deformable
DETR on SHViT-S1 with 5 classes, the demo Semantic FPN) is
exported once at one picture size, from a checkpoint whose BatchNorm statistics and head weights
are random (so that boxes, scores, classes, masks and logits all depend on the input), and checked
at two other sizes: ONNX Runtime's outputs of the graph against the same MMDeploy-rewritten model
run in PyTorch. The ONNX Runtime model of ``build_onnx_model`` is checked against the PyTorch
model's own predictions on a padded picture (MMDeploy's own rewrites fail that: proposals, class
boxes, clipping). Exports without a fix (opset 11, no ``Upsample`` rewrite) show what it prevents.
"""
import copy
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT, randomize_norm_stats_

MASK_RCNN = osp.join(REPO_ROOT, 'configs/demo/mask_rcnn_shvit_s1_demo.py')
RETINANET = osp.join(REPO_ROOT, 'configs/retinanet/shvit_s1.py')
SEM_FPN = osp.join(REPO_ROOT, 'configs/demo/sem_fpn_shvit_s1_demo.py')
UPERNET = osp.join(REPO_ROOT, 'configs/upernet/shvit_s1.py')
#: the COCO RetinaNet with 5 classes, and fewer pre-NMS candidates than a level's anchors
#: (MMDeploy's and MMDetection's choice of them differ there); test pictures of 320 px
RETINANET_OPTIONS = {'model.bbox_head.num_classes': 5, 'model.test_cfg.nms_pre': 100,
                     'model.test_cfg.max_per_img': 300}
DETR = osp.join(REPO_ROOT, 'configs/deformable_detr/shvit_s4_single_head.py')
#: the single-head Deformable DETR on the smallest backbone, 5 classes
DETR_OPTIONS = {'model.backbone.arch': 's1', 'model.neck.in_channels': [128, 224, 320],
                'model.bbox_head.num_classes': 5}
EXPORT_SHAPE = (256, 256)
#: two (height, width) other than the export size, multiples of 32 as the data preprocessors pad
OTHER_SHAPES = [(320, 192), (192, 288)]
#: the class names the checkpoints carry (the export saves them for the inferencers)
DATASET_META = {'classes': ['disc', 'square', 'triangle'], 'palette': [[220, 20, 60]] * 3}
HEADS = ('rpn_cls', 'rpn_reg', 'fc_cls', 'fc_reg', 'conv_logits', 'retina_cls', 'retina_reg',
         'conv_seg', 'cls_branches')


def _config(path, options=None):
    from shvit_mm.apis.config import read_config
    cfg = read_config(path, options)
    if path in (RETINANET, DETR):  # the COCO test scale (1333, 800) would make the tests slow
        for step in cfg.test_pipeline:
            if step['type'] == 'Resize':
                step['scale'] = (320, 320)
    return cfg


def _random_checkpoint(cfg, path):
    """A checkpoint of the config's model with random BatchNorm statistics and heads; the box
    classifier of a two-stage detector is centred on a random picture's RoIs, so that several
    classes win RoIs and several score above ``score_thr`` in each."""
    from shvit_mm.apis.config import build_model
    torch.manual_seed(0)
    model = randomize_norm_stats_(build_model(cfg))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if any(head in name for head in HEADS):
                param.normal_(0, 0.05 if 'reg' in name else 0.02 if 'branches' in name else 0.3)
        if hasattr(model, 'roi_head'):
            from mmdet.structures import DetDataSample
            fc_cls, logits = model.roi_head.bbox_head.fc_cls, []
            hook = fc_cls.register_forward_hook(lambda module, args, out: logits.append(out))
            meta = dict(img_shape=EXPORT_SHAPE, ori_shape=EXPORT_SHAPE, scale_factor=(1., 1.))
            model.predict(torch.randn(1, 3, *EXPORT_SHAPE), [DetDataSample(metainfo=meta)])
            hook.remove()
            fc_cls.bias -= logits[0].mean(0)
    torch.save({'state_dict': model.state_dict(), 'meta': {'dataset_meta': DATASET_META}}, path)
    return path


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """``get(name)`` -> ``(cfg, checkpoint, onnx_path)``, each exported once per module; the
    RetinaNet through tools/deploy.py's ``main``."""
    pytest.importorskip('mmdeploy')
    pytest.importorskip('onnxruntime')
    from shvit_mm.cli.deploy import main
    from shvit_mm.inference.deploy_onnx import export_onnx
    root = tmp_path_factory.mktemp('onnx')
    models = {'mask_rcnn': (MASK_RCNN, None), 'retinanet': (RETINANET, RETINANET_OPTIONS),
              'detr': (DETR, DETR_OPTIONS), 'sem_fpn': (SEM_FPN, None),
              'upernet': (UPERNET, None)}
    done = {}

    def get(name):
        if name not in done:
            path, options = models[name]
            cfg = _config(path, options)
            ckpt = _random_checkpoint(cfg, str(root / f'{name}.pth'))
            if name == 'retinanet':
                options = [f'{k}={v}' for k, v in RETINANET_OPTIONS.items()]
                onnx_path = main([path, ckpt, '--work-dir', str(root / name), '--shape',
                                  *map(str, EXPORT_SHAPE), '--cfg-options', *options])
            else:
                onnx_path = export_onnx(cfg, ckpt, str(root / name), shape=EXPORT_SHAPE)
            done[name] = cfg, ckpt, onnx_path
        return done[name]

    return get


def _graph_outputs(cfg, ckpt, onnx_path, shapes, padding=(24, 8)):
    """For one random pre-processed picture of each of ``shapes``: the outputs of the exported
    graph (ONNX Runtime) and of the same rewritten model in PyTorch (one rewrite context for all:
    entering one takes seconds)."""
    import onnxruntime as ort
    from mmdeploy.apis.utils import build_task_processor
    from mmdeploy.core import RewriterContext, patch_model
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    deploy = Config.fromfile(osp.join(osp.dirname(onnx_path), 'deploy_cfg.py'))
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = build_task_processor(cfg, deploy, 'cpu').build_pytorch_model(ckpt)
    if cfg.default_scope == 'mmseg':
        from mmseg.structures import SegDataSample as DataSample
    else:
        from mmdet.structures import DetDataSample as DataSample
    session = ort.InferenceSession(onnx_path, providers=['CPUExecutionProvider'])
    feeds = []
    for shape in shapes:
        torch.manual_seed(shape[0] * shape[1])
        feed = {'input': torch.randn(1, 3, *shape)}
        if 'img_shape' in [node.name for node in session.get_inputs()]:
            # the picture without padding: by default 24 rows and 8 columns less than the input
            feed['img_shape'] = torch.tensor([shape[0] - padding[0], shape[1] - padding[1]])
        feeds.append(feed)
    model = patch_model(model, cfg=deploy, backend='onnxruntime')
    refs = []
    with RewriterContext(cfg=deploy, backend='onnxruntime',
                         opset=deploy.onnx_config.opset_version), torch.no_grad():
        for feed in feeds:
            data_sample = DataSample()
            if 'img_shape' in feed:
                data_sample.set_field(feed['img_shape'], 'img_shape', field_type='metainfo')
            ref = model(feed['input'], [data_sample], mode='predict')
            refs.append([r.numpy() for r in ([ref] if isinstance(ref, torch.Tensor) else ref)])
    return [(ref, session.run(None, {k: v.numpy() for k, v in feed.items()}))
            for ref, feed in zip(refs, feeds)]


@pytest.fixture(scope='module')
def graph_outputs(exported):
    """``get(name)`` -> ``{shape: (reference, onnx_runtime)}`` at the export size and the
    :data:`OTHER_SHAPES`, computed once per model."""
    done = {}

    def get(name):
        if name not in done:
            shapes = [EXPORT_SHAPE] + OTHER_SHAPES
            # Deformable DETR's configs do not pad (pad_size_divisor 1): the graph has no
            # padding mask, as MMDetection builds none for an unpadded picture
            padding = (0, 0) if name == 'detr' else (24, 8)
            done[name] = dict(zip(shapes, _graph_outputs(*exported(name), shapes, padding)))
        return done[name]

    return get


def _max_diffs(ref, got):
    assert [r.shape for r in ref] == [g.shape for g in got]
    return [float(np.abs(r.astype(np.float64) - g).max()) for r, g in zip(ref, got)]


def _match(ref_boxes, ref_scores, ref_labels, boxes, scores, labels):
    """Indices putting the second detections in the order of the first (``ref_*``): detections
    whose scores tie to float rounding may come out in either order. Each reference detection
    takes the nearest one of the same label (box and score distance); the result must be a
    permutation."""
    ref_boxes, boxes = np.asarray(ref_boxes, np.float64), np.asarray(boxes, np.float64)
    dist = (np.abs(ref_boxes[:, None] - boxes[None]).max(-1)
            + 1e3 * np.abs(np.asarray(ref_scores)[:, None] - np.asarray(scores)[None]))
    dist[np.asarray(ref_labels)[:, None] != np.asarray(labels)[None]] = np.inf
    order = dist.argmin(1)
    assert len(set(order.tolist())) == len(order), 'detections do not pair up'
    return order


def _det_diffs(ref, got):
    """Max abs differences of boxes, scores and (when present) masks of two graph outputs
    ``[dets (1, N, 5), labels (1, N)[, masks (1, N, h, w)]]`` after pairing the detections."""
    assert [r.shape for r in ref] == [g.shape for g in got]
    (ref_dets, ref_labels), (dets, labels) = (ref[0][0], ref[1][0]), (got[0][0], got[1][0])
    order = _match(ref_dets[:, :4], ref_dets[:, 4], ref_labels, dets[:, :4], dets[:, 4], labels)
    diffs = [np.abs(ref_dets - dets[order]).max(axis=0)]
    box_diff, score_diff = float(diffs[0][:4].max()), float(diffs[0][4])
    if len(ref) < 3:
        return box_diff, score_diff
    return box_diff, score_diff, float(np.abs(ref[2][0] - got[2][0][order]).max())


# ---------------------------------------------------------------------------------------------
# the exported graphs at sizes other than the export size
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('shape', OTHER_SHAPES, ids=lambda s: f'{s[0]}x{s[1]}')
def test_mask_rcnn_graph_matches_pytorch_at_other_sizes(graph_outputs, shape):
    ref, got = graph_outputs('mask_rcnn')[shape]
    dets, labels, masks = ref
    assert dets.shape[1] == 100 and (dets[0, :, 4] > 0).all()  # max_per_img boxes, all scored
    box_diff, score_diff, mask_diff = _det_diffs(ref, got)
    assert box_diff < 1e-3 and score_diff < 1e-5 and mask_diff < 1e-5
    # boxes clipped to img_shape, not to the input; several classes; masks from RoI features
    assert dets[0, :, 2].max() <= shape[1] - 8 and dets[0, :, 3].max() <= shape[0] - 24
    assert len(np.unique(labels)) > 2 and masks.std() > 1e-3


@pytest.mark.parametrize('shape', OTHER_SHAPES, ids=lambda s: f'{s[0]}x{s[1]}')
def test_retinanet_graph_matches_pytorch_at_other_sizes(graph_outputs, shape):
    ref, got = graph_outputs('retinanet')[shape]
    box_diff, score_diff = _det_diffs(ref, got)
    assert box_diff < 1e-3 and score_diff < 1e-5
    assert len(np.unique(ref[1])) > 1


@pytest.mark.parametrize('shape', OTHER_SHAPES, ids=lambda s: f'{s[0]}x{s[1]}')
def test_deformable_detr_graph_matches_pytorch_at_other_sizes(graph_outputs, shape):
    """The single-head Deformable DETR: multi-scale deformable attention through ONNX's
    ``GridSample``; boxes scaled to the picture as MMDetection's head does."""
    ref, got = graph_outputs('detr')[shape]
    box_diff, score_diff = _det_diffs(ref, got)
    assert box_diff < 1e-3 and score_diff < 1e-5
    # boxes spread over the picture, scores spread (random decoder features favour one class)
    assert ref[0][0, :, :4].std(0).min() > 10 and ref[0][0, :, 4].std() > 1e-3


def test_deformable_detr_graph_has_only_standard_onnx_ops(exported):
    """No MMDeploy custom op (``mmdeploy::grid_sampler``, ``MMCVMultiScaleDeformableAttention``),
    which plain ONNX Runtime cannot run."""
    import onnx
    graph = onnx.load(exported('detr')[2]).graph
    assert {node.domain for node in graph.node} <= {'', 'ai.onnx'}
    assert 'GridSample' in {node.op_type for node in graph.node}


@pytest.mark.parametrize('shape', OTHER_SHAPES, ids=lambda s: f'{s[0]}x{s[1]}')
def test_sem_fpn_graph_matches_pytorch_at_other_sizes(graph_outputs, shape):
    """The logits (the deploy config has no arg-max in the graph) at the input's own size."""
    (logits,), got = graph_outputs('sem_fpn')[shape]
    assert logits.shape == (1, 6) + shape
    assert _max_diffs([logits], got)[0] < 1e-4 < logits.std()


@pytest.mark.parametrize('shape', OTHER_SHAPES, ids=lambda s: f'{s[0]}x{s[1]}')
def test_upernet_graph_matches_pytorch_at_other_sizes(graph_outputs, shape):
    """UPerNet's pyramid pooling (scales 1, 2, 3, 6) on stride-64 maps of 5x3 and 3x5 cells:
    adaptive pooling windows that overlap and differ in size."""
    (logits,), got = graph_outputs('upernet')[shape]
    assert logits.shape == (1, 150) + shape
    assert _max_diffs([logits], got)[0] < 1e-4 < logits.std()


def test_without_the_upsample_rewrite_sem_fpn_is_wrong_at_other_sizes(exported, tmp_path,
                                                                       monkeypatch):
    """MMSegmentation's Upsample bakes the export size into the graph: without shvit_mm's
    rewrite the logits are wrong (with no error) at any other size."""
    from mmdeploy.core import FUNCTION_REWRITER

    from shvit_mm.inference.deploy_onnx import export_onnx
    cfg, ckpt, _ = exported('sem_fpn')
    records = FUNCTION_REWRITER._registry._rewrite_records  # MMDeploy's registered rewrites
    monkeypatch.delitem(records, 'mmseg.models.utils.Upsample.forward')
    onnx_path = export_onnx(cfg, ckpt, str(tmp_path), shape=EXPORT_SHAPE)
    monkeypatch.undo()
    at_export_size, at_other_size = _graph_outputs(cfg, ckpt, onnx_path,
                                                   [EXPORT_SHAPE, OTHER_SHAPES[0]])
    assert _max_diffs(*at_export_size)[0] < 1e-4
    assert _max_diffs(*at_other_size)[0] > 1e-2


def test_opset_11_drops_aligned_roi_align(exported, tmp_path):
    """Below opset 16 torchvision's RoIAlign export drops ``aligned=True`` (a warning only): the
    masks of the graph differ from PyTorch's. The deploy configs use opset 16."""
    from mmengine.config import Config

    from shvit_mm.inference.deploy_onnx import DEPLOY_CONFIGS, export_onnx
    cfg, ckpt, _ = exported('mask_rcnn')
    deploy = Config.fromfile(DEPLOY_CONFIGS['instance-seg'])
    assert deploy.onnx_config.opset_version == 16
    deploy.onnx_config.opset_version = 11
    with pytest.warns(UserWarning, match='aligned=True'):
        onnx_path = export_onnx(cfg, ckpt, str(tmp_path), deploy_cfg=deploy, shape=EXPORT_SHAPE)
    (ref, got), = _graph_outputs(cfg, ckpt, onnx_path, [EXPORT_SHAPE])
    assert _max_diffs(ref, got)[2] > 1e-3  # the masks


def test_mmcv_roi_align_exports_without_cast_long(exported, tmp_path):
    """MMCV's own RoIAlign (the COCO configs' SingleRoIExtractor) through shvit_mm's symbolic
    (MMDeploy's needs ``_cast_Long``, which PyTorch 2.x lacks)."""
    from shvit_mm.inference.deploy_onnx import export_onnx
    cfg, ckpt, _ = exported('mask_rcnn')
    cfg = copy.deepcopy(cfg)
    for key in ('bbox_roi_extractor', 'mask_roi_extractor'):
        cfg.model.roi_head[key].type = 'SingleRoIExtractor'
        cfg.model.roi_head[key].roi_layer.use_torchvision = False
    onnx_path = export_onnx(cfg, ckpt, str(tmp_path), shape=EXPORT_SHAPE)
    (ref, got), = _graph_outputs(cfg, ckpt, onnx_path, OTHER_SHAPES[1:])
    box_diff, score_diff, mask_diff = _det_diffs(ref, got)
    assert box_diff < 1e-3 and score_diff < 1e-5 and mask_diff < 1e-5


# ---------------------------------------------------------------------------------------------
# build_onnx_model: the codebases' data samples, as the PyTorch model predicts them
# ---------------------------------------------------------------------------------------------
def _test_step_both(cfg, ckpt, onnx_path, picture_shape):
    """``test_step`` of the ONNX Runtime model and of the PyTorch model on one random picture
    through the config's test pipeline."""
    from mmengine.runner import load_checkpoint

    from shvit_mm.apis.config import build_model
    from shvit_mm.inference.deploy_onnx import build_onnx_model
    onnx_model = build_onnx_model(cfg, onnx_path)
    assert onnx_model.dataset_meta == DATASET_META  # saved by the export for the inferencers
    model = build_model(cfg, init=False)
    load_checkpoint(model, ckpt, map_location='cpu', logger='silent')
    data = _one_picture(cfg, picture_shape)
    with torch.no_grad():
        return (onnx_model.test_step(copy.deepcopy(data))[0],
                model.test_step(copy.deepcopy(data))[0])


def _one_picture(cfg, picture_shape):
    """A batch of one random picture through the config's test pipeline."""
    from mmcv.transforms import Compose
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DefaultScope
    pipeline = [dict(type=f'{cfg.default_scope}.LoadImageFromNDArray')] + [
        step for step in cfg.test_pipeline[1:] if step['type'] != 'LoadAnnotations']
    img = (np.random.RandomState(1).rand(*picture_shape, 3) * 255).astype(np.uint8)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return pseudo_collate([Compose(pipeline)(dict(img=img, img_id=0))])


@pytest.mark.parametrize('name', ['mask_rcnn', 'retinanet', 'detr'])
def test_onnx_detector_predicts_as_pytorch(exported, name):
    """A 200x240 picture, resized to 267x320 and padded by the data preprocessor (not DETR's):
    the graph clips boxes to the picture (its ``img_shape`` input), as MMDetection does. Mask R-CNN: the
    proposals as MMDetection's RPN makes them (level by level, no score threshold) and every
    class's own box (MMDeploy's rewrites give every class the best class's box)."""
    got, ref = _test_step_both(*exported(name), (200, 240))
    got, ref = got.pred_instances, ref.pred_instances
    assert len(got) == len(ref) == (100 if name != 'retinanet' else len(ref)) > 0
    order = _match(ref.bboxes, ref.scores, ref.labels, got.bboxes, got.scores, got.labels)
    assert torch.allclose(got.bboxes[order], ref.bboxes, atol=1e-3)
    assert torch.allclose(got.scores[order], ref.scores, atol=1e-5)
    # random decoder features are alike across DETR's queries: one class wins them all
    assert len(ref.labels.unique()) > 1 or name == 'detr'
    if name == 'mask_rcnn':
        assert got.masks.shape == ref.masks.shape == (100, 200, 240)
        assert (got.masks[order] == ref.masks).float().mean() > 0.9999


def test_onnx_segmentor_predicts_as_pytorch(exported):
    """A 200x240 picture, padded to 224x256 by the data preprocessor: MMSegmentation removes the
    padding before the arg-max; so does the ONNX model (MMDeploy's own keeps it)."""
    got, ref = _test_step_both(*exported('sem_fpn'), (200, 240))
    assert got.pred_sem_seg.shape == ref.pred_sem_seg.shape == (200, 240)
    assert torch.allclose(got.seg_logits.data, ref.seg_logits.data, atol=1e-4)
    assert torch.equal(got.pred_sem_seg.data, ref.pred_sem_seg.data)


def test_channel_argmax_is_torch_argmax():
    """The running maximum over channels gives PyTorch's arg-max: the first of tied channels,
    and a NaN taken as the maximum."""
    from shvit_mm.inference.deploy_onnx.models import _channel_argmax
    logits = torch.randn(150, 37, 53, generator=torch.Generator().manual_seed(0))
    logits[7:9, :5] = 10.0  # ties: channel 7 wins
    assert torch.equal(_channel_argmax(logits), logits.argmax(0, keepdim=True))
    assert _channel_argmax(logits)[0, 0, 0] == 7
    logits[100, 3, 4] = float('nan')
    assert torch.equal(_channel_argmax(logits), logits.argmax(0, keepdim=True))
    assert _channel_argmax(logits)[0, 3, 4] == 100


@pytest.mark.parametrize('case', ['padded', 'resized', 'flipped', 'one_channel'])
def test_onnx_segmentor_postprocessing_is_mmsegmentation_s(case):
    """The ONNX segmentor's post-processing of logits (padding, resize to the original size,
    flip, arg-max or threshold) equals ``BaseSegmentor.postprocess_result``."""
    from mmseg.models.segmentors.base import BaseSegmentor
    from mmseg.structures import SegDataSample

    from shvit_mm.inference.deploy_onnx.models import _segmentation_model_class
    model = object.__new__(_segmentation_model_class())
    model.align_corners, model.decode_head = False, type('Head', (), dict(threshold=0.3))
    channels = 1 if case == 'one_channel' else 150
    logits = torch.randn(2, channels, 64, 96, generator=torch.Generator().manual_seed(0))
    meta = dict(padding_size=[0, 16, 0, 8], ori_shape=(56, 80))
    if case == 'resized':
        meta['ori_shape'] = (75, 113)
    if case == 'flipped':
        meta.update(flip=True, flip_direction='horizontal')

    def samples():
        return [SegDataSample(metainfo=meta) for _ in range(2)]

    got = model.pack_result(logits.clone(), samples())
    ref = BaseSegmentor.postprocess_result(model, logits.clone(), samples())
    for g, r in zip(got, ref):
        assert g.pred_sem_seg.shape == r.pred_sem_seg.shape == meta['ori_shape']
        assert torch.equal(g.seg_logits.data, r.seg_logits.data)
        assert torch.equal(g.pred_sem_seg.data, r.pred_sem_seg.data)


def test_threads_set_onnx_runtime_session_and_keep_predictions(exported):
    """``build_onnx_model(threads=1)`` (the benchmark's one-thread variant) re-creates the
    session with one intra-op thread; the graph's outputs do not change."""
    from shvit_mm.inference.deploy_onnx import build_onnx_model
    cfg, _, onnx_path = exported('sem_fpn')
    default, one = build_onnx_model(cfg, onnx_path), build_onnx_model(cfg, onnx_path, threads=1)
    assert one.wrapper.sess.get_session_options().intra_op_num_threads == 1
    x = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    got, ref = (m.wrapper({'input': x})['output'] for m in (one, default))
    assert got.shape[-2:] == (96, 128) and torch.allclose(got, ref, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# a graph that does not fit the config
# ---------------------------------------------------------------------------------------------
def test_a_file_onnx_runtime_cannot_load_is_an_onnx_model_error(tmp_path):
    from shvit_mm.inference.deploy_onnx import OnnxModelError, build_onnx_model
    bad = tmp_path / 'end2end.onnx'
    bad.write_text('not a graph')
    with pytest.raises(OnnxModelError, match='ONNX Runtime cannot load it'):
        build_onnx_model(_config(SEM_FPN), str(bad))


@pytest.mark.parametrize('saved_deploy_cfg', [True, False], ids=['as_exported', 'graph_alone'])
def test_another_task_s_graph_is_refused(exported, tmp_path, saved_deploy_cfg):
    """A segmentor's graph with a detector's config: refused whether or not the deploy config
    saved beside the graph (which describes the segmentor) is there."""
    import shutil

    from shvit_mm.inference.deploy_onnx import OnnxModelError, build_onnx_model
    _, _, onnx_path = exported('sem_fpn')
    if not saved_deploy_cfg:
        onnx_path = shutil.copy(onnx_path, tmp_path / 'end2end.onnx')
    with pytest.raises(OnnxModelError, match=r"the graph outputs \['output'\].*"
                                              r"\['dets', 'labels', 'masks'\]"):
        build_onnx_model(_config(MASK_RCNN), str(onnx_path))


@pytest.mark.parametrize('name', ['sem_fpn', 'mask_rcnn'])
def test_a_graph_with_other_classes_than_the_config_is_refused(exported, name):
    """The 6-class segmentor's logits with a 150-class config, and a detector whose graph gives
    classes beyond a 1-class config: an error, not predictions scored against other classes."""
    from shvit_mm.inference.deploy_onnx import OnnxModelError, build_onnx_model
    cfg, _, onnx_path = exported(name)
    key = 'model.decode_head.num_classes' if name == 'sem_fpn' else \
        'model.roi_head.bbox_head.num_classes'
    other = _config(SEM_FPN if name == 'sem_fpn' else MASK_RCNN,
                    {key: 150 if name == 'sem_fpn' else 1})
    model = build_onnx_model(other, onnx_path)
    data = _one_picture(other, (200, 240))
    with torch.no_grad(), pytest.raises(OnnxModelError, match='pass the config the graph was'):
        model.test_step(data)
    with torch.no_grad():  # the config it was exported from
        build_onnx_model(cfg, onnx_path).test_step(_one_picture(cfg, (200, 240)))


# ---------------------------------------------------------------------------------------------
# the command line and the import
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('case', ['config', 'checkpoint', 'deploy_cfg', 'mmdeploy'])
def test_tools_deploy_errors_are_one_line(case, tmp_path, monkeypatch, capsys):
    from shvit_mm.cli.deploy import cli_main
    ckpt = tmp_path / 'model.pth'
    ckpt.write_bytes(b'not used')
    args = [MASK_RCNN, str(ckpt), '--work-dir', str(tmp_path / 'out')]
    expected = {'config': 'config file not found', 'checkpoint': 'checkpoint not found',
                'deploy_cfg': 'deploy config not found',
                'mmdeploy': 'pip install --no-deps mmdeploy==1.3.1 aenum multiprocess dill'}[case]
    if case == 'config':
        args[0] = str(tmp_path / 'missing.py')
    elif case == 'checkpoint':
        args[1] = str(tmp_path / 'missing.pth')
    elif case == 'deploy_cfg':
        args += ['--deploy-cfg', str(tmp_path / 'missing_deploy.py')]
    else:
        monkeypatch.setitem(sys.modules, 'mmdeploy', None)  # import mmdeploy -> ImportError
    with pytest.raises(SystemExit) as exc:
        cli_main(args)
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and expected in err[0]
    assert not osp.exists(tmp_path / 'out' / 'end2end.onnx')


def test_torchscript_exporter_is_scoped(tmp_path):
    """``torch.onnx.export`` defaults to the TorchScript exporter inside the block only."""
    from shvit_mm.inference.deploy_onnx import torchscript_exporter
    export = torch.onnx.export
    with torchscript_exporter():
        assert torch.onnx.export is not export
        torch.onnx.export(torch.nn.Conv2d(3, 4, 3), (torch.randn(1, 3, 8, 8),),
                          str(tmp_path / 'conv.onnx'), opset_version=16)
    assert torch.onnx.export is export and osp.getsize(tmp_path / 'conv.onnx') > 0


def test_importing_shvit_mm_does_not_import_mmdeploy():
    code = ('import sys, shvit_mm, shvit_mm.inference.deploy_onnx, shvit_mm.cli.deploy; '
            "assert 'mmdeploy' not in sys.modules, 'mmdeploy imported'")
    subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT, check=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize('config', [MASK_RCNN, SEM_FPN], ids=['mask_rcnn', 'sem_fpn'])
def test_tools_deploy_then_test_tool_evaluates_the_onnx_as_the_checkpoint(config, tmp_path):
    """python tools/deploy.py CONFIG CKPT --work-dir DIR; python tools/test.py CONFIG
    DIR/end2end.onnx prints the metrics tools/test.py prints for CKPT (a briefly trained demo)."""
    import re
    import subprocess
    import sys

    from conftest import demo_options, run_tool
    data = str(tmp_path / 'data')
    # AP within 0.005, the exported demo's tolerance: this barely trained detector scores its
    # boxes nearly alike, so float rounding (ONNX Runtime's kernels against PyTorch's, which
    # differ by CPU) can move a box across the score threshold; mIoU is compared exactly
    tolerance = 0.005 if config == MASK_RCNN else 0.
    if config == MASK_RCNN:
        opts = demo_options(data, num_train=4, num_val=3, batch_size=2)
        ckpt, pattern = tmp_path / 'work' / 'epoch_1.pth', r'coco/(?:bbox|segm)_mAP: [-0-9.]+'
    else:
        opts = []
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            opts += [f'{loader}.dataset.data_root={data}/', f'{loader}.dataset.demo_cfg.num_train=4',
                     f'{loader}.dataset.demo_cfg.num_val=3']
        opts += ['train_dataloader.batch_size=2', 'train_cfg.max_iters=4',
                 'train_cfg.val_interval=4', 'default_hooks.checkpoint.interval=4']
        ckpt, pattern = tmp_path / 'work' / 'iter_4.pth', r'(?:aAcc|mIoU|mAcc): [0-9.]+'
    tool = lambda name: [sys.executable, osp.join(REPO_ROOT, 'tools', name)]  # noqa: E731
    run_tool(tool('train.py') + [config, '--work-dir', str(tmp_path / 'work'), '--cfg-options']
             + opts, cwd=tmp_path)
    run_tool(tool('deploy.py') + [config, str(ckpt), '--work-dir', str(tmp_path / 'onnx')],
             cwd=tmp_path)
    onnx_file = tmp_path / 'onnx' / 'end2end.onnx'
    assert onnx_file.is_file()
    results = []
    for weights in (ckpt, onnx_file):
        out = run_tool(tool('test.py') + [config, str(weights), '--work-dir',
                                          str(tmp_path / 'test'), '--cfg-options'] + opts,
                       cwd=tmp_path)
        found = re.findall(pattern, out.split('Iter(test)')[-1])
        results.append(dict(m.split(': ') for m in found))
    assert results[0] and results[0].keys() == results[1].keys(), results
    assert all(abs(float(results[0][k]) - float(results[1][k])) <= tolerance for k in results[0]), \
        results
    picture = osp.join(data, 'val', '000000.jpg')
    run_tool(tool('image_demo.py') + [picture, config, '--weights', str(onnx_file), '--out-dir',
                                      str(tmp_path / 'painted')], cwd=tmp_path)
    assert (tmp_path / 'painted' / 'vis' / '000000.jpg').is_file()
    if config == MASK_RCNN:  # MMDetection's image_demo.py saves predictions too
        assert (tmp_path / 'painted' / 'preds' / '000000.json').is_file()
    proc = subprocess.run(tool('test.py') + [config, str(onnx_file), '--amp'], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 1 and 'do not apply' in proc.stderr
