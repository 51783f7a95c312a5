"""Transformer layers (single-head Deformable DETR)."""
from .per_layer_deformable_transformer import (
    PerLayerDeformableDetrTransformerDecoder, PerLayerDeformableDetrTransformerDecoderLayer,
    PerLayerDeformableDetrTransformerEncoder, PerLayerDeformableDetrTransformerEncoderLayer,
    resolve_layer_cfgs)
from .single_head_deformable_attention import (SingleHeadMSDeformableAttention,
                                               spread_sampling_offsets)

__all__ = [
    'PerLayerDeformableDetrTransformerEncoder', 'PerLayerDeformableDetrTransformerDecoder',
    'PerLayerDeformableDetrTransformerEncoderLayer', 'PerLayerDeformableDetrTransformerDecoderLayer',
    'SingleHeadMSDeformableAttention', 'resolve_layer_cfgs', 'spread_sampling_offsets'
]
