# Deformable DETR, ResNet-50, with single-head attention (SHViT paper, Appendix C, Table 9:
# 37.1 M parameters, 31.4 FPS (+24%), 43.1 AP).
#
# Layers 2, 3 and 4 of the 6-layer encoder (self-attention) and decoder (cross-attention) use one
# head of 64 channels: the value is projected 256 -> 64, sampled/weighted by a single head, projected
# back to 256. Layers 1, 5 and 6 keep MMCV's 8 heads of 32 channels; the decoder's own self-attention
# stays a standard 8-head MultiheadAttention. `layer_ids` count from 0, so [1, 2, 3] = layers 2-4.
# Everything else (backbone, neck, head, data pipeline, AdamW schedule, 50 epochs) is MMDetection's
# Deformable DETR recipe, as in r50.py.
#
# Starting from a multi-head checkpoint (e.g. one trained with r50.py): `load_from = 'ckpt.pth'`
# loads every tensor except 7 in each of the 6 single-head modules (sampling_offsets,
# attention_weights and value_proj weight+bias, output_proj weight), whose shapes differ: MMEngine
# logs them as size mismatches and they keep their initialisation (output_proj.bias does load).
_base_ = './r50.py'

single_head_layers = [1, 2, 3]  # 0-based: the paper's layers 2, 3 and 4 of 6
single_head_attn = dict(type='SingleHeadMSDeformableAttention', num_heads=1, head_dims=64)

model = dict(
    type='PerLayerDeformableDETR',
    encoder=dict(layer_overrides=[
        dict(layer_ids=single_head_layers, self_attn_cfg=single_head_attn)
    ]),
    decoder=dict(layer_overrides=[
        dict(layer_ids=single_head_layers, cross_attn_cfg=single_head_attn)
    ]))
