"""FPN with extra transposed-convolution levels for stride-16/32/64 backbones such as SHViT.

SHViT's stages run at strides 16, 32 and 64, but RetinaNet wants a stride-8 level, Mask R-CNN and
Semantic FPN a stride-4 level too. The official SHViT detection code (MMDetection 2.25) adds them with
a chain of 2x2 stride-2 transposed convolutions grown from the finest FPN lateral.
:class:`TransposedFPNMixin` is that mechanism, written once; each codebase's ``SHViTFPN`` combines it
with the codebase's own ``FPN`` (``shvit_mm.detection.necks``, ``shvit_mm.segmentation.necks``), whose
code runs unchanged underneath.
"""
from __future__ import annotations

from typing import List, Optional, Tuple, Union

import torch.nn as nn
from mmcv.cnn import ConvModule
from torch import Tensor


class TransposedFPNMixin:
    """FPN plus ``num_extra_trans_convs`` finer levels made by transposed convolutions.

    Put it before an OpenMMLab ``FPN`` class (MMDetection's or MMSegmentation's; both share the
    constructor arguments and ``forward`` structure used here): ``class SHViTFPN(TransposedFPNMixin,
    FPN)``. The usual FPN (lateral 1x1 convs, nearest-neighbour top-down pass, 3x3 output convs and,
    when ``add_extra_convs`` asks for them, stride-2 extra convs) runs unchanged over the inputs; it is
    the codebase's own ``FPN`` code. Then a chain of
    ``num_extra_trans_convs`` ``ConvTranspose2d(out, out, kernel_size=2, stride=2)`` grows from the
    finest lateral *after* the top-down pass (stride 16 -> 8 -> 4 for SHViT), and each upsampled map
    gets its own 3x3 conv. No normalisation or activation unless ``norm_cfg``/``act_cfg`` ask.

    Outputs, finest first: the extra transposed levels, then the FPN levels, then the extra stride-2
    levels (``add_extra_convs``) or max-pooled levels, as :class:`FPN` makes them.

    Module names follow the official checkpoints (``ConvModule`` so keys end in ``.conv.weight`` /
    ``.conv.bias``):

    - ``lateral_convs.{i}``, ``fpn_convs.{i}``: exactly as in :class:`FPN` (``fpn_convs`` also holds
      the stride-2 extra convs after the per-level ones).
    - ``extra_trans_convs.{i}``: in chain order, ``extra_trans_convs.0`` takes the finest lateral
      (stride 16 -> 8), ``extra_trans_convs.1`` takes the output of ``.0`` (stride 8 -> 4), ...
    - ``extra_fpn_convs.{j}``: in *output* order, finest first. With two transposed levels,
      ``extra_fpn_convs.0`` refines the stride-4 map (made by ``extra_trans_convs.1``) and
      ``extra_fpn_convs.1`` the stride-8 map (made by ``extra_trans_convs.0``); in general
      ``extra_fpn_convs.{j}`` refines the output of ``extra_trans_convs.{n-1-j}``, with
      ``n = num_extra_trans_convs``. This is the official release's ordering, so its weights map
      one to one.

    Sizes: each transposed level is exactly twice the size of the next coarser one, as in the official
    model, i.e. ``2**k * ceil(H / 16)`` for SHViT. When the image side fed to the backbone is a
    multiple of 16 (MMDetection pads every batch to ``pad_size_divisor=32`` in the SHViT configs)
    this is ``ceil(H / stride)``, the size a plain stride-8/4 backbone would give. For other sides
    it is ``H16 / stride`` with ``H16`` the side rounded up to a multiple of 16, i.e. the map of the
    image zero-padded to a multiple of 16: fewer than ``16 / stride`` extra bottom rows / right
    columns (at most 1 at stride 8, 3 at stride 4), all beyond the image, and the grid stays aligned
    at the top-left corner (cell ``i`` covers ``[i * stride, (i + 1) * stride)`` like every other
    level). Levels are never smaller than ``ceil(H / stride)``. Nothing is cropped: cropping would
    need the image size, which a neck does not receive, and such border cells are what every level
    already has wherever a batch is padded (to a multiple of 32, or to its largest image).
    MMDetection's heads read the level sizes from the feature maps themselves, the anchor generator
    marks anchors beyond ``ceil(pad_shape / stride)`` invalid for training, and boxes are clipped
    to the image.

    Class attribute:
        end_level_inclusive (bool): How the underlying ``FPN`` reads ``end_level`` other than -1:
            MMDetection's as the last input level used (True, the default here), MMSegmentation's
            as one past it (``shvit_mm.segmentation.necks.SHViTFPN`` sets False). Only the
            argument checks depend on it; the ``FPN`` itself interprets ``end_level``.

    Attributes:
        num_outs (int): As in :class:`FPN`: the outputs of the FPN part (``num_outs`` argument minus
            ``num_extra_trans_convs``), which :meth:`FPN.forward` relies on.
        num_fpn_outs (int): The same number, by a name that says so.
        num_total_outs (int): All outputs, the ``num_outs`` argument.

    Args:
        in_channels (list[int]): Channels of each input level (e.g. SHViT-S4: ``[224, 336, 448]``).
        out_channels (int): Channels of every output level.
        num_outs (int): Number of outputs in total, counting the extra transposed levels, the FPN
            levels and the extra coarse levels. RetinaNet: ``num_extra_trans_convs=1,
            add_extra_convs='on_input', num_outs=5`` gives strides 8..128; Mask R-CNN:
            ``num_extra_trans_convs=2, num_outs=5`` gives strides 4..64.
        num_extra_trans_convs (int): Number of finer levels made by transposed convolutions.
            0 makes this neck exactly :class:`FPN`. Default: 0.
        start_level, end_level, add_extra_convs, relu_before_extra_convs, no_norm_on_lateral,
        conv_cfg, norm_cfg, act_cfg, upsample_cfg, init_cfg: as in :class:`FPN`. The transposed
            convolutions follow ``no_norm_on_lateral`` for their norm (as the official neck does) and
            are initialised by ``ConvModule`` (Kaiming), the 3x3 convs by ``init_cfg`` (Xavier).
    """

    end_level_inclusive: bool = True  # MMDetection's reading of ``end_level``; see above

    def __init__(self,
                 in_channels: List[int],
                 out_channels: int,
                 num_outs: int,
                 start_level: int = 0,
                 end_level: int = -1,
                 add_extra_convs: Union[bool, str] = False,
                 relu_before_extra_convs: bool = False,
                 no_norm_on_lateral: bool = False,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: Optional[dict] = None,
                 act_cfg: Optional[dict] = None,
                 upsample_cfg: dict = dict(mode='nearest'),
                 num_extra_trans_convs: int = 0,
                 init_cfg: Union[dict, List[dict]] = dict(
                     type='Xavier', layer='Conv2d', distribution='uniform'),
                 **kwargs) -> None:
        fpn_outs = self._check_args(in_channels, out_channels, num_outs, start_level, end_level,
                                    add_extra_convs, num_extra_trans_convs)
        # FPN's own ``num_outs`` (what its forward produces) excludes the transposed levels.
        super().__init__(
            in_channels=list(in_channels), out_channels=out_channels, num_outs=fpn_outs,
            start_level=start_level, end_level=end_level, add_extra_convs=add_extra_convs,
            relu_before_extra_convs=relu_before_extra_convs,
            no_norm_on_lateral=no_norm_on_lateral, conv_cfg=conv_cfg, norm_cfg=norm_cfg,
            act_cfg=act_cfg, upsample_cfg=upsample_cfg, init_cfg=init_cfg, **kwargs)
        self.num_extra_trans_convs = num_extra_trans_convs
        self.num_fpn_outs = fpn_outs
        self.num_total_outs = num_outs

        self.extra_trans_convs = nn.ModuleList()
        self.extra_fpn_convs = nn.ModuleList()
        for _ in range(num_extra_trans_convs):
            self.extra_trans_convs.append(ConvModule(
                out_channels, out_channels, 2, stride=2, padding=0,
                conv_cfg=dict(type='deconv'),
                norm_cfg=None if no_norm_on_lateral else norm_cfg,
                act_cfg=act_cfg, inplace=False))
            self.extra_fpn_convs.append(ConvModule(
                out_channels, out_channels, 3, padding=1, conv_cfg=conv_cfg,
                norm_cfg=norm_cfg, act_cfg=act_cfg, inplace=False))

    @classmethod
    def _check_args(cls, in_channels, out_channels, num_outs, start_level, end_level,
                    add_extra_convs, num_extra_trans_convs) -> int:
        """Validate the arguments with readable errors; return the FPN part's ``num_outs``."""
        if not isinstance(in_channels, (list, tuple)) or not in_channels or not all(
                isinstance(c, int) and c > 0 for c in in_channels):
            raise TypeError(f'SHViTFPN: in_channels must be a non-empty list of positive ints '
                            f'(one per backbone level, e.g. [224, 336, 448] for SHViT-S4), '
                            f'got {in_channels!r}')
        if not isinstance(out_channels, int) or out_channels <= 0:
            raise ValueError(f'SHViTFPN: out_channels must be a positive int, got {out_channels!r}')
        if (not isinstance(num_extra_trans_convs, int) or isinstance(num_extra_trans_convs, bool)
                or num_extra_trans_convs < 0):
            raise ValueError('SHViTFPN: num_extra_trans_convs must be an int >= 0, got '
                             f'{num_extra_trans_convs!r}')
        num_ins = len(in_channels)
        if not 0 <= start_level < num_ins:
            raise ValueError(f'SHViTFPN: start_level={start_level} must index one of the '
                             f'{num_ins} input levels')
        # ``extra_ok``: whether FPN may add extra coarse levels beyond the used inputs
        if cls.end_level_inclusive:  # MMDetection: end_level is the last input level used
            extra_ok = end_level in (-1, num_ins - 1)
            if extra_ok:
                num_levels = num_ins - start_level
            elif start_level <= end_level < num_ins:
                num_levels = end_level - start_level + 1
            else:
                raise ValueError(f'SHViTFPN: end_level={end_level} must be -1 or an input level '
                                 f'index in [{start_level}, {num_ins - 1}] (the last level used)')
        else:  # MMSegmentation: end_level is one past the last input level used
            extra_ok = end_level == -1
            if extra_ok:
                num_levels = num_ins - start_level
            elif start_level < end_level <= num_ins:
                num_levels = end_level - start_level
            else:
                raise ValueError(f'SHViTFPN: end_level={end_level} must be -1 or in '
                                 f'[{start_level + 1}, {num_ins}] (one past the last input level '
                                 f'used, as in MMSegmentation\'s FPN)')
        if isinstance(add_extra_convs, str):
            if add_extra_convs not in ('on_input', 'on_lateral', 'on_output'):
                raise ValueError("SHViTFPN: add_extra_convs must be a bool or one of 'on_input', "
                                 f"'on_lateral', 'on_output', got {add_extra_convs!r}")
        elif not isinstance(add_extra_convs, bool):
            raise TypeError(f'SHViTFPN: add_extra_convs must be a bool or str, '
                            f'got {add_extra_convs!r}')
        if not isinstance(num_outs, int) or isinstance(num_outs, bool):
            raise TypeError(f'SHViTFPN: num_outs must be an int, got {num_outs!r}')
        fpn_outs = num_outs - num_extra_trans_convs
        if fpn_outs < num_levels:
            raise ValueError(
                f'SHViTFPN: num_outs={num_outs} is too small: it counts all outputs, i.e. '
                f'{num_extra_trans_convs} transposed-conv level(s) + {num_levels} FPN level(s) '
                f'+ any extra coarse levels, so it must be >= '
                f'{num_extra_trans_convs + num_levels}')
        if not extra_ok and fpn_outs != num_levels:
            raise ValueError(
                f'SHViTFPN: with end_level={end_level} no extra coarse level is possible, so '
                f'num_outs must be exactly {num_extra_trans_convs + num_levels}, got {num_outs}')
        return fpn_outs

    def forward(self, inputs: Tuple[Tensor]) -> tuple:
        """Return the pyramid, finest level first (see the class docstring for the order)."""
        if len(inputs) != len(self.in_channels):
            raise ValueError(f'SHViTFPN expects {len(self.in_channels)} input levels '
                             f'(in_channels={self.in_channels}), got {len(inputs)}')
        if self.num_extra_trans_convs == 0:
            return super().forward(inputs)

        # FPN.forward feeds the finest lateral, after the top-down pass, to ``fpn_convs[0]``:
        # capture it there instead of duplicating FPN's code.
        captured: List[Tensor] = []
        handle = self.fpn_convs[0].register_forward_pre_hook(
            lambda module, args: captured.append(args[0]))
        try:
            fpn_outs = super().forward(inputs)
        finally:
            handle.remove()
        finest_lateral = captured[0]

        upsampled = []  # chain order: stride 8, then 4, ...
        x = finest_lateral
        for trans_conv in self.extra_trans_convs:
            x = trans_conv(x)
            upsampled.append(x)
        upsampled.reverse()  # finest first, the order of the outputs and of extra_fpn_convs
        extra_outs = [conv(feat) for conv, feat in zip(self.extra_fpn_convs, upsampled)]
        return tuple(extra_outs) + tuple(fpn_outs)
