"""Export masked binary models: compact files, dense state dicts, channel shrinking, inspection.

- :func:`export_compact` / :func:`load_compact`: seed recipe + coded masks + BatchNorm
  statistics in one safetensors file, close to the information bound, exact logits on load.
- :func:`export_dense` / :func:`dense_model`: plain dense weights (mask * weight) for the dense
  twin architecture, optionally with all-pruned channels physically removed (``shrink=True``).
- :func:`export_hub`: a timm hub folder (``config.json`` + ``model.safetensors`` + model card)
  that ``timm.create_model('local-dir:FOLDER', pretrained=True)`` loads.
- :mod:`.inspect`: per-layer tables and mask-structure plots (``robin inspect``).
- :func:`checkpoint_filter_fn`: lets timm's ``pretrained=True`` / ``load_checkpoint`` read
  compact files.
"""
from __future__ import annotations

from .codec import CodecError
from .compact import (
    ExportError,
    ExportFormatError,
    compact_size_report,
    export_compact,
    load_compact,
)
from .dense import dense_model, dense_state_dict, export_dense, pruned_channels, shrink_model
from .hub import export_hub
from .timm_loading import checkpoint_filter_fn, compact_load_pre_hook

__all__ = [
    "CodecError", "ExportError", "ExportFormatError",
    "compact_size_report", "export_compact", "load_compact",
    "dense_model", "dense_state_dict", "export_dense", "pruned_channels", "shrink_model",
    "checkpoint_filter_fn", "compact_load_pre_hook", "export_hub",
]
