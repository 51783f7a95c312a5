"""A fast inference path for whole OpenMMLab models (detectors, segmentors, classifiers).

:func:`shvit_mm.deploy.optimize_for_inference` speeds up a bare backbone; users run whole models,
where the neck and heads take most of the time (an FPN's stride-4 level, the RPN, RoI heads,
decode heads). :func:`enable_fast_inference` applies the same three levers to the whole model,
in place:

* **BatchNorm folding**: ``switch_to_deploy()`` on every module that has one (SHViT, MMPretrain's
  re-parameterisable backbones), then every BatchNorm that directly follows a convolution (MMCV's
  ``ConvModule`` with ``conv -> norm`` order, ResNet's ``convN``/``normN`` pairs, ``Sequential``
  stems) is folded into it;
* **channels-last** weights and activations: oneDNN runs a channels-last convolution without the
  reorders it needs around an NCHW one (1.2-1.3x for an FPN's 3x3 convolutions in fp32, 4x in
  bf16, measured on an Intel Xeon with AMX). The input is converted where the backbone starts;
  MMCV's compiled RoIAlign reads its input as NCHW whatever its strides (wrong results on a
  channels-last tensor), so the RoI stage gets contiguous feature maps (converted once) and MMCV's
  RoIAlign layers use torchvision's kernel (same values, about twice as fast on the CPU);
* **mixed precision** (``amp=True``): the dense parts (backbone, neck, RPN / dense heads, RoI
  box and mask heads, decode heads) run under ``torch.autocast`` (bfloat16 on CPUs with AVX-512
  BF16 or AMX, float16 on CUDA) and hand their outputs on in fp32, so box decoding, NMS, RoIAlign,
  mask pasting and the segmentation resize / argmax stay fp32. On a CPU without native bf16 the
  model stays fp32 and one log line says so.

The switch, one step away wherever a user runs a model:

* ``python tools/test.py CONFIG CKPT --fast [--amp]`` (adds :class:`FastInferenceHook`; or declare
  ``custom_hooks = [dict(type='FastInferenceHook', amp=True)]`` in a config);
* ``shvit_mm.apis.inference.build_inferencer(CONFIG, CKPT, fast=True, amp=True)`` for MMDetection's
  ``DetInferencer`` / MMSegmentation's ``MMSegInferencer``; ``tools/image_demo.py --fast --amp``;
* Python: ``enable_fast_inference(model, amp=True)`` on any built model (``init_detector``,
  ``init_model``, ``inferencer.model``).

The model is changed in place and is for inference only afterwards (BatchNorm statistics are
folded into weights): keep a copy to train.
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Dict, Optional

import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from shvit_mm.deploy import cpu_bf16_support, fuse_for_deploy

from .amp import DENSE_PARTS, autocast_forward, submodules, unwrap_model, wrap_forward

__all__ = ['enable_fast_inference', 'fold_batchnorm', 'mixed_precision_dtype', 'FastInferenceHook']

_STATE = '_shvit_fast_inference'


# ---------------------------------------------------------------------------------------------
# BatchNorm folding
# ---------------------------------------------------------------------------------------------
def _fold_into(conv: nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm) -> None:
    """Fold ``bn`` (eval statistics) into ``conv`` in place."""
    w = conv.weight
    std = (bn.running_var + bn.eps).sqrt()
    gamma = bn.weight if bn.affine else torch.ones_like(std)
    beta = bn.bias if bn.affine else torch.zeros_like(std)
    scale = gamma / std
    if isinstance(conv, nn.ConvTranspose2d):  # weight: (in, out / groups, kh, kw)
        if conv.groups != 1:
            raise ValueError('grouped transposed convolutions are not folded')
        new_w = w * scale.reshape(1, -1, 1, 1)
    else:
        new_w = w * scale.reshape(-1, *([1] * (w.dim() - 1)))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    new_b = (bias - bn.running_mean) * scale + beta
    conv.weight = nn.Parameter(new_w.detach(), requires_grad=w.requires_grad)
    conv.bias = nn.Parameter(new_b.detach(), requires_grad=w.requires_grad)


def _is_bn(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats \
        and m.running_mean is not None


def _conv_module_norm_after_conv(m: nn.Module) -> bool:
    order = getattr(m, 'order', None)
    return order is not None and 'norm' in order and order.index('conv') < order.index('norm')


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> int:
    """Fold every BatchNorm that directly follows a convolution into it; returns how many.

    Handles MMCV's ``ConvModule`` (only with ``conv -> norm`` order: a pre-norm BatchNorm is left
    alone) and, in any other container, a BatchNorm registered right after the convolution it
    follows in the forward pass (ResNet's ``conv1``/``norm1`` ... pairs, ``Sequential`` stems and
    shortcuts) -- the registration-order convention MMCV's ``fuse_conv_bn`` relies on too. Folded
    BatchNorms become ``nn.Identity``. The model must be in eval mode.
    """
    folded = 0
    for parent in list(model.modules()):
        children = list(parent.named_children())
        if hasattr(parent, 'norm_name') and hasattr(parent, 'conv') and hasattr(parent, 'order'):
            # MMCV ConvModule: fold only conv -> norm
            norm = getattr(parent, parent.norm_name, None) if parent.norm_name else None
            if norm is not None and _is_bn(norm) and _conv_module_norm_after_conv(parent) \
                    and isinstance(parent.conv, (nn.Conv2d, nn.ConvTranspose2d)):
                _fold_into(parent.conv, norm)
                setattr(parent, parent.norm_name, nn.Identity())
                folded += 1
            continue
        for (name_a, a), (name_b, b) in zip(children, children[1:]):
            if isinstance(a, (nn.Conv2d, nn.ConvTranspose2d)) and _is_bn(b) \
                    and a.out_channels == b.num_features:
                _fold_into(a, b)
                setattr(parent, name_b, nn.Identity())
                folded += 1
    return folded


# ---------------------------------------------------------------------------------------------
# mixed precision and channels-last
# ---------------------------------------------------------------------------------------------
def mixed_precision_dtype(device: torch.device) -> Optional[torch.dtype]:
    """bfloat16 on a CPU with AVX-512 BF16 or AMX, float16 on CUDA, None (stay fp32) otherwise."""
    if device.type == 'cuda':
        return torch.float16
    if device.type == 'cpu' and cpu_bf16_support()['fast']:
        return torch.bfloat16
    return None


def _channels_last_input(original, x, *args, **kwargs):
    if isinstance(x, torch.Tensor) and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return original(x, *args, **kwargs)


def _contiguous_feats(original, feats, *args, **kwargs):
    feats = type(feats)(f.contiguous() if isinstance(f, torch.Tensor) else f for f in feats)
    return original(feats, *args, **kwargs)


def _use_torchvision_roi_align(model: nn.Module) -> int:
    """Point MMCV's RoIAlign layers at torchvision's kernel (``use_torchvision``): the same values
    (``aligned`` and the sampling ratio are passed on), about twice as fast on the CPU and it reads
    channels-last input correctly. Returns how many layers were switched."""
    try:
        from mmcv.ops import RoIAlign
        from torchvision.ops import roi_align  # noqa: F401
    except ImportError:
        return 0
    switched = 0
    for m in model.modules():
        if isinstance(m, RoIAlign) and m.pool_mode == 'avg' and not m.use_torchvision:
            m.use_torchvision = True
            switched += 1
    return switched


@torch.no_grad()
def enable_fast_inference(model: nn.Module, *, amp: bool = False, channels_last: bool = True,
                          fold_bn: bool = True, parts=DENSE_PARTS, logger: str = 'current'
                          ) -> Dict[str, Any]:
    """Switch a built model (detector, segmentor, classifier) to the fast inference path, in place.

    Args:
        model: the model (``init_detector(...)``, ``inferencer.model``, ``runner.model``).
        amp: run the dense parts in mixed precision (bf16 on capable CPUs, fp16 on CUDA).
        channels_last: channels-last weights and activations.
        fold_bn: fold BatchNorms into convolutions (and ``switch_to_deploy()`` re-parameterisable
            modules).
        parts: dotted names of the sub-modules autocast with ``amp`` (default :data:`DENSE_PARTS`;
            those the model lacks are skipped).

    Returns a report: ``folded`` (BatchNorms folded), ``deploy_switched``, ``channels_last``,
    ``dtype`` (the autocast dtype or None), ``autocast_parts``. Calling it again on the same model
    returns the first report and changes nothing.
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
        starts = submodules(inner, 'backbone') or [inner]
        wrap_forward(starts[0], _channels_last_input)
        # MMCV's CPU RoIAlign indexes its input as NCHW-contiguous: the RoI stage gets contiguous
        # maps, converted once for the box and mask extractors together.
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
            wrapped = []
            for path in parts:
                subs = submodules(inner, path)
                for i, sub in enumerate(subs):
                    wrap_forward(sub, functools.partial(autocast_forward, device.type, dtype))
                    wrapped.append(path if len(subs) == 1 else f'{path}.{i}')
            report.update(dtype=str(dtype).replace('torch.', ''), autocast_parts=wrapped)
    setattr(inner, _STATE, report)
    dtype_text = report['dtype'] or 'fp32'
    print_log(f'Fast inference: {report["folded"]} BatchNorms folded '
              f'({report["deploy_switched"]} modules switched to deploy), channels-last '
              f'{"on" if report["channels_last"] else "off"}, {dtype_text}'
              + (f' in {", ".join(report["autocast_parts"])}' if report['autocast_parts'] else ''),
              logger=logger)
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
