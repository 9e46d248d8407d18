"""Atomic file writes shared by checkpoints, exports and result files.

A write goes to a temporary file in the destination folder, is flushed and fsynced, then
renamed over the destination, so a crash or a full disk never leaves a half-written file and
never destroys the previous version.
"""
from __future__ import annotations

import glob
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from .errors import RobinError

__all__ = [
    "FileExistsRobinError", "WriteError", "atomic_write", "atomic_write_bytes", "atomic_write_json",
    "remove_stale_temp_files",
]


class WriteError(RobinError, OSError):
    """A file could not be written; the previous file at that path (if any) is intact."""


class FileExistsRobinError(RobinError, FileExistsError):
    """The destination exists and overwriting was not asked for."""


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], *, overwrite: bool = True) -> Path:
    """Call ``write(tmp_path)`` to produce the file, then move it atomically to ``path``.

    Args:
        path: destination file.
        write: function that writes the complete file to the temporary path it is given.
        overwrite: if False and ``path`` exists, raise :class:`FileExistsRobinError`.

    Returns:
        ``path`` as a :class:`Path`.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsRobinError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise WriteError(f"cannot write {path}: {e.strerror or e}; nothing was changed") from e
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            state = "the previous file is intact" if path.exists() else "no file was written"
            raise WriteError(f"cannot write {path}: {e.strerror or e}; {state}") from e
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_write(path, write, overwrite=overwrite)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, overwrite: bool = True) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode(), overwrite=overwrite)


def remove_stale_temp_files(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that interrupted :func:`atomic_write` calls for ``path`` left.

    A process killed between creating its temporary file and renaming it (SIGKILL, power loss)
    cannot clean up. The orphan is hidden (``.<name>.<random>.tmp``) and never mistaken for
    ``path``, but it holds disk space: a whole checkpoint per interrupted write. Call this only
    when no other process is writing ``path`` (for example when a run resumes).

    Returns:
        The files removed.
    """
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            tmp.unlink()
        except OSError:
            continue
        removed.append(tmp)
    return removed


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
