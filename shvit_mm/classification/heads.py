"""SHViT's ImageNet classification head for MMPretrain: BatchNorm1d then Linear.

Inside an MMPretrain ``ImageClassifier`` (backbone ``SHViT``, neck ``GlobalAveragePooling``) the head's
parameters are ``head.bn.*`` and ``head.l.*``, the names of the official release.
"""
from typing import Tuple

import torch
import torch.nn as nn
from mmpretrain.models.heads import ClsHead
from mmpretrain.registry import MODELS


@MODELS.register_module()
class SHViTClsHead(ClsHead):
    """BN1d + Linear classification head of SHViT (official ``BN_Linear``)."""

    def __init__(self, num_classes: int, in_channels: int, init_cfg=None, **kwargs) -> None:
        init_cfg = init_cfg or dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.)
        super().__init__(init_cfg=init_cfg, **kwargs)
        if num_classes <= 0:
            raise ValueError(f'num_classes={num_classes} must be a positive integer')
        self.num_classes, self.in_channels = num_classes, in_channels
        self.bn = nn.BatchNorm1d(in_channels)
        self.l = nn.Linear(in_channels, num_classes)  # noqa: E741 (official parameter name)

    def pre_logits(self, feats: Tuple[torch.Tensor]) -> torch.Tensor:
        return self.bn(feats[-1])

    def forward(self, feats: Tuple[torch.Tensor]) -> torch.Tensor:
        return self.l(self.pre_logits(feats))
