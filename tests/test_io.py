"""Tests of the atomic writes in ``robin_plugin.io``."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from robin_plugin.errors import RobinError
from robin_plugin.io import FileExistsRobinError, WriteError, atomic_write, atomic_write_bytes, atomic_write_json


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def test_writes_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    assert atomic_write_bytes(path, b"one") == path
    assert path.read_bytes() == b"one"
    atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    assert _leftovers(tmp_path, {"a.bin"}) == []


def test_creates_parent_folders(tmp_path: Path) -> None:
    path = tmp_path / "x" / "y" / "r.json"
    atomic_write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}


@pytest.mark.parametrize("error", [ValueError("boom"), KeyboardInterrupt()])
def test_failing_writer_leaves_old_file_and_no_temp_files(tmp_path: Path, error: BaseException) -> None:
    path = tmp_path / "ckpt.bin"
    path.write_bytes(b"previous")

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(b"half a fi")
        raise error

    with pytest.raises(type(error)):
        atomic_write(path, write)
    assert path.read_bytes() == b"previous"
    assert _leftovers(tmp_path, {"ckpt.bin"}) == []


def test_os_error_in_writer_becomes_write_error(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"

    def write(tmp: str) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(WriteError, match="No space left on device; no file was written") as info:
        atomic_write(path, write)
    assert isinstance(info.value, OSError) and isinstance(info.value, RobinError)
    assert not path.exists() and _leftovers(tmp_path, set()) == []

    path.write_bytes(b"old")
    with pytest.raises(WriteError, match="the previous file is intact"):
        atomic_write(path, write)
    assert path.read_bytes() == b"old"


def test_overwrite_false_refuses_and_keeps_the_file(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    atomic_write_json(path, [1])
    with pytest.raises(FileExistsRobinError, match="overwrite=True") as info:
        atomic_write_json(path, [2], overwrite=False)
    assert isinstance(info.value, FileExistsError)
    assert json.loads(path.read_text()) == [1]
    atomic_write_json(tmp_path / "new.json", [3], overwrite=False)  # a new path is fine
    assert _leftovers(tmp_path, {"r.json", "new.json"}) == []


def test_unwritable_destination_raises_write_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(WriteError, match="nothing was changed"):
        atomic_write_bytes(blocker / "inside.bin", b"x")
    assert blocker.read_text() == "not a folder"


def test_writer_gets_a_temp_path_in_the_destination_folder(tmp_path: Path) -> None:
    seen: list[str] = []

    def write(tmp: str) -> None:
        seen.append(tmp)
        Path(tmp).write_text("ok")

    atomic_write(tmp_path / "f.txt", write)
    # a private folder .f.txt.<random>.tmp beside the destination (same file system: rename, not copy)
    private = Path(seen[0]).parent
    assert private.parent == tmp_path and private.name.startswith(".f.txt.") and private.name.endswith(".tmp")
    assert not os.path.exists(seen[0]) and not private.exists()  # renamed, not copied; the folder is gone


@given(st.binary(max_size=2000))
def test_bytes_round_trip(data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "blob"
        atomic_write_bytes(path, data)
        assert path.read_bytes() == data
        assert os.listdir(d) == ["blob"]


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4),
                    max_leaves=20))
def test_json_round_trip(obj) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "r.json"
        atomic_write_json(path, obj)
        assert json.loads(path.read_text()) == obj
