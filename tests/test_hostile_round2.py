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
from robin_plugin.testing import tiny_robin_resnet, toy_dataset
from robin_plugin.training import Trainer

REPO = Path(__file__).resolve().parent.parent


# --- 1. the folder lock and every write refuse links -------------------------------------------
@pytest.mark.parametrize("resume", [False, True])
def test_a_planted_lock_symlink_is_refused_and_its_target_untouched(tmp_path, resume, tiny_config):
    target = tmp_path / "important"
    target.write_text("precious\n")
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).symlink_to(target)
    with pytest.raises(WriteError, match="is a symbolic link") as err:
        Trainer(tiny_robin_resnet(), tiny_config(epochs=1), toy_dataset(32), out_dir=out).fit(resume=resume)
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


def test_writes_replace_a_planted_symlink_instead_of_following_it(tmp_path, tiny_config):
    target = tmp_path / "important"
    target.write_text("precious\n")
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").symlink_to(target)
    (out / "metrics.csv").symlink_to(target)
    Trainer(tiny_robin_resnet(), tiny_config(epochs=1), toy_dataset(32), out_dir=out).fit()
    assert target.read_text() == "precious\n"
    assert not (out / "config.json").is_symlink() and json.loads((out / "config.json").read_text())["epochs"] == 1


# --- helpers: files as an attacker makes them ---------------------------------------------------
import safetensors  # noqa: E402
import safetensors.torch  # noqa: E402

from robin_plugin.export import export_compact, export_dense, load_compact  # noqa: E402
from robin_plugin.formats.compact import CHECKSUM_KEY, HEADER_KEY, ExportFormatError  # noqa: E402
from robin_plugin.formats.compact import checksum as _checksum  # noqa: E402
from robin_plugin.export.dense import load_dense  # noqa: E402
from robin_plugin.formats.dense import DENSE_FORMAT  # noqa: E402
from robin_plugin.formats.files import FileContentError, json_depth, parse_json, read_safetensors_header  # noqa: E402
from robin_plugin.loading import load_model  # noqa: E402
from robin_plugin.training import CheckpointError, load_checkpoint  # noqa: E402

NESTED = b"[" * 200_000
FMNIST = Path("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")


def _tiny():
    return timm.create_model("robin_resnet18", in_chans=1, width=4, keep_ratio=0.2).eval()


def _compact_with_header(path: Path, header: bytes, edit_state=None) -> Path:
    """A compact file whose JSON header is ``header`` (bytes), with a valid (recomputed) checksum."""
    export_compact(_tiny(), path, overwrite=True)
    tensors = safetensors.torch.load_file(str(path))
    if header is not None:
        tensors[HEADER_KEY] = torch.frombuffer(bytearray(header), dtype=torch.uint8)
    if edit_state is not None:
        edit_state(tensors)
    tensors[CHECKSUM_KEY] = _checksum(tensors)
    with safetensors.safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    safetensors.torch.save_file(tensors, str(path), metadata=metadata)
    return path


def _header_of(path: Path) -> dict:
    return json.loads(safetensors.torch.load_file(str(path))[HEADER_KEY].numpy().tobytes())


# --- 2. bounded JSON ---------------------------------------------------------------------------
def test_parse_json_bounds_depth_and_size_before_parsing():
    assert parse_json(b'{"a": [1, {"b": "[[[["}]}') == {"a": [1, {"b": "[[[["}]}
    assert json_depth(b'["[[", {"\\"[": [[]]}]') == 4  # brackets inside strings do not count
    for bad, match in [(NESTED, "nested too deeply"), (b"[" * 65 + b"]" * 65, "nested too deeply"),
                       (b"\xff", "not UTF-8"), (b"{", "not valid JSON"), (b'"\\' * 50_000, "not valid JSON")]:
        with pytest.raises(FileContentError, match=match):
            parse_json(bad)
    assert parse_json(b"[" * 64 + b"]" * 64) is not None
    with pytest.raises(FileContentError, match="larger than the limit"):
        parse_json(b"[1]" * 10, max_bytes=8)
    t0 = time.perf_counter()
    with pytest.raises(FileContentError):  # unterminated strings full of escapes: still linear
        parse_json(b'["' + b'\\"[' * 2_000_000)
    assert time.perf_counter() - t0 < 5


def test_nested_json_in_a_compact_header_is_typed_through_every_route(tmp_path, capsys):
    from robin_plugin.cli import main

    path = _compact_with_header(tmp_path / "nested.safetensors", NESTED)
    with pytest.raises(ExportFormatError, match="nested too deeply"):
        load_compact(path)
    with pytest.raises(ExportFormatError, match="nested too deeply"):
        load_model(path)
    for kw in (dict(pretrained=True, pretrained_cfg_overlay=dict(file=str(path))), dict(checkpoint_path=str(path))):
        with pytest.raises(ExportFormatError, match="nested too deeply"):
            timm.create_model("robin_resnet18", in_chans=1, width=4, keep_ratio=0.2, **kw)
    assert main(["inspect", "--compact", str(path), "--no-plots"]) == 2
    assert "robin inspect: error:" in capsys.readouterr().err


def test_nested_json_in_file_metadata_is_typed(tmp_path):
    from robin_plugin.export.deploy import DeployFormatError, load_deploy
    from robin_plugin.formats.deploy import DEPLOY_FORMAT, DEPLOY_VERSION
    from robin_plugin.formats.checkpoint import CHECKPOINT_FORMAT as CKPT_FORMAT

    deep = NESTED.decode()
    deploy = tmp_path / "d.safetensors"
    safetensors.torch.save_file({"0.w": torch.zeros(2)}, str(deploy), metadata={
        "format": DEPLOY_FORMAT, "version": DEPLOY_VERSION, "program": deep, "output": "1", "num_classes": "2"})
    with pytest.raises(DeployFormatError, match="nested too deeply"):
        load_deploy(deploy)
    ckpt = tmp_path / "c.safetensors"
    safetensors.torch.save_file({"model/w": torch.zeros(2)}, str(ckpt),
                                metadata={"format": CKPT_FORMAT, "robin_checkpoint": deep})
    with pytest.raises(CheckpointError, match="nested too deeply"):
        load_checkpoint(ckpt)
    dense = tmp_path / "dense.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(2)}, str(dense),
                                metadata={"format": DENSE_FORMAT, "model": "robin_resnet18_dense", "kwargs": deep})
    for load in (load_dense, load_model):
        with pytest.raises(ExportFormatError, match="nested too deeply"):
            load(dense)
    hub = tmp_path / "hub"
    hub.mkdir()
    (hub / "config.json").write_bytes(NESTED)
    export_compact(_tiny(), hub / "model.safetensors")
    export_compact(_tiny(), hub / "model_best.safetensors")
    with pytest.raises(CheckpointError, match="nested too deeply"):
        load_model(hub)


# --- 3. declared sizes and names are bounded before anything is read or compared ---------------
def test_safetensors_header_is_checked_before_the_body(tmp_path):
    sparse = tmp_path / "sparse.safetensors"
    with open(sparse, "wb") as f:  # 1 GiB, all zeros but the header: never read
        header = json.dumps({"w": {"dtype": "F32", "shape": [2 ** 28], "data_offsets": [0, 2 ** 30]},
                             "__metadata__": {"format": "robin_compact", "version": "1"}}).encode()
        f.write(len(header).to_bytes(8, "little") + header)
        f.truncate(8 + len(header) + 2 ** 30)
    t0 = time.perf_counter()
    with pytest.raises(ExportFormatError, match="unexpected tensor 'w'"):
        load_compact(sparse)
    assert read_safetensors_header(sparse).tensors["w"] == ("F32", (2 ** 28,), 2 ** 30)
    for bad, match in [
        ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}, "do not hold shape"),
        ({"w": {"dtype": "PY", "shape": [1], "data_offsets": [0, 1]}}, "dtype 'PY' is not allowed"),
        ({"x" * 5000: {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}, "longer than the limit"),
    ]:
        raw = json.dumps(bad).encode()
        (tmp_path / "b.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw + b"\0" * 16)
        with pytest.raises(FileContentError, match=match):
            read_safetensors_header(tmp_path / "b.safetensors")
    (tmp_path / "big.safetensors").write_bytes((2 ** 40).to_bytes(8, "little") + b"{")
    with pytest.raises(ExportFormatError, match="not a valid safetensors file"):
        load_compact(tmp_path / "big.safetensors")
    assert time.perf_counter() - t0 < 5


def test_an_oversized_model_name_fails_fast_and_small(tmp_path):
    path = tmp_path / "name.safetensors"
    export_compact(_tiny(), path)
    header = _header_of(path)
    header["model"]["name"] = "robin_resnet18" + "x" * 2_000_000  # within the header size limit
    _compact_with_header(path, json.dumps(header).encode())
    t0 = time.perf_counter()
    with pytest.raises(ExportFormatError, match="longer than the limit"):
        load_compact(path)
    assert time.perf_counter() - t0 < 3
    from robin_plugin.errors import closest

    t0 = time.perf_counter()
    assert closest("robin_resnet18" * 10_000_000, ["robin_resnet18", "robin_resnet34"]) == ""
    assert closest("robin_resnet81", ["robin_resnet18"]) == " (did you mean 'robin_resnet18'?)"
    assert time.perf_counter() - t0 < 1


# --- 5. non-finite weights, scores and statistics ----------------------------------------------
def test_non_finite_tensors_are_refused_naming_the_tensor(tmp_path):
    from robin_plugin.loading import ModelFileError

    model = _tiny()
    dense = tmp_path / "dense.safetensors"
    export_dense(model, dense)
    sd = safetensors.torch.load_file(str(dense))
    with safetensors.safe_open(str(dense), framework="pt") as f:
        metadata = f.metadata()
    sd["conv1.weight"][0, 0, 0, 0] = float("nan")
    safetensors.torch.save_file(sd, str(dense), metadata=metadata)
    with pytest.raises(ExportFormatError, match="'conv1.weight' holds NaN or Inf"):
        load_dense(dense)

    def poison(tensors):
        tensors["state.float32"][0] = float("inf")

    compact = _compact_with_header(tmp_path / "c.safetensors", None, edit_state=poison)
    with pytest.raises(ExportFormatError, match="holds NaN or Inf"):
        load_compact(compact)
    with pytest.raises(ExportFormatError, match="holds NaN or Inf"):  # through timm too
        timm.create_model("robin_resnet18", in_chans=1, width=4, keep_ratio=0.2, checkpoint_path=str(compact))

    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["conv1.scores"][0, 0, 0, 0] = float("nan")
    sd_file = tmp_path / "sd.safetensors"
    safetensors.torch.save_file(state, str(sd_file))
    kwargs = dict(in_chans=1, width=4, keep_ratio=0.2)
    with pytest.raises(ModelFileError, match="'conv1.scores' holds NaN or Inf"):
        load_model(sd_file, model="robin_resnet18", model_kwargs=kwargs)
    with pytest.raises(ModelFileError, match="'conv1.scores' holds NaN or Inf"):
        load_model(state, model="robin_resnet18", model_kwargs=kwargs)


def test_a_run_folder_with_nan_weights_is_refused(tmp_path, tiny_config):
    from robin_plugin.training.run import load_run

    Trainer(tiny_robin_resnet(), tiny_config(epochs=1), toy_dataset(32), out_dir=tmp_path).fit()
    weights = tmp_path / "model.safetensors"
    sd = safetensors.torch.load_file(str(weights))
    key = next(k for k in sd if k.endswith("running_var"))
    sd[key][0] = float("nan")
    safetensors.torch.save_file(sd, str(weights))
    with pytest.raises(CheckpointError, match=f"'{key}' holds NaN or Inf"):
        load_run(tmp_path, "last")


# --- the same, under a 1 GB address-space limit --------------------------------------------------
_LIMITED = r"""
import resource, sys, time, json
import torch, timm, robin_plugin
from robin_plugin.errors import RobinError
from robin_plugin.export import load_compact
from robin_plugin.export.dense import load_dense
from robin_plugin.loading import load_model

def vm_bytes():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))

limit = vm_bytes() + 2 ** 30  # what is mapped now (torch, timm) plus 1 GiB
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
out = {}
for name, load in [("nested", lambda p: load_compact(p)), ("nested-model", lambda p: load_model(p)),
                   ("name", lambda p: load_compact(p)),
                   ("name-timm", lambda p: timm.create_model("robin_resnet18", in_chans=1, width=4, keep_ratio=0.2,
                                                               checkpoint_path=p)),
                   ("nan", lambda p: load_dense(p)), ("sparse", lambda p: load_compact(p)),
                   ("sparse-model", lambda p: load_model(p))]:
    t0 = time.perf_counter()
    try:
        load(sys.argv[1] + "/" + name.split("-")[0] + ".safetensors")
        out[name] = ["loaded", 0.0]
    except RobinError as e:
        out[name] = [type(e).__name__, time.perf_counter() - t0]
    except BaseException as e:
        out[name] = ["untyped " + type(e).__name__ + ": " + str(e)[:200], time.perf_counter() - t0]
print(json.dumps(out))
"""


@pytest.mark.slow  # a fresh interpreter (imports torch and timm)
def test_hostile_files_fail_typed_and_small_under_an_address_space_limit(tmp_path):
    _compact_with_header(tmp_path / "nested.safetensors", NESTED)
    path = tmp_path / "name.safetensors"
    export_compact(_tiny(), path)
    header = _header_of(path)
    header["model"]["name"] = "x" * 100_000_000  # 100 MB
    _compact_with_header(path, json.dumps(header).encode())
    export_dense(_tiny(), tmp_path / "nan.safetensors")
    sd = safetensors.torch.load_file(str(tmp_path / "nan.safetensors"))
    with safetensors.safe_open(str(tmp_path / "nan.safetensors"), framework="pt") as f:
        metadata = f.metadata()
    sd["conv1.weight"].fill_(float("nan"))
    safetensors.torch.save_file(sd, str(tmp_path / "nan.safetensors"), metadata=metadata)
    with open(tmp_path / "sparse.safetensors", "wb") as f:  # 1 GiB of zeros after a compact-looking header
        raw = json.dumps({HEADER_KEY: {"dtype": "U8", "shape": [2 ** 30], "data_offsets": [0, 2 ** 30]},
                          "__metadata__": {"format": "robin_compact", "version": "1"}}).encode()
        f.write(len(raw).to_bytes(8, "little") + raw)
        f.truncate(8 + len(raw) + 2 ** 30)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _LIMITED, str(tmp_path)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, (kind, seconds) in out.items():
        assert kind in ("ExportFormatError", "ModelFileError"), (name, kind)
        assert seconds < 5, (name, seconds)


# --- 4. a killed export leaves only what the cleanup knows ---------------------------------------
_KILLED_EXPORT = r"""
import os, sys, threading, time
import torch, timm, robin_plugin
from robin_plugin.export import export_dense

folder, name = sys.argv[1], sys.argv[2]
model = timm.create_model("robin_resnet18", width=int(sys.argv[3]))

def watch():  # SIGKILL as soon as anything appears inside the export's temporary folder
    while True:
        for entry in os.listdir(folder):
            if entry.startswith("." + name + ".") and os.path.isdir(os.path.join(folder, entry)):
                if os.listdir(os.path.join(folder, entry)):
                    os.kill(os.getpid(), 9)
        time.sleep(0.0005)

threading.Thread(target=watch, daemon=True).start()
export_dense(model, os.path.join(folder, name))
time.sleep(5)
"""


@pytest.mark.slow  # a fresh interpreter (imports torch and timm)
def test_a_killed_export_leaves_only_a_temp_folder_the_cleanup_removes(tmp_path):
    out = tmp_path / "exports"
    out.mkdir()
    proc = subprocess.run([sys.executable, "-c", _KILLED_EXPORT, str(out), "m.safetensors", "32"],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    left = sorted(p.name for p in out.iterdir())
    assert left and all(n.startswith(".m.safetensors.") and n.endswith(".tmp") for n in left), left
    assert not (out / "m.safetensors").exists()
    (out / "other.bin").write_bytes(b"keep")
    assert sorted(p.name for p in remove_stale_temp_files(out / "m.safetensors")) == left
    assert sorted(p.name for p in out.iterdir()) == ["other.bin"]


def test_the_next_write_removes_orphans_but_never_a_temp_folder_in_use(tmp_path):
    import fcntl

    orphan = tmp_path / ".m.bin.abc123.tmp"
    orphan.mkdir()
    (orphan / ".tmpXYZ123").write_bytes(b"x" * 1000)  # what safetensors' own writer leaves
    busy = tmp_path / ".m.bin.def456.tmp"
    busy.mkdir()
    fd = os.open(busy, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a live writer holds its folder
        atomic_write_bytes(tmp_path / "m.bin", b"new")
        assert not orphan.exists() and busy.exists()
    finally:
        os.close(fd)
    assert (tmp_path / "m.bin").read_bytes() == b"new"
    assert remove_stale_temp_files(tmp_path / "m.bin") == [busy]  # its writer is gone


# --- 6. the input contract at the boundary ---------------------------------------------------------
def test_the_input_contract_is_checked_where_models_enter_robins_tools():
    from robin_plugin.errors import InputError
    from robin_plugin.eval import evaluate

    model = timm.create_model("robin_resnet18", in_chans=1, num_classes=2, width=4, check_inputs=True).eval()
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(InputError, match="expected float32 images .the model's dtype., got dtype torch.float64"):
        model(x.double())
    with pytest.raises(InputError, match="expected floating-point images in \\[0, 1\\], got dtype torch.uint8"):
        model((x * 255).to(torch.uint8))
    with pytest.raises(InputError, match="images must lie in \\[0, 1\\]"):
        model(x * 255)
    plain = timm.create_model("robin_resnet18", in_chans=1, num_classes=2, width=4).eval()
    y = torch.tensor([0, 1])
    for bad in (x * 255, x - 1):
        with pytest.raises(InputError, match="images must lie in \\[0, 1\\]"):
            evaluate(plain, bad, y, eps=0.1, attacks=("apgd-ce",), run_checks=False)


# --- 7. clear messages ---------------------------------------------------------------------------
@pytest.mark.parametrize("content, match", [
    (b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94.", "pickle"),
    (b"", "empty"),
    (b"\x01\x02", "truncated"),
    (os.urandom(4096), "not a safetensors file|truncated|damaged"),
    (b"\x40\x00\x00\x00\x00\x00\x00\x00{\"a\":", "truncated"),
])
def test_load_model_says_what_a_file_is_not(tmp_path, content, match):
    from robin_plugin.loading import ModelFileError

    path = tmp_path / "m.safetensors"
    path.write_bytes(content)
    for kwargs in ({}, {"model": "robin_resnet18"}):
        with pytest.raises(ModelFileError, match=match) as err:
            load_model(path, **kwargs)
        assert "plain state dict" not in str(err.value)


def test_a_torch_save_file_is_named_as_such(tmp_path):
    from robin_plugin.loading import ModelFileError

    torch.save({"w": torch.zeros(2)}, tmp_path / "m.pt")
    with pytest.raises(ModelFileError, match="pickle / torch.save file, which robin never unpickles"):
        load_model(tmp_path / "m.pt")


@pytest.mark.slow  # a fresh interpreter (imports torch and timm)
def test_a_closed_stdout_gives_no_traceback(tmp_path):
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the command writes (robin train --list-presets | head -0)
    try:
        proc = subprocess.run([sys.executable, "-m", "robin_plugin.cli", "train", "--list-presets"], stdout=w,
                              stderr=subprocess.PIPE, text=True, timeout=120, cwd=REPO)
    finally:
        os.close(w)
    assert proc.returncode == 141, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr


def test_robin_train_refuses_another_runs_out_dir(tmp_path, capsys):
    from robin_plugin.cli import main

    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text("{}")
    (out / "model_best.safetensors").write_bytes(b"old")
    args = ["train", "epochs=1", f"out_dir={out}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "holds a finished run" in err and "--overwrite" in err and "--resume" in err
    assert (out / "results.json").read_text() == "{}"
    (out / "results.json").unlink()
    (out / "checkpoint.safetensors").write_bytes(b"old")
    assert main(args) == 2
    assert "holds an unfinished run" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--resume"]) == 2
    with FolderLock(out):  # --overwrite never deletes under a live run
        assert main(args + ["--overwrite"]) == 2
        assert "is being written by another run" in capsys.readouterr().err
    assert (out / "checkpoint.safetensors").exists()


@pytest.mark.skipif(not FMNIST.exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_robin_train_overwrite_starts_over_and_a_planted_lock_link_is_refused(tmp_path, capsys):
    from robin_plugin.cli import main

    out = tmp_path / "run"
    args = ["train", "train_subset=64", "epochs=1", "batch_size=32", "test_n=0", "model_kwargs={width: 4}",
            "val_pgd_steps=1", "progress=false", f"out_dir={out}"]
    out.mkdir()
    (out / "results.json").write_text("{}")
    (out / "model_best.safetensors").write_bytes(b"old")  # must not be taken for the new run's best epoch
    assert main(args + ["--overwrite"]) == 0
    assert json.loads((out / "results.json").read_text())["epochs"] == 1
    capsys.readouterr()
    target = tmp_path / "important"
    target.write_text("precious\n")
    (out / LOCK_NAME).symlink_to(target)
    for extra in (["--overwrite"], ["--resume"]):
        assert main(args + extra) == 2
        assert "symbolic link" in capsys.readouterr().err
    assert target.read_text() == "precious\n"


@pytest.mark.skipif(not FMNIST.exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_a_val_fraction_that_leaves_no_training_set_is_a_config_error(tmp_path):
    from robin_plugin.errors import ConfigError
    from robin_plugin.training import TrainConfig
    from robin_plugin.training.run import load_data

    cfg = TrainConfig(val_fraction=0.999, train_subset=64, test_n=0, out_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="val_fraction=0.999 leaves 1 of 64 training images"):
        load_data(cfg)


@pytest.mark.slow  # a fresh interpreter (imports torch and timm)
def test_robin_inspect_writes_nothing_into_home(tmp_path):
    path = tmp_path / "m.safetensors"
    export_compact(_tiny(), path)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MPL", "XDG_"))}
    env.update(HOME=str(home), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "robin_plugin.cli", "inspect", "--compact", str(path),
                           "--out", str(tmp_path / "plots")], capture_output=True, text=True, timeout=300,
                          env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert list((tmp_path / "plots").glob("*.png"))
    assert list(home.iterdir()) == []
