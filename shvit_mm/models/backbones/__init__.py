"""Codebase-neutral SHViT backbone (needs only PyTorch and MMEngine) and its weight formats."""
from .shvit import SHViT
from .shvit_weights import (CheckpointFormatError, infer_arch, load_backbone_checkpoint,
                            official_to_timm, timm_to_official, to_official_layout)

__all__ = ['SHViT', 'CheckpointFormatError', 'infer_arch', 'load_backbone_checkpoint',
           'official_to_timm', 'timm_to_official', 'to_official_layout']
