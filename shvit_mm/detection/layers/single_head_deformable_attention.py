"""Single-head multi-scale deformable attention (SHViT paper, Appendix C, Table 9).

SHViT replaces some of Deformable DETR's multi-scale deformable attentions (8 heads of 32 channels)
by one head of 64 channels: the value is projected 256 -> 64, sampled and weighted by a single head,
and projected back to 256. MMCV's ``MultiScaleDeformableAttention`` already has every piece
(``num_heads`` and ``value_proj_ratio``: the value is viewed as ``num_heads`` chunks of
``value_proj_size // num_heads`` channels); this subclass only

* takes the head width directly (``head_dims``) instead of a ratio, and checks it, and
* replaces the initial sampling pattern. MMCV's initialisation gives each *head* one direction
  (point ``p`` of every level sits at ``(p + 1) * direction(head)``); with one head every initial
  offset of every level points the same way, so the single head would start by looking along one
  ray only. Here the ``num_levels * num_points`` samples of a head get distinct directions on a
  spiral (see :func:`spread_sampling_offsets`).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from mmcv.ops import MultiScaleDeformableAttention
from mmdet.registry import MODELS
from torch import nn


def spread_sampling_offsets(num_heads: int, num_levels: int, num_points: int) -> torch.Tensor:
    """Initial sampling offsets (in feature-map pixels) spreading every sample of every head.

    Sample ``k = h + H * (l + L * p)`` (head ``h``, level ``l``, point ``p``) gets the direction
    ``2 * pi * k / (H * L * P)`` and the radius ``p + 1``; like MMCV, the direction is scaled so its
    larger coordinate is 1 (the points lie on squares of "radius" 1, 2, ... pixels). With one head,
    4 levels and 4 points this is a spiral per level: the four points of a level sit 90 degrees
    apart at radii 1..4, and each level is rotated by a further 22.5 degrees, so the 16 samples
    point in 16 different directions. Returns a tensor of shape ``(H, L, P, 2)`` in (x, y) order.
    """
    if min(num_heads, num_levels, num_points) < 1:
        raise ValueError('num_heads, num_levels and num_points must all be >= 1, got '
                         f'{num_heads}, {num_levels}, {num_points}')
    h = torch.arange(num_heads, dtype=torch.float64).view(-1, 1, 1)
    lvl = torch.arange(num_levels, dtype=torch.float64).view(1, -1, 1)
    p = torch.arange(num_points, dtype=torch.float64).view(1, 1, -1)
    k = h + num_heads * (lvl + num_levels * p)
    theta = k * (2.0 * math.pi / (num_heads * num_levels * num_points))
    direction = torch.stack([theta.cos(), theta.sin()], -1)
    direction = direction / direction.abs().amax(-1, keepdim=True)
    return (direction * (p + 1).unsqueeze(-1)).float()


@MODELS.register_module()
class SingleHeadMSDeformableAttention(MultiScaleDeformableAttention):
    """Multi-scale deformable attention with few (by default one) wide heads.

    Args:
        embed_dims (int): Width of queries, values and output. Defaults to 256.
        num_heads (int): Number of heads. Defaults to 1.
        head_dims (int): Channels per head; the value is projected ``embed_dims -> num_heads *
            head_dims`` and the output back to ``embed_dims``. Defaults to 64 (the paper's choice;
            the multi-head module has 256 / 8 = 32).
        num_levels, num_points, im2col_step, dropout, batch_first, norm_cfg, init_cfg: as in
            :class:`mmcv.ops.MultiScaleDeformableAttention`.
        value_proj_ratio (float, optional): Accepted for config compatibility with MMCV; when
            given it must equal ``num_heads * head_dims / embed_dims``.
    """

    def __init__(self,
                 embed_dims: int = 256,
                 num_heads: int = 1,
                 head_dims: int = 64,
                 num_levels: int = 4,
                 num_points: int = 4,
                 im2col_step: int = 64,
                 dropout: float = 0.1,
                 batch_first: bool = False,
                 norm_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None,
                 value_proj_ratio: Optional[float] = None) -> None:
        if not isinstance(head_dims, int) or head_dims < 1:
            raise ValueError(f'head_dims must be a positive int, got {head_dims!r}')
        value_dims = num_heads * head_dims
        ratio = value_dims / embed_dims
        if value_proj_ratio is not None and abs(value_proj_ratio - ratio) > 1e-9:
            raise ValueError(
                f'value_proj_ratio={value_proj_ratio} contradicts num_heads * head_dims / '
                f'embed_dims = {num_heads} * {head_dims} / {embed_dims} = {ratio}; set only '
                'head_dims (value_proj_ratio is derived from it)')
        super().__init__(embed_dims=embed_dims, num_heads=num_heads, num_levels=num_levels,
                         num_points=num_points, im2col_step=im2col_step, dropout=dropout,
                         batch_first=batch_first, norm_cfg=norm_cfg, init_cfg=init_cfg,
                         value_proj_ratio=ratio)
        self.head_dims = head_dims
        if self.value_proj.out_features != value_dims:
            # MMCV sizes the projection as int(embed_dims * ratio), which can round down.
            self.value_proj = nn.Linear(embed_dims, value_dims)
            self.output_proj = nn.Linear(value_dims, embed_dims)
            self.init_weights()

    def init_weights(self) -> None:
        """MMCV's initialisation, then the spread sampling pattern for the offsets' bias."""
        super().init_weights()
        grid = spread_sampling_offsets(self.num_heads, self.num_levels, self.num_points)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1).to(self.sampling_offsets.bias))

    def extra_repr(self) -> str:
        return (f'embed_dims={self.embed_dims}, num_heads={self.num_heads}, '
                f'head_dims={self.head_dims}, num_levels={self.num_levels}, '
                f'num_points={self.num_points}')
