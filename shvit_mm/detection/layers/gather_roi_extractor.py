"""RoIAlign over all pyramid levels as one weighted gather: a faster CPU RoI extractor.

RoIAlign (He et al., Mask R-CNN, ICCV 2017) averages, in each of the ``out_h x out_w`` bins of a
RoI, ``sampling_ratio**2`` bilinearly interpolated samples. Each output value is therefore a
weighted sum of at most ``4 * sampling_ratio**2`` feature-map pixels, with weights that depend on
the RoI alone. The compiled CPU kernels (MMCV's and torchvision's) walk that sum channel by channel
with scalar code, and their backward pass scatters one scalar at a time.

:class:`GatherRoIExtractor` computes the same values with :func:`torch.nn.functional.embedding_bag`:
the feature maps of all levels are laid out as one table of pixels x channels (a view for
channels-last maps), every bin gathers its pixel rows with their bilinear weights, and autograd's
backward adds the weighted gradients back row by row. Both directions then run vectorised over the
channels, one call for all levels instead of one per level. The values match torchvision's
``roi_align`` to float rounding (``aligned`` True or False, RoIs partly or wholly outside the map
included; tests compare them).

It is a drop-in for MMDetection's ``SingleRoIExtractor`` (same arguments, same level mapping, no
parameters, so checkpoints are interchangeable). It falls back to the parent's per-level kernels
where the gather does not apply: adaptive sampling (``sampling_ratio=0``, whose sample count varies
per RoI), max pooling, and CUDA tensors (the compiled kernels are the fast path there).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
from mmdet.registry import MODELS
from torch import Tensor

__all__ = ['GatherRoIExtractor', 'roi_align_gather_indices']


def _axis_taps(coord: Tensor, size: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Bilinear taps along one axis with RoIAlign's border rules, for ``coord`` ``(K, n)`` and
    one map size per RoI ``size`` ``(K,)``: a sample more than one pixel outside the map
    contributes nothing (so does a NaN or infinite one), one within a pixel of it is clamped onto
    the edge pixel.

    Returns the low and high pixel index of each sample and their weights (zero when invalid)."""
    size_f = size.to(coord.dtype)[:, None]
    last = (size - 1)[:, None]
    valid = (coord >= -1.0) & (coord <= size_f)  # False for NaN and infinite samples too
    coord = torch.where(valid, coord, 0.).clamp(min=0)  # keeps every index in range
    low = coord.floor().long()
    at_edge = low >= last
    low = torch.minimum(low, last)
    high = torch.where(at_edge, low, low + 1)
    frac = torch.where(at_edge, torch.zeros_like(coord), coord - low.to(coord.dtype))
    valid = valid.to(coord.dtype)
    return low, high, (1 - frac) * valid, frac * valid


def roi_align_gather_indices(rois: Tensor, level_shapes: List[Tuple[int, int]],
                             level_of_roi: Tensor, level_offsets: List[int],
                             spatial_scales: List[float], output_size: Tuple[int, int],
                             sampling_ratio: int, aligned: bool) -> Tuple[Tensor, Tensor]:
    """Row indices into the pixel table and their weights for every output bin of every RoI.

    Args:
        rois (Tensor): ``(K, 5)`` RoIs ``[batch_index, x1, y1, x2, y2]`` in image coordinates.
        level_shapes: ``(H, W)`` of each level.
        level_of_roi (Tensor): ``(K,)`` level index of each RoI.
        level_offsets: first table row of each level (each level's rows run picture by
            picture, then row by row, then pixel by pixel).
        spatial_scales: ``1 / stride`` of each level.
        output_size: ``(out_h, out_w)``.
        sampling_ratio (int): samples per bin along each axis (> 0).
        aligned (bool): RoIAlign's half-pixel shift (MMDetection's default ``True``).

    Returns:
        ``(K * out_h * out_w, 4 * sampling_ratio**2)`` long indices and float weights (the
        bin average folded in).
    """
    out_h, out_w = output_size
    num = rois.shape[0]
    dtype = rois.dtype
    device = rois.device
    heights = torch.tensor([s[0] for s in level_shapes], device=device)[level_of_roi]
    widths = torch.tensor([s[1] for s in level_shapes], device=device)[level_of_roi]
    scales = torch.tensor(spatial_scales, dtype=dtype, device=device)[level_of_roi]
    offsets = torch.tensor(level_offsets, device=device)[level_of_roi]
    shift = 0.5 if aligned else 0.0
    x1 = rois[:, 1] * scales - shift
    y1 = rois[:, 2] * scales - shift
    roi_w = rois[:, 3] * scales - shift - x1
    roi_h = rois[:, 4] * scales - shift - y1
    if not aligned:  # the legacy kernel forces RoIs to be at least one pixel
        roi_w = roi_w.clamp(min=1.0)
        roi_h = roi_h.clamp(min=1.0)
    steps = (torch.arange(sampling_ratio, dtype=dtype, device=device) + 0.5) / sampling_ratio
    pos_x = (torch.arange(out_w, dtype=dtype, device=device)[:, None] + steps).flatten()
    pos_y = (torch.arange(out_h, dtype=dtype, device=device)[:, None] + steps).flatten()
    xs = x1[:, None] + pos_x[None] * (roi_w / out_w)[:, None]  # (K, out_w * s)
    ys = y1[:, None] + pos_y[None] * (roi_h / out_h)[:, None]  # (K, out_h * s)
    # each RoI's samples are clamped against its own level's width and height
    x_lo, x_hi, wx_lo, wx_hi = _axis_taps(xs, widths)
    y_lo, y_hi, wy_lo, wy_hi = _axis_taps(ys, heights)
    s = sampling_ratio
    # (K, out, s, 2) for each axis: the two taps of every sample
    col = torch.stack([x_lo, x_hi], -1).view(num, out_w, s, 2)
    wcol = torch.stack([wx_lo, wx_hi], -1).view(num, out_w, s, 2)
    row = (torch.stack([y_lo, y_hi], -1) * widths[:, None, None]).view(num, out_h, s, 2)
    wrow = torch.stack([wy_lo, wy_hi], -1).view(num, out_h, s, 2)
    base = offsets + rois[:, 0].long() * heights * widths  # first row of the RoI's picture/level
    # (K, out_h, out_w, s_y, 2, s_x, 2)
    index = (base.view(num, 1, 1, 1, 1, 1, 1) + row.view(num, out_h, 1, s, 2, 1, 1) +
             col.view(num, 1, out_w, 1, 1, s, 2))
    weight = (wrow.view(num, out_h, 1, s, 2, 1, 1) *
              wcol.view(num, 1, out_w, 1, 1, s, 2)) / (s * s)
    taps = 4 * s * s
    return index.reshape(-1, taps), weight.reshape(-1, taps)


@MODELS.register_module()
class GatherRoIExtractor(SingleRoIExtractor):
    """``SingleRoIExtractor`` computing RoIAlign as one weighted gather over all levels.

    Same arguments as MMDetection's ``SingleRoIExtractor``; ``roi_layer`` must describe an
    ``avg`` RoIAlign (``output_size``, ``sampling_ratio``, ``aligned``), as in MMDetection's
    configs. Example::

        bbox_roi_extractor=dict(
            type='GatherRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=2),
            out_channels=256, featmap_strides=[4, 8, 16, 32])

    Edge cases as the parent: a RoI the level mapping cannot place (NaN area: a NaN coordinate,
    or inverted on one axis) pools zeros; with one level there is no mapping, inverted RoIs are
    pooled as the kernels do; ``roi_scale_factor`` is ignored with one level. A RoI with a NaN (one
    level) or infinite coordinate pools zeros, where the parent's kernels are undefined or crash.
    Unlike the parent, a batch index outside the batch and ``out_channels`` unequal to the maps'
    channels raise ``ValueError``.
    Values are accumulated in float32 for half-precision maps (forward and backward).
    """

    def _check_inputs(self, feats: Tuple[Tensor], rois: Tensor) -> None:
        channels = sorted({f.shape[1] for f in feats})
        if channels != [self.out_channels]:
            raise ValueError(
                f'{type(self).__name__}: out_channels={self.out_channels} but the feature maps '
                f'have {channels} channels; set out_channels to the neck\'s out_channels.')
        batch = feats[0].shape[0]
        index = rois[:, 0]
        bad = ~((index >= 0) & (index < batch))  # NaN included
        if bad.any():
            raise ValueError(
                f'{type(self).__name__}: RoI batch index {index[bad][0].item():g} is outside the '
                f'batch of {batch} feature maps (valid 0..{batch - 1}) in {int(bad.sum())} of '
                f'{len(rois)} RoIs; the RoIs do not belong to these feature maps.')

    def _gather_applies(self, feats: Tuple[Tensor]) -> bool:
        layer = self.roi_layers[0]
        return (feats[0].device.type == 'cpu' and getattr(layer, 'pool_mode', 'avg') == 'avg'
                and int(getattr(layer, 'sampling_ratio', 0)) > 0)

    def forward(self, feats: Tuple[Tensor], rois: Tensor,
                roi_scale_factor: Optional[float] = None) -> Tensor:
        self._check_inputs(feats, rois)
        if not self._gather_applies(feats):
            return super().forward(feats, rois, roi_scale_factor)
        layer = self.roi_layers[0]
        out_h, out_w = layer.output_size
        channels = feats[0].shape[1]
        num = rois.shape[0]
        # the table: every level's pixels as rows of channels (picture, y, x order)
        table = torch.cat([f.permute(0, 2, 3, 1).reshape(-1, channels) for f in feats])
        if num == 0:
            # keep every level in the graph (as the parent does), with no RoI to pool
            return table[:0].sum() * 0. + feats[0].new_zeros(0, channels, out_h, out_w)
        rois = rois.detach().to(torch.float32)
        unplaced = rois.new_zeros(num, dtype=torch.bool)
        level_of_roi = rois.new_zeros(num, dtype=torch.long)
        if len(feats) > 1:  # the parent maps, and rescales, only with several levels
            area = (rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2])
            unplaced = ~(area >= 0)  # NaN scale: the parent pools such RoIs on no level
            level_of_roi = self.map_roi_levels(rois, len(feats)).masked_fill(unplaced, 0)
            if roi_scale_factor is not None:
                rois = self.roi_rescale(rois, roi_scale_factor)
        shapes = [tuple(f.shape[-2:]) for f in feats]
        offsets, start = [], 0
        for f in feats:
            offsets.append(start)
            start += f.shape[0] * f.shape[2] * f.shape[3]
        with torch.no_grad():
            index, weight = roi_align_gather_indices(
                rois, shapes, level_of_roi, offsets, [m.spatial_scale for m in self.roi_layers],
                (out_h, out_w), int(layer.sampling_ratio), bool(layer.aligned))
            weight = weight.view(num, -1).masked_fill(unplaced[:, None], 0.).view(index.shape)
        # sums (and the backward's scatter) in float32 at least: bf16 sums lose whole percents
        acc = table if table.dtype == torch.float64 else table.float()
        pooled = F.embedding_bag(index, acc, mode='sum', per_sample_weights=weight.to(acc.dtype))
        pooled = pooled.to(table.dtype)
        return pooled.view(num, out_h, out_w, channels).permute(0, 3, 1, 2).contiguous()
