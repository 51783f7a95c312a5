"""The detection neck: MMDetection's ``FPN`` with the transposed-convolution finer levels.

RetinaNet: ``num_extra_trans_convs=1, add_extra_convs='on_input', num_outs=5`` gives strides
8..128; Mask R-CNN: ``num_extra_trans_convs=2, num_outs=5`` gives strides 4..64 (the official SHViT
detection release's necks, whose weights load one to one).
"""
from mmdet.models.necks import FPN
from mmdet.registry import MODELS

from shvit_mm.models.necks.transposed_fpn import TransposedFPNMixin

__all__ = ['SHViTDetFPN']


@MODELS.register_module(name='SHViTFPN')
class SHViTDetFPN(TransposedFPNMixin, FPN):
    """MMDetection's ``FPN`` plus transposed-convolution finer levels; ``type='SHViTFPN'`` in
    MMDetection configs. See :class:`~shvit_mm.models.necks.transposed_fpn.TransposedFPNMixin`."""
