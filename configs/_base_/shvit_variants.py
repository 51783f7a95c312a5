# SHViT-S1..S4 as the COCO and ADE20K configs use them: the backbone with the official ImageNet-1k
# weights, and its stage widths (what a neck reads). A config picks one with MMEngine's
# base-variable access, e.g. `backbone=_base_.shvit_variants.s1.backbone`; `shvit_variants` is the
# one top-level key this base adds to a config.
shvit_variants = {
    arch: dict(
        channels=channels,
        backbone=dict(
            type='SHViT', arch=arch, out_indices=(0, 1, 2), frozen_stages=-1,
            norm_eval=True,  # BN statistics frozen, affine parameters trained
            init_cfg=dict(type='Pretrained', checkpoint='https://github.com/ysj9909/SHViT/releases/'
                          f'download/v1.0/shvit_{arch}.pth')))
    for arch, channels in (('s1', [128, 224, 320]), ('s2', [128, 308, 448]),
                           ('s3', [192, 352, 448]), ('s4', [224, 336, 448]))}
