"""robin's file formats, below the models: one module per file kind, each with its reader and writer.

- :mod:`.compact`: the compact export (seed recipe + coded masks + statistics): layout, checks,
  decoding into a state dict; its mask coding is :mod:`.codec` (pure functions with exact
  inverses).
- :mod:`.dense`: the dense export (a plain state dict naming the timm model that reads it).
- :mod:`.deploy`: the deploy file (a deploy program's steps and tensors).
- :mod:`.checkpoint`: the training checkpoint (nested state -> tensors + JSON) and a run's plain
  state-dict files.
- :mod:`.hub`: a hub folder's ``config.json``.
- :mod:`.result`: the evaluation result (RobustBench ``model_info`` JSON).
- :mod:`.files`: what every reader shares: JSON bounded in size and depth before parsing,
  safetensors headers (sizes, dtypes, names) checked before the body is read, non-finite
  tensors found. Every safetensors or JSON file the package reads goes through it.

A reader returns validated data (header fields, a model's timm name and keyword arguments,
tensors); nothing here builds a model or knows an architecture. Building models from what a
reader returns is the job of the floors above (``robin_plugin.models`` accepts compact files
through timm; ``robin_plugin.export``, ``robin_plugin.training`` and ``robin_plugin.loading``
build the rest).
"""
from __future__ import annotations

from .codec import CodecError
from .compact import ExportFormatError, decode_compact, is_compact, read_compact_file
from .files import FileContentError, parse_json, read_safetensors, read_safetensors_header

__all__ = [
    "CodecError", "ExportFormatError", "FileContentError", "decode_compact", "is_compact", "parse_json",
    "read_compact_file", "read_safetensors", "read_safetensors_header",
]
