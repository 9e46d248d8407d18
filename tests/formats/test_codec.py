"""Round-trip and corruption tests of the pure mask / sign codecs."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from robin_plugin.errors import RobinError
from robin_plugin.formats.codec import (
    CodecError,
    best_rice_parameter,
    decode_mask,
    encode_mask,
    gaps_to_positions,
    mask_entropy_bits,
    pack_bits,
    positions_to_gaps,
    rice_cost_bits,
    rice_decode,
    rice_encode,
    unpack_bits,
)


@st.composite
def masks(draw, max_n: int = 3000) -> np.ndarray:
    n = draw(st.integers(1, max_n))
    kind = draw(st.sampled_from(["random", "sparse", "dense", "blocks"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "random":
        m = rng.random(n) < draw(st.floats(0.0, 1.0))
    elif kind == "sparse":
        m = np.zeros(n, bool)
        m[rng.choice(n, draw(st.integers(1, max(1, n // 50))), replace=False)] = True
    elif kind == "dense":
        m = np.ones(n, bool)
        m[rng.choice(n, draw(st.integers(0, max(0, n // 50))), replace=False)] = False
    else:  # structured: whole runs kept, like kernels kept together
        m = np.repeat(rng.random(n // 9 + 1) < 0.1, 9)[:n]
    if not m.any():
        m[rng.integers(n)] = True
    return m


@given(st.lists(st.booleans(), max_size=200))
def test_pack_bits_round_trip(bits):
    arr = np.array(bits, dtype=bool)
    packed = pack_bits(arr)
    assert packed.dtype == np.uint8 and packed.size == (len(bits) + 7) // 8
    assert np.array_equal(unpack_bits(packed, len(bits)), arr)


@given(st.lists(st.integers(0, 10**6), max_size=300), st.integers(0, 25))
def test_rice_round_trip(values, b):
    v = np.array(values, dtype=np.int64)
    data = rice_encode(v, b)
    assert data.size == (int((v >> b).sum()) + v.size + 7) // 8 + (v.size * b + 7) // 8
    assert np.array_equal(rice_decode(data, v.size, b), v)


@given(st.lists(st.integers(0, 5000), max_size=200))
def test_best_rice_parameter_is_optimal(values):
    v = np.array(values, dtype=np.int64)
    b = best_rice_parameter(v)
    assert all(rice_cost_bits(v, b) <= rice_cost_bits(v, c) for c in range(0, 20))


@given(masks())
def test_mask_round_trip_and_smallest(mask):
    coding, param, data = encode_mask(mask)
    n, kept = mask.size, int(mask.sum())
    assert np.array_equal(decode_mask(coding, param, data, n, kept), mask)
    assert data.size <= (n + 7) // 8  # never worse than one bit per entry


@given(masks())
def test_gaps_round_trip(mask):
    pos = np.flatnonzero(mask)
    assert np.array_equal(gaps_to_positions(positions_to_gaps(pos), mask.size), pos)


@pytest.mark.parametrize("k", [0.005, 0.01, 0.05, 0.1, 0.3, 0.5, 0.9])
def test_random_masks_are_near_the_entropy_bound(k):
    rng = np.random.default_rng(0)
    n = 200_000
    m = np.zeros(n, bool)
    m[rng.choice(n, round(k * n), replace=False)] = True
    _, _, data = encode_mask(m)
    assert 8 * data.size <= 1.05 * mask_entropy_bits(n, int(m.sum())) + 16


@given(masks(max_n=500), st.data())
def test_corrupted_mask_data_never_decodes_silently_wrong(mask, data):
    coding, param, coded = encode_mask(mask)
    if coded.size == 0:
        return
    bad = coded.copy()
    i = data.draw(st.integers(0, bad.size - 1))
    bad[i] ^= np.uint8(1 << data.draw(st.integers(0, 7)))
    try:
        out = decode_mask(coding, param, bad, mask.size, int(mask.sum()))
    except CodecError:
        return
    # a flip can only survive if it still describes a valid mask of the same count; the
    # compact file's checksum catches those, the codec guarantees shape and count
    assert out.shape == mask.shape and int(out.sum()) == int(mask.sum())


def test_codec_errors_are_typed():
    with pytest.raises(CodecError):
        unpack_bits(np.zeros(2, np.uint8), 20)
    with pytest.raises(CodecError):
        unpack_bits(np.array([0b1000_0000], np.uint8), 3)  # padding bit set
    with pytest.raises(CodecError, match="unknown mask coding"):
        decode_mask("zip", 0, np.zeros(1, np.uint8), 8, 1)
    with pytest.raises(CodecError):
        decode_mask("rice", 2, np.zeros(0, np.uint8), 100, 3)
    with pytest.raises(CodecError):
        rice_decode(np.array([0xFF, 0x00], np.uint8), 3, 0)  # 8 values, not 3
    with pytest.raises(CodecError):
        gaps_to_positions(np.array([5, 5]), 8)
    assert issubclass(CodecError, RobinError) and issubclass(CodecError, ValueError)
    with pytest.raises(CodecError):
        pack_bits(np.array([0, 2]))
