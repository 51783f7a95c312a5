"""ONNX Runtime models for the exported files (:func:`build_onnx_model`): MMDeploy's backend
models, whose ``test_step`` / ``forward`` gives MMDetection's or MMSegmentation's data samples,
with the post-processing made the codebases' own."""
import functools
import json
import os.path as osp
import types
from typing import Any, Optional

import torch

from .export import (SAVED_DATASET_META, SAVED_DEPLOY_CFG, codebase_scope, read_deploy_config,
                     read_model_config, task_of)
from .rewriters import register_rewriters


#: how to mend an OnnxModelError about a graph from another model
_FIX = 'pass the config the graph was exported from'


class OnnxModelError(ValueError):
    """An ``.onnx`` file ONNX Runtime cannot load, or whose graph was exported from another kind
    of model than the config describes."""


def is_onnx_file(path) -> bool:
    """Whether ``path`` names an exported graph (``tools/deploy.py``'s ``.onnx``), which runs
    through :func:`build_onnx_model`, rather than a checkpoint to load into PyTorch."""
    return str(path).lower().endswith('.onnx')


def build_onnx_model(config: Any, onnx_path: str, device: str = 'cpu', deploy_cfg: Any = None,
                     threads: Optional[int] = None):
    """An ONNX Runtime model for ``onnx_path`` (MMDeploy's backend model for the task).

    Its ``test_step`` / ``forward(inputs, data_samples, mode='predict')`` gives the codebase's
    data samples (boxes in the original picture, pasted masks, ``pred_sem_seg``). The deploy
    config is ``deploy_cfg``, else the one :func:`export_onnx` saved next to the file, else the
    task's default; ``dataset_meta`` (class names) is the checkpoint's, when the export saved it.
    ``threads``: ONNX Runtime's intra-op threads (default: its own choice, one per physical core).
    """
    if not osp.isfile(onnx_path):
        raise FileNotFoundError(f'ONNX file not found: {onnx_path}')
    register_rewriters()
    model_cfg = read_model_config(config)
    saved_dir = osp.dirname(onnx_path)
    saved = osp.join(saved_dir, SAVED_DEPLOY_CFG)
    use_saved = deploy_cfg is None and osp.isfile(saved)
    deploy = read_deploy_config(saved if use_saved else deploy_cfg, model_cfg)
    # what the config's model exports: a saved deploy_cfg.py describes the graph beside it, which
    # may be another model's, so the graph is checked against the task's default instead
    expected = read_deploy_config(None, model_cfg) if use_saved else deploy
    try:
        model = _build_backend_model(model_cfg, deploy, onnx_path, device)
    except Exception as e:
        if not type(e).__module__.startswith('onnxruntime'):
            raise
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OnnxModelError(f'{onnx_path}: ONNX Runtime cannot load it ({reason}); '
                             'tools/deploy.py CONFIG CHECKPOINT --work-dir DIR writes a model '
                             'it can') from None
    _check_graph(model, onnx_path, config, model_cfg, expected)
    if threads:
        _set_threads(model.wrapper, onnx_path, int(threads))
    meta_file = osp.join(saved_dir, SAVED_DATASET_META)
    if osp.isfile(meta_file):
        with open(meta_file) as f:
            model.dataset_meta = json.load(f)
    return model.to(device).eval()


def _build_backend_model(model_cfg, deploy, onnx_path: str, device: str):
    """MMDeploy's backend model for the task, with the codebases' post-processing."""
    from mmdeploy.apis.utils import build_task_processor
    with codebase_scope(model_cfg):
        task_processor = build_task_processor(model_cfg, deploy, device)
        if task_of(model_cfg) != 'segmentation':
            model = task_processor.build_backend_model(
                [onnx_path], data_preprocessor_updater=task_processor.update_data_preprocessor)
            model.__class__ = _detection_model_class(type(model))  # adds behaviour, no state
            model.config_num_classes = _detector_num_classes(model_cfg.model)
            session = getattr(model.wrapper, 'sess', None)  # ONNX Runtime's
            model.img_shape_input = session is not None and 'img_shape' in [
                node.name for node in session.get_inputs()]
        else:
            from mmdeploy.utils import get_backend
            model = _segmentation_model_class()(
                backend=get_backend(deploy), backend_files=[onnx_path], device=device,
                deploy_cfg=deploy, data_preprocessor=task_processor.update_data_preprocessor(
                    model_cfg.model.data_preprocessor))
            decode_head = model_cfg.model.decode_head
            model.out_channels = decode_head.get('out_channels') or decode_head.get('num_classes')
            model.align_corners = decode_head.get('align_corners', False)
            model.decode_head = types.SimpleNamespace(
                threshold=decode_head.get('threshold') or 0.3)
    return model


def _check_graph(model, onnx_path: str, config: Any, model_cfg, expected) -> None:
    """Refuse a graph whose outputs are not those the config's model exports: another task's
    graph, whose predictions the config's post-processing and evaluators would misread."""
    session = getattr(getattr(model, 'wrapper', None), 'sess', None)  # ONNX Runtime's
    if session is None:
        return
    outputs = [node.name for node in session.get_outputs()]
    names = list(expected.onnx_config.output_names)
    name = config if isinstance(config, str) else (getattr(config, 'filename', None)
                                                   or 'the config')
    if outputs != names:
        raise OnnxModelError(f'{onnx_path} does not fit {name}: the graph outputs {outputs}, the '
                             f'config\'s {task_of(model_cfg)} model exports {names}; {_FIX} '
                             '(tools/deploy.py CONFIG CHECKPOINT --work-dir DIR)')


def _detector_num_classes(model: dict) -> Optional[int]:
    """``num_classes`` of a detector config's box classifier (one-stage or first R-CNN head)."""
    roi_head = model.get('roi_head') or {}
    for head in (model.get('bbox_head'), roi_head.get('bbox_head')):
        if isinstance(head, dict) and isinstance(head.get('num_classes'), int):
            return head['num_classes']
    return None


def _set_threads(wrapper, onnx_path: str, threads: int) -> None:
    """Re-create MMDeploy's ONNX Runtime session (``wrapper.sess``) with ``threads`` intra-op
    threads; MMDeploy's wrapper leaves the count to ONNX Runtime."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    wrapper.sess = ort.InferenceSession(onnx_path, options,
                                        providers=wrapper.sess.get_providers())
    wrapper.io_binding = wrapper.sess.io_binding()


@functools.lru_cache(maxsize=None)
def _detection_model_class(base):
    """MMDeploy's detection backend model (``base``) that gives the graph ``img_shape``.

    MMDetection clips boxes to ``img_shape``, the resized picture without the padding of
    ``pad_size_divisor``. The graphs of :func:`export_onnx` take it as a second input
    (``img_shape_input``): one for the batch, the largest of its pictures (MMDetection clips each
    picture's own, so a batch of pictures of different sizes differs a little; one picture a
    batch, as the test configs have it, is exact). The final boxes are clipped to each picture's
    ``img_shape`` as well, which is all a graph without that input gets.
    """
    class DetectionOnnxModel(base):
        img_shape_input = False
        config_num_classes = None  # the config's; a graph with more is another model's

        def forward(self, inputs, data_samples, mode='predict', **kwargs):
            if mode != 'predict':
                raise ValueError(f"an ONNX model only predicts: mode='predict', got {mode!r}")
            feed = {self.input_name: inputs.contiguous()}
            if self.img_shape_input:  # the largest of the batch's pictures, see above
                feed['img_shape'] = torch.tensor(
                    [sample.metainfo['img_shape'][:2] for sample in data_samples]).amax(0)
            outputs = self.wrapper.output_to_list(self.wrapper(feed))
            dets, labels = outputs[0], outputs[1]
            classes = self.config_num_classes
            if classes and labels.numel() and labels.max() >= classes:
                raise OnnxModelError(
                    f'the graph gives class {int(labels.max())}, the config\'s model has '
                    f'{classes} classes: {_FIX}')
            for i, data_sample in enumerate(data_samples):
                height, width = data_sample.metainfo['img_shape'][:2]
                dets[i, :, 0:4:2] = dets[i, :, 0:4:2].clamp(0, width)
                dets[i, :, 1:4:2] = dets[i, :, 1:4:2].clamp(0, height)
            self.postprocessing_results(dets, labels, None, data_samples)
            if len(outputs) >= 3:  # 28x28 masks, pasted as MMDetection pastes them
                test_cfg = self.model_cfg.model.get('test_cfg') if self.model_cfg else None
                rcnn = (test_cfg or {}).get('rcnn') or {}
                for sample, kept, masks in zip(data_samples, dets[..., 4] > 0, outputs[2]):
                    sample.pred_instances.masks = _paste_masks(
                        masks[kept], sample.pred_instances.bboxes, sample.metainfo['ori_shape'][:2],
                        rcnn.get('mask_thr_binary', 0.5))
            return data_samples

    DetectionOnnxModel.__name__ = DetectionOnnxModel.__qualname__ = f'DetectionOnnx{base.__name__}'
    return DetectionOnnxModel


def _paste_masks(masks: torch.Tensor, bboxes: torch.Tensor, shape, threshold: float):
    """The graph's 28x28 mask probabilities of each detection pasted into its box (in the
    original picture, ``shape``) and thresholded: MMDetection's ``FCNMaskHead`` on the CPU, one
    mask at a time over its box only."""
    from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask
    height, width = (int(size) for size in shape)
    pasted = torch.zeros(len(masks), height, width, dtype=torch.bool, device=masks.device)
    for i in range(len(masks)):
        chunk, spatial = _do_paste_mask(masks[i:i + 1, None], bboxes[i:i + 1], height, width,
                                        skip_empty=masks.device.type == 'cpu')
        pasted[(torch.tensor([i]), ) + spatial] = chunk >= threshold
    return pasted


def _channel_argmax(logits: torch.Tensor) -> torch.Tensor:
    """``logits.argmax(0, keepdim=True)`` of (C, H, W) logits: the first channel holding the
    maximum. On the CPU a running maximum over the channels, which reads memory in order
    (PyTorch's arg-max over the channel axis of a contiguous map strides H * W apart, several
    times slower); logits with a NaN go to PyTorch's, which takes NaN as the maximum."""
    if logits.device.type != 'cpu':
        return logits.argmax(0, keepdim=True)
    best, index = logits[0].clone(), torch.zeros(logits.shape[1:], dtype=torch.long)
    greater = torch.empty(logits.shape[1:], dtype=torch.bool)
    for channel in range(1, len(logits)):
        torch.gt(logits[channel], best, out=greater)
        torch.maximum(best, logits[channel], out=best)
        index.masked_fill_(greater, channel)
    return logits.argmax(0, keepdim=True) if best.isnan().any() else index[None]


def _unpad(seg_map: torch.Tensor, meta: dict) -> torch.Tensor:
    """``seg_map`` (..., H, W) without the padding ``SegDataPreProcessor`` added."""
    left, right, top, bottom = meta.get('img_padding_size', meta.get('padding_size', [0] * 4))
    height, width = seg_map.shape[-2:]
    return seg_map[..., top:height - bottom, left:width - right]


@functools.lru_cache(maxsize=None)
def _segmentation_model_class():
    """MMDeploy's segmentation backend model with MMSegmentation's post-processing.

    MMDeploy's ``pack_result`` keeps the padding that ``SegDataPreProcessor`` added (a
    ``pred_sem_seg`` larger than the picture) and resizes class indices, not logits. From logits
    (``with_argmax=False``) this computes what ``BaseSegmentor.postprocess_result`` does (padding
    removed, bilinear resize to the original size, ``seg_logits`` and ``pred_sem_seg``), without
    the resize where the sizes already agree (it is the identity there) and with
    :func:`_channel_argmax`; flipped pictures and one-channel (sigmoid) heads get MMSegmentation's
    own. Class indices from the graph get the padding removed before MMDeploy's nearest resize.
    """
    from mmdeploy.codebase.mmseg.deploy.segmentation_model import End2EndModel
    from mmengine.structures import PixelData
    from mmseg.models.segmentors.base import BaseSegmentor
    from mmseg.models.utils import resize

    class SegmentationOnnxModel(End2EndModel):
        align_corners = False
        out_channels = None  # the config's; a graph with other logits is another model's

        def pack_result(self, batch_outputs, data_samples):
            if (batch_outputs.is_floating_point() and self.out_channels
                    and batch_outputs.shape[1] != self.out_channels):
                raise OnnxModelError(
                    f'the graph gives {batch_outputs.shape[1]} class logits, the config\'s model '
                    f'{self.out_channels}: {_FIX}')
            if not batch_outputs.is_floating_point():
                return super().pack_result(
                    [_unpad(seg_pred, sample.metainfo)
                     for seg_pred, sample in zip(batch_outputs, data_samples)], data_samples)
            if batch_outputs.shape[1] == 1 or any(s.metainfo.get('flip') for s in data_samples):
                return BaseSegmentor.postprocess_result(self, batch_outputs, data_samples)
            for logits, sample in zip(batch_outputs, data_samples):
                logits, size = _unpad(logits, sample.metainfo), sample.metainfo['ori_shape'][:2]
                if tuple(logits.shape[-2:]) != tuple(size):
                    logits = resize(logits[None], size=size, mode='bilinear',
                                    align_corners=self.align_corners, warning=False)[0]
                sample.set_data(dict(seg_logits=PixelData(data=logits),
                                     pred_sem_seg=PixelData(data=_channel_argmax(logits))))
            return data_samples

    return SegmentationOnnxModel
