"""Data transforms that keep training going through bad images, or stop naming the file.

Registered in MMEngine's root ``TRANSFORMS`` (MMCV's), which MMDetection's and MMSegmentation's
pipelines both reach."""
from __future__ import annotations

import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmengine.logging import print_log
from mmengine.registry import TRANSFORMS


class BadImageError(RuntimeError):
    """An image file that cannot be used; the message names it."""


@TRANSFORMS.register_module()
class RobustLoadImageFromFile(LoadImageFromFile):
    """``LoadImageFromFile`` that survives missing, corrupt and unusual images.

    * Missing, unreadable or empty files: with ``skip_bad_images=True`` (default) a warning names the
      file and the transform returns ``None``, which makes MMEngine's dataset draw another sample
      during training (at test time MMEngine refuses ``None``, so evaluation stops right after the
      warning); with ``False`` a :class:`BadImageError` naming the file is raised.
    * Grayscale, RGBA/LA and 16-bit images become 3-channel 8-bit images (``color_type='color'``
      already does this with the cv2 back-end; other back-ends and ``'unchanged'`` are repaired).
    """

    def __init__(self, skip_bad_images: bool = True, **kwargs) -> None:
        kwargs.setdefault('ignore_empty', False)
        super().__init__(**kwargs)
        self.skip_bad_images = skip_bad_images

    def transform(self, results: dict):
        filename = results.get('img_path')
        try:
            out = super().transform(results)
            if out is None or out.get('img') is None or out['img'].size == 0:
                raise ValueError('decoded to an empty image')
        except Exception as e:  # missing file, truncated/corrupt bytes, unknown format ...
            message = f'Cannot use image {filename}: {type(e).__name__}: {e}'
            if self.skip_bad_images:
                print_log(message + ' -- skipped; another sample is drawn instead.',
                          logger='current', level=30)
                return None
            raise BadImageError(message + ' (fix or remove the file, or set '
                                'skip_bad_images=True to skip such images)') from e
        out['img'] = to_3channel_uint8(out['img'])
        out['img_shape'] = out['img'].shape[:2]
        out['ori_shape'] = out['img'].shape[:2]
        return out

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f', skip_bad_images={self.skip_bad_images})'


def to_3channel_uint8(img: np.ndarray) -> np.ndarray:
    """Grayscale -> 3 channels, drop alpha, scale 16-bit or float images to 8 bits."""
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.shape[2] == 2:  # gray + alpha
        img = np.repeat(img[:, :, :1], 3, axis=2)
    elif img.shape[2] > 3:  # colour + alpha
        img = img[:, :, :3]
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img)
