"""The compact export format: seed recipe + coded masks + BatchNorm statistics in safetensors.

A masked binary model is fully described by its architecture, the seed its fixed weights were
drawn from, one mask per layer, and its BatchNorm running statistics. This module writes exactly
that, in one safetensors file (no pickle), and reads it back into a model whose logits equal
the original's bit for bit on the CPU.

File layout (format ``robin_compact``, version 1). Safetensors metadata:
``{"format": "robin_compact", "version": "1"}``. Tensors:

- ``robin.header`` (uint8): UTF-8 JSON: the timm model name and keyword arguments, the weight
  recipe (``weights: "recipe"`` with the seed and a SHA-256 of the kept weights, or
  ``weights: "stored"``), and per masked layer its name, shape, keep ratio, kept count, mask
  coding (see :mod:`robin_plugin.export.codec`) and how its weights are stored. The header is
  a tensor, not only metadata, because timm's loaders hand a filter function the tensors only.
- ``robin.masks`` (uint8): every layer's coded mask, concatenated in layer order.
- ``robin.signs`` (uint8, only if weights are stored): bit-packed signs of layers whose weights
  are +-c constants, all entries (so the loaded model equals the original everywhere).
- ``robin.values`` (float32, only if needed): exact values of the *kept* weights of layers whose
  weights are neither seed-reproducible nor +-c (e.g. a robinified model with Kaiming-normal
  weights). Pruned weights do not change the logits; the loaded model keeps its own there.
- ``state.<dtype>`` (one flat tensor per dtype): every other entry of the state dict,
  unchanged and concatenated in state-dict order (BatchNorm ``running_mean`` and
  ``running_var`` in float32, ``num_batches_tracked`` in int64, any float parameter a
  robinified model kept); the header lists each entry's key, dtype and shape. One tensor per
  dtype instead of one per entry keeps the safetensors header small.
- ``robin.sha256`` (uint8[32]): SHA-256 over every other tensor's name, dtype, shape and bytes,
  so a flipped bit anywhere is reported instead of loading a different model.

Weights are regenerated with ``timm.create_model(name, **kwargs)``: robin models draw every
weight from CPU generators seeded per stream from the seed
(:func:`robin_plugin.models._common.stream_generator`), independent of the global RNG. Export
checks this by regenerating the model and comparing every weight; if they differ (a robinified
model, edited weights, an unknown architecture) the weights are stored instead, which needs the
skeleton module to load: ``load_compact(path, model=skeleton)``.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import timm
import torch
import torch.nn as nn

from ..errors import RobinError
from ..io import save_safetensors
from ..layers.masked import KEEP_RATIO_KEY, MaskedLayer
from ..layers.selection import kept_count
from ..models.spec import ModelSpec, build_model, check_model_size, count_weights, model_spec
from ..pruning import masked_layers
from ..summary import summary
from .codec import CodecError, decode_mask, encode_mask, mask_entropy_bits, pack_bits, unpack_bits

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "ExportError",
    "ExportFormatError",
    "compact_size_report",
    "compact_state_dict",
    "compact_tensors",
    "export_compact",
    "infer_model_spec",
    "is_compact",
    "load_compact",
    "read_compact_file",
]

_log = logging.getLogger(__name__)

FORMAT_NAME = "robin_compact"
FORMAT_VERSION = 1
HEADER_KEY = "robin.header"
CHECKSUM_KEY = "robin.sha256"
MASKS_KEY = "robin.masks"
SIGNS_KEY = "robin.signs"
VALUES_KEY = "robin.values"
STATE_PREFIX = "state."
_METADATA = {"format": FORMAT_NAME, "version": str(FORMAT_VERSION)}
_RECIPE_GENERATOR = (
    "torch.Generator (CPU) per named stream, seeded with the first 8 bytes of "
    "sha256(f'{seed}/{stream}') (robin_plugin.models._common.stream_generator)"
)


class ExportError(RobinError, ValueError):
    """A model cannot be exported as asked (no masked layers, wrong dtype, bad model name ...)."""


class ExportFormatError(RobinError, ValueError):
    """A file is not a valid compact export: missing, truncated, corrupt, foreign, or a mismatch."""


# --- writing --------------------------------------------------------------------------------


def infer_model_spec(model: nn.Module) -> tuple[str, dict[str, Any]] | None:
    """The timm name and keyword arguments that rebuild ``model``, or None if unknown.

    Works for masked robin models made with ``timm.create_model`` (see
    :func:`robin_plugin.models.spec.model_spec`). The result is only a candidate:
    :func:`export_compact` checks it by regenerating the model.
    """
    if not getattr(model, "masked", False):
        return None
    spec = model_spec(model)
    return None if spec is None else (spec.name, spec.to_json()["kwargs"])


def _flat_mask(layer: MaskedLayer) -> torch.Tensor:
    return layer.mask().detach().reshape(-1).cpu().bool()


def _kept_digest(weights_and_masks: list[tuple[torch.Tensor, torch.Tensor]]) -> str:
    """SHA-256 of the kept weights (float32 bytes, layer order): what the logits depend on."""
    h = hashlib.sha256()
    for w, m in weights_and_masks:
        h.update(w.detach().reshape(-1).cpu().float()[m].numpy().tobytes())
    return h.hexdigest()


def _checksum(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    h = hashlib.sha256()
    for key in sorted(tensors):
        if key == CHECKSUM_KEY:
            continue
        t = tensors[key]
        h.update(f"{key}\0{str(t.dtype)}\0{tuple(t.shape)}\0".encode())
        h.update(t.detach().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return torch.frombuffer(bytearray(h.digest()), dtype=torch.uint8)


def _regenerates(model: nn.Module, name: str, kwargs: dict[str, Any]) -> tuple[bool, str]:
    """Whether ``timm.create_model(name, **kwargs)`` reproduces every weight of ``model``."""
    try:
        ref = timm.create_model(name, **kwargs)
    except Exception as e:  # any failure to rebuild means "not reproducible"
        return False, f"timm.create_model({name!r}, ...) failed: {e}"
    ours, theirs = dict(masked_layers(model)), dict(masked_layers(ref))
    if list(ours) != list(theirs):
        return False, "the masked layers differ from the regenerated model's"
    for lname, m in ours.items():
        if m.weight.shape != theirs[lname].weight.shape or not torch.equal(m.weight.detach().cpu(), theirs[lname].weight):
            return False, f"weights of {lname} differ from the regenerated model's"
    sd_ref, sd = ref.state_dict(), model.state_dict()
    if {k: tuple(v.shape) for k, v in sd_ref.items()} != {k: tuple(v.shape) for k, v in sd.items()}:
        return False, "the state dict keys or shapes differ from the regenerated model's"
    return True, ""


def compact_tensors(
    model: nn.Module, *, model_name: str | None = None, model_kwargs: dict[str, Any] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Build the tensors of a compact file for ``model`` (nothing is written).

    Args:
        model: a model with masked layers (a robin timm model or a robinified one), float32.
        model_name: timm name that rebuilds the architecture; inferred for robin models.
        model_kwargs: keyword arguments for ``timm.create_model(model_name, ...)``; inferred
            for robin models when ``model_name`` is not given.

    Returns:
        ``(tensors, header)``: the safetensors tensors and the decoded JSON header.
    """
    layers = masked_layers(model)
    if not layers:
        raise ExportError(f"{type(model).__name__} has no masked layers; only masked binary models can be exported compactly")
    for lname, m in layers:
        if m.weight.dtype != torch.float32:
            raise ExportError(f"layer {lname} has {m.weight.dtype} weights; export float32 models (call model.float())")
    if model_name is not None:
        if not isinstance(model_name, str) or not timm.is_model(model_name):
            raise ExportError(f"unknown timm model name {model_name!r}; see timm.list_models('robin_*')")
        spec: tuple[str, dict[str, Any]] | None = (model_name, dict(model_kwargs or {}))
    elif model_kwargs is not None:
        raise ExportError("model_kwargs needs model_name")
    else:
        spec = infer_model_spec(model)
    try:
        if spec is not None:
            json.dumps(spec[1])
    except TypeError as e:
        raise ExportError(f"model_kwargs must be JSON values (numbers, strings, lists): {e}") from e

    reproducible, why = _regenerates(model, *spec) if spec is not None else (False, "no timm name rebuilds this model")
    if not reproducible:
        if model_name is not None:
            _log.warning("weights of %s are not reproducible (%s); storing them in the file", model_name, why)
        else:
            _log.info("storing weights in the compact file: %s", why)

    masks_data: list[np.ndarray] = []
    signs_data: list[np.ndarray] = []
    values_data: list[torch.Tensor] = []
    layer_info: list[dict[str, Any]] = []
    weights_and_masks = []
    for lname, m in layers:
        mask = _flat_mask(m)
        kept = int(mask.sum())
        if kept != m.kept:
            raise ExportError(f"layer {lname}: mask keeps {kept} weights but keep_ratio {m.keep_ratio} gives {m.kept}")
        coding, param, data = encode_mask(mask.numpy())
        masks_data.append(data)
        info: dict[str, Any] = dict(
            name=lname, shape=list(m.weight.shape), keep_ratio=m.keep_ratio, kept=kept,
            coding=coding, param=param, nbytes=int(data.size),
        )
        w = m.weight.detach().reshape(-1).cpu()
        weights_and_masks.append((w, mask))
        if reproducible:
            info["weights"] = "recipe"
        else:
            scale = w.abs()[0]
            if scale > 0 and bool((w.abs() == scale).all()):
                info["weights"] = "signs"
                info["scale"] = float(scale)  # a float32 value, exact as a JSON float
                signs_data.append(pack_bits((w > 0).numpy()))
            else:
                info["weights"] = "values"
                values_data.append(w[mask].clone())
        layer_info.append(info)

    # keep ratios are in the layer entries of the header; the decoder puts them back in the state dict
    masked_keys = {f"{lname}.{suffix}" for lname, _ in layers for suffix in ("weight", "scores", KEEP_RATIO_KEY)}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items() if k not in masked_keys}
    state_index = [[k, str(v.dtype).removeprefix("torch."), list(v.shape)] for k, v in state.items()]
    state_blobs: dict[str, list[torch.Tensor]] = {}
    for (k, dtype, _), v in zip(state_index, state.values()):
        state_blobs.setdefault(dtype, []).append(v.reshape(-1))
    header: dict[str, Any] = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "model": None if spec is None else {"name": spec[0], "kwargs": spec[1]},
        "weights": "recipe" if reproducible else "stored",
        "layers": layer_info,
        "state": state_index,
    }
    if reproducible:
        header["recipe"] = {
            "seed": spec[1].get("seed", 0),
            "generator": _RECIPE_GENERATOR,
            "torch": torch.__version__,
            "kept_sha256": _kept_digest(weights_and_masks),
        }
    tensors: dict[str, torch.Tensor] = {
        HEADER_KEY: torch.frombuffer(bytearray(json.dumps(header, separators=(",", ":")).encode()), dtype=torch.uint8),
        MASKS_KEY: torch.from_numpy(np.concatenate(masks_data)) if masks_data else torch.zeros(0, dtype=torch.uint8),
    }
    if signs_data:
        tensors[SIGNS_KEY] = torch.from_numpy(np.concatenate(signs_data))
    if values_data:
        tensors[VALUES_KEY] = torch.cat(values_data).float()
    for dtype, parts in state_blobs.items():
        tensors[STATE_PREFIX + dtype] = torch.cat(parts).contiguous()
    tensors[CHECKSUM_KEY] = _checksum(tensors)
    return tensors, header


def export_compact(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    model_name: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` as a compact safetensors file, atomically.

    Args:
        model: masked binary model (robin timm model or robinified module), float32.
        path: destination; name it ``*.safetensors`` so timm's loaders recognise it.
        overwrite: replace an existing file (default: refuse with ``FileExistsRobinError``).
        model_name, model_kwargs: timm name and arguments that rebuild the architecture
            (inferred for robin timm models; see :func:`compact_tensors`).

    Returns:
        The path written. Load it with :func:`load_compact` or
        ``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path))``.
    """
    path = Path(path)
    if not overwrite and path.exists():
        from ..io import FileExistsRobinError

        raise FileExistsRobinError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    if not str(path).endswith(".safetensors"):
        _log.warning("%s does not end in .safetensors: timm's loaders will not recognise it", path)
    tensors, header = compact_tensors(model, model_name=model_name, model_kwargs=model_kwargs)
    _verify_roundtrip(model, tensors)
    save_safetensors(tensors, path, _METADATA, overwrite=overwrite)  # sorted header: same model -> same bytes
    _log.info("wrote %s (%d bytes, weights %s)", path, path.stat().st_size, header["weights"])
    return path


def _verify_roundtrip(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Decode ``tensors`` against a copy of ``model`` and check masks, kept weights and state."""
    twin = copy.deepcopy(model).cpu()
    sd = compact_state_dict(tensors, twin)
    ours = dict(masked_layers(model))
    for lname, m in masked_layers(twin):
        mask = sd[f"{lname}.scores"].reshape(-1) > 0
        ref_mask = _flat_mask(ours[lname])
        if not torch.equal(mask, ref_mask) or not torch.equal(
            sd[f"{lname}.weight"].reshape(-1)[mask], ours[lname].weight.detach().reshape(-1).cpu()[ref_mask]
        ):
            raise ExportError(f"internal error: layer {lname} does not round-trip; please report this")


def compact_size_report(model: nn.Module, **spec: Any) -> dict[str, Any]:
    """Sizes of ``model``'s compact export next to the information bound and fp32 (bytes).

    Args:
        model: masked binary model.
        **spec: ``model_name`` / ``model_kwargs`` as :func:`compact_tensors`.

    Returns:
        A dict with ``file_bytes`` (exact size of the file :func:`export_compact` writes),
        ``mask_bytes``, ``weight_bytes`` (stored signs / values; 0 with the seed recipe),
        ``state_bytes`` (BatchNorm statistics ...), ``overhead_bytes`` (headers, checksum),
        ``entropy_bits`` (sum of n_i * H(k_i)), ``bound_bytes`` (entropy bits / 8 + state),
        ``fp32_bytes`` (dense float32 model), ``ratio_to_bound``, ``fp32_over_file``,
        ``weights`` (``recipe`` or ``stored``) and ``layers`` (per-layer figures).
    """
    tensors, header = compact_tensors(model, **spec)
    file_bytes = len(safetensors.torch.save(tensors, metadata=_METADATA))
    mask_bytes = int(tensors[MASKS_KEY].numel())
    weight_bytes = sum(int(tensors[k].numel() * tensors[k].element_size()) for k in (SIGNS_KEY, VALUES_KEY) if k in tensors)
    state_bytes = sum(int(t.numel() * t.element_size()) for k, t in tensors.items() if k.startswith(STATE_PREFIX))
    layers = []
    entropy = 0.0
    for info in header["layers"]:
        n = math.prod(info["shape"])
        bits = mask_entropy_bits(n, info["kept"])
        entropy += bits
        layers.append(dict(name=info["name"], numel=n, kept=info["kept"], keep_ratio=info["keep_ratio"],
                           coding=info["coding"], mask_bytes=info["nbytes"], entropy_bytes=bits / 8))
    bound = math.ceil(entropy / 8) + state_bytes
    fp32 = summary(model).fp32_bytes
    return dict(
        model=header["model"]["name"] if header["model"] else type(model).__name__,
        weights=header["weights"],
        file_bytes=file_bytes,
        mask_bytes=mask_bytes,
        weight_bytes=weight_bytes,
        state_bytes=state_bytes,
        overhead_bytes=file_bytes - mask_bytes - weight_bytes - state_bytes,
        entropy_bits=entropy,
        bound_bytes=bound,
        fp32_bytes=fp32,
        ratio_to_bound=file_bytes / bound,
        fp32_over_file=fp32 / file_bytes,
        layers=layers,
    )


# --- reading --------------------------------------------------------------------------------


def _looks_like_pickle(data: bytes) -> bool:
    """A pickle stream (protocol 2+) or a ``torch.save`` zip archive; only used for messages."""
    return (data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")) or data[:4] == b"PK\x03\x04"


def _looks_like_safetensors(data: bytes) -> bool:
    return len(data) > 9 and int.from_bytes(data[:8], "little") <= len(data) - 8 and data[8:9] == b"{"


def read_compact_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a compact file's tensors after checking that it is one; never unpickles anything.

    Raises:
        ExportFormatError: missing, truncated, not safetensors (pickle and ``torch.save`` files
            are refused without being opened as such), or a safetensors file of another kind.
    """
    path = Path(path)
    if not path.is_file():
        raise ExportFormatError(f"no compact file at {path}")
    data = path.read_bytes()
    if not _looks_like_safetensors(data) and _looks_like_pickle(data):
        raise ExportFormatError(
            f"{path} is a pickle / torch.save file; robin never unpickles files. "
            "Compact exports and checkpoints are safetensors files"
        )
    if len(data) < 8:
        raise ExportFormatError(f"{path} is truncated ({len(data)} bytes): not a safetensors file")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise ExportFormatError(f"{path} is truncated or not a safetensors file (header of {n} bytes, file of {len(data)})")
    try:
        raw = json.loads(data[8:8 + n])
        metadata = raw.get("__metadata__") if isinstance(raw, dict) else None
        tensors = safetensors.torch.load(data)
    except Exception as e:  # safetensors raises its own error type, json ValueError, ...
        raise ExportFormatError(f"{path} is not a valid safetensors file ({type(e).__name__}: {e})") from e
    if metadata != _METADATA:
        if isinstance(metadata, dict) and metadata.get("format") == FORMAT_NAME:
            raise ExportFormatError(
                f"{path} is a {FORMAT_NAME} file of version {metadata.get('version')!r}; this robin_plugin reads version {FORMAT_VERSION}"
            )
        raise ExportFormatError(
            f"{path} is a safetensors file but not a robin compact export (metadata {metadata!r}); "
            "a plain state dict loads with model.load_state_dict(safetensors.torch.load_file(path))"
        )
    return tensors


def is_compact(state_dict: dict[str, Any]) -> bool:
    """Whether a dict of tensors (e.g. from ``safetensors.torch.load_file``) is a compact export."""
    return HEADER_KEY in state_dict


def _parse_header(tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    for key in (HEADER_KEY, CHECKSUM_KEY, MASKS_KEY):
        if key not in tensors:
            raise ExportFormatError(f"compact file lacks the tensor {key!r}")
    stored = tensors[CHECKSUM_KEY]
    if stored.dtype != torch.uint8 or stored.numel() != 32 or not torch.equal(stored.reshape(-1), _checksum(tensors)):
        raise ExportFormatError("compact file is corrupt: its SHA-256 checksum does not match its contents")
    try:
        header = json.loads(tensors[HEADER_KEY].numpy().tobytes().decode())
    except (UnicodeDecodeError, ValueError) as e:
        raise ExportFormatError(f"compact file has an unreadable header ({e})") from e
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME or header.get("version") != FORMAT_VERSION:
        raise ExportFormatError(f"compact header is not {FORMAT_NAME} version {FORMAT_VERSION}")
    if header.get("weights") not in ("recipe", "stored") or not isinstance(header.get("layers"), list):
        raise ExportFormatError("compact header lacks a valid 'weights' or 'layers' entry")
    return header


def _layer_field(info: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = info.get(key) if isinstance(info, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ExportFormatError(f"compact header: layer entry {info!r:.80} has no valid {key!r}")
    return value


def compact_state_dict(tensors: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Turn a compact file's tensors into a state dict for ``model`` (same architecture).

    The state dict holds each masked layer's stored ``keep_ratio`` (the ``<layer>.keep_ratio``
    entries), so loading it makes the scores returned (1 where the stored mask keeps a weight, 0
    elsewhere) select exactly the stored mask; ``model`` itself is not changed. The original
    scores are not stored; only their selection is. Files written before the input statistics
    were state get them from the header's model arguments.

    Args:
        tensors: the file's tensors (from :func:`read_compact_file` or timm's loader).
        model: the target model; its masked layers must match the file's in names and shapes.

    Returns:
        A complete state dict for ``model.load_state_dict(..., strict=True)``.
    """
    header = _parse_header(tensors)
    ours = masked_layers(model)
    infos = header["layers"]
    names = [_layer_field(i, "name", str) for i in infos]
    if names != [n for n, _ in ours]:
        raise ExportFormatError(
            f"the file's masked layers ({len(names)}, first {names[:3]}) do not match the model's "
            f"({len(ours)}, first {[n for n, _ in ours[:3]]}); load into the architecture it was exported from"
        )
    masks_blob = tensors[MASKS_KEY].numpy()
    signs_blob = tensors[SIGNS_KEY].numpy() if SIGNS_KEY in tensors else np.zeros(0, np.uint8)
    values_blob = tensors[VALUES_KEY] if VALUES_KEY in tensors else torch.zeros(0)
    mask_off = sign_off = value_off = 0
    sd: dict[str, torch.Tensor] = {}
    decoded: list[tuple[str, MaskedLayer, torch.Tensor, str, dict]] = []
    for info, (lname, m) in zip(infos, ours):
        shape = _layer_field(info, "shape", list)
        if tuple(shape) != tuple(m.weight.shape):
            raise ExportFormatError(f"layer {lname}: the file has shape {tuple(shape)}, the model {tuple(m.weight.shape)}")
        n = m.weight.numel()
        kept = _layer_field(info, "kept", int)
        keep_ratio = _layer_field(info, "keep_ratio", (int, float))
        nbytes = _layer_field(info, "nbytes", int)
        if not 0 < keep_ratio <= 1 or kept != kept_count(n, keep_ratio) or nbytes < 0 or mask_off + nbytes > masks_blob.size:
            raise ExportFormatError(f"layer {lname}: inconsistent keep_ratio / kept / nbytes in the header")
        try:
            mask = decode_mask(_layer_field(info, "coding", str), info.get("param"),
                               masks_blob[mask_off:mask_off + nbytes], n, kept)
        except CodecError as e:
            raise ExportFormatError(f"layer {lname}: corrupt mask ({e})") from e
        mask_off += nbytes
        mode = info.get("weights")
        if header["weights"] == "recipe" and mode != "recipe" or header["weights"] == "stored" and mode == "recipe":
            raise ExportFormatError(f"layer {lname}: weight mode {mode!r} contradicts the header")
        if mode == "signs":
            nb = (n + 7) // 8
            scale = _layer_field(info, "scale", float)
            if sign_off + nb > signs_blob.size or not (math.isfinite(scale) and scale > 0):
                raise ExportFormatError(f"layer {lname}: missing or invalid stored signs")
            try:
                positive = torch.from_numpy(unpack_bits(signs_blob[sign_off:sign_off + nb], n))
            except CodecError as e:
                raise ExportFormatError(f"layer {lname}: corrupt signs ({e})") from e
            sign_off += nb
            s = torch.tensor(scale, dtype=torch.float32)
            info = dict(info, _weight=torch.where(positive, s, -s))
        elif mode == "values":
            if value_off + kept > values_blob.numel():
                raise ExportFormatError(f"layer {lname}: missing stored weight values")
            info = dict(info, _values=values_blob[value_off:value_off + kept].float())
            value_off += kept
        elif mode != "recipe":
            raise ExportFormatError(f"layer {lname}: unknown weight mode {mode!r}")
        decoded.append((lname, m, torch.from_numpy(mask), mode, info))
    if mask_off != masks_blob.size or sign_off != signs_blob.size or value_off != values_blob.numel():
        raise ExportFormatError("compact file holds more coded data than its header describes")

    base = {lname: m.weight.detach().reshape(-1).cpu() for lname, m, *_ in decoded}
    if header["weights"] == "recipe":
        base = _recipe_weights(header, model, base, [(base[lname], mask) for lname, _, mask, _, _ in decoded])

    for lname, m, mask, mode, info in decoded:
        if mode == "signs":
            w = info["_weight"]
        elif mode == "values":
            w = base[lname].clone().float()
            w[mask] = info["_values"]
        else:
            w = base[lname]
        sd[f"{lname}.weight"] = w.reshape(m.weight.shape).to(m.weight.dtype)
        sd[f"{lname}.scores"] = mask.to(m.scores.dtype).reshape(m.scores.shape)
        sd[f"{lname}.{KEEP_RATIO_KEY}"] = torch.tensor(float(info["keep_ratio"]), dtype=torch.float64)

    sd.update(_unpack_state(header, tensors))
    _legacy_input_stats(header, model, sd)
    return sd


def _legacy_input_stats(header: dict[str, Any], model: nn.Module, sd: dict[str, torch.Tensor]) -> None:
    """Fill ``normalize.mean`` / ``normalize.std`` from the header of a file written before they were state."""
    norm = getattr(model, "normalize", None)
    kwargs = (header.get("model") or {}).get("kwargs") if isinstance(header.get("model"), dict) else None
    if norm is None or not isinstance(kwargs, dict):
        return
    for key in ("mean", "std"):
        value = kwargs.get(key)
        if f"normalize.{key}" in sd or not isinstance(value, list):
            continue
        try:
            sd[f"normalize.{key}"] = torch.tensor(value, dtype=torch.float32).view(1, -1, 1, 1)
        except (TypeError, ValueError) as e:
            raise ExportFormatError(f"compact header: invalid {key} {value!r:.80}") from e


def _unpack_state(header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Split the per-dtype state tensors back into the state-dict entries the header lists."""
    index = header.get("state")
    if not isinstance(index, list):
        raise ExportFormatError("compact header lacks its 'state' list")
    offsets: dict[str, int] = {}
    out: dict[str, torch.Tensor] = {}
    for entry in index:
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str) and isinstance(entry[1], str)
                and isinstance(entry[2], list) and all(isinstance(d, int) and d >= 0 for d in entry[2])):
            raise ExportFormatError(f"compact header: invalid state entry {entry!r:.80}")
        key, dtype, shape = entry
        blob = tensors.get(STATE_PREFIX + dtype)
        if blob is None or str(blob.dtype).removeprefix("torch.") != dtype:
            raise ExportFormatError(f"compact file lacks the {dtype} state tensor for {key!r}")
        start, count = offsets.get(dtype, 0), math.prod(shape)
        if start + count > blob.numel():
            raise ExportFormatError(f"compact file's {dtype} state tensor is too short for {key!r}")
        out[key] = blob[start:start + count].reshape(shape).clone()
        offsets[dtype] = start + count
    for k, t in tensors.items():
        if k.startswith(STATE_PREFIX) and offsets.get(k[len(STATE_PREFIX):], 0) != t.numel():
            raise ExportFormatError(f"compact file's tensor {k!r} holds data its header does not describe")
    return out


def _recipe_weights(
    header: dict[str, Any],
    model: nn.Module,
    own: dict[str, torch.Tensor],
    own_pairs: list[tuple[torch.Tensor, torch.Tensor]],
) -> dict[str, torch.Tensor]:
    """Weights regenerated from the seed recipe, checked against the file's kept-weight digest.

    The target model's own weights are used when they already match (the usual case: it was
    built from the same name and arguments); otherwise the model is regenerated from the
    header's timm name and arguments.
    """
    recipe = header.get("recipe")
    if not isinstance(recipe, dict) or not isinstance(recipe.get("kept_sha256"), str):
        raise ExportFormatError("compact header uses the seed recipe but lacks its 'recipe' entry")
    digest = recipe["kept_sha256"]
    if _kept_digest(own_pairs) == digest:
        return own
    spec = header.get("model")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(spec.get("kwargs"), dict):
        raise ExportFormatError("compact header uses the seed recipe but names no model to regenerate")
    ref = _build_from_header(spec, "regenerate")
    regen = {lname: m.weight.detach().reshape(-1) for lname, m in masked_layers(ref)}
    if list(regen) != list(own) or any(regen[k].shape != own[k].shape for k in own):
        raise ExportFormatError(f"the regenerated {spec['name']!r} does not match the target model's layers")
    if _kept_digest([(regen[k], mask) for k, (_, mask) in zip(own, own_pairs)]) != digest:
        raise ExportFormatError(
            f"weights regenerated from seed {recipe.get('seed')!r} do not match the file (exported with "
            f"torch {recipe.get('torch')!r}, running {torch.__version__}): the random generator changed?"
        )
    return regen


def _build_from_header(spec: dict[str, Any], verb: str, layers: list[Any] | None = None) -> nn.Module:
    """Build the robin model a header names, after validating its spec (a file never passes
    ``pretrained``, ``pretrained_cfg_overlay``, ``cache_dir`` or unknown arguments to timm), checking
    its size against the limit and the header's layer shapes against the spec, before building."""
    try:
        parsed = ModelSpec.parse(spec.get("name"), spec.get("kwargs"), source="the compact header's model.kwargs")
        check_model_size(parsed)
    except RobinError as e:
        raise ExportFormatError(f"cannot {verb} the model the compact header names: {e}") from e
    if layers is not None:
        stored = sum(math.prod(_layer_field(info, "shape", list)) for info in layers)
        expected = count_weights(parsed)
        if stored != expected:
            raise ExportFormatError(
                f"the compact header's layers hold {stored:,} weights but {parsed.name} with its arguments has "
                f"{expected:,}: the header does not describe the model it names"
            )
    try:
        return build_model(parsed)
    except RobinError as e:
        raise ExportFormatError(f"cannot {verb} the model the compact header names: {e}") from e


def load_compact(path: str | os.PathLike, model: nn.Module | None = None) -> nn.Module:
    """Load a compact file into a model whose logits equal the exported model's (CPU, eval).

    Args:
        path: a file written by :func:`export_compact`.
        model: the skeleton to load into. Needed for files of robinified models (no timm name
            rebuilds them): pass the same architecture, e.g. ``robinify(timm.create_model(...))``.
            Default: build ``timm.create_model(name, **kwargs)`` from the file's header.

    Returns:
        The model (the skeleton itself if given), in eval mode, on the CPU unless the skeleton
        lives elsewhere.

    Raises:
        ExportFormatError: the file is missing, truncated, corrupt, foreign, or does not match
            the skeleton.
    """
    tensors = read_compact_file(path)
    header = _parse_header(tensors)
    if model is None:
        spec = header.get("model")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(spec.get("kwargs"), dict):
            raise ExportFormatError(
                f"{path} holds a model no timm name rebuilds (e.g. a robinified one); pass its skeleton: "
                "load_compact(path, model=robinify(<same architecture>))"
            )
        model = _build_from_header(spec, "build", header["layers"])
    sd = compact_state_dict(tensors, model)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ExportFormatError(f"{path} does not fit the model: {e}") from e
    return model.eval()
