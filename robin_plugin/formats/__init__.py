"""robin's own file formats, below the models: how masks are coded and how a compact file is read.

- :mod:`.codec`: pure functions that code 0/1 masks and signs (bits, Golomb-Rice) with exact
  inverses.
- :mod:`.compact`: the compact format's layout, its checks, and its decoding into a state dict.
- :mod:`.files`: reading files made elsewhere: JSON bounded in size and depth before parsing,
  safetensors headers checked against limits before the body is read, non-finite tensors found.
  Every loader of a file-borne JSON or safetensors file reads through it.

Nothing here builds a model or knows an architecture: the models (``robin_plugin.models``) use
this package to accept compact files through timm, and ``robin_plugin.export`` writes them.
"""
from __future__ import annotations

from .codec import CodecError
from .compact import ExportFormatError, decode_compact, is_compact, read_compact_file
from .files import FileContentError, parse_json, read_safetensors, read_safetensors_header

__all__ = [
    "CodecError", "ExportFormatError", "FileContentError", "decode_compact", "is_compact", "parse_json",
    "read_compact_file", "read_safetensors", "read_safetensors_header",
]
