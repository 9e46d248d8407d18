"""Atomic file writes shared by checkpoints, exports and result files, and bounded reads.

A write goes to a temporary file in a private folder beside the destination (locked while its
writer lives, removed by the next write once its writer is gone), is flushed and fsynced, given
the permissions the umask allows (as ``open`` would), then renamed over the destination, so a
crash or a full disk never leaves a half-written file and never destroys the previous version,
and a symbolic link planted at the destination is replaced, never followed.

Safetensors files are written through :func:`save_safetensors`, whose header has sorted keys:
the same tensors and metadata always give the same bytes (safetensors itself writes its header
in random order).
"""
from __future__ import annotations

import errno
import glob
import json
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable

from .errors import RobinError

__all__ = [
    "FileExistsRobinError", "FolderLock", "FolderLockedError", "LOCK_NAME", "WriteError", "atomic_write",
    "atomic_write_bytes", "atomic_write_json", "canonicalize_safetensors_header", "read_limited",
    "remove_stale_temp_files", "save_safetensors",
]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)

LOCK_NAME = ".robin.lock"
"""The lock file :class:`FolderLock` keeps in a folder while a process writes it."""


class WriteError(RobinError, OSError):
    """A file could not be written; the previous file at that path (if any) is intact."""


class FileExistsRobinError(RobinError, FileExistsError):
    """The destination exists and overwriting was not asked for."""


class FolderLockedError(RobinError, OSError):
    """Another process is writing the folder (it holds the folder's lock); nothing was changed."""


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], *, overwrite: bool = True) -> Path:
    """Call ``write(tmp_path)`` to produce the file, then move it atomically to ``path``.

    The temporary file lies in a private folder ``.<name>.<random>.tmp`` beside ``path``, which
    the writer holds (``flock``) until it is done: whatever ``write`` creates there (safetensors
    >= 0.8 writes its own ``.tmpXXXXXX`` before renaming) stays inside it, so a writer killed at
    any point leaves one folder that :func:`remove_stale_temp_files` knows, and that the next
    write of ``path`` removes. The rename replaces ``path`` itself: a symbolic link planted
    there is replaced, never followed, and no existing file is truncated.

    Args:
        path: destination file.
        write: function that writes the complete file to the temporary path it is given.
        overwrite: if False and ``path`` exists, raise :class:`FileExistsRobinError`.

    Returns:
        ``path`` as a :class:`Path`.
    """
    path = Path(path)
    if not overwrite and (path.exists() or path.is_symlink()):
        raise FileExistsRobinError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(path)  # what killed writers of this path left (never a folder in use)
        tmp_dir, guard = _private_temp_folder(path)
    except OSError as e:
        raise WriteError(f"cannot write {path}: {e.strerror or e}; nothing was changed") from e
    tmp = os.path.join(tmp_dir, os.path.basename(tmp_dir))
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # give it what open() would have
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as e:
        state = "the previous file is intact" if path.exists() else "no file was written"
        if isinstance(e, OSError):
            raise WriteError(f"cannot write {path}: {e.strerror or e}; {state}") from e
        if _is_safetensors_error(e):  # safetensors reports I/O failures (a full disk) as its own type
            raise WriteError(f"cannot write {path}: {_safetensors_reason(e)}; {state} (nothing was changed)") from e
        raise
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        os.close(guard)
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


def save_safetensors(tensors: dict[str, Any], path: str | os.PathLike, metadata: dict[str, str] | None = None, *,
                     overwrite: bool = True) -> Path:
    """Write ``tensors`` (name -> contiguous CPU tensor) as safetensors, atomically and reproducibly.

    The same tensors and metadata give byte-identical files: the header is re-serialised with
    sorted keys (see :func:`canonicalize_safetensors_header`). Every safetensors file the
    package writes goes through here.

    Args:
        tensors: the tensors to store.
        path: destination file.
        metadata: string -> string metadata (safetensors' ``__metadata__``), or None.
        overwrite: if False and ``path`` exists, raise :class:`FileExistsRobinError`.

    Returns:
        ``path`` as a :class:`Path`.

    Raises:
        WriteError: the file could not be written (full disk, permissions); nothing was changed.
    """
    from safetensors.torch import save_file  # here: it imports torch, which the rest of this module never needs

    def write(tmp: str) -> None:
        save_file(tensors, tmp, metadata=metadata)
        canonicalize_safetensors_header(tmp)

    return atomic_write(path, write, overwrite=overwrite)


def canonicalize_safetensors_header(path: str | os.PathLike) -> None:
    """Rewrite the JSON header of the safetensors file ``path`` in place with sorted keys.

    safetensors serialises its header from a hash map, so tensors and metadata entries come out
    in a different order on every write. The header is an 8-byte little-endian length followed
    by that many bytes of JSON, padded with spaces; data offsets are relative to the end of the
    header, so re-serialising the same JSON with sorted keys and compact separators (as
    safetensors writes it) and padding back to the same length leaves the data untouched.
    """
    with open(path, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        canon = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        if len(canon) <= n:
            f.seek(8)
            f.write(canon + b" " * (n - len(canon)))
            return
        # never seen (safetensors writes the same compact JSON); stay correct anyway: new header, same data
        f.seek(8 + n)
        data = f.read()
        canon += b" " * (-len(canon) % 8)
        f.seek(0)
        f.write(len(canon).to_bytes(8, "little") + canon + data)
        f.truncate()


def read_limited(path: str | os.PathLike, max_bytes: int) -> bytes:
    """Read the file ``path`` if it holds at most ``max_bytes`` bytes.

    Readers of small files made elsewhere (config files, run folders) use this, so that a huge
    or endless file (``/dev/zero``) is refused before it is read into memory.

    Raises:
        OSError: the file cannot be read (missing, a folder, no permission).
        ValueError: the file is larger than ``max_bytes`` (the message says so); callers turn
            both into their own typed errors.
    """
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"{path} is larger than the limit of {max_bytes} bytes")
    return data


def remove_stale_temp_files(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that interrupted :func:`atomic_write` calls for ``path`` left.

    A process killed between creating its temporary folder and renaming the file out of it
    (SIGKILL, power loss) cannot clean up. The orphan is hidden (``.<name>.<random>.tmp``, a
    folder holding our temporary file and whatever safetensors wrote there; a plain file from
    older versions) and never mistaken for ``path``, but it holds disk space: a whole checkpoint
    or export per interrupted write. A folder whose writer is alive is locked (``flock``) and
    left alone, so this is safe while other processes write ``path``; :func:`atomic_write` calls
    it before every write. Symbolic links are removed, never followed.

    Returns:
        The files and folders removed.
    """
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            st = os.lstat(tmp)
            if stat.S_ISDIR(st.st_mode):
                fd = os.open(tmp, os.O_RDONLY | _NOFOLLOW | _CLOEXEC | getattr(os, "O_DIRECTORY", 0))
                try:
                    if not _try_flock(fd):
                        continue  # its writer is alive
                    shutil.rmtree(tmp)
                finally:
                    os.close(fd)
            else:
                tmp.unlink()
        except OSError:
            continue
        removed.append(tmp)
    return removed


def _private_temp_folder(path: Path) -> tuple[str, int]:
    """A new folder ``.<name>.<random>.tmp`` beside ``path``, and an fd that holds its ``flock``.

    The folder is locked as soon as it exists; a cleaner that removed it in between (it was not
    locked yet) is noticed and another one is made.
    """
    for _ in range(100):
        tmp_dir = tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            fd = os.open(tmp_dir, os.O_RDONLY | _NOFOLLOW | _CLOEXEC | getattr(os, "O_DIRECTORY", 0))
        except FileNotFoundError:
            continue
        try:
            if _try_flock(fd) and os.path.samestat(os.fstat(fd), os.stat(tmp_dir, follow_symlinks=False)):
                return tmp_dir, fd
        except OSError:
            pass
        os.close(fd)
    raise OSError(errno.EAGAIN, f"cannot make a temporary folder beside {path}: it keeps being removed")


def _try_flock(fd: int) -> bool:
    """Take an exclusive ``flock`` on ``fd`` without waiting; False if another holds it (True without fcntl)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise
    return True


class FolderLock:
    """An exclusive lock on a folder, so that one process at a time writes into it.

    The lock is ``fcntl.flock`` on ``folder/.robin.lock``, which holds the owner's pid. The
    kernel drops a flock when its process ends, however it ends, so a run killed with SIGKILL
    leaves a stale file that the next run takes over: it removes that name and creates its own
    file (``O_EXCL``, no links followed), so a lock file it did not create is never written or
    truncated, and a symbolic link planted there is refused. The file is removed on release.
    Two locks on one folder conflict even within one process. Where ``fcntl`` does not exist
    (Windows), nothing is locked.

    Use as a context manager::

        with FolderLock(out_dir):
            ...  # write checkpoints into out_dir

    Args:
        folder: the folder to lock (created if missing).

    Raises:
        FolderLockedError: another process holds the lock (the message names its pid).
        WriteError: the folder or its lock file cannot be created, or the lock file is a symbolic
            link or not a regular file.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "FolderLock":
        """Take the lock or raise :class:`FolderLockedError` at once (never waits)."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not on POSIX
            return self
        if self._fd is not None:
            raise FolderLockedError(f"{self.folder} is already locked by this FolderLock")
        for _ in range(100):
            created = True
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                try:  # O_EXCL never follows a link: a planted .robin.lock is not written through
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o666)
                except FileExistsError:
                    created = False  # someone else's file: only read it (its pid) and lock it, never write it
                    fd = os.open(self.path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC | getattr(os, "O_NONBLOCK", 0))
            except OSError as e:
                if e.errno == errno.ELOOP or self.path.is_symlink():
                    raise WriteError(
                        f"cannot lock {self.folder}: its lock file {self.path} is a symbolic link; robin never writes "
                        "through links (remove it if no run uses the folder); nothing was changed"
                    ) from None
                raise WriteError(f"cannot lock {self.folder}: {e.strerror or e}; nothing was changed") from e
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise WriteError(f"cannot lock {self.folder}: its lock file {self.path} is not a regular file "
                                 "(remove it if no run uses the folder); nothing was changed")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = _read_pid(fd)
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise WriteError(f"cannot lock {self.folder}: {e.strerror or e}; nothing was changed") from e
                who = f"pid {holder}" if holder is not None else "a process whose pid is not written yet"
                raise FolderLockedError(
                    f"{self.folder} is being written by another run ({who}; lock file {self.path}); "
                    "wait for it to finish or stop it, or use another out_dir; nothing was changed"
                ) from None
            try:  # the holder may have released (and removed) the file between our open and flock
                same = os.path.samestat(os.fstat(fd), os.stat(self.path, follow_symlinks=False))
            except OSError:
                same = False
            if same and not created:
                # a stale lock (its run was killed), or a file planted there (perhaps a hard link to
                # a file elsewhere): remove the name, never truncate the file, and make our own
                try:
                    os.unlink(self.path)
                except OSError as e:
                    os.close(fd)
                    raise WriteError(f"cannot lock {self.folder}: cannot replace the stale lock file {self.path}: "
                                     f"{e.strerror or e}; nothing was changed") from e
            if same and created:
                break
            os.close(fd)
        else:  # pragma: no cover - needs 100 lost races in a row
            raise FolderLockedError(f"cannot lock {self.folder}: its lock file {self.path} keeps changing")
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and drop the lock (no-op when not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.unlink(self.path)  # before unlocking: a waiting opener then sees another inode and retries
        except OSError:
            pass
        os.close(fd)

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def _umask() -> int:
    """The process umask, read without changing it where the system allows (Linux: /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once (briefly visible to other threads)
    os.umask(mask)
    return mask


def _is_safetensors_error(e: BaseException) -> bool:
    try:
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover - safetensors is a dependency
        return False
    return isinstance(e, SafetensorError)


def _safetensors_reason(e: BaseException) -> str:
    text = str(e)
    # safetensors wraps Rust's io::Error: "... IoError(Os { code: 28, kind: StorageFull, ... })"
    code = re.search(r"Os \{ code: (\d+)", text)
    if code:
        return f"{os.strerror(int(code.group(1)))} ({text[:200]})"
    return text[:300]


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
