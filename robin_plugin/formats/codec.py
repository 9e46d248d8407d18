"""Pure functions that code 0/1 masks and signs compactly, with exact inverses.

A mask of ``n`` entries keeping ``kept`` of them carries at most ``n * H(kept / n)`` bits of
information (H the binary entropy). Two codings get close to that bound in different regimes:

- ``bits``: one bit per entry (``pack_bits``). Best when about half the entries are kept.
- ``rice``: the gaps between consecutive kept positions (run lengths of zeros), each coded
  with a Golomb-Rice code of parameter ``b``: the quotient ``gap >> b`` in unary and the
  remainder in ``b`` plain bits. For a random mask the gaps are geometric and a Rice code with
  the best ``b`` is within a few percent of the entropy. The unary parts and the fixed-width
  remainders are stored as two separate bit streams (same total length as the interleaved
  code), so both directions are vectorised numpy, never a Python loop over entries.
- ``rice_zeros``: the same for the positions of the *pruned* entries (masks keeping more than
  half of a layer).
- ``all``: every entry kept; nothing to store.

:func:`encode_mask` tries them all and returns the smallest; :func:`decode_mask` inverts it and
checks every invariant (lengths, counts, padding bits, positions in range), so corrupted data
raises :class:`CodecError` instead of decoding into a wrong mask. Bits are packed in
little-endian bit order (entry ``i`` is bit ``i % 8`` of byte ``i // 8``).
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import RobinError

__all__ = [
    "CODINGS",
    "CodecError",
    "pack_bits",
    "unpack_bits",
    "positions_to_gaps",
    "gaps_to_positions",
    "rice_cost_bits",
    "best_rice_parameter",
    "rice_encode",
    "rice_decode",
    "encode_mask",
    "decode_mask",
    "mask_entropy_bits",
]

CODINGS = ("all", "bits", "rice", "rice_zeros")
"""Mask codings, see the module docstring."""

_MAX_RICE_B = 62  # remainders must fit an int64


class CodecError(RobinError, ValueError):
    """Coded data is inconsistent (wrong length, count, padding or range): corrupt or foreign."""


def _nbytes(nbits: int) -> int:
    return (nbits + 7) // 8


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Pack a flat array of 0/1 (or bool) into bytes, 8 entries per byte, little-endian bits.

    Args:
        bits: 1-D array of ``n`` values in {0, 1} (any integer or bool dtype).

    Returns:
        uint8 array of ``ceil(n / 8)`` bytes; the unused high bits of the last byte are 0.
    """
    bits = np.asarray(bits)
    if bits.ndim != 1:
        raise CodecError(f"pack_bits expects a 1-D array, got shape {bits.shape}")
    if bits.dtype != np.bool_:
        if bits.size and (bits.min() < 0 or bits.max() > 1):
            raise CodecError("pack_bits expects values in {0, 1}")
        bits = bits.astype(np.bool_)
    return np.packbits(bits, bitorder="little")


def unpack_bits(data: np.ndarray, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: the first ``count`` bits of ``data`` as a bool array.

    Raises:
        CodecError: if ``data`` is not exactly ``ceil(count / 8)`` bytes or a padding bit is set.
    """
    data = np.asarray(data, dtype=np.uint8).reshape(-1)
    if count < 0 or data.size != _nbytes(count):
        raise CodecError(f"bit-packed data of {count} entries needs {_nbytes(max(count, 0))} bytes, got {data.size}")
    bits = np.unpackbits(data, bitorder="little")
    if bits[count:].any():
        raise CodecError("padding bits after the last entry are not zero")
    return bits[:count].astype(np.bool_)


def positions_to_gaps(positions: np.ndarray) -> np.ndarray:
    """Gaps (zero-run lengths) before each position: ``g_0 = p_0``, ``g_i = p_i - p_{i-1} - 1``.

    Args:
        positions: strictly increasing non-negative int64 indices.
    """
    positions = np.asarray(positions, dtype=np.int64)
    if positions.size == 0:
        return positions.copy()
    gaps = np.diff(positions, prepend=-1) - 1
    if gaps.min() < 0:
        raise CodecError("positions must be strictly increasing and >= 0")
    return gaps


def gaps_to_positions(gaps: np.ndarray, n: int) -> np.ndarray:
    """Inverse of :func:`positions_to_gaps`; checks that every position is below ``n``."""
    gaps = np.asarray(gaps, dtype=np.int64)
    if gaps.size and gaps.min() < 0:
        raise CodecError("gaps must be >= 0")
    positions = np.cumsum(gaps + 1) - 1
    if positions.size and positions[-1] >= n:
        raise CodecError(f"decoded position {int(positions[-1])} is outside a layer of {n} entries")
    return positions


def rice_cost_bits(values: np.ndarray, b: int) -> int:
    """Length in bits of the Rice code of ``values`` (non-negative ints) with parameter ``b``."""
    values = np.asarray(values, dtype=np.int64)
    return int((values >> b).sum()) + values.size * (1 + b)


def best_rice_parameter(values: np.ndarray) -> int:
    """The Rice parameter ``b`` in [0, 62] giving the shortest code of ``values``."""
    values = np.asarray(values, dtype=np.int64)
    if values.size == 0:
        return 0
    top = min(_MAX_RICE_B, int(values.max()).bit_length())
    costs = [rice_cost_bits(values, b) for b in range(top + 1)]
    return int(np.argmin(costs))


def rice_encode(values: np.ndarray, b: int) -> np.ndarray:
    """Rice-code non-negative integers: unary quotients, then fixed-width remainders.

    Layout: stream 1 holds, for each value, ``value >> b`` zeros followed by a one, packed and
    padded to whole bytes; stream 2 holds the ``b`` low bits of each value (least significant
    first), packed and padded. The result is stream 1 followed by stream 2.

    Args:
        values: 1-D int64 array, every entry >= 0.
        b: Rice parameter in [0, 62].

    Returns:
        uint8 array of ``ceil(sum(q_i + 1) / 8) + ceil(len(values) * b / 8)`` bytes.
    """
    values = np.asarray(values, dtype=np.int64)
    if not 0 <= b <= _MAX_RICE_B:
        raise CodecError(f"Rice parameter must be in [0, {_MAX_RICE_B}], got {b}")
    if values.size and values.min() < 0:
        raise CodecError("Rice coding needs non-negative integers")
    q = values >> b
    ends = np.cumsum(q + 1) - 1  # position of each terminating one
    unary = np.zeros(int(ends[-1]) + 1 if values.size else 0, dtype=np.bool_)
    unary[ends] = True
    rem_bits = ((values[:, None] >> np.arange(b, dtype=np.int64)) & 1).astype(np.bool_).reshape(-1)
    return np.concatenate([np.packbits(unary, bitorder="little"), np.packbits(rem_bits, bitorder="little")])


def rice_decode(data: np.ndarray, count: int, b: int) -> np.ndarray:
    """Inverse of :func:`rice_encode` for ``count`` values; rejects any inconsistent input."""
    data = np.asarray(data, dtype=np.uint8).reshape(-1)
    if not 0 <= b <= _MAX_RICE_B:
        raise CodecError(f"Rice parameter must be in [0, {_MAX_RICE_B}], got {b}")
    if count < 0:
        raise CodecError(f"value count must be >= 0, got {count}")
    rem_nbytes = _nbytes(count * b)
    unary_nbytes = data.size - rem_nbytes
    if unary_nbytes < _nbytes(count):
        raise CodecError(f"Rice data of {data.size} bytes is too short for {count} values with b={b}")
    unary = np.unpackbits(data[:unary_nbytes], bitorder="little")
    ends = np.flatnonzero(unary)
    if ends.size != count:
        raise CodecError(f"Rice data holds {ends.size} values, expected {count}")
    if _nbytes(int(ends[-1]) + 1 if count else 0) != unary_nbytes:
        raise CodecError("Rice data has trailing bytes after the last value")
    q = np.diff(ends, prepend=-1) - 1
    if b:
        rem = unpack_bits(data[unary_nbytes:], count * b).reshape(count, b).astype(np.int64)
        r = (rem << np.arange(b, dtype=np.int64)).sum(axis=1)
    else:
        r = np.zeros(count, dtype=np.int64)
    if count and int(q.max()) >= (1 << (_MAX_RICE_B - b)):
        raise CodecError("Rice quotient overflows int64")
    return (q.astype(np.int64) << b) | r


def encode_mask(mask: np.ndarray) -> tuple[str, int, np.ndarray]:
    """Code a flat 0/1 mask with the smallest of :data:`CODINGS`.

    Args:
        mask: 1-D bool (or 0/1) array of ``n`` entries with at least one entry kept.

    Returns:
        ``(coding, param, data)``: the coding name, its parameter (Rice ``b``; 0 otherwise) and
        the coded bytes (uint8). :func:`decode_mask` with ``n`` and the kept count inverts it.
    """
    mask = np.asarray(mask).reshape(-1).astype(np.bool_)
    n, kept = mask.size, int(mask.sum())
    if kept == n:
        return "all", 0, np.zeros(0, dtype=np.uint8)
    best: tuple[str, int, np.ndarray] = ("bits", 0, pack_bits(mask))
    for coding, selected in (("rice", mask), ("rice_zeros", ~mask)):
        gaps = positions_to_gaps(np.flatnonzero(selected))
        b = best_rice_parameter(gaps)
        if _nbytes(rice_cost_bits(gaps, b)) + 1 < best[2].size:  # +1: padding of two streams
            data = rice_encode(gaps, b)
            if data.size < best[2].size:
                best = (coding, b, data)
    return best


def decode_mask(coding: str, param: int, data: np.ndarray, n: int, kept: int) -> np.ndarray:
    """Inverse of :func:`encode_mask`: the flat bool mask of ``n`` entries with ``kept`` ones.

    Raises:
        CodecError: on an unknown coding or any inconsistency between data, ``n`` and ``kept``.
    """
    if not (isinstance(n, int) and isinstance(kept, int) and 1 <= kept <= n):
        raise CodecError(f"need integers 1 <= kept <= n, got kept={kept!r}, n={n!r}")
    data = np.asarray(data, dtype=np.uint8).reshape(-1)
    if coding == "all":
        if kept != n or data.size:
            raise CodecError(f"coding 'all' needs kept == n and no data, got kept={kept}, n={n}, {data.size} bytes")
        return np.ones(n, dtype=np.bool_)
    if coding == "bits":
        mask = unpack_bits(data, n)
    elif coding in ("rice", "rice_zeros"):
        count = kept if coding == "rice" else n - kept
        if not isinstance(param, int):
            raise CodecError(f"Rice parameter must be an integer, got {param!r}")
        positions = gaps_to_positions(rice_decode(data, count, param), n)
        mask = np.zeros(n, dtype=np.bool_)
        mask[positions] = True
        if coding == "rice_zeros":
            mask = ~mask
    else:
        raise CodecError(f"unknown mask coding {coding!r}; valid: {', '.join(CODINGS)}")
    if int(mask.sum()) != kept:
        raise CodecError(f"decoded mask keeps {int(mask.sum())} entries, expected {kept}")
    return mask


def mask_entropy_bits(n: int, kept: int) -> float:
    """Information bound of a mask keeping ``kept`` of ``n`` entries: ``n * H(kept / n)`` bits."""
    k = kept / n
    if k <= 0.0 or k >= 1.0:
        return 0.0
    return n * (-k * math.log2(k) - (1.0 - k) * math.log2(1.0 - k))
