"""Hostile files and inputs, round two (issue 28).

1. A run folder never writes outside itself: a planted ``.robin.lock`` symbolic link (or hard
   link) is refused or replaced, never written through, and no file robin did not create is
   truncated.
2. File-borne JSON is bounded (depth, size) before it is parsed, and every loader turns a parse
   failure into the typed error of its file kind.
3. Oversized names and declared sizes fail fast and small (under an address-space limit).
4. A killed export leaves only a temporary folder that the cleanup knows.
5. Non-finite weights, scores and statistics are refused, naming the tensor.
6. The input contract is checked where a model enters robin's tools.
7. Clear messages for the rest.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm
import torch

import robin_plugin  # noqa: F401  (registers the robin models)
from robin_plugin.errors import RobinError
from robin_plugin.io import LOCK_NAME, FolderLock, WriteError, atomic_write_bytes, remove_stale_temp_files
from robin_plugin.training import Trainer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_training import tiny_config, tiny_model, toy_dataset  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


# --- 1. the folder lock and every write refuse links -------------------------------------------
@pytest.mark.parametrize("resume", [False, True])
def test_a_planted_lock_symlink_is_refused_and_its_target_untouched(tmp_path, resume):
    target = tmp_path / "important"
    target.write_text("precious\n")
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).symlink_to(target)
    with pytest.raises(WriteError, match="is a symbolic link") as err:
        Trainer(tiny_model(), tiny_config(epochs=1), toy_dataset(32), out_dir=out).fit(resume=resume)
    assert isinstance(err.value, RobinError)
    assert target.read_text() == "precious\n"
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing was written


def test_a_dangling_lock_symlink_creates_nothing(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).symlink_to(tmp_path / "created-by-the-attacker")
    with pytest.raises(WriteError, match="symbolic link"):
        FolderLock(out).acquire()
    assert not (tmp_path / "created-by-the-attacker").exists()


def test_a_hard_linked_lock_file_is_replaced_not_truncated(tmp_path):
    target = tmp_path / "important"
    target.write_text("precious\n")
    out = tmp_path / "run"
    out.mkdir()
    os.link(target, out / LOCK_NAME)
    with FolderLock(out):
        assert (out / LOCK_NAME).read_text().strip() == str(os.getpid())
        assert not os.path.samefile(out / LOCK_NAME, target)
    assert target.read_text() == "precious\n"


def test_a_lock_file_that_is_a_fifo_or_folder_is_refused(tmp_path):
    for kind in ("fifo", "dir"):
        out = tmp_path / kind
        out.mkdir()
        os.mkfifo(out / LOCK_NAME) if kind == "fifo" else (out / LOCK_NAME).mkdir()
        with pytest.raises(WriteError, match="not a regular file|cannot lock"):
            FolderLock(out).acquire()


def test_writes_replace_a_planted_symlink_instead_of_following_it(tmp_path):
    target = tmp_path / "important"
    target.write_text("precious\n")
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").symlink_to(target)
    (out / "metrics.csv").symlink_to(target)
    Trainer(tiny_model(), tiny_config(epochs=1), toy_dataset(32), out_dir=out).fit()
    assert target.read_text() == "precious\n"
    assert not (out / "config.json").is_symlink() and json.loads((out / "config.json").read_text())["epochs"] == 1
