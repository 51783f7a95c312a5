"""Codebase-neutral neck parts: the transposed-convolution levels that each codebase's FPN
subclass adds (:mod:`shvit_mm.detection.necks`, :mod:`shvit_mm.segmentation.necks`). Import
:mod:`.transposed_fpn` directly (it needs MMCV)."""
