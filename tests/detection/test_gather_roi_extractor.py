"""GatherRoIExtractor: RoIAlign as one weighted gather gives the compiled kernels' values and
gradients, on every level, for RoIs inside, across and outside the maps."""
import pytest
import torch


def _extractors(aligned=True, use_torchvision=True, sampling_ratio=2, output_size=7,
                strides=(4, 8, 16, 32)):
    import shvit_mm  # noqa: F401  (registers GatherRoIExtractor)
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    cfg = dict(roi_layer=dict(type='RoIAlign', output_size=output_size,
                              sampling_ratio=sampling_ratio, aligned=aligned,
                              use_torchvision=use_torchvision),
               out_channels=16, featmap_strides=list(strides))
    return (MODELS.build(dict(type='SingleRoIExtractor', **cfg)),
            MODELS.build(dict(type='GatherRoIExtractor', **cfg)))


def _inputs(num_rois=200, batch=3, size=(72, 60), levels=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(batch, 16, size[0] // 2**i, size[1] // 2**i, generator=g)
             for i in range(levels)]
    img_h, img_w = size[0] * 4, size[1] * 4
    xy = torch.rand(num_rois, 2, generator=g) * torch.tensor([img_w + 40., img_h + 40.]) - 20
    # from sub-pixel to larger than the picture: every level gets RoIs, some leave the map
    wh = torch.rand(num_rois, 2, generator=g) ** 2 * 640 + 0.5
    index = torch.randint(0, batch, (num_rois, 1), generator=g).float()
    return feats, torch.cat([index, xy, xy + wh], 1)


def _value_and_grads(extractor, feats, rois, grad_out, **kwargs):
    feats = [f.clone().requires_grad_() for f in feats]
    out = extractor(feats, rois, **kwargs)
    (out * grad_out).sum().backward()
    return out.detach(), [f.grad for f in feats]


@pytest.mark.parametrize('aligned', [True, False], ids=['aligned', 'legacy'])
@pytest.mark.parametrize('kernel', [True, False], ids=['torchvision', 'mmcv'])
@pytest.mark.parametrize('output_size', [7, 14])
def test_matches_compiled_roi_align(aligned, kernel, output_size):
    ref, gather = _extractors(aligned, kernel, output_size=output_size)
    feats, rois = _inputs()
    levels = ref.map_roi_levels(rois, len(feats))
    assert all((levels == i).any() for i in range(4))  # every level is exercised
    grad_out = torch.randn(rois.shape[0], 16, output_size, output_size,
                           generator=torch.Generator().manual_seed(1))
    want, want_grads = _value_and_grads(ref, feats, rois, grad_out)
    got, got_grads = _value_and_grads(gather, feats, rois, grad_out)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)
    assert want.abs().sum() > 0 and all(w.abs().sum() > 0 for w in want_grads)


def test_channels_last_scale_factor_and_single_level():
    ref, gather = _extractors()
    feats, rois = _inputs(num_rois=60, seed=3)
    want = ref(feats, rois, roi_scale_factor=1.5)
    cl = [f.contiguous(memory_format=torch.channels_last) for f in feats]
    torch.testing.assert_close(gather(cl, rois, roi_scale_factor=1.5), want, atol=1e-4, rtol=1e-4)
    ref1, gather1 = _extractors(strides=(8, ))
    torch.testing.assert_close(gather1(feats[1:2], rois), ref1(feats[1:2], rois),
                               atol=1e-4, rtol=1e-4)


def test_no_rois_keeps_levels_in_the_graph():
    _, gather = _extractors()
    feats, rois = _inputs()
    feats = [f.requires_grad_() for f in feats]
    out = gather(feats, rois[:0])
    assert out.shape == (0, 16, 7, 7)
    out.sum().backward()  # every level receives a (zero) gradient, as with the parent class
    assert all(f.grad is not None and not f.grad.any() for f in feats)


def test_adaptive_sampling_falls_back_to_the_kernel():
    ref, gather = _extractors(sampling_ratio=0)
    feats, rois = _inputs(num_rois=40, seed=5)
    assert not gather._gather_applies(feats)
    torch.testing.assert_close(gather(feats, rois), ref(feats, rois))


# ------------------------------------------------------------------------------------------------
# edge cases: where SingleRoIExtractor is defined, the same result; where it is not, a clear error
# ------------------------------------------------------------------------------------------------
def _odd_rois(rois):
    odd = rois[:8].clone()
    odd[0, 1] = float('nan')
    odd[1, 1:] = float('nan')
    odd[2, [1, 3]] = odd[2, [3, 1]]  # inverted in x only: negative area
    odd[3, [2, 4]] = odd[3, [4, 2]]  # inverted in y only
    return torch.cat([odd, rois[8:20]])


def test_nan_and_inverted_rois_pool_what_the_parent_pools():
    ref, gather = _extractors()
    feats, rois = _inputs(num_rois=60, seed=7)
    odd = _odd_rois(rois)
    want, got = ref(feats, odd), gather(feats, odd)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert not want[:4].any()  # the parent maps these RoIs to no level


def test_infinite_rois_pool_zeros():
    """The compiled kernels (MMCV's and torchvision's) crash on them; here they pool zeros."""
    _, gather = _extractors()
    feats, rois = _inputs(num_rois=20, seed=8)
    odd = rois.clone()
    odd[0, 3] = float('inf')
    odd[1, 2] = -float('inf')
    got = gather(feats, odd)
    assert torch.isfinite(got).all() and not got[:2].any()
    torch.testing.assert_close(got[2:], gather(feats, rois[2:]))


def test_single_level_inverted_rois_and_ignored_scale_factor():
    ref, gather = _extractors(strides=(8, ))
    feats, rois = _inputs(num_rois=40, seed=9)
    odd = rois.clone()
    odd[:5, [1, 3]] = odd[:5, [3, 1]]
    one = feats[1:2]
    torch.testing.assert_close(gather(one, odd), ref(one, odd), atol=1e-4, rtol=1e-4)
    # with one level the parent does not rescale the RoIs
    torch.testing.assert_close(gather(one, rois, roi_scale_factor=2.0),
                               ref(one, rois, roi_scale_factor=2.0), atol=1e-4, rtol=1e-4)
    odd[5, 1] = float('nan')  # undefined in the kernels; zeros here, never an error
    assert torch.isfinite(gather(one, odd)).all() and not gather(one, odd)[5].any()


def test_rois_that_do_not_belong_to_the_maps_are_errors():
    _, gather = _extractors()
    feats, rois = _inputs(num_rois=20, batch=2)
    bad = rois.clone()
    bad[3, 0] = 2  # a third picture in a batch of two
    with pytest.raises(ValueError, match=r'batch index 2 is outside the batch of 2'):
        gather(feats, bad)
    bad[3, 0] = -1
    with pytest.raises(ValueError, match='outside the batch'):
        gather(feats, bad)
    wide = [torch.cat([f, f], 1) for f in feats]
    with pytest.raises(ValueError, match=r'out_channels=16 but the feature maps have \[32\]'):
        gather(wide, rois)


def test_bf16_backward_accumulates_in_float32():
    ref, gather = _extractors()
    feats, rois = _inputs(num_rois=300, seed=11)
    grad_out = torch.randn(rois.shape[0], 16, 7, 7, generator=torch.Generator().manual_seed(2))
    _, want = _value_and_grads(ref, feats, rois, grad_out)
    _, got = _value_and_grads(gather, [f.bfloat16() for f in feats], rois, grad_out.bfloat16())
    for g, w in zip(got, want):
        # one bf16 rounding of the result: about 2**-8 of the largest value, not whole percents
        assert (g.float() - w).abs().max() <= 2 ** -7 * w.abs().max(), (g.float() - w).abs().max()
