"""The deploy kernels: one function per operation kind, over the padded-grid layout.

Activations live in a *padded-grid* layout (:class:`Grid`): a ``(C, N * (H + 2P) * (W + 2P))``
matrix whose border entries are exactly zero. A k x k convolution with "same" padding is then a
sum over its k * k taps of ``W_tap @ X[:, shift_tap:]``, where ``W_tap`` is the (C_out, C_in)
slice of the masked weight at that tap, stored as a CSR sparse matrix, and ``X[:, shift_tap:]``
is a *view* of the activations shifted by the tap's offset: no im2col matrix is materialised,
and the cost is the kept multiply-adds (plus the padding border). Strided convolutions gather
their input at the output positions, tap by tap.

Each kernel takes the operation's parameters, its argument values and the interior-mask cache;
values are tensors or :class:`Grid` objects, and a kernel converts between the two layouts when
it must. :data:`KERNELS` maps each operation kind to its kernel.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from ...formats.deploy import DeployError

__all__ = ["IN_MEMORY_ONLY", "KERNELS", "REF", "Grid", "InteriorMasks", "plain"]


class Grid:
    """Activations (C, N * Hp * Wp) in the padded-grid layout, zero outside each H x W interior."""

    __slots__ = ("data", "n", "h", "w", "pad")

    def __init__(self, data: torch.Tensor, n: int, h: int, w: int, pad: int):
        self.data, self.n, self.h, self.w, self.pad = data, n, h, w, pad

    @property
    def channels(self) -> int:
        return self.data.shape[0]

    def view4d(self) -> torch.Tensor:  # (C, N, Hp, Wp)
        p = self.pad
        return self.data.view(self.channels, self.n, self.h + 2 * p, self.w + 2 * p)

    def to_nchw(self) -> torch.Tensor:
        p = self.pad
        return self.view4d()[:, :, p:p + self.h, p:p + self.w].permute(1, 0, 2, 3).contiguous()


def _pack(x: torch.Tensor, pad: int) -> Grid:
    """(N, C, H, W) -> padded grid (C, N*(H+2p)*(W+2p)), zero borders."""
    n, c, h, w = x.shape
    data = F.pad(x, (pad, pad, pad, pad)).transpose(0, 1).reshape(c, -1)
    return Grid(data, n, h, w, pad)


def _pack_cnhw(x: torch.Tensor, pad: int) -> Grid:
    """(C, N, H, W) -> padded grid."""
    c, n, h, w = x.shape
    return Grid(F.pad(x, (pad, pad, pad, pad)).reshape(c, -1), n, h, w, pad)


class InteriorMasks:
    """Cached 0/1 masks (length N*Hp*Wp) that are 1 inside each image's H x W interior."""

    def __init__(self) -> None:
        self._cache: dict[tuple, torch.Tensor] = {}

    def get(self, g: Grid, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        key = (g.n, g.h, g.w, g.pad, dtype, device)
        m = self._cache.get(key)
        if m is None:
            p = g.pad
            m = torch.zeros(g.n, g.h + 2 * p, g.w + 2 * p, dtype=dtype, device=device)
            m[:, p:p + g.h, p:p + g.w] = 1
            m = m.reshape(-1)
            if len(self._cache) > 32:
                self._cache.clear()
            self._cache[key] = m
        return m


# --- the kernels: one function per operation kind -------------------------------------------------


def _as_grid(v: Any, pad: int) -> Grid:
    if isinstance(v, Grid):
        if v.pad == pad:
            return v
        v = v.to_nchw()
    if not isinstance(v, torch.Tensor) or v.dim() != 4:
        raise DeployError(f"a convolution got {type(v).__name__} {tuple(getattr(v, 'shape', ()))}, expected (N, C, H, W)")
    return _pack(v, pad)


def plain(v: Any) -> Any:
    return v.to_nchw() if isinstance(v, Grid) else v


def _k_sparse_conv(p: dict[str, Any], x: Any, interior: InteriorMasks) -> Grid:
    """Sum over taps of CSR (C_out, C_in) @ shifted input; then bias, ReLU, zero borders."""
    g = _as_grid(x, p["pad"])
    if p["stride"] > 1:
        return _strided_sparse_conv(p, g, interior)
    pad, wp = g.pad, g.w + 2 * g.pad
    data = g.data
    total = data.shape[1]
    margin = pad * wp + pad  # every position before/after this is a border position
    length = total - 2 * margin
    # the output grid; the taps accumulate into its core in place (addmm_ into a view: no temporary,
    # no copy into a padded tensor); the first tap overwrites (beta=0), so only the margins need zeros
    out = data.new_empty(p["cout"], total)
    out[:, :margin].zero_()
    out[:, total - margin:].zero_()
    core = out[:, margin:total - margin]
    if not p["weights"]:
        core.zero_()
    for i, ((dy, dx), w) in enumerate(zip(p["taps"], p["weights"])):
        shift = margin + dy * wp + dx
        core.addmm_(w, data[:, shift:shift + length], beta=0 if i == 0 else 1)
    _bias_relu(core, p)
    core.mul_(interior.get(g, out.dtype, out.device)[margin:total - margin])
    return Grid(out, g.n, g.h, g.w, pad)


def _strided_sparse_conv(p: dict[str, Any], g: Grid, interior: InteriorMasks) -> Grid:
    """Stride s > 1: each tap gathers the input at the output positions only (a (C_in, N*Ho*Wo)
    copy), so the multiply-adds are those of the output size, not s*s times more."""
    s, pad = p["stride"], g.pad
    ho, wo = (g.h - 1) // s + 1, (g.w - 1) // s + 1
    grid = g.view4d()
    out = g.data.new_empty(p["cout"], g.n * ho * wo)
    if not p["weights"]:
        out.zero_()
    for i, ((dy, dx), w) in enumerate(zip(p["taps"], p["weights"])):
        y0, x0 = pad + dy, pad + dx
        xs = grid[:, :, y0:y0 + s * (ho - 1) + 1:s, x0:x0 + s * (wo - 1) + 1:s].reshape(g.channels, -1)
        out.addmm_(w, xs, beta=0 if i == 0 else 1)
    _bias_relu(out, p)
    return _pack_cnhw(out.view(p["cout"], g.n, ho, wo), pad)


def _bias_relu(t: torch.Tensor, p: dict[str, Any]) -> None:
    if p["bias"] is not None:
        t.add_(p["bias"][:, None])
    if p["relu"]:
        t.relu_()


def _k_dense_conv(p: dict[str, Any], x: Any, interior: InteriorMasks) -> Any:
    """An ordinary convolution; with ``alt``, its sparse form when the input is small (batch 1)."""
    alt = p.get("alt")
    if alt is not None:
        n, h, w = (x.n, x.h, x.w) if isinstance(x, Grid) else (x.shape[0], x.shape[-2], x.shape[-1])
        if n * h * w <= p["alt_positions"]:
            return _k_sparse_conv(alt, x, interior)
    y = F.conv2d(plain(x), p["weight"], p["bias"], p["stride"], p["padding"], p["dilation"], p["groups"])
    return torch.relu_(y) if p["relu"] else y


def _k_affine2d(p: dict[str, Any], x: Any, interior: InteriorMasks) -> Any:
    if isinstance(x, Grid):
        data = torch.addcmul(p["shift"][:, None], x.data, p["scale"][:, None])
        data.mul_(interior.get(x, data.dtype, data.device))
        return Grid(data, x.n, x.h, x.w, x.pad)
    return x * p["scale"].view(1, -1, 1, 1) + p["shift"].view(1, -1, 1, 1)


def _k_relu(p: dict[str, Any], x: Any, interior: InteriorMasks) -> Any:
    if isinstance(x, Grid):  # relu(0) = 0: borders stay zero
        return Grid(torch.relu(x.data), x.n, x.h, x.w, x.pad)
    return torch.relu(x)


def _k_add(p: dict[str, Any], a: Any, b: Any, interior: InteriorMasks) -> Any:
    """``a + b``, and with ``relu`` the ReLU after it, in place on the fresh sum. With one value in
    each layout, the sum is made in the layout its readers use (``grid``: a sparse convolution
    reads it), so that no layout goes back and forth."""
    if isinstance(a, Grid) and isinstance(b, Grid) and a.pad == b.pad and a.data.shape == b.data.shape:
        out = a.data + b.data
        return Grid(out.relu_() if p["relu"] else out, a.n, a.h, a.w, a.pad)
    if isinstance(a, Grid) != isinstance(b, Grid) and p["grid"]:
        g = a if isinstance(a, Grid) else b
        other = _as_grid(b if g is a else a, g.pad)
        if other.data.shape == g.data.shape:
            out = g.data + other.data
            return Grid(out.relu_() if p["relu"] else out, g.n, g.h, g.w, g.pad)
    out = plain(a) + plain(b)
    return out.relu_() if p["relu"] else out


def _k_mean(p: dict[str, Any], x: Any, interior: InteriorMasks) -> torch.Tensor:
    """Mean over H and W; on the grid, the borders are zero, so it is the grid's sum / (H * W)."""
    if isinstance(x, Grid):
        q = x.pad
        s = x.data.view(x.channels, x.n, (x.h + 2 * q) * (x.w + 2 * q)).sum(-1).t() / (x.h * x.w)
        return s[:, :, None, None] if p["keepdim"] else s
    return x.mean((2, 3), keepdim=p["keepdim"])


def _k_linear(p: dict[str, Any], x: Any, interior: InteriorMasks) -> torch.Tensor:
    return F.linear(plain(x), p["weight"], p["bias"])


def _k_affine1d(p: dict[str, Any], x: Any, interior: InteriorMasks) -> torch.Tensor:
    x = plain(x)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return x * p["scale"].view(shape) + p["shift"].view(shape)


def _k_const(p: dict[str, Any], interior: InteriorMasks) -> torch.Tensor:
    return p["value"]


def _k_identity(p: dict[str, Any], x: Any, interior: InteriorMasks) -> Any:
    return x


def _k_sub(p: dict[str, Any], a: Any, b: Any, interior: InteriorMasks) -> torch.Tensor:
    return plain(a) - plain(b)


def _k_div(p: dict[str, Any], a: Any, b: Any, interior: InteriorMasks) -> torch.Tensor:
    return plain(a) / plain(b)


def _k_flatten(p: dict[str, Any], x: Any, interior: InteriorMasks) -> torch.Tensor:
    return torch.flatten(plain(x), p["start_dim"], p["end_dim"])


def _k_max_pool2d(p: dict[str, Any], x: Any, interior: InteriorMasks) -> torch.Tensor:
    return F.max_pool2d(plain(x), p["kernel_size"], p["stride"], p["padding"], p["dilation"], p["ceil_mode"])


def _k_module(p: dict[str, Any], *args: Any, interior: InteriorMasks) -> Any:  # in memory only
    return p["module"](*(plain(a) for a in args), **p["kwargs"])


REF = object()  # marks where a value goes in a "call" operation's argument template


def _k_call(p: dict[str, Any], *values: Any, interior: InteriorMasks) -> Any:  # in memory only
    it = iter(values)
    args = tuple(plain(next(it)) if a is REF else a for a in p["template"])
    if p["method"]:
        return getattr(args[0], p["target"])(*args[1:], **p["kwargs"])
    return p["target"](*args, **p["kwargs"])


KERNELS: dict[str, Callable[..., Any]] = {
    "sparse_conv": _k_sparse_conv, "dense_conv": _k_dense_conv, "affine2d": _k_affine2d, "relu": _k_relu,
    "add": _k_add, "mean": _k_mean, "linear": _k_linear, "affine1d": _k_affine1d, "const": _k_const,
    "identity": _k_identity, "sub": _k_sub, "div": _k_div, "flatten": _k_flatten, "max_pool2d": _k_max_pool2d,
    "module": _k_module, "call": _k_call,
}
IN_MEMORY_ONLY = ("module", "call")  # kinds that run Python objects: never in a file
