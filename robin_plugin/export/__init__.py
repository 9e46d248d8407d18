"""Export masked binary models: compact files, dense state dicts, channel shrinking, hub folders.

- :func:`export_compact` / :func:`load_compact`: seed recipe + coded masks + BatchNorm
  statistics in one safetensors file, close to the information bound, exact logits on load.
- :func:`export_dense` / :func:`dense_model`: plain dense weights (mask * weight) for the dense
  twin architecture, optionally with all-pruned channels physically removed (``shrink=True``).
- :func:`deploy_model` / :func:`save_deploy` / :func:`load_deploy`: a plain inference module
  that runs sparse convolutions over the kept weights (faster than the dense twin at low keep
  ratios; docs/performance.md), and its file.
- :func:`export_hub`: a timm hub folder (``config.json`` + ``model.safetensors`` + model card)
  that ``timm.create_model('local-dir:FOLDER', pretrained=True)`` loads.
- :func:`checkpoint_filter_fn` / :func:`compact_load_pre_hook`: let timm's ``pretrained=True``
  / ``load_checkpoint`` read compact files; they live with the models
  (:mod:`robin_plugin.models.timm_loading`) and are re-exported here.

The compact format's layout and decoding are :mod:`robin_plugin.formats`; the per-layer tables
and plots of ``robin inspect`` are :mod:`robin_plugin.viz`. Imports flow one way: ``export``
uses the models and the formats; nothing below it imports ``export``.
"""
from __future__ import annotations

from ..formats.codec import CodecError
from ..formats.compact import ExportFormatError, ModelFileError
from ..models.timm_loading import checkpoint_filter_fn, compact_load_pre_hook
from .compact import ExportError, compact_size_report, export_compact, load_compact
from .dense import dense_model, dense_state_dict, export_dense
from .deploy import DeployError, DeployFormatError, DeployModel, deploy_model, load_deploy, save_deploy
from .hub import export_hub
from .onnx import export_onnx
from .shrink import pruned_channels, shrink_model

__all__ = [
    "export_onnx",
    "CodecError", "ExportError", "ExportFormatError", "ModelFileError",
    "compact_size_report", "export_compact", "load_compact",
    "dense_model", "dense_state_dict", "export_dense", "pruned_channels", "shrink_model",
    "checkpoint_filter_fn", "compact_load_pre_hook", "export_hub",
    "DeployError", "DeployFormatError", "DeployModel", "deploy_model", "load_deploy", "save_deploy",
]
