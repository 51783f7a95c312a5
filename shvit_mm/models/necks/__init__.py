"""Necks for stride-16/32/64 backbones."""
from .shvit_fpn import SHViTFPN

__all__ = ['SHViTFPN']
