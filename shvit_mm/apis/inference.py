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
