"""Detection layers: the gather RoI extractor and the single-head Deformable DETR transformer."""
from .gather_roi_extractor import GatherRoIExtractor, roi_align_gather_indices
from .per_layer_deformable_transformer import (
    PerLayerDeformableDetrTransformerDecoder, PerLayerDeformableDetrTransformerDecoderLayer,
    PerLayerDeformableDetrTransformerEncoder, PerLayerDeformableDetrTransformerEncoderLayer,
    resolve_layer_cfgs)
from .single_head_deformable_attention import (SingleHeadMSDeformableAttention,
                                               spread_sampling_offsets)

__all__ = [
    'GatherRoIExtractor', 'roi_align_gather_indices',
    'PerLayerDeformableDetrTransformerEncoder', 'PerLayerDeformableDetrTransformerDecoder',
    'PerLayerDeformableDetrTransformerEncoderLayer', 'PerLayerDeformableDetrTransformerDecoderLayer',
    'SingleHeadMSDeformableAttention', 'resolve_layer_cfgs', 'spread_sampling_offsets'
]
