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
    """The compiled kernels (MMCV's and torchvision's) crash on them (segmentation fault), so the
    parent has no result to match; here they pool zeros and the other RoIs what the parent pools."""
    ref, gather = _extractors()
    feats, rois = _inputs(num_rois=20, seed=8)
    odd = rois.clone()
    odd[0, 3] = float('inf')
    odd[1, 2] = -float('inf')
    odd[2, 1:] = float('inf')
    got = gather(feats, odd)
    assert torch.isfinite(got).all() and not got[:3].any()
    torch.testing.assert_close(got[3:], ref(feats, rois[3:]), atol=1e-4, rtol=1e-4)


def test_single_level_inverted_rois_match_the_parent():
    ref, gather = _extractors(strides=(8, ))
    feats, rois = _inputs(num_rois=40, seed=9)
    odd = rois.clone()
    odd[:5, [1, 3]] = odd[:5, [3, 1]]  # inverted in x
    odd[5:9, [2, 4]] = odd[5:9, [4, 2]]  # inverted in y
    one = feats[1:2]
    torch.testing.assert_close(gather(one, odd), ref(one, odd), atol=1e-4, rtol=1e-4)


def test_single_level_ignores_roi_scale_factor_as_the_parent():
    ref, gather = _extractors(strides=(8, ))
    feats, rois = _inputs(num_rois=40, seed=9)
    one = feats[1:2]
    want = ref(one, rois, roi_scale_factor=2.0)
    torch.testing.assert_close(want, ref(one, rois))  # the parent does not rescale
    torch.testing.assert_close(gather(one, rois, roi_scale_factor=2.0), want,
                               atol=1e-4, rtol=1e-4)


def test_single_level_non_finite_rois_pool_zeros():
    """Undefined in the kernels (the parent calls them directly); zeros here, never an error."""
    _, gather = _extractors(strides=(8, ))
    feats, rois = _inputs(num_rois=20, seed=10)
    odd = rois.clone()
    odd[0, 1] = float('nan')
    odd[1, 4] = float('inf')
    one = feats[1:2]
    got = gather(one, odd)
    assert torch.isfinite(got).all() and not got[:2].any()
    torch.testing.assert_close(got[2:], gather(one, rois[2:]))


@pytest.mark.parametrize('index', [2, -1, float('nan')])
def test_batch_index_outside_the_batch_is_an_error(index):
    """The kernels would read outside the maps; the error names the index and the batch."""
    _, gather = _extractors()
    feats, rois = _inputs(num_rois=20, batch=2)
    bad = rois.clone()
    bad[3, 0] = index
    with pytest.raises(ValueError, match=rf'batch index {index:g} is outside the batch of 2'):
        gather(feats, bad)


def test_out_channels_unlike_the_maps_is_an_error():
    _, gather = _extractors()
    feats, rois = _inputs(num_rois=20)
    wide = [torch.cat([f, f], 1) for f in feats]
    with pytest.raises(ValueError, match=r'out_channels=16 but the feature maps have \[32\]'):
        gather(wide, rois)
    with pytest.raises(ValueError, match=r'out_channels=16 but the feature maps have \[16, 32\]'):
        gather([feats[0], wide[1]], rois)


def test_bf16_backward_accumulates_in_float32():
    """Many overlapping RoIs add their gradients into the same pixels: summed in bf16 the result
    stalls (off by over half the largest value); in float32 only the final rounding remains."""
    ref, gather = _extractors()
    feats, _ = _inputs(num_rois=1, seed=11)
    g = torch.Generator().manual_seed(4)
    num = 400
    xy = torch.rand(num, 2, generator=g) * 16 + 40
    rois = torch.cat([torch.zeros(num, 1), xy, xy + 24 + torch.rand(num, 2, generator=g) * 16], 1)
    assert (ref.map_roi_levels(rois, len(feats)) == 0).all()
    grad_out = torch.rand(num, 16, 7, 7, generator=torch.Generator().manual_seed(2))
    _, want = _value_and_grads(ref, feats, rois, grad_out)
    _, got = _value_and_grads(gather, [f.bfloat16() for f in feats], rois, grad_out.bfloat16())
    assert got[0].dtype == torch.bfloat16
    err = (got[0].float() - want[0]).abs().max()
    # one bf16 rounding of the result: about 2**-8 of the largest value
    assert err <= 2 ** -7 * want[0].abs().max(), err
