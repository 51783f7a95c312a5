"""The fast inference path for whole OpenMMLab models (detectors, segmentors, classifiers).

:func:`enable_fast_inference` changes a built model in place, for inference only:

* **BatchNorm folding**: ``switch_to_deploy()`` on every module that has one, then every
  BatchNorm that directly follows a convolution (:mod:`shvit_mm.inference.fusion`);
* **channels-last** weights and activations, converted where the backbone starts. MMCV's compiled
  RoIAlign reads its input as NCHW whatever its strides, so the RoI stage gets contiguous maps
  (converted once for the box and mask extractors) and MMCV's RoIAlign layers use torchvision's
  kernel (same values, and it reads any layout);
* **mixed precision** (``amp=True``): the dense parts run under ``torch.autocast`` (bfloat16 on
  CPUs with AVX-512 BF16 or AMX, float16 on CUDA) and hand their outputs on in fp32
  (:mod:`shvit_mm.inference.precision`). On a CPU without native bf16 the model stays fp32 and one
  log line says so.

Where to switch it on: ``tools/test.py CONFIG CKPT --fast [--amp]`` (adds :class:`FastInferenceHook`,
which a config may also declare), ``build_inferencer(CONFIG, CKPT, fast=True, amp=True)``
(:mod:`shvit_mm.apis.inference`), ``tools/image_demo.py --fast --amp``, or
``enable_fast_inference(model, amp=True)`` on any built model.
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Dict, Sequence

import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from .fusion import fold_batchnorm, fuse_for_deploy
from .precision import (DENSE_PARTS, autocast_forward, mixed_precision_dtype, submodules,
                        unwrap_model, wrap_forward)

__all__ = ['enable_fast_inference', 'FastInferenceHook']

_STATE = '_shvit_fast_inference'


def _channels_last_input(original, x, *args, **kwargs):
    if isinstance(x, torch.Tensor) and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return original(x, *args, **kwargs)


def _contiguous_feats(original, feats, *args, **kwargs):
    feats = type(feats)(f.contiguous() if isinstance(f, torch.Tensor) else f for f in feats)
    return original(feats, *args, **kwargs)


def _use_torchvision_roi_align(model: nn.Module) -> int:
    """Point MMCV's average RoIAlign layers at torchvision's kernel (``use_torchvision``; the same
    values, ``aligned`` and the sampling ratio are passed on). Returns how many switched."""
    try:
        from mmcv.ops import RoIAlign
        from torchvision.ops import roi_align  # noqa: F401
    except ImportError:
        return 0
    layers = [m for m in model.modules()
              if isinstance(m, RoIAlign) and m.pool_mode == 'avg' and not m.use_torchvision]
    for m in layers:
        m.use_torchvision = True
    return len(layers)


@torch.no_grad()
def enable_fast_inference(model: nn.Module, *, amp: bool = False, channels_last: bool = True,
                          fold_bn: bool = True, parts: Sequence[str] = DENSE_PARTS,
                          logger: str = 'current') -> Dict[str, Any]:
    """Switch a built model (detector, segmentor, classifier) to the fast inference path, in place.

    Args:
        model: the model (``init_detector(...)``, ``inferencer.model``, ``runner.model``).
        amp: run the dense parts in mixed precision (bf16 on capable CPUs, fp16 on CUDA).
        channels_last: channels-last weights and activations.
        fold_bn: fold BatchNorms into convolutions (and ``switch_to_deploy()`` re-parameterisable
            modules).
        parts: dotted names of the sub-modules autocast with ``amp`` (default
            :data:`~shvit_mm.inference.precision.DENSE_PARTS`; those the model lacks are skipped).

    Returns a report: ``folded`` (BatchNorms folded), ``deploy_switched``, ``channels_last``,
    ``dtype`` (the autocast dtype or None), ``autocast_parts``, ``torchvision_roi_align``. Calling
    it again on the same model returns the first report and changes nothing.
    """
    inner = unwrap_model(model)
    if getattr(inner, _STATE, None) is not None:
        return getattr(inner, _STATE)
    model.eval()
    device = next((p.device for p in inner.parameters()), torch.device('cpu'))
    report: Dict[str, Any] = dict(deploy_switched=0, folded=0, channels_last=False, dtype=None,
                                  autocast_parts=[], torchvision_roi_align=0)
    if fold_bn:
        report['deploy_switched'] = fuse_for_deploy(inner)
        report['folded'] = fold_batchnorm(inner)
    if channels_last:
        inner.to(memory_format=torch.channels_last)
        wrap_forward((submodules(inner, 'backbone') or [inner])[0], _channels_last_input)
        for roi_head in submodules(inner, 'roi_head'):
            if callable(getattr(roi_head, 'predict', None)):
                roi_head.predict = functools.partial(_contiguous_feats, roi_head.predict)
        report['channels_last'] = True
    report['torchvision_roi_align'] = _use_torchvision_roi_align(inner)
    if amp:
        dtype = mixed_precision_dtype(device)
        if dtype is None:
            print_log(f'Fast inference: mixed precision asked for, but this {device.type} has no '
                      'native bf16 (neither AVX-512 BF16 nor AMX): running in fp32.',
                      logger=logger, level=logging.WARNING)
        else:
            for path in parts:
                subs = submodules(inner, path)
                for i, sub in enumerate(subs):
                    wrap_forward(sub, functools.partial(autocast_forward, device.type, dtype))
                    report['autocast_parts'].append(path if len(subs) == 1 else f'{path}.{i}')
            report['dtype'] = str(dtype).replace('torch.', '')
    setattr(inner, _STATE, report)
    parts_text = f' in {", ".join(report["autocast_parts"])}' if report['autocast_parts'] else ''
    print_log(f'Fast inference: {report["folded"]} BatchNorms folded '
              f'({report["deploy_switched"]} modules switched to deploy), channels-last '
              f'{"on" if report["channels_last"] else "off"}, {report["dtype"] or "fp32"}'
              f'{parts_text}', logger=logger)
    return report


@HOOKS.register_module()
class FastInferenceHook(Hook):
    """Apply :func:`enable_fast_inference` to the runner's model before testing.

    Declared by ``tools/test.py --fast [--amp]``, or in a config::

        custom_hooks = [dict(type='FastInferenceHook', amp=True)]

    It acts in ``before_test`` only (after the checkpoint is loaded); validation during training
    keeps the trainable model.
    """

    priority = 'VERY_LOW'

    def __init__(self, amp: bool = False, channels_last: bool = True, fold_bn: bool = True) -> None:
        self.kwargs = dict(amp=amp, channels_last=channels_last, fold_bn=fold_bn)

    def before_test(self, runner) -> None:
        enable_fast_inference(runner.model, **self.kwargs)
