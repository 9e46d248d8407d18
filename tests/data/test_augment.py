"""Batch crop-and-flip: identities, the padded-window read and write, a slow per-sample reference, determinism, errors."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robin_plugin.data import CropFlip, apply_crop_flip, put_crop_flip, sample_crop_flip, take_crop_flip, to_float
from robin_plugin.errors import ConfigError, InputError

_SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def batch_and_params(draw, dtype: torch.dtype = torch.float32):
    """A random (N, C, H, W) batch and CropFlip params (pad possibly larger than the image)."""
    n, c = draw(st.integers(0, 4)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    pad = draw(st.integers(0, 9))
    seed = draw(st.integers(0, 2**31))
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        x = torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
    else:
        x = torch.randn(n, c, h, w, generator=g, dtype=dtype)
    params = sample_crop_flip(n, pad, g, flip=draw(st.booleans()))
    return x, params


def reference_crop_flip(x: torch.Tensor, params: CropFlip, fill: float = 0.0) -> torch.Tensor:
    """Slow per-sample torchvision-style reference: pad, slice, flip."""
    p = params.pad
    out = []
    for k in range(x.shape[0]):
        img = torch.nn.functional.pad(x[k], (p, p, p, p), value=fill)  # (C, H + 2p, W + 2p)
        dy, dx = int(params.dy[k]), int(params.dx[k])
        crop = img[:, dy: dy + x.shape[2], dx: dx + x.shape[3]]
        out.append(crop.flip(-1) if bool(params.flip[k]) else crop)
    return torch.stack(out) if out else x.clone()


@_SETTINGS
@given(batch_and_params())
def test_apply_matches_reference(bp):
    x, params = bp
    out = apply_crop_flip(x, params)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out, reference_crop_flip(x, params))


@_SETTINGS
@given(batch_and_params(torch.uint8))
def test_apply_matches_reference_uint8(bp):
    x, params = bp
    assert torch.equal(apply_crop_flip(x, params), reference_crop_flip(x, params))


@_SETTINGS
@given(batch_and_params())
def test_pad_zero_no_flip_is_identity(bp):
    x, _ = bp
    n = x.shape[0]
    params = sample_crop_flip(n, 0, torch.Generator().manual_seed(0), flip=False)
    assert torch.equal(apply_crop_flip(x, params), x)
    # centred crop (dy = dx = pad) without flip is the identity too, for any pad
    params = CropFlip(torch.full((n,), 3), torch.full((n,), 3), torch.zeros(n, dtype=torch.bool), 3)
    assert torch.equal(apply_crop_flip(x, params), x)


@_SETTINGS
@given(batch_and_params(), st.sampled_from([0.0, 0.5]))
def test_fill_matches_reference(bp, fill):
    x, params = bp
    assert torch.equal(apply_crop_flip(x, params, fill), reference_crop_flip(x, params, fill))


@_SETTINGS
@given(batch_and_params())
def test_take_reads_what_apply_shows(bp):
    x, params = bp
    p = params.pad
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    assert torch.equal(take_crop_flip(padded, params, x.shape[2], x.shape[3]), apply_crop_flip(x, params))


@_SETTINGS
@given(batch_and_params())
def test_put_writes_where_take_reads(bp):
    """A window written back lands where the crop read it; every other padded pixel keeps its value."""
    x, params = bp
    n, c, h, w = x.shape
    p = params.pad
    g = torch.Generator().manual_seed(3)
    padded = torch.randn(n, c, h + 2 * p, w + 2 * p, generator=g) + 100
    window = torch.randn(n, c, h, w, generator=g)
    out = put_crop_flip(padded, params, window)
    assert torch.equal(take_crop_flip(out, params, h, w), window)
    seen = put_crop_flip(torch.zeros_like(padded), params, torch.ones_like(window)).bool()
    assert torch.equal(out[~seen], padded[~seen])
    assert int(seen.sum()) == window.numel()  # crop and flip move each pixel to a distinct place
    assert torch.equal(put_crop_flip(padded, params, take_crop_flip(padded, params, h, w)), padded)


def test_sample_offsets_limit_the_crop_positions():
    p = sample_crop_flip(4000, 4, torch.Generator().manual_seed(0), offsets=8)  # the official fast attack's draw
    assert set(p.dy.tolist()) == set(range(8)) and set(p.dx.tolist()) == set(range(8))
    with pytest.raises(ConfigError, match="offsets"):
        sample_crop_flip(2, 4, offsets=10)


@_SETTINGS
@given(st.integers(0, 50), st.integers(0, 6), st.integers(0, 2**31), st.booleans())
def test_sample_deterministic(n, pad, seed, flip):
    a = sample_crop_flip(n, pad, torch.Generator().manual_seed(seed), flip)
    b = sample_crop_flip(n, pad, torch.Generator().manual_seed(seed), flip)
    for name in ("dy", "dx", "flip"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert a.pad == pad and len(a) == n
    assert a.dy.dtype == torch.int64 and a.flip.dtype == torch.bool
    if n:
        assert 0 <= int(a.dy.min()) and int(a.dx.max()) <= 2 * pad
    if not flip:
        assert not a.flip.any()


def test_sample_covers_range_and_flips_half():
    p = sample_crop_flip(4000, 4, torch.Generator().manual_seed(0))
    assert set(p.dy.tolist()) == set(range(9)) and set(p.dx.tolist()) == set(range(9))
    assert 0.45 < p.flip.float().mean() < 0.55


def test_flip_only_mirrors():
    x = torch.arange(12.0).view(1, 1, 3, 4)
    params = CropFlip(torch.tensor([0]), torch.tensor([0]), torch.tensor([True]), 0)
    assert torch.equal(apply_crop_flip(x, params), x.flip(-1))


def test_shift_fills_zeros():
    x = torch.ones(1, 2, 4, 4, dtype=torch.uint8)
    params = CropFlip(torch.tensor([0]), torch.tensor([4]), torch.tensor([False]), 2)
    out = apply_crop_flip(x, params)  # 2 rows of padding on top, image shifted left by 2
    assert out[:, :, :2].sum() == 0 and out[:, :, 2:, :2].eq(1).all() and out[:, :, 2:, 2:].sum() == 0


def test_errors():
    with pytest.raises(ConfigError, match="pad"):
        sample_crop_flip(2, -1)
    with pytest.raises(ConfigError, match="n must be"):
        sample_crop_flip(-2, 1)
    with pytest.raises(ConfigError, match=r"\[0, 2\]"):
        CropFlip(torch.tensor([3]), torch.tensor([0]), torch.tensor([False]), 1)
    with pytest.raises(ConfigError, match="same length"):
        CropFlip(torch.tensor([0, 0]), torch.tensor([0]), torch.tensor([False]), 1)
    with pytest.raises(ConfigError, match="bool"):
        CropFlip(torch.tensor([0]), torch.tensor([0]), torch.tensor([0]), 1)
    params = sample_crop_flip(2, 1)
    with pytest.raises(InputError, match="3 samples"):
        apply_crop_flip(torch.zeros(3, 1, 4, 4), params)
    with pytest.raises(InputError, match=r"\(N, C, H, W\)"):
        apply_crop_flip(torch.zeros(2, 4, 4), params)
    with pytest.raises(InputError, match="padded to"):
        take_crop_flip(torch.zeros(2, 1, 5, 5), params, 4, 4)
    with pytest.raises(InputError, match="padded to"):
        put_crop_flip(torch.zeros(2, 1, 5, 5), params, torch.zeros(2, 1, 4, 4))


def test_to_float():
    x = torch.tensor([0, 128, 255], dtype=torch.uint8)
    y = to_float(x)
    assert y.dtype == torch.float32 and y[0] == 0 and y[2] == 1
    f = torch.rand(3)
    assert to_float(f) is f
    with pytest.raises(InputError):
        to_float(torch.zeros(3, dtype=torch.int64))
