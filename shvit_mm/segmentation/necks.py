"""``SHViTFPN`` for MMSegmentation: MMSegmentation's FPN plus transposed-convolution finer levels.

Semantic FPN and UPerNet want a pyramid at strides 4/8/16/32, SHViT's stages run at 16/32/64.
``num_extra_trans_convs=2, num_outs=5`` adds strides 8 and 4 with the official SHViT detection
release's transposed convolutions (the same code as MMDetection's ``SHViTFPN``,
:class:`shvit_mm.models.necks.transposed_fpn.TransposedFPNMixin`) and gives strides 4, 8, 16, 32,
64; the heads take the first four (``in_index=[0, 1, 2, 3]``).

Map sizes: the stride-16/32/64 levels are ``ceil(H / stride)`` as the backbone makes them; the
transposed levels are exactly 2x and 4x the stride-16 level, i.e. the maps of the image padded to a
multiple of 16. Every head of MMSegmentation reads the sizes from the maps (FPNHead and UPerHead
resize each level to the finest one), so any input size works. The shvit_mm configs pad test
images to a multiple of 32 (``data_preprocessor.test_cfg.size_divisor=32``; MMSegmentation crops
the padding off the prediction again), so that the stride-4 logits cover exactly the padded
picture before they are resized to it, as with a stride-4 backbone; training crops (512) are
multiples of 64 already.

Note that MMSegmentation's ``FPN`` reads ``end_level`` as one past the last input level used
(MMDetection's as the last one); this class checks its arguments that way.
"""
from mmseg.models.necks import FPN
from mmseg.registry import MODELS

from shvit_mm.models.necks.transposed_fpn import TransposedFPNMixin

__all__ = ['SHViTFPN']


@MODELS.register_module()
class SHViTFPN(TransposedFPNMixin, FPN):
    __doc__ = TransposedFPNMixin.__doc__

    end_level_inclusive = False  # MMSegmentation's FPN: end_level is exclusive
