"""Deployable inference model: a masked binary network run as sparse convolutions.

A robin model at keep ratio 0.01 multiplies by zero 99% of the time; its dense twin (and the
masked model itself) still pays for every multiply-add. :func:`deploy_model` turns a trained
masked model into a plain inference module (:class:`DeployModel`) that only does the kept
multiply-adds:

- the model is traced once with ``torch.fx`` (masked layers are leaves), so every robin family and
  robinified timm models whose graph uses the operations below are covered without architecture
  knowledge;
- activations live in a *padded-grid* layout: a ``(C, N * (H + 2P) * (W + 2P))`` matrix whose
  border entries are exactly zero. A k x k convolution with "same" padding is then a sum over its
  k * k taps of ``W_tap @ X[:, shift_tap:]``, where ``W_tap`` is the (C_out, C_in) slice of the
  masked weight at that tap, stored as a CSR sparse matrix, and ``X[:, shift_tap:]`` is a
  *view* of the activations shifted by the tap's offset: no im2col matrix is materialised, and the
  cost is the kept multiply-adds (plus the padding border). Strided convolutions gather their
  input at the output positions, tap by tap;
- a convolution runs sparse only where that wins: when it keeps at most ``SPARSE_BELOW`` of its
  weights, or at most ``SPARSE_BELOW_SMALL`` on small inputs (``SMALL_POSITIONS``); denser ones
  (the early layers at adaptive keep ratios) run as ordinary convolutions with the masks folded;
- a BatchNorm after a convolution (and a ReLU after that) is folded into the sparse weights (the
  BatchNorm's per-channel scale multiplies the +-1 values), a bias and the ReLU flag; other
  BatchNorms become per-channel affine maps, and the borders are re-zeroed after each operation
  that could make them non-zero;
- global average pooling sums the grid (borders are zero) and the masked classifier with its
  logit BatchNorm becomes one small dense affine map.

Operations it does not know run through the original module on the ordinary ``(N, C, H, W)``
layout (max-pooling has its own kind), so any model traces; the speed comes from the
convolutions. Residual additions (and a ReLU after them) run in place on the grid.

The logits equal the masked model's to float32 rounding: folding the BatchNorm scale into the
weights and summing the taps in another order changes the last bits. ``DEPLOY_RTOL`` /
``DEPLOY_ATOL`` state the tolerance that the tests check on every robin family.

Size: this is the package's largest module (about 600 lines) because its three parts are one
thing: the kernels (one function per operation kind), the program that lists them, and the
``torch.fx`` builder that emits it; split, each would need the others' private layout. The file
format is :mod:`robin_plugin.export.deploy_file`.
"""
from __future__ import annotations

import warnings

import operator
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from .._checks import is_int
from ..errors import RobinError
from ..layers.masked import MaskedLayer

__all__ = ["DEPLOY_ATOL", "DEPLOY_RTOL", "SMALL_POSITIONS", "SPARSE_BELOW", "SPARSE_BELOW_SMALL", "DeployError",
           "DeployModel", "deploy_model", "kept_macs"]

# |deploy - masked| <= DEPLOY_ATOL + DEPLOY_RTOL * |masked| on every logit (float32, CPU, eval)
DEPLOY_RTOL, DEPLOY_ATOL = 1e-4, 1e-4

# a convolution keeping at most this fraction of its weights runs sparse, a denser one densely
# (the crossover measured by benchmarks/bench_deploy.py on a 2-core x86 CPU, see docs/export.md)
SPARSE_BELOW = 0.05
# a convolution keeping at most this fraction runs sparse on small inputs (at most SMALL_POSITIONS
# input positions N * H * W, e.g. batch 1 to 4 at 32 x 32): there the sparse kernel wins at higher
# kept fractions than on large batches
SPARSE_BELOW_SMALL, SMALL_POSITIONS = 0.25, 4096


class DeployError(RobinError, ValueError):
    """The model cannot be turned into a deploy model, or a deploy model cannot do what was asked."""


class _Grid:
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


def _pack(x: torch.Tensor, pad: int) -> _Grid:
    """(N, C, H, W) -> padded grid (C, N*(H+2p)*(W+2p)), zero borders."""
    n, c, h, w = x.shape
    data = F.pad(x, (pad, pad, pad, pad)).transpose(0, 1).reshape(c, -1)
    return _Grid(data, n, h, w, pad)


def _pack_cnhw(x: torch.Tensor, pad: int) -> _Grid:
    """(C, N, H, W) -> padded grid."""
    c, n, h, w = x.shape
    return _Grid(F.pad(x, (pad, pad, pad, pad)).reshape(c, -1), n, h, w, pad)


class _InteriorMasks:
    """Cached 0/1 masks (length N*Hp*Wp) that are 1 inside each image's H x W interior."""

    def __init__(self) -> None:
        self._cache: dict[tuple, torch.Tensor] = {}

    def get(self, g: _Grid, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
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
# Each takes the op's parameters, its argument values and the interior-mask cache. Values are
# tensors or _Grid objects; a kernel converts between the two layouts when it must.


def _as_grid(v: Any, pad: int) -> _Grid:
    if isinstance(v, _Grid):
        if v.pad == pad:
            return v
        v = v.to_nchw()
    if not isinstance(v, torch.Tensor) or v.dim() != 4:
        raise DeployError(f"a convolution got {type(v).__name__} {tuple(getattr(v, 'shape', ()))}, expected (N, C, H, W)")
    return _pack(v, pad)


def _plain(v: Any) -> Any:
    return v.to_nchw() if isinstance(v, _Grid) else v


def _k_sparse_conv(p: dict[str, Any], x: Any, interior: _InteriorMasks) -> _Grid:
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
    return _Grid(out, g.n, g.h, g.w, pad)


def _strided_sparse_conv(p: dict[str, Any], g: _Grid, interior: _InteriorMasks) -> _Grid:
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


def _k_dense_conv(p: dict[str, Any], x: Any, interior: _InteriorMasks) -> Any:
    """An ordinary convolution; with ``alt``, its sparse form when the input is small (batch 1)."""
    alt = p.get("alt")
    if alt is not None:
        n, h, w = (x.n, x.h, x.w) if isinstance(x, _Grid) else (x.shape[0], x.shape[-2], x.shape[-1])
        if n * h * w <= p["alt_positions"]:
            return _k_sparse_conv(alt, x, interior)
    y = F.conv2d(_plain(x), p["weight"], p["bias"], p["stride"], p["padding"], p["dilation"], p["groups"])
    return torch.relu_(y) if p["relu"] else y


def _k_affine2d(p: dict[str, Any], x: Any, interior: _InteriorMasks) -> Any:
    if isinstance(x, _Grid):
        data = torch.addcmul(p["shift"][:, None], x.data, p["scale"][:, None])
        data.mul_(interior.get(x, data.dtype, data.device))
        return _Grid(data, x.n, x.h, x.w, x.pad)
    return x * p["scale"].view(1, -1, 1, 1) + p["shift"].view(1, -1, 1, 1)


def _k_relu(p: dict[str, Any], x: Any, interior: _InteriorMasks) -> Any:
    if isinstance(x, _Grid):  # relu(0) = 0: borders stay zero
        return _Grid(torch.relu(x.data), x.n, x.h, x.w, x.pad)
    return torch.relu(x)


def _k_add(p: dict[str, Any], a: Any, b: Any, interior: _InteriorMasks) -> Any:
    """``a + b``, and with ``relu`` the ReLU after it, in place on the fresh sum. With one value in
    each layout, the sum is made in the layout its readers use (``grid``: a sparse convolution
    reads it), so that no layout goes back and forth."""
    if isinstance(a, _Grid) and isinstance(b, _Grid) and a.pad == b.pad and a.data.shape == b.data.shape:
        out = a.data + b.data
        return _Grid(out.relu_() if p["relu"] else out, a.n, a.h, a.w, a.pad)
    if isinstance(a, _Grid) != isinstance(b, _Grid) and p["grid"]:
        g = a if isinstance(a, _Grid) else b
        other = _as_grid(b if g is a else a, g.pad)
        if other.data.shape == g.data.shape:
            out = g.data + other.data
            return _Grid(out.relu_() if p["relu"] else out, g.n, g.h, g.w, g.pad)
    out = _plain(a) + _plain(b)
    return out.relu_() if p["relu"] else out


def _k_mean(p: dict[str, Any], x: Any, interior: _InteriorMasks) -> torch.Tensor:
    """Mean over H and W; on the grid, the borders are zero, so it is the grid's sum / (H * W)."""
    if isinstance(x, _Grid):
        q = x.pad
        s = x.data.view(x.channels, x.n, (x.h + 2 * q) * (x.w + 2 * q)).sum(-1).t() / (x.h * x.w)
        return s[:, :, None, None] if p["keepdim"] else s
    return x.mean((2, 3), keepdim=p["keepdim"])


def _k_linear(p: dict[str, Any], x: Any, interior: _InteriorMasks) -> torch.Tensor:
    return F.linear(_plain(x), p["weight"], p["bias"])


def _k_affine1d(p: dict[str, Any], x: Any, interior: _InteriorMasks) -> torch.Tensor:
    x = _plain(x)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return x * p["scale"].view(shape) + p["shift"].view(shape)


def _k_const(p: dict[str, Any], interior: _InteriorMasks) -> torch.Tensor:
    return p["value"]


def _k_identity(p: dict[str, Any], x: Any, interior: _InteriorMasks) -> Any:
    return x


def _k_sub(p: dict[str, Any], a: Any, b: Any, interior: _InteriorMasks) -> torch.Tensor:
    return _plain(a) - _plain(b)


def _k_div(p: dict[str, Any], a: Any, b: Any, interior: _InteriorMasks) -> torch.Tensor:
    return _plain(a) / _plain(b)


def _k_flatten(p: dict[str, Any], x: Any, interior: _InteriorMasks) -> torch.Tensor:
    return torch.flatten(_plain(x), p["start_dim"], p["end_dim"])


def _k_max_pool2d(p: dict[str, Any], x: Any, interior: _InteriorMasks) -> torch.Tensor:
    return F.max_pool2d(_plain(x), p["kernel_size"], p["stride"], p["padding"], p["dilation"], p["ceil_mode"])


def _k_module(p: dict[str, Any], *args: Any, interior: _InteriorMasks) -> Any:  # in memory only
    return p["module"](*(_plain(a) for a in args), **p["kwargs"])


_REF = object()  # marks where a value goes in a "call" operation's argument template


def _k_call(p: dict[str, Any], *values: Any, interior: _InteriorMasks) -> Any:  # in memory only
    it = iter(values)
    args = tuple(_plain(next(it)) if a is _REF else a for a in p["template"])
    if p["method"]:
        return getattr(args[0], p["target"])(*args[1:], **p["kwargs"])
    return p["target"](*args, **p["kwargs"])


_KERNELS: dict[str, Callable[..., Any]] = {
    "sparse_conv": _k_sparse_conv, "dense_conv": _k_dense_conv, "affine2d": _k_affine2d, "relu": _k_relu,
    "add": _k_add, "mean": _k_mean, "linear": _k_linear, "affine1d": _k_affine1d, "const": _k_const,
    "identity": _k_identity, "sub": _k_sub, "div": _k_div, "flatten": _k_flatten, "max_pool2d": _k_max_pool2d,
    "module": _k_module, "call": _k_call,
}
_IN_MEMORY_ONLY = ("module", "call")
# argument count of each kind that a file may hold (None: any)
_ARITY = {"sparse_conv": 1, "dense_conv": 1, "affine2d": 1, "relu": 1, "add": 2, "mean": 1, "linear": 1,
          "affine1d": 1, "const": 0, "identity": 1, "sub": 2, "div": 2, "flatten": 1, "max_pool2d": 1}


@dataclass
class _Op:
    """One step of the program: ``values[out] = kernel(params, *values[args])``."""

    kind: str
    out: int
    args: tuple[int, ...]
    params: dict[str, Any]


class DeployModel(nn.Module):
    """Plain inference module built by :func:`deploy_model` or read by
    :func:`~robin_plugin.export.deploy_file.load_deploy`.

    A straight-line program of operations (``program``) over fixed tensors; no parameters, no
    gradients, always in eval mode. Shapes: (N, C, H, W) floats in [0, 1] -> (N, num_classes).

    Attributes:
        nnz: weights the convolutions multiply by (sparse and dense layers together).
        fallbacks: operations run unchanged in the ordinary layout (by node name).
    """

    def __init__(self, program: list[_Op], output: int, *, num_classes: int = 0, source: str = ""):
        super().__init__()
        self.program = program
        self.output = output
        self.num_classes = num_classes
        self.source = source
        self._interior = _InteriorMasks()
        self._release = _release_after(program, output)
        self.nnz = sum(_op_nnz(op) for op in program)
        self.fallbacks = [op.params.get("name", op.kind) for op in program if op.kind in _IN_MEMORY_ONLY + ("max_pool2d",)]
        self.eval()

    def train(self, mode: bool = True) -> "DeployModel":
        if mode:
            raise DeployError("a deploy model is inference-only; train the masked model instead")
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: list[Any] = [None] * (len(self.program) + 1)
        values[0] = x
        interior = self._interior
        for op, done in zip(self.program, self._release):
            values[op.out] = _KERNELS[op.kind](op.params, *(values[a] for a in op.args), interior=interior)
            for v in done:  # free each value after its last reader, as eager PyTorch would
                values[v] = None
        return _plain(values[self.output])

    def kinds(self) -> dict[str, int]:
        """How many operations of each kind the program has."""
        out: dict[str, int] = {}
        for op in self.program:
            out[op.kind] = out.get(op.kind, 0) + 1
        return out

    def extra_repr(self) -> str:
        return f"ops={len(self.program)}, nnz={self.nnz}, kinds={self.kinds()}"


def _release_after(program: list[_Op], output: int) -> list[tuple[int, ...]]:
    """For each op, the values no later op reads (never ``output``): freed right after it runs.

    Holding every intermediate to the end of the forward pass made the heap grow by all the
    activations and shrink again on every call; at batch 64 the allocator then gave the memory
    back to the kernel, and each call paid tens of thousands of page faults to touch it anew.
    """
    last: dict[int, int] = {0: -1}  # the input is released after its last reader too
    for j, op in enumerate(program):
        last[op.out] = j  # a value nobody reads is released right after the op that made it
        for a in op.args:
            last[a] = j
    done: list[list[int]] = [[] for _ in program]
    for v, j in last.items():
        if v != output and j >= 0:
            done[j].append(v)
    return [tuple(d) for d in done]


def _op_nnz(op: _Op) -> int:
    if op.kind == "sparse_conv":
        return sum(int(w.values().numel()) for w in op.params["weights"])
    if op.kind == "dense_conv":
        return int(torch.count_nonzero(op.params["weight"]))
    return 0


# --- building the program from a model ------------------------------------------------------------


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, MaskedLayer) or super().is_leaf_module(m, qualname)


def _weight(m: nn.Module) -> torch.Tensor:
    w = m.masked_weight() if isinstance(m, MaskedLayer) else m.weight
    return w.detach().float().clone()


def _is_same_conv(m: nn.Module) -> bool:
    """Convolutions the padded grid runs: groups 1, dilation 1, zero "same" padding, odd square k."""
    if not isinstance(m, nn.Conv2d) or m.groups != 1 or m.dilation != (1, 1) or m.padding_mode != "zeros":
        return False
    kh, kw = m.kernel_size
    return kh == kw and kh % 2 == 1 and m.padding == ((kh - 1) // 2,) * 2 and m.stride[0] == m.stride[1]


def _bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``x * scale + shift`` per channel (computed in float64)."""
    if bn.running_mean is None or bn.running_var is None:
        raise DeployError(f"{type(bn).__name__} without running statistics cannot be deployed")
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    shift = -bn.running_mean.double() * scale
    if bn.weight is not None:
        scale = scale * bn.weight.double()
        shift = shift * bn.weight.double() + bn.bias.double()
    return scale.float(), shift.float()


def _csr(dense: torch.Tensor) -> torch.Tensor:
    """A 2-D tensor as CSR with int32 indices (what MKL's sparse kernels take: no conversion per call)."""
    with warnings.catch_warnings():  # PyTorch's "support is in beta" notice: robin relies on these two calls only
        warnings.filterwarnings("ignore", message=r".*[Ss]parse CSR tensor support is in beta.*")
        c = dense.contiguous().to_sparse_csr()
        return torch.sparse_csr_tensor(c.crow_indices().to(torch.int32), c.col_indices().to(torch.int32), c.values(),
                                       size=c.shape, check_invariants=True)


def _sparse_conv_params(weight: torch.Tensor, bias: torch.Tensor | None, stride: int, relu: bool, pad: int) -> dict[str, Any]:
    cout, cin, k, _ = weight.shape
    r = (k - 1) // 2
    taps, weights = [], []
    for i in range(k):
        for j in range(k):
            tap = weight[:, :, i, j]
            if torch.count_nonzero(tap):
                taps.append((i - r, j - r))
                weights.append(_csr(tap))
    return {"cout": cout, "cin": cin, "k": k, "stride": stride, "relu": relu, "pad": pad, "taps": taps,
            "weights": weights, "bias": None if bias is None else bias.contiguous()}


_RELU_FNS = (F.relu, torch.relu)
_ADD_FNS = (operator.add, torch.add, operator.iadd)


def deploy_model(model: nn.Module, *, sparse_below: float = SPARSE_BELOW,
                 sparse_below_small: float = SPARSE_BELOW_SMALL, small_positions: int = SMALL_POSITIONS) -> DeployModel:
    """A fast inference copy of ``model``: sparse convolutions over the kept weights.

    Args:
        model: a masked robin model, its dense twin, a robinified timm model, or any model that
            ``torch.fx`` traces (masked layers are leaves).
        sparse_below: a convolution that keeps at most this fraction of its weights runs sparse;
            denser ones run as ordinary (mask-folded) convolutions. 0: all dense, 1: all sparse.
        sparse_below_small, small_positions: a convolution keeping more than ``sparse_below`` but
            at most ``sparse_below_small`` runs sparse when its input has at most
            ``small_positions`` positions (N * H * W), densely otherwise; 0 turns this off.

    Returns:
        A :class:`DeployModel` that shares no tensors with ``model``. Its logits match
        ``model(x)`` in eval mode within ``DEPLOY_RTOL`` / ``DEPLOY_ATOL`` (float32).
    """
    for name, v in (("sparse_below", sparse_below), ("sparse_below_small", sparse_below_small)):
        if not 0.0 <= v <= 1.0:
            raise DeployError(f"{name} must be in [0, 1], got {v!r}")
    if not is_int(small_positions) or small_positions < 0:
        raise DeployError(f"small_positions must be an integer >= 0, got {small_positions!r}")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return _build(model, sparse_below, sparse_below_small, small_positions)
    finally:
        model.train(was_training)


def _build(model: nn.Module, sparse_below: float, sparse_below_small: float, small_positions: int) -> DeployModel:
    graph = _Tracer().trace(model)
    nodes = list(graph.nodes)
    mod = {n: model.get_submodule(n.target) for n in nodes if n.op == "call_module"}
    pad = max([1] + [m.padding[0] for m in mod.values() if _is_same_conv(m)])
    index: dict[torch.fx.Node, int] = {}
    alias: dict[torch.fx.Node, torch.fx.Node] = {}  # a folded BatchNorm / ReLU -> the conv computing it
    folded: set[torch.fx.Node] = set()
    program: list[_Op] = []
    output = None

    def ref(a: Any) -> int:
        if not isinstance(a, torch.fx.Node):
            raise DeployError(f"constant argument {a!r:.60} is not supported here")
        return index[alias.get(a, a)]

    def only_user(node: torch.fx.Node, want: Callable[[torch.fx.Node], bool]) -> torch.fx.Node | None:
        users = list(node.users)
        return users[0] if len(users) == 1 and want(users[0]) else None

    def is_bn2d(node: torch.fx.Node) -> bool:
        return isinstance(mod.get(node), nn.BatchNorm2d)

    def is_relu(node: torch.fx.Node) -> bool:
        return (isinstance(mod.get(node), nn.ReLU) or (node.op == "call_function" and node.target in _RELU_FNS)
                or (node.op == "call_method" and node.target == "relu"))

    def sparse_rule(m: nn.Module) -> bool:  # the kernel choice for large inputs (see SPARSE_BELOW)
        w = _weight(m)
        return _is_same_conv(m) and int(torch.count_nonzero(w)) <= sparse_below * w.numel()

    runs_sparse = {n: sparse_rule(m) for n, m in mod.items()
                   if isinstance(m, nn.Conv2d) and m.padding_mode == "zeros"}

    def emit(node: torch.fx.Node, kind: str, args: tuple[int, ...], **params: Any) -> None:
        index[node] = len(index)
        program.append(_Op(kind, index[node], args, params))

    for n in nodes:
        if n in folded:
            continue
        if n.op == "placeholder":
            if index:
                raise DeployError("a deploy model takes one input")
            index[n] = 0
        elif n.op == "output":
            output = ref(n.args[0])
        elif n.op == "get_attr":
            value = model
            for part in n.target.split("."):
                value = getattr(value, part)
            emit(n, "const", (), value=value.detach().float().clone())
        elif n.op == "call_module":
            m = mod[n]
            x = (ref(n.args[0]),) if n.args else ()
            if isinstance(m, (nn.Identity, nn.Dropout)):
                emit(n, "identity", x)
            elif isinstance(m, nn.Conv2d) and m.padding_mode == "zeros":
                weight = _weight(m)
                bias = None if m.bias is None else m.bias.detach().float().clone()
                last, relu = n, False
                bn = only_user(n, is_bn2d)
                if bn is not None:  # fold: bn(conv(x)) = conv_{W * scale}(x) + shift
                    scale, shift = _bn_affine(mod[bn])
                    weight = weight * scale.view(-1, 1, 1, 1)
                    bias = shift if bias is None else bias * scale + shift
                    folded.add(bn)
                    last = bn
                r = only_user(last, is_relu)
                if r is not None:
                    folded.add(r)
                    last, relu = r, True
                kept = int(torch.count_nonzero(weight))
                if runs_sparse[n]:
                    emit(n, "sparse_conv", x, **_sparse_conv_params(weight, bias, m.stride[0], relu, pad))
                else:
                    alt = {}
                    if _is_same_conv(m) and kept <= sparse_below_small * weight.numel() and small_positions:
                        alt = {"alt": _sparse_conv_params(weight, bias, m.stride[0], relu, pad),
                               "alt_positions": small_positions}
                    emit(n, "dense_conv", x, weight=weight.contiguous(), bias=bias, stride=tuple(m.stride),
                         padding=tuple(m.padding), dilation=tuple(m.dilation), groups=m.groups, relu=relu, **alt)
                if last is not n:
                    alias[last] = n
            elif isinstance(m, nn.BatchNorm2d):
                scale, shift = _bn_affine(m)
                emit(n, "affine2d", x, scale=scale, shift=shift)
            elif isinstance(m, nn.BatchNorm1d):
                scale, shift = _bn_affine(m)
                emit(n, "affine1d", x, scale=scale, shift=shift)
            elif isinstance(m, nn.ReLU):
                emit(n, "relu", x)
            elif isinstance(m, (nn.Linear, MaskedLayer)):  # MaskedConv2d went to the Conv2d branch
                bias = getattr(m, "bias", None)
                emit(n, "linear", x, weight=_weight(m),
                     bias=None if bias is None else bias.detach().float().clone())
            elif isinstance(m, nn.MaxPool2d) and not m.return_indices:
                emit(n, "max_pool2d", x, kernel_size=m.kernel_size, stride=m.stride, padding=m.padding,
                     dilation=m.dilation, ceil_mode=m.ceil_mode, name=n.target)
            else:  # anything else runs as it is, in the ordinary layout (cannot be saved)
                emit(n, "module", tuple(ref(a) for a in n.args), module=m, kwargs=dict(n.kwargs), name=n.target)
        elif is_relu(n) and len(n.args) == 1:
            emit(n, "relu", (ref(n.args[0]),))
        elif n.op == "call_function" and n.target in _ADD_FNS and len(n.args) == 2 and not n.kwargs \
                and all(isinstance(a, torch.fx.Node) for a in n.args):
            r = only_user(n, is_relu)
            if r is not None:
                folded.add(r)
                alias[r] = n
            readers = list((r or n).users)
            emit(n, "add", (ref(n.args[0]), ref(n.args[1])), relu=r is not None,
                 grid=any(runs_sparse.get(u, False) for u in readers))
        elif n.op == "call_function" and n.target in (operator.sub, operator.truediv) and not n.kwargs \
                and all(isinstance(a, torch.fx.Node) for a in n.args):
            emit(n, "sub" if n.target is operator.sub else "div", (ref(n.args[0]), ref(n.args[1])))
        elif n.op == "call_method" and n.target == "mean" and _spatial_mean_keepdim(n) is not None:
            emit(n, "mean", (ref(n.args[0]),), keepdim=_spatial_mean_keepdim(n))
        elif n.op in ("call_function", "call_method") and n.target in (torch.flatten, "flatten") \
                and all(isinstance(a, int) for a in n.args[1:]) and set(n.kwargs) <= {"start_dim", "end_dim"}:
            dims = list(n.args[1:]) + [None] * (3 - len(n.args))
            emit(n, "flatten", (ref(n.args[0]),), start_dim=int(n.kwargs.get("start_dim", dims[0] if dims[0] is not None else 0)),
                 end_dim=int(n.kwargs.get("end_dim", dims[1] if dims[1] is not None else -1)))
        elif n.op in ("call_function", "call_method"):
            nested = [a for a in [*n.args, *n.kwargs.values()] if isinstance(a, (list, tuple, dict))
                      and any(isinstance(v, torch.fx.Node) for v in (a.values() if isinstance(a, dict) else a))]
            if nested or any(isinstance(v, torch.fx.Node) for v in n.kwargs.values()):
                raise DeployError(f"graph node {n.name}: node arguments inside containers or keywords are not supported")
            refs = tuple(ref(a) for a in n.args if isinstance(a, torch.fx.Node))
            template = [_REF if isinstance(a, torch.fx.Node) else a for a in n.args]
            emit(n, "call", refs, target=n.target, method=n.op == "call_method", kwargs=dict(n.kwargs),
                 name=str(getattr(n.target, "__name__", n.target)), template=template)
        else:
            raise DeployError(f"cannot deploy graph node {n.op} {n.target!r}")
    if output is None:
        raise DeployError("the traced graph has no output")
    return DeployModel(program, output, num_classes=int(getattr(model, "num_classes", 0) or 0),
                       source=type(model).__name__)


def _spatial_mean_keepdim(n: torch.fx.Node) -> bool | None:
    dims = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim")
    if isinstance(dims, (tuple, list)) and sorted(int(d) for d in dims) in ([2, 3], [-2, -1]):
        return bool(n.args[2] if len(n.args) > 2 else n.kwargs.get("keepdim", False))
    return None


def kept_macs(model: nn.Module, input_size: tuple[int, int, int]) -> tuple[int, int]:
    """(kept, dense) multiply-adds of the model's convolutions and linear layers for one image of
    ``input_size`` = (C, H, W): the physical limit of any sparse implementation."""
    kept = dense = 0
    hooks = []

    def count(m: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        nonlocal kept, dense
        w = _weight(m)
        positions = out[0, 0].numel() if out.dim() == 4 else 1
        kept += int(torch.count_nonzero(w)) * positions
        dense += w.numel() * positions

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            hooks.append(m.register_forward_hook(count))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            p = next(model.parameters(), None)
            model(torch.zeros(1, *input_size, device=None if p is None else p.device))
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return kept, dense
