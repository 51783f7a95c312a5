"""Deformable DETR encoder/decoder whose layers may each have their own configuration.

MMDetection's ``DeformableDetrTransformerEncoder/Decoder`` build every layer from one shared
``layer_cfg`` and instantiate the attentions by class, not through the registry. The classes here
keep MMDetection's forward passes and parameter names (so multi-head checkpoints load) and add:

* ``layer_cfg`` may be one dict (shared) or a list with one dict per layer;
* ``layer_overrides``: a list of ``dict(layer_ids=[...], **partial_layer_cfg)``; each partial
  config is merged recursively into the listed layers' configs (``layer_ids`` count from 0, so the
  paper's "layers 2, 3 and 4 of 6" are ``layer_ids=[1, 2, 3]``);
* attention configs may carry a ``type`` (any attention registered in MMDetection's or MMEngine's
  ``MODELS``); without one, the layers use MMDetection's defaults
  (``MultiScaleDeformableAttention`` for the encoder self-attention and the decoder
  cross-attention, ``MultiheadAttention`` for the decoder self-attention).

Example (the SHViT paper's single-head Deformable DETR)::

    encoder=dict(layer_overrides=[dict(
        layer_ids=[1, 2, 3],
        self_attn_cfg=dict(type='SingleHeadMSDeformableAttention', num_heads=1, head_dims=64))])
"""
from __future__ import annotations

import copy
from typing import List, Optional, Sequence, Union

from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks.transformer import FFN, MultiheadAttention
from mmcv.ops import MultiScaleDeformableAttention
from mmdet.models.layers.transformer.deformable_detr_layers import (
    DeformableDetrTransformerDecoder, DeformableDetrTransformerDecoderLayer,
    DeformableDetrTransformerEncoder, DeformableDetrTransformerEncoderLayer)
from mmdet.registry import MODELS
from mmengine.config import ConfigDict
from mmengine.model import ModuleList
from torch import nn

try:  # same optional dependency as MMDetection's encoder
    from fairscale.nn.checkpoint import checkpoint_wrapper
except Exception:  # pragma: no cover - depends on an optional package
    checkpoint_wrapper = None

LayerCfg = Union[dict, Sequence[dict]]


def _merge(base: dict, override: dict) -> dict:
    """Recursive dict merge; a sub-dict with ``_delete_=True`` replaces instead of merging."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and not value.get('_delete_', False) \
                and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        elif isinstance(value, dict):
            out[key] = {k: v for k, v in value.items() if k != '_delete_'}
        else:
            out[key] = value
    return out


def _to_plain(cfg) -> dict:
    """ConfigDict/dict -> nested plain dicts (deep copy)."""
    if isinstance(cfg, ConfigDict):
        cfg = cfg.to_dict()
    return copy.deepcopy(dict(cfg))


def resolve_layer_cfgs(layer_cfg: LayerCfg, num_layers: int,
                       layer_overrides: Optional[Sequence[dict]] = None) -> List[dict]:
    """One layer config per layer from a shared/per-layer ``layer_cfg`` plus ``layer_overrides``."""
    if not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f'num_layers must be a positive int, got {num_layers!r}')
    if isinstance(layer_cfg, dict):
        cfgs = [_to_plain(layer_cfg) for _ in range(num_layers)]
    elif isinstance(layer_cfg, (list, tuple)):
        if len(layer_cfg) != num_layers:
            raise ValueError(f'layer_cfg is a list of {len(layer_cfg)} configs but num_layers is '
                             f'{num_layers}: give one config per layer, or a single dict shared by '
                             'all layers (optionally with layer_overrides)')
        cfgs = [_to_plain(c) for c in layer_cfg]
    else:
        raise TypeError(f'layer_cfg must be a dict or a list of dicts, got {type(layer_cfg)}')
    for i, override in enumerate(layer_overrides or []):
        if not isinstance(override, dict) or 'layer_ids' not in override:
            raise ValueError(f'layer_overrides[{i}] must be a dict with a "layer_ids" list (0-based '
                             f'layer indices) and the config keys to change; got {override!r}')
        override = _to_plain(override)
        layer_ids = override.pop('layer_ids')
        if isinstance(layer_ids, int):
            layer_ids = [layer_ids]
        for lid in layer_ids:
            if not isinstance(lid, int) or not 0 <= lid < num_layers:
                raise ValueError(f'layer_overrides[{i}] names layer {lid!r}, but layers are '
                                 f'numbered 0..{num_layers - 1} (0-based; the paper\'s layers '
                                 '2-4 of 6 are [1, 2, 3])')
            cfgs[lid] = _merge(cfgs[lid], override)
    return cfgs


def build_attention(cfg: dict, default_type: type) -> nn.Module:
    """Build an attention from ``cfg`` through the registry, ``default_type`` if it has no type."""
    cfg = _to_plain(cfg)
    cfg.setdefault('type', default_type)
    return MODELS.build(cfg)


@MODELS.register_module()
class PerLayerDeformableDetrTransformerEncoderLayer(DeformableDetrTransformerEncoderLayer):
    """Deformable DETR encoder layer whose ``self_attn_cfg`` may name its attention ``type``."""

    def _init_layers(self) -> None:
        self.self_attn = build_attention(self.self_attn_cfg, MultiScaleDeformableAttention)
        self.embed_dims = self.self_attn.embed_dims
        self.ffn = FFN(**self.ffn_cfg)
        self.norms = ModuleList(
            [build_norm_layer(self.norm_cfg, self.embed_dims)[1] for _ in range(2)])


@MODELS.register_module()
class PerLayerDeformableDetrTransformerDecoderLayer(DeformableDetrTransformerDecoderLayer):
    """Deformable DETR decoder layer whose attention configs may name their ``type``."""

    def _init_layers(self) -> None:
        self.self_attn = build_attention(self.self_attn_cfg, MultiheadAttention)
        self.cross_attn = build_attention(self.cross_attn_cfg, MultiScaleDeformableAttention)
        self.embed_dims = self.self_attn.embed_dims
        if self.cross_attn.embed_dims != self.embed_dims:
            raise ValueError(f'decoder self-attention has embed_dims={self.embed_dims} but '
                             f'cross-attention has {self.cross_attn.embed_dims}; they must match')
        self.ffn = FFN(**self.ffn_cfg)
        self.norms = ModuleList(
            [build_norm_layer(self.norm_cfg, self.embed_dims)[1] for _ in range(3)])


def _check_same_width(layers: ModuleList, what: str) -> int:
    widths = [layer.embed_dims for layer in layers]
    if len(set(widths)) != 1:
        raise ValueError(f'all {what} layers must keep the same embed_dims (the residual stream '
                         f'width); got {widths}')
    return widths[0]


@MODELS.register_module()
class PerLayerDeformableDetrTransformerEncoder(DeformableDetrTransformerEncoder):
    """:class:`DeformableDetrTransformerEncoder` with per-layer configs.

    Args:
        num_layers (int): Number of layers.
        layer_cfg (dict | list[dict]): Shared layer config, or one per layer.
        layer_overrides (list[dict], optional): ``dict(layer_ids=[...], **partial_layer_cfg)``
            entries merged into the listed (0-based) layers.
        num_cp (int): Layers wrapped in fairscale's activation checkpointing, as in MMDetection.
        init_cfg (dict, optional): Initialisation config.
    """

    def __init__(self, num_layers: int, layer_cfg: LayerCfg,
                 layer_overrides: Optional[Sequence[dict]] = None, num_cp: int = -1,
                 init_cfg: Optional[dict] = None) -> None:
        self.layer_cfgs = resolve_layer_cfgs(layer_cfg, num_layers, layer_overrides)
        super().__init__(num_layers=num_layers, layer_cfg=layer_cfg, num_cp=num_cp,
                         init_cfg=init_cfg)

    def _init_layers(self) -> None:
        self.layers = ModuleList(
            [PerLayerDeformableDetrTransformerEncoderLayer(**cfg) for cfg in self.layer_cfgs])
        if self.num_cp > 0:
            if checkpoint_wrapper is None:
                raise NotImplementedError('num_cp > 0 needs fairscale: pip install fairscale')
            for i in range(self.num_cp):
                self.layers[i] = checkpoint_wrapper(self.layers[i])
        self.embed_dims = _check_same_width(self.layers, 'encoder')


@MODELS.register_module()
class PerLayerDeformableDetrTransformerDecoder(DeformableDetrTransformerDecoder):
    """:class:`DeformableDetrTransformerDecoder` with per-layer configs.

    Args:
        num_layers (int): Number of layers.
        layer_cfg (dict | list[dict]): Shared layer config, or one per layer.
        layer_overrides (list[dict], optional): ``dict(layer_ids=[...], **partial_layer_cfg)``
            entries merged into the listed (0-based) layers.
        post_norm_cfg (dict, optional): Must be None, as in MMDetection.
        return_intermediate (bool): Return the output of every layer. Defaults to True.
        init_cfg (dict, optional): Initialisation config.
    """

    def __init__(self, num_layers: int, layer_cfg: LayerCfg,
                 layer_overrides: Optional[Sequence[dict]] = None,
                 post_norm_cfg: Optional[dict] = None, return_intermediate: bool = True,
                 init_cfg: Optional[dict] = None) -> None:
        self.layer_cfgs = resolve_layer_cfgs(layer_cfg, num_layers, layer_overrides)
        super().__init__(num_layers=num_layers, layer_cfg=layer_cfg,
                         post_norm_cfg=post_norm_cfg, return_intermediate=return_intermediate,
                         init_cfg=init_cfg)

    def _init_layers(self) -> None:
        if self.post_norm_cfg is not None:
            raise ValueError('Deformable DETR decoders have no post norm: set post_norm_cfg=None '
                             f'in {self._get_name()}')
        self.layers = ModuleList(
            [PerLayerDeformableDetrTransformerDecoderLayer(**cfg) for cfg in self.layer_cfgs])
        self.embed_dims = _check_same_width(self.layers, 'decoder')
