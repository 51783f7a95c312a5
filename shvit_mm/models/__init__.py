"""The codebase-neutral core of shvit_mm: the SHViT backbone and the transposed-convolution levels
shared by the detection and segmentation necks. Importing it needs PyTorch, MMEngine and (for the
neck mixin only, imported on use) MMCV; never MMDetection, MMSegmentation or MMPretrain."""
from .backbones import SHViT

__all__ = ['SHViT']
