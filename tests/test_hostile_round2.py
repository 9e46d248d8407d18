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


# --- helpers: files as an attacker makes them ---------------------------------------------------
import safetensors  # noqa: E402
import safetensors.torch  # noqa: E402

from robin_plugin.export import export_compact, export_dense, load_compact  # noqa: E402
from robin_plugin.export.compact import CHECKSUM_KEY, HEADER_KEY, ExportFormatError, _checksum  # noqa: E402
from robin_plugin.export.dense import DENSE_FORMAT, load_dense  # noqa: E402
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
    from robin_plugin.export.deploy_file import DEPLOY_FORMAT, DEPLOY_VERSION, DeployFormatError, load_deploy
    from robin_plugin.training.checkpoint import FORMAT as CKPT_FORMAT

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


def test_a_run_folder_with_nan_weights_is_refused(tmp_path):
    from robin_plugin.training.run import load_run

    Trainer(tiny_model(), tiny_config(epochs=1), toy_dataset(32), out_dir=tmp_path).fit()
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
