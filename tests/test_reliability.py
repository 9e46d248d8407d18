"""Crash safety, failed writes, determinism and safe loading, proved on real runs and real files.

- Kill-and-resume: a tiny training run is SIGKILLed at random moments (at least 10 times) and
  resumed each time; every checkpoint seen on disk between kills loads, and the finished run
  equals an uninterrupted one exactly (metrics, metrics.csv, model state).
- A full disk or a permission error during a checkpoint write leaves the previous checkpoint
  byte-for-byte intact, raises ``WriteError`` saying so, and leaves no temporary file.
- The same seed gives the same masks and metrics on the CPU; another seed does not.
- A pickle payload that would create a file is refused by every loader and never runs.

(``tests/export/test_export.py`` proves the same payload refusal for ``load_compact`` and
``robin export``'s checkpoint reader; ``tests/data/test_data.py`` for the CIFAR reader.)
"""
from __future__ import annotations

import csv
import errno
import json
import os
import pickle
import random
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
from safetensors import SafetensorError
import timm
import torch

import robin_plugin  # noqa: F401
from robin_plugin.errors import RobinError
from robin_plugin.io import LOCK_NAME, WriteError, remove_stale_temp_files
from robin_plugin.layers.masked import MaskedLayer
from robin_plugin.testing import tiny_robin_resnet, toy_dataset
from robin_plugin.training import CheckpointError, Trainer, load_checkpoint

WORKER = Path(__file__).with_name("_kill_resume_worker.py")
KNOWN_FILES = {"config.json", "metrics.csv", "checkpoint.safetensors", "model.safetensors",
               "model_best.safetensors", "worker_result.json"}
# Temporary files a SIGKILL can leave: robin_plugin.io's ``.<name>.<random>.tmp`` and the
# ``.tmpXXXXXX`` that safetensors >= 0.8 itself writes before renaming onto our temporary file.
# Both are hidden and never end in .safetensors, so nothing mistakes them for a checkpoint.
TEMP_NAME = re.compile(r"^\.[^/]+\.tmp$")
SAFETENSORS_TEMP = re.compile(r"^\.tmp[A-Za-z0-9_]{6}$")


def timeless(d: dict) -> dict:
    return {k: v for k, v in d.items() if not k.startswith("time/")}


def csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [timeless(r) for r in csv.DictReader(f)]


def masks(model) -> dict[str, torch.Tensor]:
    return {n: m.mask().clone() for n, m in model.named_modules() if isinstance(m, MaskedLayer)}


# --- kill and resume -------------------------------------------------------------------------
class _Server:
    """The fork server of ``_kill_resume_worker.py``: one import, a fresh child per attempt."""

    def __init__(self) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=WORKER.parent.parent)
        assert self.readline(60) == "idle"

    def readline(self, timeout: float) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, f"worker said nothing for {timeout} s"
        line = self.proc.stdout.readline()
        assert line, f"worker died (exit code {self.proc.poll()})"
        return line.strip()

    def start(self, out_dir: Path, epochs: int) -> int:
        self.proc.stdin.write(f"{out_dir} {epochs}\n")
        self.proc.stdin.flush()
        word, pid = self.readline(60).split()
        assert word == "ready"
        return int(pid)

    def wait(self) -> int:
        word, code = self.readline(120).split()
        assert word == "exit"
        return int(code)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


def _check_after_kill(out_dir: Path) -> tuple[int, int]:
    """Everything on disk is whole; returns (last checkpointed epoch or -1, temp files seen)."""
    # a killed run leaves its lock file (.robin.lock, holding its pid); the next run takes it over
    names = {p.name for p in out_dir.iterdir()} - {LOCK_NAME}
    temps = {n for n in names if TEMP_NAME.match(n) or SAFETENSORS_TEMP.match(n)}
    assert names - temps <= KNOWN_FILES, f"unexpected files {names - temps - KNOWN_FILES}"
    assert not any(n.endswith(".safetensors") for n in temps)
    epoch = -1
    if "checkpoint.safetensors" in names:
        model_state, state = load_checkpoint(out_dir / "checkpoint.safetensors")  # never corrupt
        assert model_state and state["config"]["seed"] == 0
        epoch = state["epoch"]
        logger = next(h for h in state["hooks"] if h["name"] == "MetricLogger")  # hook state is saved by name
        assert len(logger["state"]["history"]) == epoch + 1  # its rows so far
    for name in ("model.safetensors", "model_best.safetensors"):
        if name in names:
            assert safetensors.torch.load_file(out_dir / name)
    if "config.json" in names:
        json.loads((out_dir / "config.json").read_text())
    if "metrics.csv" in names:
        assert csv_rows(out_dir / "metrics.csv")
    return epoch, len(temps)


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_gives_the_uninterrupted_run(tmp_path):
    epochs, min_kills = 8, 10
    rng = random.Random(20240607)  # fixed: the same sequence of kill delays on every run
    server = _Server()
    try:
        t0 = time.perf_counter()
        server.start(tmp_path / "reference", epochs)
        assert server.wait() == 0
        run_s = time.perf_counter() - t0  # one whole run, used to scale the kill delays
        ref = tmp_path / "reference"
        kills, rounds, temps_seen, resumed_from = 0, 0, 0, set()
        while kills < min_kills:  # on a fast machine one round may need fewer kills: run another
            out = tmp_path / f"killed{rounds}"
            rounds += 1
            for _attempt in range(200):
                pid = server.start(out, epochs)
                time.sleep(rng.uniform(0.0, run_s / 4))
                try:
                    os.kill(pid, 9)  # SIGKILL: no handler, no cleanup, no flush
                except ProcessLookupError:
                    pass
                code = server.wait()
                if code == 0:
                    break
                assert code == -9, f"the run failed by itself (exit {code}); see the worker's stderr"
                kills += 1
                epoch, temps = _check_after_kill(out)
                resumed_from.add(epoch)
                temps_seen += temps
            else:
                pytest.fail("the killed run never finished")
            _check_after_kill(out)
            # orphans of killed writes are removable without touching the real files
            for name in KNOWN_FILES:
                remove_stale_temp_files(out / name)
            assert {p.name for p in out.iterdir() if not SAFETENSORS_TEMP.match(p.name)} == KNOWN_FILES
            result = json.loads((out / "worker_result.json").read_text())
            assert timeless(result) == timeless(json.loads((ref / "worker_result.json").read_text()))
            assert csv_rows(out / "metrics.csv") == csv_rows(ref / "metrics.csv")
            assert len(csv_rows(out / "metrics.csv")) == epochs
            for name in ("model.safetensors", "model_best.safetensors"):
                a, b = safetensors.torch.load_file(out / name), safetensors.torch.load_file(ref / name)
                assert a.keys() == b.keys()
                for k in a:
                    assert torch.equal(a[k], b[k]), (name, k)
            ckpt_a, state_a = load_checkpoint(out / "checkpoint.safetensors")
            ckpt_b, state_b = load_checkpoint(ref / "checkpoint.safetensors")
            assert all(torch.equal(ckpt_a[k], ckpt_b[k]) for k in ckpt_b) and state_a["step"] == state_b["step"]
    finally:
        server.close()
    print(f"{kills} kills in {rounds} round(s); resumed after epochs {sorted(resumed_from)}; "
          f"{temps_seen} orphaned temporary files seen (kills inside a write)")
    assert kills >= min_kills
    assert len(resumed_from - {-1}) >= 2, f"kills never landed after a checkpoint: {sorted(resumed_from)}"


class _Killed(BaseException):
    """Stands for SIGKILL inside the process: no ``except Exception`` catches it."""


def _final_files(out: Path) -> dict[str, object]:
    files = {"metrics.csv": csv_rows(out / "metrics.csv")}
    for name in ("model.safetensors", "model_best.safetensors"):
        files[name] = {k: v.tolist() for k, v in safetensors.torch.load_file(out / name).items()}
    return files


def test_a_kill_after_any_file_write_then_resume_gives_the_uninterrupted_files(tmp_path, monkeypatch, tiny_config):
    """The deterministic twin of the SIGKILL test: the run dies right after each of its file writes in turn.

    Every write of robin_plugin.io ends with ``os.replace``; dying just after the N-th one is a
    kill at the worst moment between two files of one epoch (e.g. between the weights and the
    checkpoint of the last epoch, which once left ``model.safetensors`` an epoch behind for good).
    """
    ds, val = toy_dataset(32), toy_dataset(8, seed=1)
    cfg = dict(epochs=2, attack="fast", step_size=0.05, augment=True)
    ref = tmp_path / "reference"
    first = Trainer(tiny_robin_resnet(), tiny_config(**cfg), ds, val, out_dir=ref).fit()
    expected = _final_files(ref)

    real_replace, landed = os.replace, []

    def count(src, dst):
        real_replace(src, dst)
        landed.append(Path(dst).name)

    monkeypatch.setattr(os, "replace", count)
    Trainer(tiny_robin_resnet(), tiny_config(**cfg), ds, val, out_dir=tmp_path / "counted").fit()
    writes = list(landed)
    assert {"checkpoint.safetensors", "model.safetensors", "metrics.csv"} <= set(writes)

    for n in range(1, len(writes) + 1):
        out = tmp_path / f"killed_after_{n}"

        def dies_after_n(src, dst, n=n, seen=[0]):
            real_replace(src, dst)
            seen[0] += 1
            if seen[0] == n:
                raise _Killed(f"after writing {Path(dst).name}")

        monkeypatch.setattr(os, "replace", dies_after_n)
        with pytest.raises(_Killed):
            Trainer(tiny_robin_resnet(), tiny_config(**cfg), ds, val, out_dir=out).fit(resume=True)
        monkeypatch.setattr(os, "replace", real_replace)
        again = Trainer(tiny_robin_resnet(), tiny_config(**cfg), ds, val, out_dir=out).fit(resume=True)
        assert timeless(again) == timeless(first), f"killed after write {n} ({writes[n - 1]})"
        got = _final_files(out)
        for name in expected:
            assert got[name] == expected[name], f"{name} differs after a kill following write {n} ({writes[n - 1]})"


def test_resuming_a_finished_run_returns_its_final_metrics(tmp_path, tiny_config):
    """A run killed after its last checkpoint but before its caller saw the result is resumed."""
    ds, val = toy_dataset(32), toy_dataset(8, seed=1)
    first = Trainer(tiny_robin_resnet(), tiny_config(augment=True, epochs=1), ds, val, out_dir=tmp_path).fit()
    again = Trainer(tiny_robin_resnet(), tiny_config(augment=True, epochs=1), ds, val, out_dir=tmp_path).fit(resume=True)
    assert timeless(again) == timeless(first)


# --- failed writes ---------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["disk_full_mid_write", "no_permission_on_rename"])
def test_failed_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch, how, tiny_config):
    """The disk fills (or permission goes) while epoch 1's checkpoint is written; epoch 0's survives."""
    import robin_plugin.io as rio
    import robin_plugin.formats.checkpoint as ckpt_mod

    ds, val = toy_dataset(64), toy_dataset(16, seed=1)
    cfg = tiny_config(augment=True, epochs=2)
    path = tmp_path / "checkpoint.safetensors"
    seen: list[bytes] = []  # the checkpoint on disk when the failing write starts

    if how == "disk_full_mid_write":
        real_save = ckpt_mod.save_file

        def save_file(tensors, filename, metadata=None):
            real_save(tensors, filename, metadata=metadata)
            if not os.path.basename(filename).startswith(".checkpoint.safetensors.") or not path.exists():
                return  # model*.safetensors and the first checkpoint are written normally
            seen.append(path.read_bytes())
            with open(filename, "r+b") as f:  # as if the disk filled half-way through
                f.truncate(os.path.getsize(filename) // 2)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)

        monkeypatch.setattr(ckpt_mod, "save_file", save_file)
    else:
        real_replace = os.replace

        def replace(src, dst, *a, **kw):
            if str(dst) == str(path) and path.exists():
                seen.append(path.read_bytes())
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dst))
            return real_replace(src, dst, *a, **kw)

        monkeypatch.setattr(rio.os, "replace", replace)

    with pytest.raises(WriteError, match="the previous file is intact") as err:
        Trainer(tiny_robin_resnet(), cfg, ds, val, out_dir=tmp_path).fit()
    assert str(path) in str(err.value)
    assert isinstance(err.value, RobinError) and isinstance(err.value, OSError)
    assert len(seen) == 1 and path.read_bytes() == seen[0]
    assert load_checkpoint(path)[1]["epoch"] == 0
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    # once the disk has room again, the run resumes from the intact checkpoint and ends as if nothing happened
    monkeypatch.undo()
    r = Trainer(tiny_robin_resnet(), cfg, ds, val, out_dir=tmp_path).fit(resume=True)
    assert timeless(r) == timeless(Trainer(tiny_robin_resnet(), cfg, ds, val).fit())
    assert load_checkpoint(path)[1]["epoch"] == 1


def test_write_error_for_a_new_file_says_nothing_was_written(tmp_path, monkeypatch):
    import robin_plugin.formats.checkpoint as ckpt_mod

    def save_file(tensors, filename, metadata=None):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)

    monkeypatch.setattr(ckpt_mod, "save_file", save_file)
    with pytest.raises(WriteError, match="No space left on device; no file was written"):
        ckpt_mod.save_checkpoint(tmp_path / "c.safetensors", {"w": torch.zeros(2)}, {"epoch": 0})
    assert list(tmp_path.iterdir()) == []


# --- determinism -----------------------------------------------------------------------------
def test_same_seed_same_masks_and_metrics_other_seed_differs(tiny_config):
    ds, val = toy_dataset(64), toy_dataset(16, seed=1)

    def run(seed):
        model = tiny_robin_resnet(seed)
        r = Trainer(model, tiny_config(augment=True, epochs=2, seed=seed, attack="pgd", attack_steps=2, step_size=0.05), ds, val).fit()
        return timeless(r), masks(model)

    (r1, m1), (r2, m2), (_, m3) = run(0), run(0), run(1)
    assert r1 == r2
    assert m1.keys() == m2.keys() and all(torch.equal(m1[k], m2[k]) for k in m1)
    assert any(not torch.equal(m1[k], m3[k]) for k in m1)


# --- pickle payloads -------------------------------------------------------------------------
class _Payload:
    """Unpickling this runs a shell command that creates ``marker``: proof of code execution."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _hostile_files(folder: Path, marker: Path) -> list[Path]:
    """The same payload as a plain pickle, as torch.save writes it, and behind a safetensors length prefix."""
    evil = pickle.dumps({"conv1.weight": _Payload(marker)})
    files = []
    for name in ("evil.safetensors", "evil.pth", "evil.pt", "evil.bin"):
        (folder / name).write_bytes(evil)
        files.append(folder / name)
    torch.save({"state_dict": {"x": _Payload(marker)}}, folder / "evil_zip.pth")  # torch's zip format
    (folder / "evil_zip.safetensors").write_bytes((folder / "evil_zip.pth").read_bytes())
    (folder / "prefixed.safetensors").write_bytes(len(evil).to_bytes(8, "little") + evil)
    files += [folder / "evil_zip.pth", folder / "evil_zip.safetensors", folder / "prefixed.safetensors"]
    assert not marker.exists()
    return files


def test_pickle_payload_is_real(tmp_path):
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()  # so "the marker does not exist" below really means "never ran"


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_payload_is_refused_by_every_loader(tmp_path, tiny_config):
    from robin_plugin.loading import load_state_file as eval_load_checkpoint
    from robin_plugin.export import ExportFormatError
    from robin_plugin.export.dense import load_dense
    from robin_plugin.training.run import load_run

    marker = tmp_path / "pwned"
    files = _hostile_files(tmp_path, marker)
    model = timm.create_model("robin_resnet18", width=4)
    for f in files:
        with pytest.raises(CheckpointError):
            load_checkpoint(f)
        with pytest.raises(ExportFormatError):
            load_dense(f)
        if f.suffix == ".safetensors":
            with pytest.raises(RobinError, match="cannot read checkpoint"):
                eval_load_checkpoint(model, f)
        else:  # a zip (torch.save) payload meets torch.load(weights_only=True), which refuses its pickle
            with pytest.raises(RobinError, match="must be a .safetensors|with weights_only=True"):
                eval_load_checkpoint(model, f)
        # timm's own routes read *.safetensors with safetensors and everything else with
        # torch.load(weights_only=True): both refuse, with their own error types
        for kw in (dict(pretrained=True, pretrained_cfg_overlay=dict(file=str(f))), dict(checkpoint_path=str(f))):
            if f.suffix == ".safetensors":
                with pytest.raises(SafetensorError):
                    timm.create_model("robin_resnet18", width=4, **kw)
            else:
                with pytest.raises(RuntimeError, match="weights_only"):
                    timm.create_model("robin_resnet18", width=4, **kw)
        assert not marker.exists(), f"{f.name} ran code"
    # a finished run folder whose weights were replaced by the payload
    run_dir = tmp_path / "run"
    Trainer(tiny_robin_resnet(), tiny_config(augment=True, epochs=1), toy_dataset(32), None, out_dir=run_dir).fit()
    (run_dir / "model.safetensors").write_bytes((tmp_path / "evil.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_run(run_dir, "last")
    assert not marker.exists()


# --- static checks of the promises in SECURITY.md --------------------------------------------
def _unsafe_loads(source: str) -> list[str]:
    """Calls that could unpickle untrusted data: torch.load without weights_only=True,
    pickle.load(s) outside a restricted Unpickler subclass, yaml.load / yaml.unsafe_load."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = ast.unparse(node.func.value)
        name = f"{owner}.{node.func.attr}"
        if name == "torch.load":
            safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                       for k in node.keywords)
            if not safe:
                found.append(f"{node.lineno}: {name} without weights_only=True")
        elif name in ("pickle.load", "pickle.loads", "yaml.load", "yaml.unsafe_load", "yaml.full_load",
                      "numpy.load", "np.load", "marshal.loads", "dill.load", "joblib.load"):
            found.append(f"{node.lineno}: {name}")
    return found


def test_no_module_unpickles_or_unsafely_parses():
    package = Path(robin_plugin.__file__).parent
    found = [f"{f.relative_to(package.parent)}:{v}" for f in sorted(package.rglob("*.py"))
             for v in _unsafe_loads(f.read_text(encoding="utf-8"))]
    assert not found, "unsafe loading in the package:\n" + "\n".join(found)
    assert _unsafe_loads("torch.load(f)") and _unsafe_loads("pickle.loads(b)") and _unsafe_loads("yaml.load(s)")
    assert not _unsafe_loads("torch.load(f, weights_only=True)") and not _unsafe_loads("yaml.safe_load(s)")
