"""shvit_mm's MMDeploy rewrites for ONNX Runtime, registered by :func:`register_rewriters`.

They make the graph of a detector or segmentor what the PyTorch model computes:

* MMCV's RoIAlign: MMDeploy's symbolic imports ``_cast_Long``, which PyTorch 2.x no longer has;
  this one builds ONNX's ``RoiAlign`` without it (``half_pixel`` for ``aligned`` from opset 16);
* ``GatherRoIExtractor`` (a CPU gather that does not trace) exports as MMDeploy's
  ``SingleRoIExtractor``: the same values, with ONNX's ``RoiAlign``;
* ``adaptive_avg_pool2d`` (UPerNet's pyramid pooling) exactly at every size, where MMDeploy's
  rewrite bakes in a pooling kernel from the export size;
* MMSegmentation's ``Upsample`` (Semantic FPN's scale heads) turns the feature size into Python
  integers, which the trace bakes into the graph (wrong logits at any other size, no error): the
  size is computed in the graph instead;
* the RPN's proposals (NMS level by level, no score threshold, ``min_bbox_size``), the R-CNN
  box head's multi-class NMS (each class with its own box) and RetinaNet's candidates (the best
  (anchor, class) pairs of each level) as MMDetection makes them, where MMDeploy's rewrites differ
  from it;
* ``grid_sample`` (Deformable DETR's attention on the CPU) as ONNX's ``GridSample``;
* Deformable DETR gets the ``batch_input_shape`` its transformer reads;
* detectors clip boxes to the graph input ``img_shape`` (the picture without its padding) when
  the export adds one (:mod:`.export`), as MMDetection clips them.
"""
import torch

#: how to install MMDeploy without its protobuf<=3.20.2 and grpcio pins (onnx needs a newer one)
INSTALL_HINT = 'pip install --no-deps mmdeploy==1.3.1 aenum multiprocess dill'

_registered = False


class MMDeployNotInstalledError(ImportError):
    """MMDeploy is not installed; the message says how to install it."""


def require_mmdeploy() -> None:
    """Raise :class:`MMDeployNotInstalledError` unless MMDeploy imports."""
    try:
        import mmdeploy  # noqa: F401
    except ImportError as e:
        raise MMDeployNotInstalledError(
            f'ONNX export needs MMDeploy, which is not installed: {INSTALL_HINT}') from e


def register_rewriters() -> None:
    """Register shvit_mm's rewriters in MMDeploy's registries (once; needs MMDeploy).

    :func:`export_onnx` calls it; call it before MMDeploy's own ``tools/deploy.py`` or
    ``torch2onnx`` exports an SHViT model.
    """
    global _registered
    require_mmdeploy()
    if _registered:
        return
    from mmdeploy.core import FUNCTION_REWRITER, SYMBOLIC_REWRITER
    from mmdeploy.utils import get_ir_config

    @SYMBOLIC_REWRITER.register_symbolic('mmcv.ops.roi_align.__self__', backend='onnxruntime')
    def roi_align__onnxruntime(g, input, rois, output_size, spatial_scale, sampling_ratio,
                               pool_mode, aligned):
        """MMCV's RoIAlign as ONNX ``RoiAlign``: MMDeploy's default symbolic without the
        ``_cast_Long`` that PyTorch 2.x removed. From opset 16 ``aligned`` is the op's
        ``half_pixel`` mode; below, the boxes are shifted by half a feature pixel instead."""
        ctx = SYMBOLIC_REWRITER.get_context()
        opset = get_ir_config(ctx.cfg).get('opset_version', 11)

        def column(index):
            return g.op('Gather', rois, g.op('Constant', value_t=torch.tensor(index)), axis_i=1)

        batch_indices = g.op('Cast', column(0), to_i=7)  # 7: INT64
        boxes = column([1, 2, 3, 4])
        attrs = dict(output_height_i=output_size[0], output_width_i=output_size[1],
                     spatial_scale_f=spatial_scale, sampling_ratio_i=sampling_ratio,
                     mode_s=pool_mode)
        if opset >= 16:
            attrs['coordinate_transformation_mode_s'] = (
                'half_pixel' if aligned else 'output_half_pixel')
        elif aligned:
            shift = torch.tensor([-0.5 / spatial_scale], dtype=torch.float)
            boxes = g.op('Add', boxes, g.op('Constant', value_t=shift))
        return g.op('RoiAlign', input, boxes, batch_indices, **attrs)

    FUNCTION_REWRITER.register_rewriter('torch.nn.functional.adaptive_avg_pool2d',
                                        backend='onnxruntime')(_adaptive_avg_pool2d)

    @SYMBOLIC_REWRITER.register_symbolic('grid_sampler', is_pytorch=True, backend='onnxruntime')
    def grid_sampler__onnxruntime(g, input, grid, interpolation_mode, padding_mode,
                                  align_corners=False):
        """``grid_sample`` (the pure-PyTorch multi-scale deformable attention of Deformable
        DETR) as ONNX's ``GridSample`` from opset 16, which ONNX Runtime runs; below it,
        MMDeploy's ``mmdeploy::grid_sampler``, which needs MMDeploy's custom-op library."""
        ctx = SYMBOLIC_REWRITER.get_context()
        if get_ir_config(ctx.cfg).get('opset_version', 11) >= 16:
            from torch.onnx.symbolic_opset16 import grid_sampler
        else:
            from mmdeploy.pytorch.symbolics.grid_sampler import grid_sampler
        return grid_sampler(g, input, grid, interpolation_mode, padding_mode, align_corners)

    try:
        import shvit_mm.detection  # noqa: F401  (needs MMDetection)
    except ImportError:
        pass
    else:
        @FUNCTION_REWRITER.register_rewriter(
            'shvit_mm.detection.layers.gather_roi_extractor.GatherRoIExtractor.forward')
        def gather_roi_extractor__forward(self, feats, rois, roi_scale_factor=None):
            """The gather does not trace: export MMDeploy's ``SingleRoIExtractor`` (the same
            values with ONNX's ``RoiAlign``), the parent's forward as rewritten in the context."""
            from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
            return SingleRoIExtractor.forward(self, feats, rois, roi_scale_factor)

        for func_name, rewrite in (
                ('mmdet.models.dense_heads.rpn_head.RPNHead.predict_by_feat',
                 _rpn_head__predict_by_feat),
                ('mmdet.models.dense_heads.base_dense_head.BaseDenseHead.predict_by_feat',
                 _dense_head__predict_by_feat),
                ('mmdet.models.roi_heads.bbox_heads.bbox_head.BBoxHead.predict_by_feat',
                 _bbox_head__predict_by_feat),
                ('mmdet.models.detectors.two_stage.TwoStageDetector.forward',
                 _two_stage_detector__forward),
                ('mmdet.models.detectors.single_stage.SingleStageDetector.forward',
                 _single_stage_detector__forward),
                ('mmdet.models.detectors.base_detr.DetectionTransformer.forward',
                 _detection_transformer__forward)):
            FUNCTION_REWRITER.register_rewriter(func_name, backend='onnxruntime')(rewrite)

    try:
        import mmseg  # noqa: F401
    except ImportError:
        pass
    else:
        @FUNCTION_REWRITER.register_rewriter('mmseg.models.utils.Upsample.forward')
        def upsample__forward(self, x):
            """``Upsample`` by ``scale_factor`` with the output size computed in the graph
            (``floor(size * scale)``, as MMSegmentation's ``int(size * scale)``), so that a
            dynamic-shape graph stays right at every picture size."""
            ctx = FUNCTION_REWRITER.get_context()
            if self.size or not self.scale_factor:
                return ctx.origin_func(self, x)
            return torch.nn.functional.interpolate(
                x, scale_factor=self.scale_factor, mode=self.mode,
                align_corners=self.align_corners, recompute_scale_factor=True)

    _registered = True


def _adaptive_avg_pool2d(input, output_size):
    """``adaptive_avg_pool2d`` (UPerNet's pyramid pooling) as PyTorch computes it, at any input
    size: output cell ``i`` of ``o`` averages rows ``floor(i * n / o)`` to ``ceil((i + 1) * n / o)``
    of ``n``, written as two products with averaging matrices built in the graph. MMDeploy's
    rewrite uses ``avg_pool2d`` with a kernel of ``int(n / o)`` baked in at the export size: wrong
    wherever ``n`` is not a multiple of ``o`` (windows overlap or differ in size), with no
    error."""
    from mmdeploy.core import FUNCTION_REWRITER
    from torch.nn.modules.utils import _pair
    output_size = _pair(output_size)
    if None in output_size or tuple(output_size) == (1, 1):
        return FUNCTION_REWRITER.get_context().origin_func(input, output_size)
    size = torch._shape_as_tensor(input)[-2:]

    def averaging(n, o):  # (o, n): row i holds 1 / width over window i
        i = torch.arange(o, device=input.device)
        start, end = (i * n) // o, ((i + 1) * n + o - 1) // o
        cols = torch.arange(n, device=input.device)
        window = ((cols >= start[:, None]) & (cols < end[:, None])).to(input.dtype)
        return window / window.sum(1, keepdim=True)

    rows, cols = averaging(size[0], output_size[0]), averaging(size[1], output_size[1])
    return torch.matmul(torch.matmul(rows, input), cols.transpose(0, 1))


def _graph_img_shape(batch_inputs, data_samples, deploy_cfg):
    """The ``img_shape`` the graph clips boxes to: the graph input ``img_shape`` that
    :func:`export_onnx` adds to detectors (in the first data sample's metainfo, a tensor), else the
    padded input's size, as MMDeploy's rewrites take it. Set in every data sample's metainfo
    (``set_field``: ``set_metainfo`` would deep-copy the traced tensor)."""
    from mmdeploy.utils import is_dynamic_shape
    from mmdet.structures import DetDataSample
    if not data_samples:
        data_samples = [DetDataSample()]
    img_shape = data_samples[0].metainfo.get('img_shape')
    if not isinstance(img_shape, torch.Tensor):
        img_shape = torch._shape_as_tensor(batch_inputs)[2:]
        if not is_dynamic_shape(deploy_cfg):
            img_shape = [int(size) for size in img_shape]
    for data_sample in data_samples:
        data_sample.set_field(name='img_shape', value=img_shape, field_type='metainfo')
    return data_samples


def _two_stage_detector__forward(self, batch_inputs, data_samples=None, mode='tensor', **kwargs):
    """``TwoStageDetector.forward`` for ONNX Runtime: MMDeploy's, with the boxes clipped to the
    graph input ``img_shape`` when there is one (:func:`_graph_img_shape`)."""
    from mmdeploy.core import FUNCTION_REWRITER
    deploy_cfg = FUNCTION_REWRITER.get_context().cfg
    data_samples = _graph_img_shape(batch_inputs, data_samples, deploy_cfg)
    x = self.extract_feat(batch_inputs)
    if data_samples[0].get('proposals', None) is None:
        rpn_results_list = self.rpn_head.predict(x, data_samples, rescale=False)
    else:
        rpn_results_list = [data_sample.proposals for data_sample in data_samples]
    return self.roi_head.predict(x, rpn_results_list, data_samples, rescale=False)


def _single_stage_detector__forward(self, batch_inputs, data_samples=None, mode='tensor',
                                    **kwargs):
    """``SingleStageDetector.forward`` for ONNX Runtime: MMDeploy's, with the boxes clipped to
    the graph input ``img_shape`` when there is one (:func:`_graph_img_shape`)."""
    from mmdeploy.core import FUNCTION_REWRITER
    deploy_cfg = FUNCTION_REWRITER.get_context().cfg
    data_samples = _graph_img_shape(batch_inputs, data_samples, deploy_cfg)
    return self.bbox_head.predict(self.extract_feat(batch_inputs), data_samples, rescale=False)


def _detection_transformer__forward(self, batch_inputs, data_samples=None, rescale=True,
                                    **kwargs):
    """``DetectionTransformer.forward`` (DETR, Deformable DETR) for ONNX Runtime: MMDeploy's,
    with the ``batch_input_shape`` that MMDetection's ``pre_transformer`` reads (MMDeploy's sets
    only ``img_shape``) and the boxes scaled to the graph input ``img_shape`` when there is one
    (:func:`_graph_img_shape`). Under export no padding mask is built (MMDetection's
    ``pre_transformer`` skips it), which is what PyTorch computes for a batch of one picture."""
    from mmdeploy.core import FUNCTION_REWRITER
    deploy_cfg = FUNCTION_REWRITER.get_context().cfg
    data_samples = _graph_img_shape(batch_inputs, data_samples, deploy_cfg)
    input_shape = torch._shape_as_tensor(batch_inputs)[2:]
    for data_sample in data_samples:
        data_sample.set_field(name='batch_input_shape', value=input_shape, field_type='metainfo')
    feats = self.extract_feat(batch_inputs)
    head_inputs = self.forward_transformer(feats, data_samples)
    return self.bbox_head.predict(**head_inputs, rescale=False, batch_data_samples=data_samples)


def _bbox_head__predict_by_feat(self, rois, cls_scores, bbox_preds, batch_img_metas,
                                rcnn_test_cfg=None, rescale=False):
    """``BBoxHead.predict_by_feat`` for ONNX Runtime, with MMDetection's multi-class NMS.

    MMDeploy's default rewrite keeps, for every RoI, only the box regressed for its best class
    and gives it to every class, and caps the candidates at ``post_processing.pre_top_k``;
    MMDetection (``multiclass_nms``) takes every (RoI, class) pair scoring above ``score_thr``
    with that class's own box. Here the pairs are the boxes of ONNX's ``NonMaxSuppression``,
    each scored for its own class only (0 elsewhere). Returns ``(dets, labels)``.
    """
    import torch.nn.functional as F
    from mmdeploy.mmcv.ops import multiclass_nms
    from mmdet.structures.bbox import get_box_tensor

    if self.custom_cls_channels:
        scores = self.loss_cls.get_activation(cls_scores)
    else:
        scores = F.softmax(cls_scores, dim=-1)
    num_classes = self.num_classes
    scores = scores[..., :num_classes]
    if bbox_preds is None:
        bboxes = rois[..., 1:]
    else:
        bboxes = get_box_tensor(self.bbox_coder.decode(
            rois[..., 1:], bbox_preds, max_shape=batch_img_metas[0]['img_shape']))
    batch_size = scores.shape[0]
    if bboxes.shape[-1] == 4 * num_classes and num_classes > 1:  # one box per class
        bboxes = bboxes.reshape(batch_size, -1, 4)
        one_hot = torch.eye(num_classes, dtype=scores.dtype, device=scores.device)
        scores = (scores.unsqueeze(-1) * one_hot).reshape(batch_size, -1, num_classes)
    max_per_img = rcnn_test_cfg.get('max_per_img', 100)
    return multiclass_nms(
        bboxes, scores, max_output_boxes_per_class=max_per_img,
        iou_threshold=rcnn_test_cfg.nms.get('iou_threshold', 0.5),
        score_threshold=rcnn_test_cfg.get('score_thr', 0.05), pre_top_k=-1,
        keep_top_k=max_per_img, nms_type=rcnn_test_cfg.nms.get('type', 'nms'))


def _rows(tensor, inds):
    """Rows ``inds`` (batch, k) of ``tensor`` (batch, n, d)."""
    return tensor.gather(1, inds.unsqueeze(-1).expand(-1, -1, tensor.shape[-1]))


def _best_pairs(head, cls_scores, bbox_preds, img_shape, nms_pre, num_classes, pair_scores):
    """The ``nms_pre`` best (anchor, class) pairs of each level (all with ``nms_pre`` <= 0), as
    MMDetection's ``filter_scores_and_topk`` takes them: decoded boxes, scores, classes and
    levels, each (batch, candidates). ``pair_scores`` turns a level's channels-last logits into
    (batch, anchors * ``num_classes``) scores."""
    batch_size, dim = cls_scores[0].shape[0], head.bbox_coder.encode_size
    mlvl_priors = head.prior_generator.grid_priors([score.shape[-2:] for score in cls_scores],
                                                   device=cls_scores[0].device)
    levels = []
    for level, (cls_score, bbox_pred, priors) in enumerate(
            zip(cls_scores, bbox_preds, mlvl_priors)):
        scores = pair_scores(cls_score.permute(0, 2, 3, 1))
        deltas = bbox_pred.permute(0, 2, 3, 1).reshape(batch_size, -1, dim)
        anchors = priors.unsqueeze(0).expand(batch_size, -1, -1)
        if nms_pre > 0:  # MMDeploy's topk rewrite caps k at the number of pairs
            scores, pair_inds = scores.topk(nms_pre, dim=1)
        else:
            pair_inds = torch.arange(scores.shape[1], device=scores.device).expand(batch_size, -1)
        anchor_inds, classes = pair_inds // num_classes, pair_inds % num_classes
        levels.append((scores, classes, _rows(deltas, anchor_inds), _rows(anchors, anchor_inds),
                       torch.full_like(pair_inds, level)))
    scores, classes, deltas, anchors, level_ids = (torch.cat(t, dim=1) for t in zip(*levels))
    bboxes = head.bbox_coder.decode(anchors, deltas, max_shape=img_shape)
    return bboxes, scores, classes, level_ids


def _grouped_nms(bboxes, scores, groups, num_groups, cfg, score_thr, iou_thr, max_per_img):
    """MMDetection's NMS within groups (classes, or an RPN's levels) as one ONNX
    ``NonMaxSuppression``: each candidate is scored for its own group only (0 elsewhere); boxes
    no wider or taller than ``cfg.min_bbox_size`` get score 0 (dropped by a threshold of 0).
    Returns ``(dets, labels)``."""
    from mmdeploy.mmcv.ops import multiclass_nms
    min_size = cfg.get('min_bbox_size', -1)
    if min_size >= 0:
        valid = ((bboxes[..., 2] - bboxes[..., 0] > min_size)
                 & (bboxes[..., 3] - bboxes[..., 1] > min_size))
        scores = scores * valid.to(scores.dtype)
    group_range = torch.arange(num_groups, device=groups.device)
    group_scores = scores.unsqueeze(-1) * (groups.unsqueeze(-1) == group_range).to(scores.dtype)
    max_per_img = cfg.get('max_per_img', max_per_img)
    return multiclass_nms(
        bboxes, group_scores, max_output_boxes_per_class=max_per_img,
        iou_threshold=cfg.nms.get('iou_threshold', iou_thr), score_threshold=score_thr,
        pre_top_k=-1, keep_top_k=max_per_img, nms_type=cfg.nms.get('type', 'nms'))


def _dense_head__predict_by_feat(self, cls_scores, bbox_preds, score_factors=None,
                                 batch_img_metas=None, cfg=None, rescale=False, with_nms=True,
                                 **kwargs):
    """``BaseDenseHead.predict_by_feat`` for ONNX Runtime, with MMDetection's candidates for
    sigmoid-classified heads without score factors (RetinaNet).

    MMDeploy's default rewrite keeps on each level the ``nms_pre`` anchors of best top-class
    score; MMDetection (``filter_scores_and_topk``) keeps the ``nms_pre`` best (anchor, class)
    pairs scoring above ``score_thr``, each with its own class (:func:`_best_pairs`), then runs
    class-aware NMS (:func:`_grouped_nms`). Other heads get MMDeploy's rewrite. Returns
    ``(dets, labels)``.
    """
    from mmdeploy.codebase.mmdet.models.dense_heads.base_dense_head import \
        base_dense_head__predict_by_feat
    if (score_factors is not None or not getattr(self, 'use_sigmoid_cls', False) or not with_nms
            or getattr(self, 'with_score_factors', False)):
        return base_dense_head__predict_by_feat(
            self, cls_scores, bbox_preds, score_factors, batch_img_metas=batch_img_metas,
            cfg=cfg, rescale=rescale, with_nms=with_nms, **kwargs)
    cfg = self.test_cfg if cfg is None else cfg
    batch_size, num_classes = cls_scores[0].shape[0], self.cls_out_channels
    bboxes, scores, classes, _ = _best_pairs(
        self, cls_scores, bbox_preds, batch_img_metas[0]['img_shape'], cfg.get('nms_pre', -1),
        num_classes, lambda logits: logits.reshape(batch_size, -1).sigmoid())
    return _grouped_nms(bboxes, scores, classes, num_classes, cfg, cfg.get('score_thr', 0.),
                        0.5, 100)


def _rpn_head__predict_by_feat(self, cls_scores, bbox_preds, score_factors=None,
                               batch_img_metas=None, cfg=None, rescale=False, with_nms=True,
                               **kwargs):
    """``RPNHead.predict_by_feat`` for ONNX Runtime, with MMDetection's proposal rules.

    MMDeploy's default rewrite runs one NMS over the proposals of all levels, drops those scoring
    under ``post_processing.score_threshold`` (0.05) and keeps degenerate boxes; MMDetection
    (``RPNHead._bbox_post_process``) runs NMS level by level (``batched_nms`` on the level ids),
    keeps every score and drops boxes no wider or taller than ``min_bbox_size``. Here each level
    is a group of :func:`_grouped_nms`, so one batched op does MMDetection's level-wise NMS.
    Returns ``(dets, labels)`` as MMDeploy's version does.
    """
    cfg = self.test_cfg if cfg is None else cfg
    batch_size = cls_scores[0].shape[0]

    def objectness(logits):
        if self.use_sigmoid_cls:
            return logits.reshape(batch_size, -1).sigmoid()
        return logits.reshape(batch_size, -1, 2).softmax(-1)[..., 0]

    bboxes, scores, _, levels = _best_pairs(
        self, cls_scores, bbox_preds, batch_img_metas[0]['img_shape'], cfg.get('nms_pre', -1), 1,
        objectness)
    if not with_nms:
        return bboxes, scores.unsqueeze(-1)
    dets, labels = _grouped_nms(bboxes, scores, levels, len(cls_scores), cfg, 0., 0.7, 1000)
    return dets, torch.zeros_like(labels)
