"""Let timm's own loaders read compact exports (and training checkpoints) into robin models.

timm 1.0 has two routes to local weights, both ending in ``model.load_state_dict``:

- ``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path))``:
  ``build_model_with_cfg`` -> ``load_pretrained``, which reads ``*.safetensors`` files with
  ``safetensors.torch.load_file`` (tensors only, no metadata) and then calls the
  ``pretrained_filter_fn`` given to ``build_model_with_cfg`` as ``filter_fn(state_dict, model)``.
  :func:`checkpoint_filter_fn` is that function.
- ``timm.create_model(name, checkpoint_path=path)``: ``load_checkpoint`` -> ``load_state_dict``
  (same reader) and then ``model.load_state_dict(state_dict, strict=True)`` with no filter.
  :func:`compact_load_pre_hook`, registered on the model with
  ``model.register_load_state_dict_pre_hook(compact_load_pre_hook)``, converts the compact
  tensors inside ``load_state_dict`` itself, so this route (and a direct
  ``model.load_state_dict(safetensors.torch.load_file(path))``) works too.

Both pass plain state dicts (training checkpoints saved with safetensors) through unchanged.
Files must end in ``.safetensors``: timm opens anything else with ``torch.load``.
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from .compact import HEADER_KEY, compact_state_dict, is_compact

__all__ = ["checkpoint_filter_fn", "compact_load_pre_hook"]

_TRAINING_PREFIX = "model/"  # robin_plugin.training checkpoints store the model under model/<key>


def checkpoint_filter_fn(state_dict: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """Turn what timm read from a file into ``model``'s state dict.

    - A compact export (it holds the tensor ``robin.header``): decoded by
      :func:`robin_plugin.export.compact.compact_state_dict` (checksum verified, masks
      decoded, weights regenerated from the seed recipe or read from the stored signs); the
      stored per-layer keep ratios are entries of the returned state dict.
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
        model_keys = {k[len(_TRAINING_PREFIX):]: v for k, v in state_dict.items() if k.startswith(_TRAINING_PREFIX)}
        if model_keys and set(model_keys) <= set(model.state_dict()):  # older files lack keep ratios / mean / std
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

    Register with ``module.register_load_state_dict_pre_hook(compact_load_pre_hook)``. It runs
    before ``module`` and its children read ``state_dict`` and edits that dict in place (the
    copy ``load_state_dict`` made), so the rest of the load is an ordinary strict load. Keys
    under ``prefix`` only are touched, so a robin model nested in a larger one works too.
    Plain state dicts are left alone.
    """
    if prefix + HEADER_KEY not in state_dict:
        return
    ours = {k[len(prefix):]: state_dict.pop(k) for k in list(state_dict) if k.startswith(prefix)}
    converted = compact_state_dict(ours, module)
    for k, v in converted.items():
        state_dict[prefix + k] = v
