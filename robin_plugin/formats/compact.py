"""The compact file format: its layout, its checks, and its decoding into a state dict.

A masked binary model is fully described by its architecture, the seed its fixed weights were
drawn from, one mask per layer, and its BatchNorm running statistics. A compact file holds
exactly that, in one safetensors file (no pickle); decoding it gives a state dict whose model's
logits equal the exported model's bit for bit on the CPU. Writing is
:mod:`robin_plugin.export.compact`; this module reads, below the models, which decode compact
files when timm hands them one (:mod:`robin_plugin.models.timm_loading`).

File layout (format ``robin_compact``, version 1). Safetensors metadata:
``{"format": "robin_compact", "version": "1"}``. Tensors:

- ``robin.header`` (uint8): UTF-8 JSON: the timm model name and keyword arguments, the weight
  recipe (``weights: "recipe"`` with the seed and a SHA-256 of the kept weights, or
  ``weights: "stored"``), and per masked layer its name, shape, keep ratio, kept count, mask
  coding (see :mod:`robin_plugin.formats.codec`) and how its weights are stored. The header is
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

Decoding never builds a model itself: a file whose seed recipe the target model's own weights do
not reproduce needs the ``regenerate`` function :func:`decode_compact` is given (the models pass
one that validates the header's model spec before building it).

Size: about 440 lines, over the package's ~400, because the layout, its checks and its decoding
are one contract: each check guards a field the decoder then reads.
"""
from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import safetensors.torch
import torch
import torch.nn as nn

from ..errors import InputError, RobinError
from ..layers.masked import KEEP_RATIO_KEY, MaskedLayer
from ..layers.selection import kept_count
from ..pruning import masked_layers
from .codec import CodecError, decode_mask, unpack_bits
from .files import FileContentError, SafetensorsLimits, nonfinite_tensor, parse_json, read_safetensors, read_safetensors_header

__all__ = [
    "CHECKSUM_KEY",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "HEADER_KEY",
    "MASKS_KEY",
    "METADATA",
    "SIGNS_KEY",
    "STATE_PREFIX",
    "VALUES_KEY",
    "ExportFormatError",
    "ModelFileError",
    "checksum",
    "decode_compact",
    "is_compact",
    "kept_digest",
    "layer_field",
    "parse_header",
    "read_compact_file",
]

FORMAT_NAME = "robin_compact"
FORMAT_VERSION = 1
HEADER_KEY = "robin.header"
CHECKSUM_KEY = "robin.sha256"
MASKS_KEY = "robin.masks"
SIGNS_KEY = "robin.signs"
VALUES_KEY = "robin.values"
STATE_PREFIX = "state."
METADATA = {"format": FORMAT_NAME, "version": str(FORMAT_VERSION)}
"""The safetensors metadata of every compact file."""
# written into every compact header as it was first written (the function now lives in robin_plugin.rng)
RECIPE_GENERATOR = (
    "torch.Generator (CPU) per named stream, seeded with the first 8 bytes of "
    "sha256(f'{seed}/{stream}') (robin_plugin.rng.stream_generator)"
)
"""How the header's recipe says the fixed weights were drawn (informative; the digest is the check)."""

Regenerate = Callable[[dict[str, Any]], nn.Module]
"""Builds the model a header's ``model`` entry (``{"name": ..., "kwargs": {...}}``) names."""


class ExportFormatError(RobinError, ValueError):
    """A file is not a valid compact export: missing, truncated, corrupt, foreign, or a mismatch."""


class ModelFileError(ExportFormatError, InputError):
    """A model file given to :func:`robin_plugin.loading.load_model` (a state dict) cannot be read or does not fit.

    An :class:`ExportFormatError` (the export commands read it) and an :class:`InputError`
    (``robin eval --checkpoint`` reads it), as before the loaders were one.
    """


def kept_digest(weights_and_masks: list[tuple[torch.Tensor, torch.Tensor]]) -> str:
    """SHA-256 of the kept weights (float32 bytes, layer order): what the logits depend on."""
    h = hashlib.sha256()
    for w, m in weights_and_masks:
        h.update(w.detach().reshape(-1).cpu().float()[m].numpy().tobytes())
    return h.hexdigest()


def checksum(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """SHA-256 (uint8[32]) over every tensor but ``robin.sha256``: names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        if key == CHECKSUM_KEY:
            continue
        t = tensors[key]
        h.update(f"{key}\0{str(t.dtype)}\0{tuple(t.shape)}\0".encode())
        h.update(t.detach().reshape(-1).contiguous().view(torch.uint8).numpy())  # the buffer itself: no copy
    return torch.frombuffer(bytearray(h.digest()), dtype=torch.uint8)



def _looks_like_pickle(data: bytes) -> bool:
    """A pickle stream (protocol 2+) or a ``torch.save`` zip archive; only used for messages."""
    return (data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")) or data[:4] == b"PK\x03\x04"


def _looks_like_safetensors(data: bytes) -> bool:
    return len(data) > 9 and int.from_bytes(data[:8], "little") <= len(data) - 8 and data[8:9] == b"{"


MAX_HEADER_BYTES = 8 * 1024 * 1024
"""Size limit of a compact file's JSON header (``robin.header``); a ResNet-50's takes about 40 kB."""
MAX_NAME_CHARS = 1024
"""Length limit of the names and strings in a compact header (model name, layer names, codings)."""


def _compact_tensor_name(name: str) -> bool:
    return name in (HEADER_KEY, CHECKSUM_KEY, MASKS_KEY, SIGNS_KEY, VALUES_KEY) or (
        name.startswith(STATE_PREFIX) and len(name) <= 32)


LIMITS = SafetensorsLimits(max_tensors=64, max_name_chars=64, max_metadata_chars=64, names=_compact_tensor_name,
                           tensor_limits={HEADER_KEY: MAX_HEADER_BYTES, CHECKSUM_KEY: 32})
"""What a compact file may declare before its body is read: its own tensor names, a bounded header."""


def read_compact_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a compact file's tensors after checking that it is one; never unpickles anything.

    The safetensors header (tensor names, dtypes, sizes, metadata) is checked against
    :data:`LIMITS` before the body is read, so a huge or sparse file is refused after a few bytes.

    Raises:
        ExportFormatError: missing, truncated, not safetensors (pickle and ``torch.save`` files
            are refused without being opened as such), or a safetensors file of another kind.
    """
    path = Path(path)
    if not path.is_file():
        raise ExportFormatError(f"no compact file at {path}")
    try:
        metadata = read_safetensors_header(path).metadata  # what kind of file; the compact limits apply to compact files
    except OSError as e:
        raise ExportFormatError(f"cannot read {path}: {e.strerror or e}") from None
    except FileContentError as e:
        raise ExportFormatError(f"{path} is not a valid safetensors file ({str(e).removeprefix('not a safetensors file: ')})"
                                "; compact exports are safetensors files") from None
    if metadata == METADATA:
        try:
            tensors, _ = read_safetensors(path, LIMITS)
        except (OSError, FileContentError) as e:
            raise ExportFormatError(f"{path} is not a valid compact file ({e})") from None
    if metadata != METADATA:
        if metadata.get("format") == FORMAT_NAME:
            raise ExportFormatError(
                f"{path} is a {FORMAT_NAME} file of version {metadata.get('version')!r:.40}; this robin_plugin reads version {FORMAT_VERSION}"
            )
        shown = {k[:40]: v[:40] for k, v in list(metadata.items())[:5]} or None
        raise ExportFormatError(
            f"{path} is a safetensors file but not a robin compact export (metadata {shown!r}); "
            "a plain state dict loads with model.load_state_dict(safetensors.torch.load_file(path))"
        )
    return tensors


def is_compact(state_dict: dict[str, Any]) -> bool:
    """Whether a dict of tensors (e.g. from ``safetensors.torch.load_file``) is a compact export."""
    return HEADER_KEY in state_dict


def parse_header(tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The decoded JSON header of a compact file's tensors, after checking the checksum and the format.

    Raises:
        ExportFormatError: a tensor is missing, the checksum does not match, or the header is
            unreadable or of another format or version.
    """
    for key in (HEADER_KEY, CHECKSUM_KEY, MASKS_KEY):
        if key not in tensors:
            raise ExportFormatError(f"compact file lacks the tensor {key!r}")
    stored = tensors[CHECKSUM_KEY]
    if stored.dtype != torch.uint8 or stored.numel() != 32 or not torch.equal(stored.reshape(-1), checksum(tensors)):
        raise ExportFormatError("compact file is corrupt: its SHA-256 checksum does not match its contents")
    raw = tensors[HEADER_KEY]
    if raw.dtype != torch.uint8 or raw.numel() > MAX_HEADER_BYTES:
        raise ExportFormatError(f"compact header must be uint8 JSON of at most {MAX_HEADER_BYTES:,} bytes, "
                                f"got {raw.dtype} x {raw.numel():,}")
    try:
        header = parse_json(raw.reshape(-1).numpy().tobytes(), max_bytes=MAX_HEADER_BYTES)
    except FileContentError as e:
        raise ExportFormatError(f"compact file has an unreadable header ({e})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME or header.get("version") != FORMAT_VERSION:
        raise ExportFormatError(f"compact header is not {FORMAT_NAME} version {FORMAT_VERSION}")
    if header.get("weights") not in ("recipe", "stored") or not isinstance(header.get("layers"), list):
        raise ExportFormatError("compact header lacks a valid 'weights' or 'layers' entry")
    long = _long_string(header)
    if long is not None:
        raise ExportFormatError(f"compact header: a string of {len(long):,} characters ({long[:40]!r}...) is longer "
                                f"than the limit of {MAX_NAME_CHARS}; names, codings and digests are short")
    return header


def _long_string(value: Any) -> str | None:
    """The first string (key or value) in a parsed JSON value longer than :data:`MAX_NAME_CHARS`."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if len(v) > MAX_NAME_CHARS:
                return v
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return None


def layer_field(info: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    """The field ``key`` of a header's layer entry, or :class:`ExportFormatError` unless it is a ``kind``."""
    value = info.get(key) if isinstance(info, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ExportFormatError(f"compact header: layer entry {info!r:.80} has no valid {key!r}")
    return value


def decode_compact(
    tensors: dict[str, torch.Tensor], model: nn.Module, *, regenerate: Regenerate | None = None
) -> dict[str, torch.Tensor]:
    """Turn a compact file's tensors into a state dict for ``model`` (same architecture).

    The state dict holds each masked layer's stored ``keep_ratio`` (the ``<layer>.keep_ratio``
    entries), so loading it makes the scores returned (1 where the stored mask keeps a weight, 0
    elsewhere) select exactly the stored mask; ``model`` itself is not changed. The original
    scores are not stored; only their selection is. Files written before the input statistics
    were state get them from the header's model arguments.

    Args:
        tensors: the file's tensors (from :func:`read_compact_file` or timm's loader).
        model: the target model; its masked layers must match the file's in names and shapes.
        regenerate: builds the model the header names (its ``model`` entry), for files whose
            seed recipe the target's own weights do not match; without it such a file raises
            :class:`ExportFormatError`. :func:`robin_plugin.models.timm_loading.compact_state_dict`
            passes one that validates the header's model spec first.

    Returns:
        A complete state dict for ``model.load_state_dict(..., strict=True)``.
    """
    header = parse_header(tensors)
    ours = masked_layers(model)
    infos = header["layers"]
    names = [layer_field(i, "name", str) for i in infos]
    if names != [n for n, _ in ours]:
        raise ExportFormatError(
            f"the file's masked layers ({len(names)}, first {names[:3]}) do not match the model's "
            f"({len(ours)}, first {[n for n, _ in ours[:3]]}); load into the architecture it was exported from"
        )
    masks_blob = tensors[MASKS_KEY].numpy()
    signs_blob = tensors[SIGNS_KEY].numpy() if SIGNS_KEY in tensors else np.zeros(0, np.uint8)
    values_blob = tensors[VALUES_KEY] if VALUES_KEY in tensors else torch.zeros(0)
    if nonfinite_tensor({VALUES_KEY: values_blob}):
        raise ExportFormatError(f"compact file: tensor {VALUES_KEY!r} (stored weights) holds NaN or Inf")
    mask_off = sign_off = value_off = 0
    sd: dict[str, torch.Tensor] = {}
    decoded: list[tuple[str, MaskedLayer, torch.Tensor, str, dict]] = []
    for info, (lname, m) in zip(infos, ours):
        shape = layer_field(info, "shape", list)
        if tuple(shape) != tuple(m.weight.shape):
            raise ExportFormatError(f"layer {lname}: the file has shape {tuple(shape)}, the model {tuple(m.weight.shape)}")
        n = m.weight.numel()
        kept = layer_field(info, "kept", int)
        keep_ratio = layer_field(info, "keep_ratio", (int, float))
        nbytes = layer_field(info, "nbytes", int)
        if not 0 < keep_ratio <= 1 or kept != kept_count(n, keep_ratio) or nbytes < 0 or mask_off + nbytes > masks_blob.size:
            raise ExportFormatError(f"layer {lname}: inconsistent keep_ratio / kept / nbytes in the header")
        try:
            mask = decode_mask(layer_field(info, "coding", str), info.get("param"),
                               masks_blob[mask_off:mask_off + nbytes], n, kept)
        except CodecError as e:
            raise ExportFormatError(f"layer {lname}: corrupt mask ({e})") from e
        mask_off += nbytes
        mode = info.get("weights")
        if header["weights"] == "recipe" and mode != "recipe" or header["weights"] == "stored" and mode == "recipe":
            raise ExportFormatError(f"layer {lname}: weight mode {mode!r} contradicts the header")
        if mode == "signs":
            nb = (n + 7) // 8
            scale = layer_field(info, "scale", float)
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
        base = _recipe_weights(header, base, [(base[lname], mask) for lname, _, mask, _, _ in decoded], regenerate)

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
    bad = nonfinite_tensor(out)
    if bad is not None:
        raise ExportFormatError(f"compact file: state tensor {bad!r} holds NaN or Inf; a model file must hold finite "
                                "weights and statistics")
    return out


def _recipe_weights(
    header: dict[str, Any],
    own: dict[str, torch.Tensor],
    own_pairs: list[tuple[torch.Tensor, torch.Tensor]],
    regenerate: Regenerate | None,
) -> dict[str, torch.Tensor]:
    """Weights regenerated from the seed recipe, checked against the file's kept-weight digest.

    The target model's own weights are used when they already match (the usual case: it was
    built from the same name and arguments); otherwise ``regenerate`` builds the model the
    header names.
    """
    recipe = header.get("recipe")
    if not isinstance(recipe, dict) or not isinstance(recipe.get("kept_sha256"), str):
        raise ExportFormatError("compact header uses the seed recipe but lacks its 'recipe' entry")
    digest = recipe["kept_sha256"]
    if kept_digest(own_pairs) == digest:
        return own
    spec = header.get("model")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(spec.get("kwargs"), dict):
        raise ExportFormatError("compact header uses the seed recipe but names no model to regenerate")
    if regenerate is None:
        raise ExportFormatError(
            f"the target model's weights are not those of the file's seed recipe, and no regenerate function was "
            f"given to rebuild {spec['name']!r}; use robin_plugin.models.timm_loading.compact_state_dict"
        )
    ref = regenerate(spec)
    regen = {lname: m.weight.detach().reshape(-1) for lname, m in masked_layers(ref)}
    if list(regen) != list(own) or any(regen[k].shape != own[k].shape for k in own):
        raise ExportFormatError(f"the regenerated {spec['name']!r} does not match the target model's layers")
    if kept_digest([(regen[k], mask) for k, (_, mask) in zip(own, own_pairs)]) != digest:
        raise ExportFormatError(
            f"weights regenerated from seed {recipe.get('seed')!r} do not match the file (exported with "
            f"torch {recipe.get('torch')!r}, running {torch.__version__}): the random generator changed?"
        )
    return regen
