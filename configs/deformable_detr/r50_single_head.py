# Deformable DETR, ResNet-50, with single-head attention (one head of 64 channels) in the encoder
# self-attention and decoder cross-attention of layers 2-4 of 6 (SHViT paper, Appendix C); the rest
# is r50.py. A multi-head checkpoint (e.g. from r50.py) loads with `load_from`: all but the 7
# shape-changed tensors of each single-head module, which MMEngine reports and leaves initialised.
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
