"""The codebases' own inference APIs for any shvit_mm config: ``DetInferencer`` for detection
configs, ``MMSegInferencer`` for segmentation configs (chosen from the config's ``default_scope``).

Nothing here replaces them: this only picks the right one, so that ``tools/image_demo.py`` works on
every config the project ships, as MMDetection's ``demo/image_demo.py`` does on its own. One thing
is added: weights that do not fit the config's model are an error
(:func:`shvit_mm.engine.weights_check.check_weights`), where the codebases only warn.
"""
from __future__ import annotations

from typing import Any, Optional

from .config import codebase_of, read_config

__all__ = ['build_inferencer']


def build_inferencer(config: str, weights: Optional[str] = None, device: Optional[str] = None,
                     fast: bool = False, amp: bool = False, **kwargs) -> Any:
    """``DetInferencer(model=config, weights=weights, device=device)`` for an MMDetection config,
    ``MMSegInferencer(...)`` for an MMSegmentation one.

    Weights whose tensors do not all fit the config's model raise
    :class:`~shvit_mm.engine.weights_check.WeightsMismatchError` (how many, which parts, the likely
    cause) instead of the codebases' warning.

    ``weights`` may be an ``.onnx`` file from ``tools/deploy.py``: the inferencer then runs it through
    ONNX Runtime (:func:`shvit_mm.inference.deploy_onnx.build_onnx_model`).

    ``fast=True`` puts the inferencer's model on the fast inference path (BatchNorm folding,
    channels-last); ``amp=True`` adds mixed precision (bf16 on capable CPUs, fp16 on CUDA) and
    implies ``fast``: :func:`shvit_mm.inference.enable_fast_inference`.
    """
    scope = codebase_of(read_config(config))
    import shvit_mm  # noqa: F401  (registers the project's components before the config is built)
    if scope == 'mmdet':
        from mmdet.apis import DetInferencer as base
    elif scope == 'mmseg':
        from mmseg.apis import MMSegInferencer as base
    else:
        raise ValueError(f'{config}: no inferencer for default_scope={scope!r} (detection and '
                         'segmentation configs have one)')
    from shvit_mm.inference.deploy_onnx import build_onnx_model, is_onnx_file
    if is_onnx_file(weights):  # tools/deploy.py's graph, run by ONNX Runtime
        if fast or amp:
            raise ValueError('fast/amp do not apply to an .onnx model (it runs as exported)')
        inferencer = base(model=config, weights=None, device=device, **kwargs)
        model = build_onnx_model(config, weights, device or 'cpu')
        meta = getattr(model, 'dataset_meta', None) or inferencer.model.dataset_meta
        if scope == 'mmseg':  # MMSegInferencer hands the meta to its visualizer: these keys only
            meta = {k: meta[k] for k in ('classes', 'palette') if k in meta}
        model.dataset_meta = meta
        inferencer.model = model
        inferencer.visualizer.dataset_meta = model.dataset_meta
        return inferencer
    inferencer = _checked(base, str(weights))(model=config, weights=weights, device=device,
                                              **kwargs)
    if fast or amp:
        from shvit_mm.inference import enable_fast_inference
        enable_fast_inference(inferencer.model, amp=amp)
    return inferencer


def _checked(base, source: str):
    """``base`` (DetInferencer / MMSegInferencer) checking the weights before loading them."""
    from shvit_mm.engine.weights_check import check_weights

    class Checked(base):
        def _load_weights_to_model(self, model, checkpoint, cfg):
            if checkpoint is not None:
                check_weights(model, checkpoint, source)
            super()._load_weights_to_model(model, checkpoint, cfg)

    return Checked
