"""BatchNorm folding for inference: re-parameterisable modules (``switch_to_deploy``) and every
BatchNorm that directly follows a convolution, with PyTorch's ``fuse_conv_bn_weights`` (the same
arithmetic :class:`shvit_mm.models.backbones.shvit.Conv2dBN` fuses with)."""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_weights

__all__ = ['fuse_for_deploy', 'fold_batchnorm']

_CONVS = (nn.Conv2d, nn.ConvTranspose2d)


@torch.no_grad()
def fuse_for_deploy(model: nn.Module) -> int:
    """Put ``model`` in eval mode and call ``switch_to_deploy()`` on every sub-module having one
    (SHViT, MMPretrain's re-parameterisable backbones); returns how many switched."""
    model.eval()
    targets = [m for m in model.modules() if callable(getattr(m, 'switch_to_deploy', None))]
    for m in targets:  # collected first: switching replaces children
        m.switch_to_deploy()
    return len(targets)


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (isinstance(conv, _CONVS) and isinstance(bn, _BatchNorm) and bn.track_running_stats
            and bn.running_mean is not None and conv.out_channels == bn.num_features
            and not (isinstance(conv, nn.ConvTranspose2d) and conv.groups != 1))


def _fold_into(conv: nn.Module, bn: _BatchNorm) -> None:
    grad = conv.weight.requires_grad
    conv.weight, conv.bias = fuse_conv_bn_weights(
        conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias,
        transpose=isinstance(conv, nn.ConvTranspose2d))
    conv.weight.requires_grad_(grad)
    conv.bias.requires_grad_(grad)


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> int:
    """Fold every BatchNorm that directly follows a convolution into it; returns how many.

    MMCV's ``ConvModule`` is folded only in ``conv -> norm`` order (a pre-norm BatchNorm stays);
    in any other container a BatchNorm registered right after the convolution it follows is folded
    (ResNet's ``convN``/``normN`` pairs, ``Sequential`` stems): the registration-order convention
    of MMCV's ``fuse_conv_bn``. Folded BatchNorms become ``nn.Identity``. Use on an eval model.
    """
    folded = 0
    for parent in list(model.modules()):
        order = getattr(parent, 'order', None)
        if hasattr(parent, 'norm_name') and hasattr(parent, 'conv') and order is not None:
            norm = getattr(parent, parent.norm_name, None) if parent.norm_name else None
            if norm is not None and 'norm' in order and \
                    order.index('conv') < order.index('norm') and _foldable(parent.conv, norm):
                _fold_into(parent.conv, norm)
                setattr(parent, parent.norm_name, nn.Identity())
                folded += 1
            continue
        children = list(parent.named_children())
        for (_, a), (name_b, b) in zip(children, children[1:]):
            if _foldable(a, b):
                _fold_into(a, b)
                setattr(parent, name_b, nn.Identity())
                folded += 1
    return folded
