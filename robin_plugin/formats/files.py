"""Reading files made elsewhere: bounded JSON, safetensors checked before their body is read.

Every file robin reads may come from a stranger (see ``SECURITY.md``). The parsers here look at
what a file *declares* before they act on it, so that a small file cannot take much memory or
time, and report every failure as a :class:`FileContentError` (a ``ValueError``) saying what
the file is not; each loader turns it into the typed error of its file kind
(``ExportFormatError``, ``CheckpointError``, ``DeployFormatError`` ...).

- :func:`parse_json`: JSON with a size and a nesting-depth limit checked *before* parsing
  (Python's parser recurses: ``[`` x 200000 would end in ``RecursionError``).
- :func:`read_safetensors_header` / :func:`read_safetensors`: a safetensors file whose header
  size, tensor count, names, dtypes, shapes and data offsets are checked against limits before
  the body is read (a 1 GiB sparse file is refused after reading 8 bytes); the body is then
  memory-mapped by safetensors itself, never read whole into a ``bytes``.
- :func:`read_safetensors_checked`: the two above for one file kind: its metadata checked before
  the body is read, every failure raised as that kind's error, optionally NaN / Inf refused.
- :func:`nonfinite_tensor`: the first tensor holding NaN or Inf, so loaders can refuse weights,
  scores and statistics that would give silent nonsense.
- :func:`describe_foreign_file`: what a file that is not safetensors is (empty, a pickle ...).

Nothing here builds a model; this module sits with the file formats, below the models.
"""
from __future__ import annotations

import json
import math
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import safetensors.torch
import torch

__all__ = [
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "FileContentError",
    "SafetensorsHeader",
    "SafetensorsLimits",
    "describe_foreign_file",
    "json_depth",
    "nonfinite_tensor",
    "parse_json",
    "read_safetensors",
    "read_safetensors_checked",
    "read_safetensors_header",
]

MAX_JSON_BYTES = 16 * 1024 * 1024
"""Default size limit of file-borne JSON (a compact header, checkpoint metadata, a result file)."""
MAX_JSON_DEPTH = 64
"""Default nesting limit of file-borne JSON; robin's own files nest fewer than 16 levels."""

# safetensors dtype names and their sizes in bytes
_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.DOTALL)  # never fails, so the scan is linear
_BRACKETS = bytes(range(256)).translate(None, b"[]{}")  # every byte but the brackets (for bytes.translate)
_STEP = np.full(256, -1, dtype=np.int8)
_STEP[[ord("["), ord("{")]] = 1


class FileContentError(ValueError):
    """A file's content is not what its reader accepts (its message says what it is not).

    Readers turn it into the typed error of their file kind; it is a ``ValueError`` so that
    generic handlers keep working.
    """


def json_depth(data: bytes) -> int:
    """The deepest nesting of ``[`` / ``{`` in the JSON text ``data`` (brackets inside strings do not count).

    Linear in ``len(data)``: strings are removed by one regular expression that never
    backtracks, and the depth is a cumulative sum over the remaining brackets.
    """
    opens = data.count(b"[") + data.count(b"{")
    if opens <= 1:
        return opens
    brackets = _STRING.sub(b"", data).translate(None, _BRACKETS)
    if not brackets:
        return 0
    depth = np.cumsum(_STEP[np.frombuffer(brackets, dtype=np.uint8)], dtype=np.int32)
    return int(depth.max(initial=0))


def parse_json(data: bytes | str, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse file-borne JSON after checking its size and nesting depth.

    Args:
        data: UTF-8 bytes or text.
        max_bytes: the size limit, checked first.
        max_depth: the nesting limit of arrays and objects, checked before parsing.

    Returns:
        The parsed value.

    Raises:
        FileContentError: larger than ``max_bytes``, nested deeper than ``max_depth``, not
            UTF-8 or not JSON (the message says which, with the position for JSON errors).
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if len(raw) > max_bytes:
        raise FileContentError(f"JSON of {len(raw):,} bytes is larger than the limit of {max_bytes:,} bytes")
    if raw.count(b"[") + raw.count(b"{") > max_depth and json_depth(raw) > max_depth:
        raise FileContentError(f"JSON nested too deeply (more than {max_depth} levels)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FileContentError(f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        return json.loads(text)
    except RecursionError:  # pragma: no cover - the depth check comes first
        raise FileContentError("JSON nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, or an integer with too many digits
        raise FileContentError(f"not valid JSON ({str(e)[:200]})") from None


# --- safetensors -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SafetensorsLimits:
    """What a safetensors file may declare before its body is read.

    Attributes:
        max_header_bytes: size of the JSON header (safetensors itself allows 100 MB).
        max_tensors: number of tensors.
        max_name_chars: length of each tensor name.
        max_metadata_chars: length of each metadata value (its keys are names).
        max_tensor_bytes: size of any one tensor; ``None``: no limit beyond the file's size.
        tensor_limits: per tensor name, a smaller size limit (e.g. a compact file's header).
        names: if given, a function saying whether a tensor name is allowed in this kind of file.
        dtypes: the safetensors dtype names allowed (default: all that torch reads).
    """

    max_header_bytes: int = MAX_JSON_BYTES
    max_tensors: int = 100_000
    max_name_chars: int = 1024
    max_metadata_chars: int = MAX_JSON_BYTES
    max_tensor_bytes: int | None = None
    tensor_limits: Mapping[str, int] | None = None
    names: Any = None
    dtypes: frozenset[str] = frozenset(_DTYPE_BYTES)


@dataclass(frozen=True)
class SafetensorsHeader:
    """A checked safetensors header: ``tensors`` maps names to ``(dtype, shape, nbytes)``."""

    metadata: dict[str, str]
    tensors: dict[str, tuple[str, tuple[int, ...], int]]
    file_bytes: int


def describe_foreign_file(head: bytes, size: int) -> str:
    """What a file that is not a readable safetensors file looks like, from its first bytes.

    Used in messages (``"... is not a safetensors file: it is empty"``); it never decides
    anything, and never unpickles.
    """
    if size == 0:
        return "it is empty"
    if (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")) or head[:4] == b"PK\x03\x04":
        return "it is a pickle / torch.save file, which robin never unpickles"
    if size < 8:
        return f"it is truncated ({size} bytes, not even a header length)"
    n = int.from_bytes(head[:8], "little")
    if n > size - 8:
        if head[8:9] == b"{":
            return f"it is truncated (a header of {n:,} bytes in a file of {size:,})"
        return "its first 8 bytes are not a header length (random or foreign data)"
    if head[8:9] != b"{":
        return "no JSON header follows its first 8 bytes (random or foreign data)"
    return "it is a damaged safetensors file"


def read_safetensors_header(path: str | os.PathLike, limits: SafetensorsLimits = SafetensorsLimits()) -> SafetensorsHeader:
    """Read and check the header of the safetensors file ``path``; the body is not read.

    Checks that the file is a regular file; the header's size, JSON depth and shape; the tensor
    count, names, dtypes and shapes against ``limits``; that each tensor's byte range matches its
    dtype and shape, and that the ranges tile the body exactly (as safetensors requires).

    Raises:
        OSError: the file cannot be opened.
        FileContentError: anything else, saying what the file is not.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise FileContentError("not a regular file")
        size = st.st_size
        head = f.read(16)
        if size < 8 or len(head) < 8:
            raise FileContentError(f"not a safetensors file: {describe_foreign_file(head, size)}")
        n = int.from_bytes(head[:8], "little")
        if n > limits.max_header_bytes:
            if n <= size - 8 and head[8:9] == b"{":
                raise FileContentError(f"a safetensors header of {n:,} bytes is larger than the limit of "
                                       f"{limits.max_header_bytes:,} bytes")
            raise FileContentError(f"not a safetensors file: {describe_foreign_file(head, size)}")
        if n > size - 8 or n < 2 or head[8:9] != b"{":
            raise FileContentError(f"not a safetensors file: {describe_foreign_file(head, size)}")
        f.seek(8)
        raw = f.read(n)
    try:
        header = parse_json(raw, max_bytes=limits.max_header_bytes, max_depth=4)
    except FileContentError as e:
        raise FileContentError(f"unreadable safetensors header: {e}") from None
    if not isinstance(header, dict):
        raise FileContentError("unreadable safetensors header: not a JSON object")
    metadata = header.pop("__metadata__", None)
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise FileContentError("safetensors metadata must map strings to strings")
    for k, v in metadata.items():
        if len(k) > limits.max_name_chars or len(v) > limits.max_metadata_chars:
            raise FileContentError(f"safetensors metadata entry {k[:40]!r} is longer than the limit")
    if len(header) > limits.max_tensors:
        raise FileContentError(f"{len(header):,} tensors, more than the limit of {limits.max_tensors:,}")
    tensors: dict[str, tuple[str, tuple[int, ...], int]] = {}
    ranges = []
    body = size - 8 - n
    for name, info in header.items():
        shown = f"{name[:60]!r}{'...' if len(name) > 60 else ''}"
        if len(name) > limits.max_name_chars:
            raise FileContentError(f"tensor name {shown} of {len(name):,} characters is longer than the limit of "
                                   f"{limits.max_name_chars}")
        if limits.names is not None and not limits.names(name):
            raise FileContentError(f"unexpected tensor {shown} for this kind of file")
        if not isinstance(info, dict):
            raise FileContentError(f"tensor {shown}: its entry is not an object")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in limits.dtypes:
            raise FileContentError(f"tensor {shown}: dtype {str(dtype)[:20]!r} is not allowed "
                                   f"(allowed: {', '.join(sorted(limits.dtypes))})")
        if not (isinstance(shape, list) and len(shape) <= 16
                and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
            raise FileContentError(f"tensor {shown}: invalid shape {str(shape)[:60]}")
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= body):
            raise FileContentError(f"tensor {shown}: invalid data offsets {str(offsets)[:60]} for a body of {body:,} bytes")
        nbytes = math.prod(shape) * _DTYPE_BYTES[dtype]
        if offsets[1] - offsets[0] != nbytes:
            raise FileContentError(f"tensor {shown}: {offsets[1] - offsets[0]:,} bytes do not hold shape {shape} of {dtype}")
        limit = (limits.tensor_limits or {}).get(name, limits.max_tensor_bytes)
        if limit is not None and nbytes > limit:
            raise FileContentError(f"tensor {shown} of {nbytes:,} bytes is larger than the limit of {limit:,} bytes")
        tensors[name] = (dtype, tuple(shape), nbytes)
        ranges.append((offsets[0], offsets[1]))
    end = 0
    for start, stop in sorted(ranges):
        if start != end:
            raise FileContentError("the tensors' byte ranges overlap or leave gaps: a damaged safetensors file")
        end = stop
    if end != body:
        raise FileContentError(f"the tensors cover {end:,} of the {body:,} bytes after the header: "
                               "a damaged or truncated safetensors file")
    return SafetensorsHeader(metadata, tensors, size)


def read_safetensors(
    path: str | os.PathLike, limits: SafetensorsLimits = SafetensorsLimits()
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of the safetensors file ``path``, after :func:`read_safetensors_header`.

    The body is read by safetensors (memory-mapped) only once the header has passed the checks.

    Raises:
        OSError: the file cannot be opened.
        FileContentError: the header fails a check, or safetensors cannot read the file.
    """
    header = read_safetensors_header(path, limits)
    try:
        tensors = safetensors.torch.load_file(str(path))
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001  (safetensors' own error type, or a dtype torch lacks)
        raise FileContentError(f"not a readable safetensors file ({type(e).__name__}: {str(e)[:200]})") from None
    if set(tensors) != set(header.tensors):  # the file changed between the two reads
        raise FileContentError("the file changed while it was read")
    return tensors, header.metadata


def read_safetensors_checked(
    path: str | os.PathLike,
    error: Callable[[str], Exception],
    unreadable: str,
    *,
    check_metadata: Callable[[dict[str, str]], None] | None = None,
    limits: SafetensorsLimits = SafetensorsLimits(),
    finite: str | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of a file of one kind, each failure raised as that kind's error.

    The header is checked against ``limits``, then ``check_metadata(metadata)`` (which raises the
    kind's own error, e.g. for a foreign ``format``), then the body is read
    (:func:`read_safetensors`).

    Args:
        path: the file.
        error: the kind's error class (``CheckpointError``, ``ExportFormatError`` ...).
        unreadable: its message when the file cannot be opened or read, with ``{path}`` and
            ``{reason}`` (the :class:`FileContentError` or ``OSError``).
        check_metadata: called with the header's metadata before the body is read.
        limits: what the header may declare.
        finite: if given, a tensor holding NaN or Inf raises
            ``error("{path}: tensor {name!r} holds NaN or Inf; " + finite)``.
    """
    try:
        header = read_safetensors_header(path, limits)  # sizes, names and dtypes checked before the body is read
        if check_metadata is not None:
            check_metadata(header.metadata)
        tensors, metadata = read_safetensors(path, limits)
    except (FileContentError, OSError) as e:
        raise error(unreadable.format(path=path, reason=e)) from None
    if finite is not None:
        bad = nonfinite_tensor(tensors)
        if bad is not None:
            raise error(f"{path}: tensor {bad!r} holds NaN or Inf; {finite}")
    return tensors, metadata


def nonfinite_tensor(tensors: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> str | None:
    """The name of the first floating-point tensor holding NaN or Inf, or None if all are finite."""
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    for name, t in items:
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            return name
    return None

