"""The deploy file: a deploy program as one safetensors file, and the program's step type.

A deploy program (:mod:`robin_plugin.export.deploy`) is a straight line of :class:`DeployOp`
steps over fixed tensors. Its file stores the program as JSON metadata (operation kinds from
:data:`FILE_ARITY`, integer arguments, flags) and its tensors (dense weights, CSR index and
value arrays of the sparse taps, biases, BatchNorm scales) as safetensors entries named
``<op>.<key>``. Safetensors metadata: ``{"format": "robin-deploy", "version": "1", "output",
"num_classes", "program"}``.

:func:`read_deploy_file` checks every field (kinds, argument order, integer ranges, CSR
structure, shapes, finiteness, no unused tensors) and returns the validated program; nothing in
the file is executed or unpickled. :func:`write_deploy_file` is its inverse. Running the
program is :mod:`robin_plugin.export.deploy`'s job.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import RobinError
from ..io import save_safetensors
from .files import nonfinite_tensor, parse_json, read_safetensors_checked

__all__ = ["CSR_BETA_WARNING", "DEPLOY_FORMAT", "DEPLOY_VERSION", "FILE_ARITY", "MAX_DEPLOY_OPS", "DeployError",
           "DeployFile", "DeployFormatError", "DeployOp", "csr_int32", "read_deploy_file", "write_deploy_file"]


DEPLOY_FORMAT = "robin-deploy"
DEPLOY_VERSION = "1"
MAX_DEPLOY_OPS = 100_000
# argument count of each operation kind a file may hold; the kinds that run Python objects
# ("module", "call") exist in memory only
FILE_ARITY = {"sparse_conv": 1, "dense_conv": 1, "affine2d": 1, "relu": 1, "add": 2, "mean": 1, "linear": 1,
              "affine1d": 1, "const": 0, "identity": 1, "sub": 2, "div": 2, "flatten": 1, "max_pool2d": 1}
# PyTorch's "support is in beta" notice, raised by every CSR constructor: robin relies on two calls only
CSR_BETA_WARNING = r".*[Ss]parse CSR tensor support is in beta.*"


class DeployError(RobinError, ValueError):
    """The model cannot be turned into a deploy model, or a deploy model cannot do what was asked."""


class DeployFormatError(DeployError):
    """A deploy file is malformed."""


@dataclass
class DeployOp:
    """One step of a deploy program: ``values[out] = kernel(params, *values[args])``."""

    kind: str
    out: int
    args: tuple[int, ...]
    params: dict[str, Any]


@dataclass
class DeployFile:
    """A validated deploy file: the program, the index of its output value, the class count."""

    program: list[DeployOp]
    output: int
    num_classes: int


def csr_int32(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A checked CSR matrix with int32 indices (what MKL's sparse kernels take: no conversion per call)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=CSR_BETA_WARNING)
        return torch.sparse_csr_tensor(crow.to(torch.int32), col.to(torch.int32), values, size=size,
                                       check_invariants=True)


def write_deploy_file(program: list[DeployOp], output: int, num_classes: int, path: str | os.PathLike, *,
                      overwrite: bool = True) -> Path:
    """Write a deploy program as one safetensors file: its tensors, and the program as JSON metadata.

    Raises:
        DeployError: an operation runs a Python object (kinds ``module`` and ``call``), which a
            file cannot hold.
        WriteError: the file could not be written.
    """
    tensors: dict[str, torch.Tensor] = {}
    steps = []
    for i, op in enumerate(program):
        if op.kind not in FILE_ARITY:
            raise DeployError(f"operation {op.params.get('name', op.kind)!r} runs a Python {op.kind} and cannot be "
                              "saved; deploy_model() in memory still runs it")
        params = _params_to_file(op.params, f"{i}", tensors)
        steps.append({"kind": op.kind, "out": op.out, "args": list(op.args), "params": params})
    meta = {"format": DEPLOY_FORMAT, "version": DEPLOY_VERSION, "output": str(output),
            "num_classes": str(num_classes), "program": json.dumps(steps, separators=(",", ":"))}
    return save_safetensors(tensors, path, metadata=meta, overwrite=overwrite)


def _params_to_file(op_params: dict[str, Any], prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """JSON-able parameters; tensors go to ``tensors`` under ``<prefix>.<key>``."""
    params: dict[str, Any] = {}
    for key, v in op_params.items():
        if key == "weights":  # CSR matrices of the sparse taps
            for j, w in enumerate(v):
                tensors[f"{prefix}.w{j}.crow"] = w.crow_indices().to(torch.int64).contiguous()
                tensors[f"{prefix}.w{j}.col"] = w.col_indices().to(torch.int64).contiguous()
                tensors[f"{prefix}.w{j}.val"] = w.values().contiguous()
        elif key == "alt":  # the sparse form of a dense convolution, for small inputs
            params[key] = _params_to_file(v, f"{prefix}.alt", tensors)
        elif isinstance(v, torch.Tensor):
            tensors[f"{prefix}.{key}"] = v.contiguous().clone()  # may share memory with the alt form
        elif key == "taps":
            params[key] = [list(t) for t in v]
        elif v is not None:
            params[key] = list(v) if isinstance(v, tuple) else v
    return params


def read_deploy_file(path: str | os.PathLike) -> DeployFile:
    """Read a file written by :func:`write_deploy_file`; every field is checked, nothing is executed.

    Raises:
        DeployFormatError: not a deploy file, or a field is missing, of the wrong type or out of
            range (the message names it).
    """
    path = Path(path)

    def check(meta: dict[str, str]) -> None:
        if meta.get("format") != DEPLOY_FORMAT:
            raise DeployFormatError(f"{path}: not a robin deploy file (format {meta.get('format')!r:.60})")
        if meta.get("version") != DEPLOY_VERSION:
            raise DeployFormatError(f"{path}: deploy format version {meta.get('version')!r:.40} is not supported "
                                    f"(this robin_plugin reads version {DEPLOY_VERSION})")

    tensors, meta = read_safetensors_checked(path, DeployFormatError, "{path}: cannot read a safetensors file ({reason})",
                                             check_metadata=check)
    try:
        program = parse_json(meta["program"])
        output, num_classes = int(meta["output"]), int(meta["num_classes"])
    except (KeyError, ValueError) as e:  # FileContentError is a ValueError
        raise DeployFormatError(f"{path}: bad deploy metadata ({type(e).__name__}: {str(e)[:200]})") from None
    bad = nonfinite_tensor(tensors)
    if bad is not None:
        raise DeployFormatError(f"{path}: tensor {bad!r} holds NaN or Inf; a deploy file must hold finite weights")
    return DeployFile(_check_program(program, tensors, output, path), output, num_classes)


def _check_program(program: Any, tensors: dict[str, torch.Tensor], output: int, path: Path) -> list[DeployOp]:
    def bad(i: int, msg: str) -> DeployFormatError:
        return DeployFormatError(f"{path}: operation {i}: {msg}")

    if not isinstance(program, list) or not 0 < len(program) <= MAX_DEPLOY_OPS:
        raise DeployFormatError(f"{path}: the program must be a list of 1 to {MAX_DEPLOY_OPS} operations")
    ops: list[DeployOp] = []
    used: set[str] = set()
    for i, item in enumerate(program):
        if not isinstance(item, dict) or set(item) != {"kind", "out", "args", "params"}:
            raise bad(i, "must be an object with kind, out, args and params")
        kind, out, args, raw = item["kind"], item["out"], item["args"], item["params"]
        if kind not in FILE_ARITY:
            raise bad(i, f"unknown kind {kind!r} (known: {', '.join(sorted(FILE_ARITY))})")
        if out != i + 1:
            raise bad(i, f"out must be {i + 1}, got {out!r}")
        if not isinstance(args, list) or len(args) != FILE_ARITY[kind] or not all(
                isinstance(a, int) and not isinstance(a, bool) and 0 <= a <= i for a in args):
            raise bad(i, f"{kind} takes {FILE_ARITY[kind]} arguments, each an earlier value in [0, {i}]; got {args!r:.80}")
        if not isinstance(raw, dict):
            raise bad(i, "params must be an object")

        def tensor(key: str, dims: int | None = None, optional: bool = False) -> torch.Tensor | None:
            name = f"{i}.{key}"
            t = tensors.get(name)
            if t is None:
                if optional:
                    return None
                raise bad(i, f"tensor {name!r} is missing")
            if not t.dtype.is_floating_point or (dims is not None and t.dim() != dims) or not torch.isfinite(t).all():
                raise bad(i, f"tensor {name!r} must be a finite float tensor with {dims} dimensions")
            used.add(name)
            return t.float()

        def integer(key: str, lo: int, hi: int) -> int:
            v = raw.get(key)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise bad(i, f"{key} must be an integer in [{lo}, {hi}], got {v!r:.40}")
            return v

        def pair(key: str, lo: int, hi: int) -> tuple[int, int]:
            v = raw.get(key)
            if not (isinstance(v, list) and len(v) == 2 and all(isinstance(e, int) and not isinstance(e, bool)
                                                               and lo <= e <= hi for e in v)):
                raise bad(i, f"{key} must be two integers in [{lo}, {hi}], got {v!r:.40}")
            return tuple(v)

        def flag(key: str) -> bool:
            v = raw.get(key)
            if not isinstance(v, bool):
                raise bad(i, f"{key} must be true or false, got {v!r:.40}")
            return v

        def sparse_params(raw_p: dict[str, Any], prefix: str) -> dict[str, Any]:
            def integer_p(key: str, lo: int, hi: int) -> int:
                v = raw_p.get(key)
                if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                    raise bad(i, f"{key} must be an integer in [{lo}, {hi}], got {v!r:.40}")
                return v

            cout, cin, k = integer_p("cout", 1, 1 << 16), integer_p("cin", 1, 1 << 16), integer_p("k", 1, 31)
            pad = integer_p("pad", (k - 1) // 2, 15)
            taps = raw_p.get("taps")
            r = (k - 1) // 2
            if not isinstance(taps, list) or not all(isinstance(t, list) and len(t) == 2 and all(
                    isinstance(e, int) and not isinstance(e, bool) and -r <= e <= r for e in t) for t in taps) \
                    or len(taps) > k * k:
                raise bad(i, f"taps must be at most {k * k} offset pairs in [-{r}, {r}]")
            weights = []
            for j in range(len(taps)):
                crow, col, val = (tensors.get(f"{prefix}.w{j}.{x}") for x in ("crow", "col", "val"))
                if crow is None or col is None or val is None:
                    raise bad(i, f"tap {j}: CSR tensors missing")
                if crow.dtype != torch.int64 or col.dtype != torch.int64 or not val.dtype.is_floating_point:
                    raise bad(i, f"tap {j}: CSR indices must be int64 and values float")
                if crow.shape != (cout + 1,) or col.dim() != 1 or val.shape != col.shape or int(crow[0]) != 0 \
                        or int(crow[-1]) != col.numel() or bool((crow[1:] < crow[:-1]).any()) \
                        or (col.numel() and (int(col.min()) < 0 or int(col.max()) >= cin)) or not torch.isfinite(val).all():
                    raise bad(i, f"tap {j}: not a valid ({cout}, {cin}) CSR matrix")
                weights.append(csr_int32(crow, col, val.float(), (cout, cin)))
                used.update(f"{prefix}.w{j}.{x}" for x in ("crow", "col", "val"))
            bias = tensors.get(f"{prefix}.bias")
            if bias is not None:
                if not bias.dtype.is_floating_point or bias.shape != (cout,) or not torch.isfinite(bias).all():
                    raise bad(i, f"bias must have {cout} finite entries")
                used.add(f"{prefix}.bias")
                bias = bias.float()
            relu = raw_p.get("relu")
            if not isinstance(relu, bool):
                raise bad(i, f"relu must be true or false, got {relu!r:.40}")
            return {"cout": cout, "cin": cin, "k": k, "stride": integer_p("stride", 1, 64), "relu": relu,
                    "pad": pad, "taps": [tuple(t) for t in taps], "weights": weights, "bias": bias}

        params: dict[str, Any] = {}
        if kind == "sparse_conv":
            params = sparse_params(raw, f"{i}")
        elif kind == "dense_conv":
            weight = tensor("weight", 4)
            groups = integer("groups", 1, 1 << 16)
            if weight.shape[0] % groups:
                raise bad(i, "weight's output channels must be a multiple of groups")
            bias = tensor("bias", 1, optional=True)
            if bias is not None and bias.shape != (weight.shape[0],):
                raise bad(i, f"bias must have {weight.shape[0]} entries")
            params = {"weight": weight, "bias": bias, "stride": pair("stride", 1, 64), "padding": pair("padding", 0, 64),
                      "dilation": pair("dilation", 1, 64), "groups": groups, "relu": flag("relu")}
            if "alt" in raw:
                if not isinstance(raw["alt"], dict):
                    raise bad(i, "alt must be an object")
                alt = sparse_params(raw["alt"], f"{i}.alt")
                if (alt["cout"], alt["cin"], alt["k"], alt["k"]) != tuple(weight.shape) or alt["relu"] != params["relu"]:
                    raise bad(i, "alt must be the same convolution as weight")
                params["alt"] = alt
                params["alt_positions"] = integer("alt_positions", 0, 1 << 30)
        elif kind in ("affine2d", "affine1d"):
            scale, shift = tensor("scale", 1), tensor("shift", 1)
            if scale.shape != shift.shape:
                raise bad(i, "scale and shift must have the same length")
            params = {"scale": scale, "shift": shift}
        elif kind == "linear":
            weight = tensor("weight", 2)
            bias = tensor("bias", 1, optional=True)
            if bias is not None and bias.shape != (weight.shape[0],):
                raise bad(i, f"bias must have {weight.shape[0]} entries")
            params = {"weight": weight, "bias": bias}
        elif kind == "const":
            value = tensor("value")
            params = {"value": value}
        elif kind == "mean":
            params = {"keepdim": flag("keepdim")}
        elif kind == "add":
            params = {"relu": flag("relu"), "grid": flag("grid")}
        elif kind == "flatten":
            params = {"start_dim": integer("start_dim", -8, 8), "end_dim": integer("end_dim", -8, 8)}
        elif kind == "max_pool2d":
            def one_or_pair(key: str, lo: int) -> Any:
                v = raw.get(key)
                return integer(key, lo, 64) if not isinstance(v, list) else pair(key, lo, 64)
            params = {"kernel_size": one_or_pair("kernel_size", 1), "stride": one_or_pair("stride", 1),
                      "padding": one_or_pair("padding", 0), "dilation": one_or_pair("dilation", 1),
                      "ceil_mode": flag("ceil_mode"), "name": str(raw.get("name", "max_pool2d"))[:200]}
        ops.append(DeployOp(kind, out, tuple(args), params))
    if not isinstance(output, int) or not 0 <= output <= len(ops):
        raise DeployFormatError(f"{path}: output must be a value index in [0, {len(ops)}]")
    extra = set(tensors) - used
    if extra:
        raise DeployFormatError(f"{path}: tensors no operation uses: {sorted(extra)[:3]}")
    return ops
