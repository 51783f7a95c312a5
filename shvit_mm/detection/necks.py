"""``SHViTFPN`` for MMDetection: MMDetection's FPN plus transposed-convolution finer levels.

RetinaNet: ``num_extra_trans_convs=1, add_extra_convs='on_input', num_outs=5`` gives strides
8..128; Mask R-CNN: ``num_extra_trans_convs=2, num_outs=5`` gives strides 4..64 (the official SHViT
detection release's necks, whose module names it keeps, so their weights load one to one).
"""
from mmdet.models.necks import FPN
from mmdet.registry import MODELS

from shvit_mm.models.necks.transposed_fpn import TransposedFPNMixin


@MODELS.register_module()
class SHViTFPN(TransposedFPNMixin, FPN):
    __doc__ = TransposedFPNMixin.__doc__


__all__ = ['SHViTFPN']
