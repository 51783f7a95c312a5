"""Export of a detector or segmentor to ONNX through MMDeploy (:func:`export_onnx`), and the
deploy configs of ``configs/_deploy_/`` chosen by task."""
import contextlib
import copy
import functools
import inspect
import json
import os
import os.path as osp
import warnings
from typing import Any, Iterator, Optional, Sequence

import torch

from .rewriters import register_rewriters

_DEPLOY_DIR = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))), 'configs',
    '_deploy_')
#: task -> the deploy config chosen for it when none is given
DEPLOY_CONFIGS = {
    'detection': osp.join(_DEPLOY_DIR, 'detection_onnxruntime_dynamic.py'),
    'instance-seg': osp.join(_DEPLOY_DIR, 'instance-seg_onnxruntime_dynamic.py'),
    'segmentation': osp.join(_DEPLOY_DIR, 'segmentation_onnxruntime_dynamic.py'),
}
#: what :func:`export_onnx` writes next to the ONNX file: the deploy config used, and the
#: checkpoint's ``meta['dataset_meta']`` (class names, palette) when it has one
SAVED_DEPLOY_CFG = 'deploy_cfg.py'
SAVED_DATASET_META = 'dataset_meta.json'


@contextlib.contextmanager
def torchscript_exporter() -> Iterator[None]:
    """Within the block, ``torch.onnx.export`` defaults to ``dynamo=False`` (the TorchScript
    exporter, which MMDeploy's rewriters and symbolics are written for); restored after."""
    export = torch.onnx.export
    if 'dynamo' not in inspect.signature(export).parameters:
        yield  # a PyTorch whose only exporter is the TorchScript one
        return

    @functools.wraps(export)
    def export_torchscript(*args, **kwargs):
        kwargs.setdefault('dynamo', False)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', DeprecationWarning)  # of the TorchScript exporter
            return export(*args, **kwargs)

    torch.onnx.export = export_torchscript
    try:
        yield
    finally:
        torch.onnx.export = export


def _check_checkpoint(model_cfg, checkpoint: str) -> Optional[dict]:
    """Refuse a checkpoint that does not fit the config's model (MMDeploy loads it with
    ``strict=False``, which would export partly random weights): the check of tools/test.py.
    Returns the checkpoint's ``meta['dataset_meta']`` (class names, palette) if it has one."""
    from shvit_mm.apis.config import build_model
    from shvit_mm.engine.weights_check import check_weights
    from shvit_mm.utils.safe_load import check_checkpoint_file, safe_load
    check_checkpoint_file(checkpoint)
    loaded = safe_load(checkpoint)
    check_weights(build_model(model_cfg, init=False), loaded, checkpoint, 'test')
    meta = loaded.get('meta') if isinstance(loaded, dict) else None
    return meta.get('dataset_meta') if isinstance(meta, dict) else None


def read_model_config(config: Any):
    """The model config (a path or ``Config``, copied) with its codebase's and shvit_mm's
    registries set up."""
    from shvit_mm.apis.config import read_config, setup_registries
    cfg = read_config(config)
    setup_registries(cfg)
    return cfg


def codebase_scope(model_cfg):
    """The config's codebase as MMEngine's default scope while MMDeploy builds from it (a
    process that built another codebase's model before has that one's scope)."""
    from mmengine.registry import DefaultScope
    return DefaultScope.overwrite_default_scope(model_cfg.default_scope)


def task_of(model_cfg) -> str:
    """``'segmentation'`` for MMSegmentation configs, ``'instance-seg'`` for detectors with a
    mask head, ``'detection'`` for the other detectors."""
    from shvit_mm.apis.config import codebase_of
    codebase = codebase_of(model_cfg)
    if codebase == 'mmseg':
        return 'segmentation'
    if codebase != 'mmdet':
        raise ValueError(f'ONNX export supports MMDetection and MMSegmentation configs, not '
                         f'{codebase} ones')
    roi_head = model_cfg.model.get('roi_head') or {}
    has_mask = roi_head.get('mask_head') is not None or model_cfg.model.get('mask_head') is not None
    return 'instance-seg' if has_mask else 'detection'


def default_deploy_config(model_cfg) -> str:
    """The deploy config under ``configs/_deploy_/`` for the model config's codebase and task."""
    return DEPLOY_CONFIGS[task_of(model_cfg)]


def read_deploy_config(deploy_cfg: Any, model_cfg):
    """A copy of the deploy config (a path or ``Config``; ``None``: the task's default)."""
    from mmengine.config import Config
    if deploy_cfg is None:
        deploy_cfg = default_deploy_config(model_cfg)
    if isinstance(deploy_cfg, Config):
        return copy.deepcopy(deploy_cfg)
    if not osp.isfile(str(deploy_cfg)):
        raise FileNotFoundError(f'deploy config not found: {deploy_cfg}')
    return Config.fromfile(str(deploy_cfg))


class _ImgShapeInput(torch.nn.Module):
    """A detector whose graph has a second input, ``img_shape`` (int64 ``[height, width]`` of
    the resized picture without the padding): MMDetection clips boxes to it; a graph that knows
    only the padded input's size clips them to that (:mod:`.rewriters`)."""

    def __init__(self, detector: torch.nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, inputs: torch.Tensor, img_shape: torch.Tensor):
        from mmdet.structures import DetDataSample
        data_sample = DetDataSample()
        data_sample.set_field(name='img_shape', value=img_shape, field_type='metainfo')
        return self.detector(inputs, [data_sample], mode='predict')


def _torch2onnx(img, work_dir: str, save_file: str, deploy, model_cfg, checkpoint, device):
    """MMDeploy's ``torch2onnx``, with the graph input ``img_shape`` of detectors whose deploy
    config names it in ``onnx_config.input_names``."""
    from mmdeploy.apis.core.pipeline_manager import no_mp
    from mmdeploy.apis.onnx import export
    from mmdeploy.apis.utils import build_task_processor
    from mmdeploy.utils import get_backend, get_dynamic_axes, get_input_shape, get_ir_config

    task_processor = build_task_processor(model_cfg, deploy, device)
    model = task_processor.build_pytorch_model(checkpoint)
    data, inputs = task_processor.create_input(
        img, get_input_shape(deploy), data_preprocessor=getattr(model, 'data_preprocessor', None))
    if isinstance(inputs, list) and len(inputs) == 1:
        inputs = inputs[0]
    onnx_cfg = get_ir_config(deploy)
    input_names, output_names = onnx_cfg['input_names'], onnx_cfg['output_names']
    if 'img_shape' in input_names:
        img_shape = torch.tensor(data['data_samples'][0].img_shape[:2], dtype=torch.long)
        model, args, input_metas = _ImgShapeInput(model), (inputs, img_shape), None
    else:
        args, input_metas = inputs, {'data_samples': data['data_samples'], 'mode': 'predict'}
    with no_mp():
        export(model, args, input_metas=input_metas,
               output_path_prefix=osp.join(work_dir, osp.splitext(save_file)[0]),
               backend=get_backend(deploy).value, input_names=input_names,
               output_names=output_names, context_info=dict(deploy_cfg=deploy),
               opset_version=onnx_cfg.get('opset_version', 11),
               dynamic_axes=get_dynamic_axes(deploy, input_names + output_names),
               verbose=onnx_cfg.get('verbose', False),
               keep_initializers_as_inputs=onnx_cfg.get('keep_initializers_as_inputs', True),
               optimize=onnx_cfg.get('optimize', False))


def export_onnx(config: Any, checkpoint: Optional[str], work_dir: str, deploy_cfg: Any = None,
                shape: Optional[Sequence[int]] = None, device: str = 'cpu') -> str:
    """Export a detector or segmentor to ``work_dir/end2end.onnx``; returns that path.

    Args:
        config: the model config (path or ``Config``).
        checkpoint: its weights (``None``: the config's initialisation). One that does not fit
            the model is refused (:class:`~shvit_mm.engine.weights_check.WeightsMismatchError`).
        work_dir: where ``end2end.onnx``, the deploy config used (``deploy_cfg.py``) and the
            checkpoint's class names (``dataset_meta.json``) are written, which
            :func:`build_onnx_model` reads.
        deploy_cfg: an MMDeploy deploy config (path or ``Config``); by default the one of
            ``configs/_deploy_/`` for the task (:func:`default_deploy_config`).
        shape: ``(height, width)`` of the picture traced; the test pipeline's resize is set to
            it. By default a 320x320 picture goes through the test pipeline unchanged. With the
            dynamic deploy configs the graph takes any size.
        device: where the model is traced.
    """
    import numpy as np

    if checkpoint is not None and not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {checkpoint}')
    register_rewriters()
    from mmdeploy.utils import get_ir_config

    model_cfg = read_model_config(config)
    deploy = read_deploy_config(deploy_cfg, model_cfg)
    dataset_meta = _check_checkpoint(model_cfg, checkpoint) if checkpoint is not None else None
    height, width = shape if shape is not None else (320, 320)
    if shape is not None:
        deploy.merge_from_dict({'onnx_config.input_shape': [int(width), int(height)]})
    # a picture with some structure (a constant one gives the detectors no boxes to trace)
    img = (np.random.RandomState(0).rand(int(height), int(width), 3) * 255).astype(np.uint8)
    os.makedirs(work_dir, exist_ok=True)
    save_file = get_ir_config(deploy).get('save_file', 'end2end.onnx')
    with torchscript_exporter(), warnings.catch_warnings(), codebase_scope(model_cfg):
        # MMDeploy's rewrites read shapes as tensors on purpose; the tracer warns at each one
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        _torch2onnx(img, work_dir, save_file, deploy, model_cfg, checkpoint, device)
    deploy.dump(osp.join(work_dir, SAVED_DEPLOY_CFG))
    if dataset_meta:  # the class names the inferencers paint, as a checkpoint gives them
        with open(osp.join(work_dir, SAVED_DATASET_META), 'w') as f:
            json.dump(dataset_meta, f,
                      default=lambda v: v.tolist() if hasattr(v, 'tolist') else str(v))
    path = osp.join(work_dir, save_file)
    if not osp.isfile(path):
        raise RuntimeError(f'MMDeploy wrote no ONNX file at {path}; see its log above')
    return path
