"""Building a deploy program from a model: ``torch.fx`` tracing and a table of op builders.

The model is traced once with ``torch.fx`` (masked layers are leaves), so every robin family and
robinified timm models whose graph uses the operations below are covered without architecture
knowledge. Each graph node is turned into program steps by one builder, found in a table:

- :data:`_NODE_BUILDERS` by the node's ``op`` (placeholder, output, get_attr, call_module);
- :data:`_MODULE_BUILDERS` by the called module's type (first match in order: a masked
  convolution is a ``Conv2d`` before it is a ``MaskedLayer``);
- :data:`_FUNCTION_BUILDERS` by what a ``call_function`` / ``call_method`` node computes (ReLU,
  addition, subtraction and division, spatial mean, flatten), tried in order.

Anything no builder knows runs through the original module or function on the ordinary
``(N, C, H, W)`` layout (kinds ``module`` and ``call``, which stay in memory), so any model
traces; the speed comes from the convolutions.

A convolution runs sparse only where that wins: when it keeps at most ``SPARSE_BELOW`` of its
weights, or at most ``SPARSE_BELOW_SMALL`` on small inputs (``SMALL_POSITIONS``); denser ones
run as ordinary convolutions with the masks folded. A BatchNorm after a convolution (and a ReLU
after that) is folded into the convolution's weights, bias and ReLU flag; a ReLU after a
residual addition is folded into the addition.

Size: about 440 lines, over the package's ~400, because the builders and their three tables are
one piece a reader checks against each other (which node goes where, and what falls through).
"""
from __future__ import annotations

import operator
import warnings
from typing import Any, Callable

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from ..._checks import is_int
from ...formats.deploy import CSR_BETA_WARNING, DeployError, DeployOp, csr_int32
from ...layers.masked import MaskedLayer
from .kernels import REF
from .program import DeployModel

__all__ = ["DEPLOY_ATOL", "DEPLOY_RTOL", "SMALL_POSITIONS", "SPARSE_BELOW", "SPARSE_BELOW_SMALL", "deploy_model",
           "kept_macs"]

# |deploy - masked| <= DEPLOY_ATOL + DEPLOY_RTOL * |masked| on every logit (float32, CPU, eval)
DEPLOY_RTOL, DEPLOY_ATOL = 1e-4, 1e-4

# a convolution keeping at most this fraction of its weights runs sparse, a denser one densely
# (the crossover measured by benchmarks/bench_deploy.py on a 2-core x86 CPU, see docs/export.md)
SPARSE_BELOW = 0.05
# a convolution keeping at most this fraction runs sparse on small inputs (at most SMALL_POSITIONS
# input positions N * H * W, e.g. batch 1 to 4 at 32 x 32): there the sparse kernel wins at higher
# kept fractions than on large batches
SPARSE_BELOW_SMALL, SMALL_POSITIONS = 0.25, 4096

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
            return _Builder(model, sparse_below, sparse_below_small, small_positions).build()
    finally:
        model.train(was_training)


# --- tensors of a program step ---------------------------------------------------------------------


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, MaskedLayer) or super().is_leaf_module(m, qualname)


def _weight(m: nn.Module) -> torch.Tensor:
    w = m.masked_weight() if isinstance(m, MaskedLayer) else m.weight
    return w.detach().float().clone()


def _bias(m: nn.Module) -> torch.Tensor | None:
    bias = getattr(m, "bias", None)
    return None if bias is None else bias.detach().float().clone()


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
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=CSR_BETA_WARNING)
        c = dense.contiguous().to_sparse_csr()
    return csr_int32(c.crow_indices(), c.col_indices(), c.values(), tuple(c.shape))


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


def _spatial_mean_keepdim(n: torch.fx.Node) -> bool | None:
    dims = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim")
    if isinstance(dims, (tuple, list)) and sorted(int(d) for d in dims) in ([2, 3], [-2, -1]):
        return bool(n.args[2] if len(n.args) > 2 else n.kwargs.get("keepdim", False))
    return None


# --- the builder: graph state shared by the op builders ---------------------------------------------


class _Builder:
    """One traced graph on its way to a program: values by node, folded nodes, emitted steps."""

    def __init__(self, model: nn.Module, sparse_below: float, sparse_below_small: float, small_positions: int):
        self.model = model
        self.sparse_below_small, self.small_positions = sparse_below_small, small_positions
        self.nodes = list(_Tracer().trace(model).nodes)
        self.mod = {n: model.get_submodule(n.target) for n in self.nodes if n.op == "call_module"}
        self.pad = max([1] + [m.padding[0] for m in self.mod.values() if _is_same_conv(m)])
        self.index: dict[torch.fx.Node, int] = {}
        self.alias: dict[torch.fx.Node, torch.fx.Node] = {}  # a folded BatchNorm / ReLU -> the op computing it
        self.folded: set[torch.fx.Node] = set()
        self.program: list[DeployOp] = []
        self.output: int | None = None

        def sparse_rule(m: nn.Module) -> bool:  # the kernel choice for large inputs (see SPARSE_BELOW)
            w = _weight(m)
            return _is_same_conv(m) and int(torch.count_nonzero(w)) <= sparse_below * w.numel()

        self.runs_sparse = {n: sparse_rule(m) for n, m in self.mod.items()
                            if isinstance(m, nn.Conv2d) and m.padding_mode == "zeros"}

    def build(self) -> DeployModel:
        for n in self.nodes:
            if n in self.folded:
                continue
            builder = _NODE_BUILDERS.get(n.op)
            if builder is None and n.op in ("call_function", "call_method"):
                builder = next((b for match, b in _FUNCTION_BUILDERS if match(self, n)), _build_call)
            if builder is None:
                raise DeployError(f"cannot deploy graph node {n.op} {n.target!r}")
            builder(self, n)
        if self.output is None:
            raise DeployError("the traced graph has no output")
        return DeployModel(self.program, self.output, num_classes=int(getattr(self.model, "num_classes", 0) or 0),
                           source=type(self.model).__name__)

    def ref(self, a: Any) -> int:
        """The value index of the graph node ``a`` (of the op it was folded into)."""
        if not isinstance(a, torch.fx.Node):
            raise DeployError(f"constant argument {a!r:.60} is not supported here")
        return self.index[self.alias.get(a, a)]

    def only_user(self, node: torch.fx.Node, want: Callable[[_Builder, torch.fx.Node], bool]) -> torch.fx.Node | None:
        users = list(node.users)
        return users[0] if len(users) == 1 and want(self, users[0]) else None

    def emit(self, node: torch.fx.Node, kind: str, args: tuple[int, ...], **params: Any) -> None:
        self.index[node] = len(self.index)
        self.program.append(DeployOp(kind, self.index[node], args, params))


def _is_bn2d(b: _Builder, node: torch.fx.Node) -> bool:
    return isinstance(b.mod.get(node), nn.BatchNorm2d)


def _is_relu(b: _Builder, node: torch.fx.Node) -> bool:
    return (isinstance(b.mod.get(node), nn.ReLU) or (node.op == "call_function" and node.target in _RELU_FNS)
            or (node.op == "call_method" and node.target == "relu"))


# --- builders by graph node op ------------------------------------------------------------------------


def _build_placeholder(b: _Builder, n: torch.fx.Node) -> None:
    if b.index:
        raise DeployError("a deploy model takes one input")
    b.index[n] = 0


def _build_output(b: _Builder, n: torch.fx.Node) -> None:
    b.output = b.ref(n.args[0])


def _build_get_attr(b: _Builder, n: torch.fx.Node) -> None:
    value = b.model
    for part in n.target.split("."):
        value = getattr(value, part)
    b.emit(n, "const", (), value=value.detach().float().clone())


def _build_call_module(b: _Builder, n: torch.fx.Node) -> None:
    m = b.mod[n]
    x = (b.ref(n.args[0]),) if n.args else ()
    builder = next((f for types, f in _MODULE_BUILDERS if isinstance(m, types)), _build_module)
    builder(b, n, m, x)


_NODE_BUILDERS: dict[str, Callable[[_Builder, torch.fx.Node], None]] = {
    "placeholder": _build_placeholder, "output": _build_output, "get_attr": _build_get_attr,
    "call_module": _build_call_module,
}


# --- builders by module type ------------------------------------------------------------------------
# Each takes the builder, the node, its module and the value index of its first argument (if any).


def _build_module(b: _Builder, n: torch.fx.Node, m: nn.Module, x: tuple[int, ...]) -> None:
    """Any other module runs as it is, in the ordinary layout (in memory only: a file cannot hold it)."""
    b.emit(n, "module", tuple(b.ref(a) for a in n.args), module=m, kwargs=dict(n.kwargs), name=n.target)


def _build_conv(b: _Builder, n: torch.fx.Node, m: nn.Conv2d, x: tuple[int, ...]) -> None:
    """A convolution with the BatchNorm and ReLU after it folded in; sparse or dense by its kept fraction."""
    if m.padding_mode != "zeros":
        return _build_module(b, n, m, x)
    weight, bias = _weight(m), _bias(m)
    last, relu = n, False
    bn = b.only_user(n, _is_bn2d)
    if bn is not None:  # fold: bn(conv(x)) = conv_{W * scale}(x) + shift
        scale, shift = _bn_affine(b.mod[bn])
        weight = weight * scale.view(-1, 1, 1, 1)
        bias = shift if bias is None else bias * scale + shift
        b.folded.add(bn)
        last = bn
    r = b.only_user(last, _is_relu)
    if r is not None:
        b.folded.add(r)
        last, relu = r, True
    kept = int(torch.count_nonzero(weight))
    if b.runs_sparse[n]:
        b.emit(n, "sparse_conv", x, **_sparse_conv_params(weight, bias, m.stride[0], relu, b.pad))
    else:
        alt = {}
        if _is_same_conv(m) and kept <= b.sparse_below_small * weight.numel() and b.small_positions:
            alt = {"alt": _sparse_conv_params(weight, bias, m.stride[0], relu, b.pad),
                   "alt_positions": b.small_positions}
        b.emit(n, "dense_conv", x, weight=weight.contiguous(), bias=bias, stride=tuple(m.stride),
               padding=tuple(m.padding), dilation=tuple(m.dilation), groups=m.groups, relu=relu, **alt)
    if last is not n:
        b.alias[last] = n


def _build_identity(b: _Builder, n: torch.fx.Node, m: nn.Module, x: tuple[int, ...]) -> None:
    b.emit(n, "identity", x)


def _build_bn2d(b: _Builder, n: torch.fx.Node, m: nn.BatchNorm2d, x: tuple[int, ...]) -> None:
    scale, shift = _bn_affine(m)
    b.emit(n, "affine2d", x, scale=scale, shift=shift)


def _build_bn1d(b: _Builder, n: torch.fx.Node, m: nn.BatchNorm1d, x: tuple[int, ...]) -> None:
    scale, shift = _bn_affine(m)
    b.emit(n, "affine1d", x, scale=scale, shift=shift)


def _build_relu_module(b: _Builder, n: torch.fx.Node, m: nn.ReLU, x: tuple[int, ...]) -> None:
    b.emit(n, "relu", x)


def _build_linear(b: _Builder, n: torch.fx.Node, m: nn.Module, x: tuple[int, ...]) -> None:
    b.emit(n, "linear", x, weight=_weight(m), bias=_bias(m))


def _build_max_pool2d(b: _Builder, n: torch.fx.Node, m: nn.MaxPool2d, x: tuple[int, ...]) -> None:
    if m.return_indices:
        return _build_module(b, n, m, x)
    b.emit(n, "max_pool2d", x, kernel_size=m.kernel_size, stride=m.stride, padding=m.padding,
           dilation=m.dilation, ceil_mode=m.ceil_mode, name=n.target)


# first match wins: MaskedConv2d is a Conv2d before it is a MaskedLayer
_MODULE_BUILDERS: list[tuple[type | tuple[type, ...], Callable[..., None]]] = [
    ((nn.Identity, nn.Dropout), _build_identity),
    (nn.Conv2d, _build_conv),
    (nn.BatchNorm2d, _build_bn2d),
    (nn.BatchNorm1d, _build_bn1d),
    (nn.ReLU, _build_relu_module),
    ((nn.Linear, MaskedLayer), _build_linear),
    (nn.MaxPool2d, _build_max_pool2d),
]


# --- builders of function and method calls ----------------------------------------------------------


def _all_nodes(n: torch.fx.Node) -> bool:
    return not n.kwargs and all(isinstance(a, torch.fx.Node) for a in n.args)


def _is_relu_call(b: _Builder, n: torch.fx.Node) -> bool:
    return _is_relu(b, n) and len(n.args) == 1


def _build_relu_call(b: _Builder, n: torch.fx.Node) -> None:
    b.emit(n, "relu", (b.ref(n.args[0]),))


def _is_add(b: _Builder, n: torch.fx.Node) -> bool:
    return n.op == "call_function" and n.target in _ADD_FNS and len(n.args) == 2 and _all_nodes(n)


def _build_add(b: _Builder, n: torch.fx.Node) -> None:
    """A residual addition, with the ReLU after it folded in; kept on the grid when a sparse conv reads it."""
    r = b.only_user(n, _is_relu)
    if r is not None:
        b.folded.add(r)
        b.alias[r] = n
    readers = list((r or n).users)
    b.emit(n, "add", (b.ref(n.args[0]), b.ref(n.args[1])), relu=r is not None,
           grid=any(b.runs_sparse.get(u, False) for u in readers))


def _is_sub_or_div(b: _Builder, n: torch.fx.Node) -> bool:
    return n.op == "call_function" and n.target in (operator.sub, operator.truediv) and _all_nodes(n)


def _build_sub_or_div(b: _Builder, n: torch.fx.Node) -> None:
    b.emit(n, "sub" if n.target is operator.sub else "div", (b.ref(n.args[0]), b.ref(n.args[1])))


def _is_spatial_mean(b: _Builder, n: torch.fx.Node) -> bool:
    return n.op == "call_method" and n.target == "mean" and _spatial_mean_keepdim(n) is not None


def _build_mean(b: _Builder, n: torch.fx.Node) -> None:
    b.emit(n, "mean", (b.ref(n.args[0]),), keepdim=_spatial_mean_keepdim(n))


def _is_flatten(b: _Builder, n: torch.fx.Node) -> bool:
    return n.target in (torch.flatten, "flatten") and all(isinstance(a, int) for a in n.args[1:]) \
        and set(n.kwargs) <= {"start_dim", "end_dim"}


def _build_flatten(b: _Builder, n: torch.fx.Node) -> None:
    dims = list(n.args[1:]) + [None] * (3 - len(n.args))
    b.emit(n, "flatten", (b.ref(n.args[0]),),
           start_dim=int(n.kwargs.get("start_dim", dims[0] if dims[0] is not None else 0)),
           end_dim=int(n.kwargs.get("end_dim", dims[1] if dims[1] is not None else -1)))


def _build_call(b: _Builder, n: torch.fx.Node) -> None:
    """Any other function or method runs as it is, in the ordinary layout (in memory only)."""
    nested = [a for a in [*n.args, *n.kwargs.values()] if isinstance(a, (list, tuple, dict))
              and any(isinstance(v, torch.fx.Node) for v in (a.values() if isinstance(a, dict) else a))]
    if nested or any(isinstance(v, torch.fx.Node) for v in n.kwargs.values()):
        raise DeployError(f"graph node {n.name}: node arguments inside containers or keywords are not supported")
    refs = tuple(b.ref(a) for a in n.args if isinstance(a, torch.fx.Node))
    template = [REF if isinstance(a, torch.fx.Node) else a for a in n.args]
    b.emit(n, "call", refs, target=n.target, method=n.op == "call_method", kwargs=dict(n.kwargs),
           name=str(getattr(n.target, "__name__", n.target)), template=template)


# tried in order; a call none of them matches goes to _build_call
_FUNCTION_BUILDERS: list[tuple[Callable[[_Builder, torch.fx.Node], bool], Callable[[_Builder, torch.fx.Node], None]]] = [
    (_is_relu_call, _build_relu_call),
    (_is_add, _build_add),
    (_is_sub_or_div, _build_sub_or_div),
    (_is_spatial_mean, _build_mean),
    (_is_flatten, _build_flatten),
]


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
