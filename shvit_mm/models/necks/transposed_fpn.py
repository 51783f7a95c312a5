"""FPN with finer levels made by transposed convolutions, for stride-16/32/64 backbones (SHViT).

SHViT's stages run at strides 16, 32 and 64; RetinaNet wants a stride-8 level, Mask R-CNN and the
segmentation heads a stride-4 level too. The official SHViT detection release grows them with a
chain of 2x2 stride-2 transposed convolutions from the finest FPN lateral after the top-down pass.
:class:`TransposedFPNMixin` adds that chain to a codebase's ``FPN`` class by subclassing:
``shvit_mm.detection.necks.SHViTDetFPN`` (MMDetection) and
``shvit_mm.segmentation.necks.SHViTSegFPN`` (MMSegmentation).
"""
from __future__ import annotations

from typing import List, Tuple, Union

import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from torch import Tensor


class TransposedFPNMixin:
    """``FPN`` plus ``num_extra_trans_convs`` finer levels; put it before the codebase's ``FPN``.

    Contract: the base class is an OpenMMLab ``FPN`` (MMDetection's or MMSegmentation's: same
    constructor, attributes and forward). With ``num_extra_trans_convs=0`` this is that ``FPN``,
    running its own forward. Otherwise the laterals and top-down pass are ``FPN``'s, then
    ``extra_trans_convs.{i}`` (``ConvTranspose2d(out, out, 2, stride=2)``, in chain order: ``.0``
    takes the finest lateral, stride 16 -> 8, ``.1`` takes its output, 8 -> 4) make the finer maps
    and ``extra_fpn_convs.{j}`` (3x3) refine them, listed finest first: with two levels ``.0``
    refines the stride-4 map. These are the official release's module names and order, so its
    weights load one to one. Outputs, finest first: the transposed levels, the FPN levels, then
    the extra coarse levels ``FPN`` adds (stride-2 convs or max pooling).

    Each transposed level is twice the size of the next coarser one, i.e. the map of the image
    zero-padded to a multiple of 16; the configs pad batches to a multiple of 32, where this is
    exactly ``ceil(H / stride)``.

    Args:
        num_outs (int): all outputs, the transposed levels included (``num_total_outs``; the
            ``FPN`` part makes ``num_fpn_outs = num_outs - num_extra_trans_convs``).
        num_extra_trans_convs (int): finer levels to add. Default: 0.
        Everything else as for ``FPN``; the transposed convolutions follow ``no_norm_on_lateral``
        for their norm, as the official neck does.
    """

    #: Subclasses state how their ``FPN`` reads ``end_level``: as the last input level used
    #: (MMDetection) or as one past it (MMSegmentation).
    end_level_inclusive: bool = True

    def __init__(self, in_channels: List[int], out_channels: int, num_outs: int,
                 start_level: int = 0, end_level: int = -1,
                 add_extra_convs: Union[bool, str] = False, num_extra_trans_convs: int = 0,
                 no_norm_on_lateral: bool = False, norm_cfg=None, act_cfg=None,
                 **kwargs) -> None:
        fpn_outs = self._check_args(in_channels, out_channels, num_outs, start_level, end_level,
                                    add_extra_convs, num_extra_trans_convs)
        super().__init__(in_channels=list(in_channels), out_channels=out_channels,
                         num_outs=fpn_outs, start_level=start_level, end_level=end_level,
                         add_extra_convs=add_extra_convs, no_norm_on_lateral=no_norm_on_lateral,
                         norm_cfg=norm_cfg, act_cfg=act_cfg, **kwargs)
        self.num_extra_trans_convs = num_extra_trans_convs
        self.num_fpn_outs, self.num_total_outs = fpn_outs, num_outs
        self.extra_trans_convs = nn.ModuleList(
            ConvModule(out_channels, out_channels, 2, stride=2, conv_cfg=dict(type='deconv'),
                       norm_cfg=None if no_norm_on_lateral else norm_cfg, act_cfg=act_cfg,
                       inplace=False) for _ in range(num_extra_trans_convs))
        self.extra_fpn_convs = nn.ModuleList(
            ConvModule(out_channels, out_channels, 3, padding=1, conv_cfg=kwargs.get('conv_cfg'),
                       norm_cfg=norm_cfg, act_cfg=act_cfg, inplace=False)
            for _ in range(num_extra_trans_convs))

    @classmethod
    def _check_args(cls, in_channels, out_channels, num_outs, start_level, end_level,
                    add_extra_convs, num_extra_trans_convs) -> int:
        """Readable errors for bad arguments; returns the ``FPN`` part's ``num_outs``."""
        name = cls.__name__
        if not isinstance(in_channels, (list, tuple)) or not in_channels or not all(
                isinstance(c, int) and c > 0 for c in in_channels):
            raise TypeError(f'{name}: in_channels must be a non-empty list of positive ints (one '
                            f'per backbone level, e.g. [224, 336, 448] for SHViT-S4), got '
                            f'{in_channels!r}')
        if not isinstance(out_channels, int) or out_channels <= 0:
            raise ValueError(f'{name}: out_channels must be a positive int, got {out_channels!r}')
        if type(num_extra_trans_convs) is not int or num_extra_trans_convs < 0:
            raise ValueError(f'{name}: num_extra_trans_convs must be an int >= 0, got '
                             f'{num_extra_trans_convs!r}')
        if type(num_outs) is not int:
            raise TypeError(f'{name}: num_outs must be an int, got {num_outs!r}')
        if add_extra_convs not in (True, False, 'on_input', 'on_lateral', 'on_output'):
            raise ValueError(f"{name}: add_extra_convs must be a bool or one of 'on_input', "
                             f"'on_lateral', 'on_output', got {add_extra_convs!r}")
        num_ins = len(in_channels)
        if not 0 <= start_level < num_ins:
            raise ValueError(f'{name}: start_level={start_level} must index one of the {num_ins} '
                             'input levels')
        last = num_ins - 1 if cls.end_level_inclusive else num_ins  # end_level meaning "all"
        lowest = start_level if cls.end_level_inclusive else start_level + 1
        if end_level != -1 and not lowest <= end_level <= last:
            raise ValueError(f'{name}: end_level={end_level} must be -1 or ' + (
                f'an input level index in [{lowest}, {last}] (the last level used)'
                if cls.end_level_inclusive else f'in [{lowest}, {last}] (one past the last input '
                "level used, as in MMSegmentation's FPN)"))
        stop = num_ins if end_level in (-1, last) else end_level + cls.end_level_inclusive
        num_levels = stop - start_level
        fpn_outs = num_outs - num_extra_trans_convs
        if fpn_outs < num_levels:
            raise ValueError(
                f'{name}: num_outs={num_outs} is too small: it counts all outputs, i.e. '
                f'{num_extra_trans_convs} transposed-conv level(s) + {num_levels} FPN level(s) + '
                f'any extra coarse levels, so it must be >= {num_extra_trans_convs + num_levels}')
        if stop < num_ins and fpn_outs != num_levels:
            raise ValueError(
                f'{name}: with end_level={end_level} no extra coarse level is possible, so '
                f'num_outs must be exactly {num_extra_trans_convs + num_levels}, got {num_outs}')
        return fpn_outs

    def forward(self, inputs: Tuple[Tensor]) -> tuple:
        """The pyramid, finest level first (see the class docstring for the order)."""
        if len(inputs) != len(self.in_channels):
            raise ValueError(f'{type(self).__name__} expects {len(self.in_channels)} input levels '
                             f'(in_channels={self.in_channels}), got {len(inputs)}')
        if not self.num_extra_trans_convs:
            return super().forward(inputs)
        # FPN's lateral convs and top-down pass
        laterals = [conv(inputs[i + self.start_level]) for i, conv in enumerate(self.lateral_convs)]
        for i in range(len(laterals) - 1, 0, -1):
            size = {} if 'scale_factor' in self.upsample_cfg else dict(size=laterals[i - 1].shape[2:])
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], **size, **self.upsample_cfg)
        outs = [self.fpn_convs[i](lateral) for i, lateral in enumerate(laterals)]
        # FPN's extra coarse levels
        while len(outs) < self.num_outs and not self.add_extra_convs:
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        if len(outs) < self.num_outs:
            source = dict(on_input=inputs[self.backbone_end_level - 1], on_lateral=laterals[-1],
                          on_output=outs[-1])[self.add_extra_convs]
            outs.append(self.fpn_convs[len(laterals)](source))
            for conv in self.fpn_convs[len(laterals) + 1:self.num_outs]:
                outs.append(conv(F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]))
        # the finer levels, grown from the finest lateral
        finer, x = [], laterals[0]
        for trans_conv in self.extra_trans_convs:
            x = trans_conv(x)
            finer.insert(0, x)
        return tuple(conv(x) for conv, x in zip(self.extra_fpn_convs, finer)) + tuple(outs)
