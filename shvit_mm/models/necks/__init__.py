"""Codebase-neutral neck parts: the transposed-convolution levels that each codebase's
``SHViTFPN`` adds to its own FPN (see :mod:`shvit_mm.detection.necks`,
:mod:`shvit_mm.segmentation.necks`). Import :mod:`.transposed_fpn` directly (it needs MMCV)."""
