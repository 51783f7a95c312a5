"""Deformable DETR whose encoder/decoder layers may each have their own attention settings."""
from __future__ import annotations

import torch
from mmdet.models.detectors import DeformableDETR
from mmdet.models.layers import SinePositionalEncoding
from mmdet.registry import MODELS
from torch import nn

from ..layers.per_layer_deformable_transformer import (PerLayerDeformableDetrTransformerDecoder,
                                                        PerLayerDeformableDetrTransformerEncoder)


@MODELS.register_module()
class PerLayerDeformableDETR(DeformableDETR):
    """:class:`mmdet.models.DeformableDETR` with per-layer encoder/decoder configs.

    Identical to MMDetection's detector (forward, losses, parameter names, ``init_weights``)
    except that ``encoder`` and ``decoder`` are built through the registry, by default as
    :class:`PerLayerDeformableDetrTransformerEncoder` / ``...Decoder``, which accept
    ``layer_overrides`` (or a list ``layer_cfg``) and attention ``type`` s. A multi-head Deformable
    DETR checkpoint therefore loads into every layer whose shapes did not change.

    The SHViT paper's variant (Appendix C): one 64-channel head in the encoder self-attention and
    decoder cross-attention of layers 2-4 (``layer_ids=[1, 2, 3]``); see
    ``configs/deformable_detr/r50_single_head.py``.
    """

    def _init_layers(self) -> None:
        self.positional_encoding = SinePositionalEncoding(**self.positional_encoding)
        encoder = dict(self.encoder)
        encoder.setdefault('type', PerLayerDeformableDetrTransformerEncoder)
        decoder = dict(self.decoder)
        decoder.setdefault('type', PerLayerDeformableDetrTransformerDecoder)
        self.encoder = MODELS.build(encoder)
        self.decoder = MODELS.build(decoder)
        self.embed_dims = self.encoder.embed_dims
        if self.decoder.embed_dims != self.embed_dims:
            raise ValueError(f'encoder embed_dims ({self.embed_dims}) and decoder embed_dims '
                             f'({self.decoder.embed_dims}) must match')
        num_feats = self.positional_encoding.num_feats
        if num_feats * 2 != self.embed_dims:
            raise ValueError(f'positional_encoding.num_feats must be embed_dims / 2 = '
                             f'{self.embed_dims // 2}, got {num_feats}')
        # Same members (and names) as mmdet's DeformableDETR, so checkpoints map one to one.
        if not self.as_two_stage:
            # split into query and query_pos in pre_decoder, hence 2 * embed_dims
            self.query_embedding = nn.Embedding(self.num_queries, self.embed_dims * 2)
        self.level_embed = nn.Parameter(torch.Tensor(self.num_feature_levels, self.embed_dims))
        if self.as_two_stage:
            self.memory_trans_fc = nn.Linear(self.embed_dims, self.embed_dims)
            self.memory_trans_norm = nn.LayerNorm(self.embed_dims)
            self.pos_trans_fc = nn.Linear(self.embed_dims * 2, self.embed_dims * 2)
            self.pos_trans_norm = nn.LayerNorm(self.embed_dims * 2)
        else:
            self.reference_points_fc = nn.Linear(self.embed_dims, 2)
