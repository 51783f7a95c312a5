"""SHViT backbone for OpenMMLab.

SHViT: Single-Head Vision Transformer with Memory Efficient Macro Design
(Seokju Yun and Youngmin Ro, CVPR 2024, https://arxiv.org/abs/2401.16456).

Macro design (paper Sec. 3.2): a 16x16 "patchify" stem of four stride-2 3x3 convolutions, then three
stages at strides 16, 32 and 64. Micro design (Sec. 3.3): single-head self-attention (SHSA) over a
partial slice of the channels; the remaining channels pass through untouched. Every block is
depthwise conv -> (SHSA) -> FFN, each wrapped in a residual connection. Stage 1 has no attention.

Module and parameter names follow the official release (``patch_embed``, ``blocks1..3`` and the
``c``/``bn`` pairs), so its checkpoints load without renaming. ``switch_to_deploy()`` folds every
BatchNorm into its convolution and the identity of each residual depthwise conv into its kernel, as
the paper's speed measurements do.

The class needs only PyTorch and MMEngine. It is registered once, in MMEngine's root ``MODELS``
registry, whose children are MMDetection's, MMSegmentation's and MMPretrain's: ``type='SHViT'``
builds this class under any of their default scopes.
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_weights

from .shvit_weights import load_backbone_checkpoint

# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------


class Conv2dBN(nn.Sequential):
    """Conv2d (no bias) followed by BatchNorm2d; children named ``c`` and ``bn`` as released.

    ``bn_weight_init=0`` zero-initialises the BN scale so a residual branch starts as identity.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 padding: int = 0, groups: int = 1, bn_weight_init: float = 1.0) -> None:
        super().__init__()
        self.add_module('c', nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                                       groups=groups, bias=False))
        self.add_module('bn', nn.BatchNorm2d(out_channels))
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.constant_(self.bn.bias, 0)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        """Return one Conv2d (with bias) computing the same function as conv + BN in eval mode."""
        c, bn = self.c, self.bn
        fused = nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding,
                          dilation=c.dilation, groups=c.groups, bias=True,
                          device=c.weight.device, dtype=c.weight.dtype)
        fused.weight, fused.bias = fuse_conv_bn_weights(c.weight, None, bn.running_mean,
                                                        bn.running_var, bn.eps, bn.weight, bn.bias)
        return fused.requires_grad_(True)


def _fuse(module: nn.Module) -> nn.Module:
    """Fuse ``module`` if it knows how to, else return it unchanged."""
    return module.fuse() if hasattr(module, 'fuse') else module


class Residual(nn.Module):
    """``x + m(x)`` with optional per-sample stochastic depth during training."""

    def __init__(self, m: nn.Module, drop_path: float = 0.0) -> None:
        super().__init__()
        self.m = m
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.drop_path > 0:
            keep = 1.0 - self.drop_path
            mask = x.new_empty(x.shape[0], 1, 1, 1).bernoulli_(keep).div_(keep)
            return x + self.m(x) * mask
        return x + self.m(x)

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        """A residual depthwise conv becomes one conv with the identity added to its kernel centre."""
        if isinstance(self.m, Conv2dBN) and self.m.c.groups == self.m.c.in_channels \
                == self.m.c.out_channels and self.m.c.stride == (1, 1):
            conv = self.m.fuse()
            kh, kw = conv.kernel_size
            conv.weight[:, 0, kh // 2, kw // 2] += 1.0
            return conv
        self.m = _fuse(self.m)
        return self


class FFN(nn.Module):
    """Pointwise MLP: 1x1 Conv2dBN, ReLU, 1x1 Conv2dBN (zero-initialised scale)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.pw1 = Conv2dBN(dim, hidden_dim)
        self.act = nn.ReLU()
        self.pw2 = Conv2dBN(hidden_dim, dim, bn_weight_init=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw2(self.act(self.pw1(x)))

    def fuse(self) -> 'FFN':
        self.pw1, self.pw2 = _fuse(self.pw1), _fuse(self.pw2)
        return self


class SHSA(nn.Module):
    """Single-Head Self-Attention (paper Sec. 3.3, Eq. 3).

    The first ``partial_dim`` channels are normalised (GroupNorm with one group), projected to a
    query and key of ``qk_dim`` channels and a value of ``partial_dim`` channels, and attended over
    all H*W tokens with a single head. The other channels are concatenated back untouched, and a
    ReLU + 1x1 Conv2dBN mixes all channels.
    """

    def __init__(self, dim: int, qk_dim: int, partial_dim: int) -> None:
        super().__init__()
        if not 0 < partial_dim <= dim:
            raise ValueError(f'SHSA partial_dim must be in (0, dim={dim}], got {partial_dim}')
        self.dim, self.qk_dim, self.partial_dim = dim, qk_dim, partial_dim
        self.scale = qk_dim ** -0.5
        self.pre_norm = nn.GroupNorm(1, partial_dim)
        self.qkv = Conv2dBN(partial_dim, qk_dim * 2 + partial_dim)
        self.proj = nn.Sequential(nn.ReLU(), Conv2dBN(dim, dim, bn_weight_init=0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        x1, x2 = torch.split(x, [self.partial_dim, self.dim - self.partial_dim], dim=1)
        q, k, v = self.qkv(self.pre_norm(x1)).flatten(2).split(
            [self.qk_dim, self.qk_dim, self.partial_dim], dim=1)
        attn = (q.transpose(-2, -1) @ k).mul_(self.scale).softmax(dim=-1)  # (B, N, N)
        x1 = (v @ attn.transpose(-2, -1)).reshape(B, self.partial_dim, H, W)
        return self.proj(torch.cat([x1, x2], dim=1))

    def fuse(self) -> 'SHSA':
        self.qkv = _fuse(self.qkv)
        self.proj[1] = _fuse(self.proj[1])
        return self


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation with 1x1 convs ``fc1``/``fc2`` (with bias) and a sigmoid gate."""

    def __init__(self, channels: int, ratio: float = 0.25, divisor: int = 8) -> None:
        super().__init__()
        # Round the reduced width to the nearest multiple of ``divisor`` (at least one divisor).
        reduced = max(divisor, int(channels * ratio + divisor / 2) // divisor * divisor)
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.fc2(self.act(self.fc1(s))).sigmoid()


class PatchMerging(nn.Module):
    """Stride-2 downsampling: 1x1 expand (x4), 3x3 stride-2 depthwise, SE, 1x1 project."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        hidden = dim * 4
        self.conv1 = Conv2dBN(dim, hidden)
        self.act = nn.ReLU()
        self.conv2 = Conv2dBN(hidden, hidden, 3, 2, 1, groups=hidden)
        self.se = SqueezeExcite(hidden, 0.25)
        self.conv3 = Conv2dBN(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv2(self.act(self.conv1(x))))
        return self.conv3(self.se(x))

    def fuse(self) -> 'PatchMerging':
        self.conv1, self.conv2, self.conv3 = _fuse(self.conv1), _fuse(self.conv2), _fuse(self.conv3)
        return self


def _dw_residual(dim: int, bn_weight_init: float, drop_path: float = 0.0) -> Residual:
    return Residual(Conv2dBN(dim, dim, 3, 1, 1, groups=dim, bn_weight_init=bn_weight_init),
                    drop_path)


class BasicBlock(nn.Module):
    """Residual depthwise 3x3 conv, residual SHSA (type ``'s'``) or nothing (``'i'``), residual FFN."""

    def __init__(self, dim: int, qk_dim: int, partial_dim: int, block_type: str,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        if block_type not in ('s', 'i'):
            raise ValueError(f"block type must be 's' (with SHSA) or 'i' (without), got {block_type!r}")
        self.conv = _dw_residual(dim, 0.0, drop_path)
        self.mixer = (Residual(SHSA(dim, qk_dim, partial_dim), drop_path)
                      if block_type == 's' else nn.Identity())
        self.ffn = Residual(FFN(dim, dim * 2), drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.mixer(self.conv(x)))

    def fuse(self) -> 'BasicBlock':
        self.conv, self.mixer, self.ffn = _fuse(self.conv), _fuse(self.mixer), _fuse(self.ffn)
        return self


def _fuse_children(module: nn.Module) -> None:
    """Recursively replace every fusable child of ``module`` by its fused form."""
    for name, child in list(module.named_children()):
        if hasattr(child, 'fuse'):
            setattr(module, name, child.fuse())
        else:
            _fuse_children(child)


# ---------------------------------------------------------------------------------------------
# Backbone
# ---------------------------------------------------------------------------------------------


@MODELS.register_module()
class SHViT(BaseModule):
    """SHViT backbone (S1-S4) emitting stage features at strides 16, 32 and 64.

    Args:
        arch (str | dict): ``'s1'``..``'s4'`` (case-insensitive, ``'shvit_s4'`` also accepted) or a
            dict with keys ``embed_dims``, ``depths``, ``partial_dims``, ``qk_dims`` and
            ``block_types`` (one entry per stage).
        in_channels (int): Channels of the input image. Default: 3.
        out_indices (Sequence[int]): Stages whose outputs are returned (0: stride 16, 1: stride 32,
            2: stride 64). Negative indices count from the end. As in MMPretrain's backbones the
            outputs come in stage order, each stage once, whatever the order given; the indices
            (and ``out_channels``) are kept that way. Default: (0, 1, 2).
        frozen_stages (int): -1 freezes nothing; 0 freezes the stem; k >= 1 freezes the stem and
            stages 1..k (eval mode, no gradients). Default: -1.
        norm_eval (bool): Keep every BatchNorm in eval mode during training (running statistics
            frozen, affine parameters still trained). Default: False.
        drop_path_rate (float): Stochastic-depth rate, increasing linearly over the blocks to this
            value. Default: 0.
        deploy (bool): Build the fused inference structure (every BatchNorm folded into its
            convolution, residual depthwise convs folded into one conv) at construction, the way
            MMPretrain's re-parameterisable backbones do. Such a model loads fused checkpoints
            directly and unfused ones (training checkpoints, the official release) by fusing them
            on the way in. Otherwise call :meth:`switch_to_deploy` explicitly. Default: False.
        init_cfg (dict | list[dict], optional): ``dict(type='Pretrained', checkpoint=PATH_OR_URL)``
            loads the official release, timm's layout, a plain state dict or an MMDetection /
            MMSegmentation checkpoint (see :mod:`shvit_mm.models.backbones.shvit_weights`).
    """

    #: Variants as data (paper Table 7 / official release).
    arch_zoo: Dict[str, dict] = {
        's1': dict(embed_dims=[128, 224, 320], depths=[2, 4, 5], partial_dims=[32, 48, 68],
                   qk_dims=[16, 16, 16], block_types=['i', 's', 's']),
        's2': dict(embed_dims=[128, 308, 448], depths=[2, 4, 5], partial_dims=[32, 66, 96],
                   qk_dims=[16, 16, 16], block_types=['i', 's', 's']),
        's3': dict(embed_dims=[192, 352, 448], depths=[3, 5, 5], partial_dims=[48, 75, 96],
                   qk_dims=[16, 16, 16], block_types=['i', 's', 's']),
        's4': dict(embed_dims=[224, 336, 448], depths=[4, 7, 6], partial_dims=[48, 72, 96],
                   qk_dims=[16, 16, 16], block_types=['i', 's', 's']),
    }
    num_stages = 3
    strides = (16, 32, 64)

    def __init__(self,
                 arch: Union[str, dict] = 's4',
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 drop_path_rate: float = 0.0,
                 deploy: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.arch_name, self.arch = self._parse_arch(arch)
        embed_dims = self.arch['embed_dims']
        self.embed_dims = list(embed_dims)
        self.in_channels = in_channels
        self.out_indices = self._parse_out_indices(out_indices)
        if not -1 <= frozen_stages <= self.num_stages:
            raise ValueError(f'frozen_stages must be in [-1, {self.num_stages}], got {frozen_stages}')
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f'drop_path_rate is a probability of dropping a residual branch, in '
                             f'[0, 1); got {drop_path_rate}')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.deploy = deploy
        self.fused = False

        e0 = embed_dims[0]
        self.patch_embed = nn.Sequential(
            Conv2dBN(in_channels, e0 // 8, 3, 2, 1), nn.ReLU(),
            Conv2dBN(e0 // 8, e0 // 4, 3, 2, 1), nn.ReLU(),
            Conv2dBN(e0 // 4, e0 // 2, 3, 2, 1), nn.ReLU(),
            Conv2dBN(e0 // 2, e0, 3, 2, 1))

        total = sum(self.arch['depths'])
        rates = torch.linspace(0, drop_path_rate, total).tolist() if total else []
        cursor = 0
        for i in range(self.num_stages):
            dim = embed_dims[i]
            layers: List[nn.Module] = []
            if i > 0:
                prev = embed_dims[i - 1]
                # Downsampling sits at the start of the stage: conv+FFN at the old width,
                # patch merging, conv+FFN at the new width (official ``blocks{k}.0/.1/.2``).
                layers += [
                    nn.Sequential(_dw_residual(prev, 1.0), Residual(FFN(prev, prev * 2))),
                    PatchMerging(prev, dim),
                    nn.Sequential(_dw_residual(dim, 1.0), Residual(FFN(dim, dim * 2))),
                ]
            for _ in range(self.arch['depths'][i]):
                layers.append(BasicBlock(dim, self.arch['qk_dims'][i], self.arch['partial_dims'][i],
                                         self.arch['block_types'][i], rates[cursor]))
                cursor += 1
            self.add_module(f'blocks{i + 1}', nn.Sequential(*layers))
        self._freeze_stages()
        # A deploy model must also accept unfused weights (training checkpoints, the release).
        self._register_load_state_dict_pre_hook(self._fuse_incoming_state_dict, with_module=True)
        if deploy:
            self.switch_to_deploy()

    # -- configuration helpers ---------------------------------------------------------------
    @classmethod
    def _parse_arch(cls, arch: Union[str, dict]):
        if isinstance(arch, str):
            key = arch.lower().replace('shvit_', '').replace('shvit-', '')
            if key not in cls.arch_zoo:
                raise KeyError(f'Unknown SHViT arch {arch!r}; choose one of {sorted(cls.arch_zoo)} '
                               'or pass a dict with embed_dims/depths/partial_dims/qk_dims/block_types')
            return key, copy.deepcopy(cls.arch_zoo[key])
        if not isinstance(arch, dict):
            raise TypeError(f'arch must be a str or dict, got {type(arch).__name__}')
        required = {'embed_dims', 'depths', 'partial_dims', 'qk_dims', 'block_types'}
        missing = required - set(arch)
        if missing:
            raise KeyError(f'custom SHViT arch misses {sorted(missing)}; it needs {sorted(required)}')
        for k in required:
            if len(arch[k]) != cls.num_stages:
                raise ValueError(f'arch[{k!r}] needs {cls.num_stages} entries (one per stage), '
                                 f'got {arch[k]!r}')
        return 'custom', {k: list(arch[k]) for k in required}

    def _parse_out_indices(self, out_indices: Union[int, Sequence[int]]) -> List[int]:
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        result = []
        for idx in out_indices:
            real = idx + self.num_stages if idx < 0 else idx
            if not 0 <= real < self.num_stages:
                raise IndexError(f'out_indices entry {idx} is out of range for {self.num_stages} stages')
            result.append(real)
        # as MMPretrain's backbones: the outputs come in stage order, each stage once, whatever
        # the order given; keeping the indices so makes ``out_channels`` describe the outputs
        return sorted(set(result))

    @property
    def out_channels(self) -> List[int]:
        return [self.embed_dims[i] for i in self.out_indices]

    @property
    def stages(self) -> List[nn.Module]:
        return [getattr(self, f'blocks{i + 1}') for i in range(self.num_stages)]

    # -- weights ---------------------------------------------------------------------------------
    def init_weights(self) -> None:
        if isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained':
            # MMEngine's Pretrained initialiser only unwraps ``state_dict``: an official release
            # file (``{'model': ...}``) would silently load nothing. Use our format-aware loader.
            load_backbone_checkpoint(self, self.init_cfg['checkpoint'],
                                     prefix=self.init_cfg.get('prefix'),
                                     logger=MMLogger.get_current_instance())
            self._is_init = True
            return
        # Otherwise PyTorch's default initialisation, as the official training recipe uses.
        super().init_weights()

    # -- train/eval behaviour --------------------------------------------------------------------
    def _freeze_stages(self) -> None:
        if self.frozen_stages >= 0:
            frozen = [self.patch_embed] + self.stages[:self.frozen_stages]
            for m in frozen:
                m.eval()
                for p in m.parameters():
                    p.requires_grad = False

    def train(self, mode: bool = True) -> 'SHViT':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    @torch.no_grad()
    def switch_to_deploy(self) -> 'SHViT':
        """Fold every Conv2d+BatchNorm pair and each residual depthwise 3x3 conv into one conv.

        Uses the BatchNorm running statistics, so call it on a trained (or loaded) model; the
        parameter names change (``*.c.weight`` + ``*.bn.*`` become ``*.weight`` + ``*.bias``).
        """
        if not self.fused:
            _fuse_children(self)
            self.fused = True
            self.deploy = True
        return self

    @torch.no_grad()
    def fuse_state_dict(self, state_dict: Mapping[str, torch.Tensor]
                        ) -> 'OrderedDict[str, torch.Tensor]':
        """The deploy-structure state dict equivalent to an unfused (official-layout) one.

        A twin of this architecture is built unfused, loads ``state_dict`` strictly, is fused and
        returns its state dict. Raises KeyError/RuntimeError (from ``load_state_dict``) naming the
        keys when ``state_dict`` is not a complete unfused SHViT of this architecture.
        """
        twin = SHViT(arch=self.arch, in_channels=self.in_channels, out_indices=self.out_indices)
        twin.load_state_dict(state_dict, strict=True)
        return OrderedDict(twin.eval().switch_to_deploy().state_dict())

    @staticmethod
    def _fuse_incoming_state_dict(module: 'SHViT', state_dict, prefix, local_metadata, strict,
                                  missing_keys, unexpected_keys, error_msgs) -> None:
        """``load_state_dict`` pre-hook: fuse unfused weights loaded into a deploy model.

        Only a complete unfused set is converted; anything else is left for PyTorch to report as
        missing / unexpected keys as usual.
        """
        if not module.fused:
            return
        own = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if not any(k.endswith('.bn.running_var') for k in own):
            return  # already fused weights (or none at all)
        try:
            fused = module.fuse_state_dict(own)
        except (KeyError, RuntimeError):
            return
        for k in own:
            del state_dict[prefix + k]
        for k, v in fused.items():
            state_dict[prefix + k] = v

    # -- forward -----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> tuple:
        if x.dim() != 4:
            raise ValueError(f'SHViT expects a (N, C, H, W) tensor, got shape {tuple(x.shape)}')
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f'SHViT was built for {self.in_channels} input channels but got {x.shape[1]} '
                f'(input shape {tuple(x.shape)}); convert the images or set in_channels={x.shape[1]}')
        last = self.strides[-1]
        if (self.training and x.shape[0] == 1 and x.shape[2] <= last and x.shape[3] <= last
                and self._last_stage_trains_batchnorm()):
            # PyTorch would stop inside a BatchNorm with a message that does not say why
            raise ValueError(
                f'SHViT cannot train on input {tuple(x.shape)}: the stride-{last} map of a picture '
                f'of {last} px or less is 1x1, and BatchNorm in training mode needs more than one '
                'value per channel (batch x height x width > 1). Use larger inputs, a batch of 2 '
                'or more, or keep the BatchNorm statistics fixed (norm_eval=True, or eval mode).')
        outs = []
        x = self.patch_embed(x)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def _last_stage_trains_batchnorm(self) -> bool:
        """Whether a BatchNorm of the last stage uses batch statistics (not frozen, not
        ``norm_eval``, not fused away); the maps only shrink, so it meets the smallest one."""
        return any(m.training for m in self.stages[-1].modules() if isinstance(m, _BatchNorm))
