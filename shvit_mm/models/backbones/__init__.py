from .shvit import SHViT

__all__ = ['SHViT']
