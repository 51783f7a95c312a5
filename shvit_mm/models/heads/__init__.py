from .shvit_cls_head import SHViTClsHead

__all__ = ['SHViTClsHead']
