"""The segmentation neck: MMSegmentation's ``FPN`` with the transposed-convolution finer levels.

``num_extra_trans_convs=2, num_outs=5`` turns SHViT's strides 16/32/64 into 4, 8, 16, 32, 64; the
heads take the first four (``in_index=[0, 1, 2, 3]``) and resize every level to the finest, so any
input size works. The configs pad test images to a multiple of 32 (cropped off the prediction
again), where the stride-4 logits cover exactly the padded picture.
"""
from mmseg.models.necks import FPN
from mmseg.registry import MODELS

from shvit_mm.models.necks.transposed_fpn import TransposedFPNMixin

__all__ = ['SHViTSegFPN']


@MODELS.register_module(name='SHViTFPN')
class SHViTSegFPN(TransposedFPNMixin, FPN):
    """MMSegmentation's ``FPN`` plus transposed-convolution finer levels; ``type='SHViTFPN'`` in
    MMSegmentation configs. See :class:`~shvit_mm.models.necks.transposed_fpn.TransposedFPNMixin`."""

    end_level_inclusive = False  # MMSegmentation's FPN: end_level is one past the last level used
