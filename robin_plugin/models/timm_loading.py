"""How robin models take weights through timm: no downloads, a size limit, and compact files.

Every robin entry point (``_create_robin_resnet`` ...) first calls :func:`check_weight_source`:
robin models have no hosted weights, so a ``url`` or Hugging Face id is refused, ``pretrained=True``
needs a local file, and the model's size is checked before anything is allocated.

timm 1.0 has two routes to local weights, both ending in ``model.load_state_dict``:

- ``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path))``:
  ``build_model_with_cfg`` -> ``load_pretrained``, which reads ``*.safetensors`` files with
  ``safetensors.torch.load_file`` (tensors only, no metadata) and then calls the
  ``pretrained_filter_fn`` given to ``build_model_with_cfg`` as ``filter_fn(state_dict, model)``.
  :func:`checkpoint_filter_fn` is that function.
- ``timm.create_model(name, checkpoint_path=path)``: ``load_checkpoint`` -> ``load_state_dict``
  (same reader) and then ``model.load_state_dict(state_dict, strict=True)`` with no filter.
  :func:`compact_load_pre_hook`, which every masked robin model registers on itself, converts
  the compact tensors inside ``load_state_dict`` itself, so this route (and a direct
  ``model.load_state_dict(safetensors.torch.load_file(path))``) works too.

Both pass plain state dicts (training checkpoints saved with safetensors) through unchanged.
Files must end in ``.safetensors``: timm opens anything else with ``torch.load``. The compact
format itself (layout, checks, decoding) is :mod:`robin_plugin.formats.compact`; this module adds
what needs the model spec: rebuilding the model a file's header names.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch.nn as nn

from ..errors import ConfigError, RobinError
from ..formats.compact import HEADER_KEY, ExportFormatError, decode_compact, is_compact, layer_field
from .spec import ModelSpec, allowed_args, build_model, check_model_size, count_weights

__all__ = [
    "build_from_header", "check_weight_source", "checkpoint_filter_fn", "compact_load_pre_hook", "compact_state_dict",
    "missing_weights_message", "training_model_state",
]

_TRAINING_PREFIX = "model/"  # robin_plugin.training checkpoints store the model under model/<key>
_HOSTED = ("url", "hf_hub_id", "hf_hub_filename")


# --- what an entry point accepts ---------------------------------------------------------------


def check_weight_source(name: str, pretrained: bool, kwargs: dict) -> bool:
    """Refuse what would make timm download, and models too large; say whether to load weights now.

    Robin models have no hosted weights. ``pretrained=True`` needs a local source: a file or
    state dict in ``pretrained_cfg_overlay`` (``pretrained_cfg``), loaded by timm's builder, or
    timm's own ``checkpoint_path=`` argument, which :func:`timm.create_model` applies after the
    entry point returns (and does not pass to it: see
    :meth:`robin_plugin.models.base.RobinNetBase.create`). A ``url`` or Hugging Face id in either
    cfg is refused whatever ``pretrained`` says: a file or caller never makes a robin model
    download anything. The model's size is checked against the limit of
    :mod:`robin_plugin.models.spec` before anything is allocated.

    Returns:
        Whether timm's builder should load weights now (a file or state dict is in a cfg). When
        True, ``kwargs["pretrained_cfg_overlay"]`` gets this model's ``num_classes`` and
        ``input_size`` (unless given), so timm loads the file strictly and whole.

    Raises:
        ConfigError: naming the refused key.
    """
    given: dict = {}
    for key in ("pretrained_cfg", "pretrained_cfg_overlay"):
        cfg = kwargs.get(key)
        if cfg is None or isinstance(cfg, str):
            continue
        cfg = cfg if isinstance(cfg, dict) else getattr(cfg, "__dict__", {})
        for k in _HOSTED:
            v = cfg.get(k)
            if v:
                raise ConfigError(f"{name}: robin models have no hosted weights and never download; "
                                  f"{key}[{k!r}]={v!r} is refused (give a local file instead)")
        given.update({k: cfg.get(k) for k in ("file", "state_dict") if cfg.get(k) is not None})
    _check_size(name, kwargs)
    if pretrained and given:
        # timm drops the classifier from the file (and loads non-strictly) when num_classes differs
        # from the cfg's, and warns when in_chans does: a robin file holds the whole model, so
        # describe the model being built and let a head of another size fail loudly instead.
        overlay = dict(kwargs.get("pretrained_cfg_overlay") or {})
        overlay.setdefault("num_classes", kwargs.get("num_classes", 10))
        base = kwargs.get("pretrained_cfg")
        base = base if isinstance(base, dict) else getattr(base, "__dict__", None) or {}
        size = tuple(base.get("input_size") or (3, 32, 32))[1:]  # a hub folder's image size (28x28 Fashion-MNIST)
        overlay.setdefault("input_size", (kwargs.get("in_chans", 3), *size))
        kwargs["pretrained_cfg_overlay"] = overlay
    return bool(pretrained and given)


def missing_weights_message(name: str) -> str:
    """The error of a model built with ``pretrained=True`` that was given no weights to load."""
    return (
        f"{name} has no hosted weights: pretrained=True needs a local file, e.g. "
        f"timm.create_model({name!r}, pretrained=True, pretrained_cfg_overlay=dict(file='model.safetensors')), "
        f"checkpoint_path='model.safetensors', or a hub folder: timm.create_model('local-dir:FOLDER', pretrained=True)"
    )


def _check_size(name: str, kwargs: dict) -> None:
    """The model-size limit of :mod:`robin_plugin.models.spec`, before anything is allocated.

    Every entry point runs it, so a hub folder's ``config.json`` (which timm parses before a robin
    entry point sees it) cannot make a tiny file allocate gigabytes either.
    """
    try:
        allowed = allowed_args(name)
        spec = ModelSpec(name, {k: v for k, v in kwargs.items() if k in allowed and k != "global_pool"})
        check_model_size(spec)
    except (TypeError, KeyError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        return  # malformed arguments: the constructor names them


# --- compact files ---------------------------------------------------------------------------


def build_from_header(entry: dict[str, Any], verb: str = "build", layers: list[Any] | None = None) -> nn.Module:
    """Build the robin model a compact header's ``model`` entry names, as the file is data.

    The spec is validated first (a file never passes ``pretrained``, ``pretrained_cfg_overlay``,
    ``cache_dir`` or unknown arguments to timm), its size is checked against the limit and, with
    ``layers`` (the header's layer entries), the header's layer shapes against the spec, before
    anything is built.

    Args:
        entry: ``{"name": ..., "kwargs": {...}}`` from the header.
        verb: what the error messages say the model was needed for (``"build"``, ``"regenerate"``).
        layers: the header's ``layers`` list, to check against the spec's weight count.

    Raises:
        ExportFormatError: the spec is invalid or too large, or does not match the layers.
    """
    try:
        parsed = ModelSpec.parse(entry.get("name"), entry.get("kwargs"), source="the compact header's model.kwargs")
        check_model_size(parsed)
    except RobinError as e:
        raise ExportFormatError(f"cannot {verb} the model the compact header names: {e}") from e
    if layers is not None:
        stored = sum(math.prod(layer_field(info, "shape", list)) for info in layers)
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


def _regenerate(entry: dict[str, Any]) -> nn.Module:
    return build_from_header(entry, "regenerate")


def compact_state_dict(tensors: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """A compact file's tensors as a state dict for ``model`` (see :func:`robin_plugin.formats.compact.decode_compact`).

    When ``model``'s own weights are not the file's seed recipe (another seed), the model the
    header names is rebuilt through the validated model spec to regenerate them.

    Raises:
        ExportFormatError: a corrupt file, or one made for another architecture.
    """
    return decode_compact(tensors, model, regenerate=_regenerate)


def training_model_state(tensors: Mapping[str, Any]) -> dict[str, Any]:
    """The model part of a robin training checkpoint's tensors: each ``model/<key>`` entry as ``<key>``.

    The one place that strips the prefix; the checkpoint writer (:mod:`robin_plugin.formats.checkpoint`),
    :func:`checkpoint_filter_fn` and :func:`robin_plugin.loading.read_state_dict` share it.
    """
    return {k[len(_TRAINING_PREFIX):]: v for k, v in tensors.items() if k.startswith(_TRAINING_PREFIX)}


def checkpoint_filter_fn(state_dict: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """Turn what timm read from a file into ``model``'s state dict.

    - A compact export (it holds the tensor ``robin.header``): decoded by
      :func:`compact_state_dict` (checksum verified, masks decoded, weights regenerated from the
      seed recipe or read from the stored signs); the stored per-layer keep ratios are entries
      of the returned state dict.
    - A full robin training checkpoint (every key under ``model/``): the model entries, with
      the prefix removed.
    - Anything else (a plain state dict): returned unchanged.

    Args:
        state_dict: tensors as timm's ``load_state_dict`` returned them.
        model: the freshly built model the weights are for.

    Returns:
        A state dict for ``model.load_state_dict``.

    Raises:
        robin_plugin.export.ExportFormatError: a corrupt compact file, or one made for another
            architecture.
    """
    if is_compact(state_dict):
        return compact_state_dict(state_dict, model)
    if state_dict and all(k.startswith(_TRAINING_PREFIX) or k.startswith("state") for k in state_dict):
        model_keys = training_model_state(state_dict)
        # keys of this model only; a key it lacks is named by the strict load
        if model_keys and set(model_keys) <= set(model.state_dict()):
            return model_keys
    return state_dict


def compact_load_pre_hook(
    module: nn.Module,
    state_dict: dict[str, Any],
    prefix: str,
    local_metadata: dict[str, Any],
    strict: bool,
    missing_keys: list[str],
    unexpected_keys: list[str],
    error_msgs: list[str],
) -> None:
    """``load_state_dict`` pre-hook: replace a compact file's tensors by ``module``'s state dict.

    Register with ``module.register_load_state_dict_pre_hook(compact_load_pre_hook)`` (masked
    robin models do it themselves). It runs before ``module`` and its children read
    ``state_dict`` and edits that dict in place (the copy ``load_state_dict`` made), so the rest
    of the load is an ordinary strict load. Keys under ``prefix`` only are touched, so a robin
    model nested in a larger one works too. Plain state dicts are left alone.
    """
    if prefix + HEADER_KEY not in state_dict:
        return
    ours = {k[len(prefix):]: state_dict.pop(k) for k in list(state_dict) if k.startswith(prefix)}
    converted = compact_state_dict(ours, module)
    for k, v in converted.items():
        state_dict[prefix + k] = v
