"""Files are data: a file never chooses what code runs, what is downloaded or how much memory is taken.

Each loader that builds a model from a file gets a crafted file whose model arguments ask timm to
download a file of the attacker's choice into a folder of the attacker's choice (the attack
found in the audit), or to build a huge model from a tiny file. Each must raise the package's
typed error, open no socket, write nothing outside the test folder, and allocate nothing big.
"""
from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import timm
import torch

import robin_plugin
from robin_plugin.cli import main
from robin_plugin.errors import RobinError
from robin_plugin.export import export_compact, export_dense, export_hub, load_compact
from robin_plugin.formats.compact import CHECKSUM_KEY, HEADER_KEY, ExportFormatError
from robin_plugin.formats.compact import checksum as _checksum
from robin_plugin.export.dense import load_dense
from robin_plugin.models.spec import ModelSpec, build_model, check_model_size, count_weights

_EVENTS: list[tuple] = []
_WATCH = {"on": False}


def _audit(event: str, args: tuple) -> None:
    if _WATCH["on"] and (event.startswith("socket.") or event in ("open", "urllib.Request", "subprocess.Popen")):
        _EVENTS.append((event, args))


sys.addaudithook(_audit)  # audit hooks cannot be removed; it records only while a test watches


@pytest.fixture
def watch(tmp_path):
    """Record sockets, requests and file opens for writing while the test body runs."""
    _EVENTS.clear()
    _WATCH["on"] = True
    yield
    _WATCH["on"] = False
    sockets = [e for e in _EVENTS if e[0].startswith("socket.") or e[0] in ("urllib.Request", "subprocess.Popen")]
    assert not sockets, f"network or process activity: {sockets[:3]}"
    writes = []
    for event, args in _EVENTS:
        if event == "open" and len(args) >= 2 and isinstance(args[0], (str, Path)):
            mode, flags = args[1], args[2] if len(args) > 2 else 0
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (isinstance(flags, int) and flags & 0o3)
            if writing and not str(args[0]).startswith(str(tmp_path)) and not str(args[0]).startswith("/dev/"):
                writes.append(args[0])
    assert not writes, f"files written outside the test folder: {writes[:3]}"


def test_the_watcher_sees_a_socket_and_a_write_outside(tmp_path):
    """The fixture above can fail: it records a connection attempt and an outside write."""
    import socket
    import tempfile

    _EVENTS.clear()
    _WATCH["on"] = True
    try:
        with socket.socket() as s:
            s.settimeout(0.2)
            try:
                s.connect(("127.0.0.1", 9))
            except OSError:
                pass
        with tempfile.NamedTemporaryFile("w", dir="/tmp") as f:
            f.write("x")
    finally:
        _WATCH["on"] = False
    assert any(e[0] == "socket.connect" for e in _EVENTS)
    assert any(e[0] == "open" and str(e[1][0]).startswith("/tmp") and not str(e[1][0]).startswith(str(tmp_path))
               for e in _EVENTS if isinstance(e[1][0], str))


def _payload(tmp_path: Path) -> dict:
    """The audit's download-inducing arguments: a URL of the attacker's and a cache folder of theirs."""
    return {"pretrained": True, "pretrained_cfg_overlay": {"url": "http://127.0.0.1:9/x.pth"},
            "cache_dir": str(tmp_path / "site-packages")}


def _tiny():
    return timm.create_model("robin_resnet18", in_chans=1, width=4, keep_ratio=0.2).eval()


def _rewrite_compact_header(path: Path, edit) -> None:
    """Edit a compact file's JSON header and recompute its (unkeyed) checksum, as an attacker can."""
    tensors = safetensors.torch.load_file(str(path))
    header = json.loads(tensors[HEADER_KEY].numpy().tobytes().decode())
    edit(header)
    tensors[HEADER_KEY] = torch.frombuffer(bytearray(json.dumps(header).encode()), dtype=torch.uint8)
    tensors[CHECKSUM_KEY] = _checksum(tensors)
    with safetensors.safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    safetensors.torch.save_file(tensors, str(path), metadata=metadata)


def _rewrite_metadata(path: Path, edit) -> None:
    tensors = safetensors.torch.load_file(str(path))
    with safetensors.safe_open(str(path), framework="pt") as f:
        metadata = dict(f.metadata())
    edit(metadata)
    safetensors.torch.save_file(tensors, str(path), metadata=metadata)


# --- download-inducing model arguments, through every loader --------------------------------------
@pytest.fixture
def evil_compact(tmp_path):
    path = tmp_path / "evil.safetensors"
    export_compact(_tiny(), path)
    _rewrite_compact_header(path, lambda h: h["model"]["kwargs"].update(_payload(tmp_path)))
    return path


def test_compact_header_cannot_make_timm_download(evil_compact, watch):
    with pytest.raises(ExportFormatError, match="'pretrained' is refused"):
        load_compact(evil_compact)


def test_robin_inspect_compact_refuses_the_same_file(evil_compact, watch, capsys):
    assert main(["inspect", "--compact", str(evil_compact), "--no-plots"]) == 2
    assert "refused" in capsys.readouterr().err


def test_compact_header_cache_dir_alone_is_refused(tmp_path, watch):
    path = tmp_path / "c.safetensors"
    export_compact(_tiny(), path)
    _rewrite_compact_header(path, lambda h: h["model"]["kwargs"].update(cache_dir=str(tmp_path / "x")))
    with pytest.raises(ExportFormatError, match="'cache_dir' is refused"):
        load_compact(path)


def test_dense_export_metadata_cannot_make_timm_download(tmp_path, watch):
    path = tmp_path / "dense.safetensors"
    export_dense(_tiny(), path)
    _rewrite_metadata(path, lambda m: m.update(kwargs=json.dumps({**json.loads(m["kwargs"]), **_payload(tmp_path)})))
    with pytest.raises(ExportFormatError, match="'pretrained' is refused"):
        load_dense(path)


def test_run_config_cannot_make_timm_download(tmp_path, watch, capsys):
    from robin_plugin.training import CheckpointError, TrainConfig, load_run

    run = tmp_path / "run"
    run.mkdir()
    config = TrainConfig(model_kwargs={"width": 4}).to_dict()
    config["model_kwargs"] = {"width": 4, **_payload(tmp_path)}
    (run / "config.json").write_text(json.dumps(config))
    safetensors.torch.save_file(_tiny().state_dict(), str(run / "model_best.safetensors"))
    with pytest.raises(RobinError, match="'pretrained' is refused"):
        load_run(run)
    assert main(["eval", "--run", str(run), "--n", "1"]) == 2
    assert "refused" in capsys.readouterr().err


def test_train_config_yaml_cannot_make_timm_download(tmp_path, watch, capsys):
    cfg = tmp_path / "evil.yaml"
    cfg.write_text("model_kwargs:\n  width: 4\n  pretrained: true\n  pretrained_cfg_overlay: {url: 'http://127.0.0.1:9/x.pth'}\n"
                   f"  cache_dir: {tmp_path / 'site'}\nout_dir: {tmp_path / 'out'}\nepochs: 1\n")
    assert main(["train", "--config", str(cfg)]) == 2
    assert "refused" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_model_kwargs_flag_cannot_make_timm_download(tmp_path, watch, capsys):
    ckpt = tmp_path / "m.safetensors"
    safetensors.torch.save_file(_tiny().state_dict(), str(ckpt))
    kwargs = json.dumps({"in_chans": 1, "width": 4, **_payload(tmp_path)})
    assert main(["export", "--model", "robin_resnet18", "--model-kwargs", kwargs, "--checkpoint", str(ckpt),
                 "--out", str(tmp_path / "o.safetensors")]) == 2
    assert "refused" in capsys.readouterr().err


def test_hub_folder_cannot_make_timm_download(tmp_path, watch):
    folder = export_hub(_tiny(), tmp_path / "hub")
    config = json.loads((folder / "config.json").read_text())
    config["pretrained_cfg"]["url"] = "http://127.0.0.1:9/x.pth"
    config["pretrained_cfg"]["hf_hub_id"] = "attacker/weights"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(robin_plugin.ConfigError, match="never download"):
        timm.create_model(f"local-dir:{folder}", pretrained=True)


def test_hub_folder_naming_a_huge_model_fails_before_allocating(tmp_path, watch):
    folder = export_hub(_tiny(), tmp_path / "hub")
    config = json.loads((folder / "config.json").read_text())
    config["model_args"]["width"] = 1024
    (folder / "config.json").write_text(json.dumps(config))
    before = _peak_rss_mb()
    with pytest.raises(robin_plugin.ConfigError, match="GiB.*ROBIN_MAX_MODEL_BYTES"):
        timm.create_model(f"local-dir:{folder}", pretrained=True)
    assert _peak_rss_mb() - before < 100


def test_direct_url_overlay_is_refused(watch):
    with pytest.raises(robin_plugin.ConfigError, match="never download"):
        timm.create_model("robin_resnet18", pretrained=True, pretrained_cfg_overlay={"url": "http://127.0.0.1:9/x.pth"})


# --- tiny files, huge models ----------------------------------------------------------------------
def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("width, match", [(2048, r"width.*\[1, 1024\]"), (1024, "GiB.*ROBIN_MAX_MODEL_BYTES")])
def test_compact_header_naming_a_huge_width_fails_before_allocating(tmp_path, watch, width, match):
    """The audit's 17.5 KB file with width 2048 took 8.3 GB and 56 s before failing."""
    path = tmp_path / "huge.safetensors"
    export_compact(_tiny(), path)
    _rewrite_compact_header(path, lambda h: h["model"]["kwargs"].update(width=width))
    before, t0 = _peak_rss_mb(), time.perf_counter()
    with pytest.raises(ExportFormatError, match=match):
        load_compact(path)
    assert time.perf_counter() - t0 < 5
    assert _peak_rss_mb() - before < 100  # peak resident memory grew by less than 100 MB


def test_compact_header_whose_layers_contradict_its_model_fails_before_building(tmp_path, watch):
    path = tmp_path / "lie.safetensors"
    export_compact(_tiny(), path)
    _rewrite_compact_header(path, lambda h: h["model"]["kwargs"].update(width=64))  # 4.5 M weights, header says 44 k
    with pytest.raises(ExportFormatError, match="does not describe the model it names"):
        load_compact(path)


def test_dense_export_naming_a_huge_width_fails_before_allocating(tmp_path, watch):
    """The audit's dense export with width 1024 loaded about 11 GB."""
    path = tmp_path / "dense.safetensors"
    export_dense(_tiny(), path)
    _rewrite_metadata(path, lambda m: m.update(kwargs=json.dumps({**json.loads(m["kwargs"]), "width": 1024})))
    before = _peak_rss_mb()
    with pytest.raises(ExportFormatError, match="GiB"):
        load_dense(path)
    assert _peak_rss_mb() - before < 100


def test_size_limit_is_documented_and_can_be_raised(monkeypatch):
    spec = ModelSpec.parse("robin_resnet18", {"width": 256})
    size = check_model_size(spec)  # 179 M weights: under the default 4 GiB
    assert size == 8 * count_weights(spec)
    monkeypatch.setenv("ROBIN_MAX_MODEL_BYTES", str(size - 1))
    with pytest.raises(robin_plugin.ConfigError, match="ROBIN_MAX_MODEL_BYTES"):
        build_model(spec)
    monkeypatch.setenv("ROBIN_MAX_MODEL_BYTES", "lots")
    with pytest.raises(robin_plugin.ConfigError, match="integer number of bytes"):
        check_model_size(spec)


def test_count_weights_is_exact_for_every_registered_family():
    for name in timm.list_models("robin_*"):
        kw = {"in_chans": 1, "num_classes": 7}
        kw.update({"depth": 10, "widen_factor": 2} if "wrn" in name else {"width": 3})
        model = timm.create_model(name, **kw)
        n = sum(m.weight.numel() for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
        assert count_weights(ModelSpec.parse(name, kw)) == n, name


# --- the spec: allow-list, types, bounds ----------------------------------------------------------
@pytest.mark.parametrize("kwargs, error, match", [
    ({"widht": 4}, robin_plugin.UnknownNameError, "did you mean 'width'"),
    ({"width:4": None}, robin_plugin.UnknownNameError, "did you mean 'width'"),  # YAML's {width:4}
    ({"width": None}, robin_plugin.ConfigError, "no value"),
    ({"width": "4"}, robin_plugin.ConfigError, "integer"),
    ({"width": 0}, robin_plugin.ConfigError, r"\[1, 1024\]"),
    ({"std": [float("nan")], "in_chans": 1}, robin_plugin.ConfigError, "std"),
    ({"std": [0.0], "in_chans": 1}, robin_plugin.ConfigError, "> 0"),
    ({"mean": [0.5, 0.5], "in_chans": 1}, robin_plugin.ConfigError, "needs 1 values"),
    ({"seed": 2**70}, robin_plugin.ConfigError, "seed"),
    ({"block": "Bottleneck"}, robin_plugin.UnknownNameError, "unknown model argument"),
    ({"checkpoint_path": "/etc/passwd"}, robin_plugin.ConfigError, "refused"),
    ({"depth": 28}, robin_plugin.UnknownNameError, "unknown model argument"),  # not a ResNet argument
])
def test_spec_refuses_with_a_typed_error_naming_the_field(kwargs, error, match):
    with pytest.raises(error, match=match):
        ModelSpec.parse("robin_resnet18", kwargs)


def test_spec_refuses_unknown_and_non_robin_names():
    with pytest.raises(robin_plugin.UnknownNameError, match="did you mean 'robin_resnet18'"):
        ModelSpec.parse("robin_resnet81", {})
    with pytest.raises(robin_plugin.UnknownNameError):
        ModelSpec.parse("resnet18", {})  # a stock timm model is not built from robin files


# --- the deploy file: a program of known operation kinds, nothing executed ------------------------
@pytest.mark.parametrize("edit, match", [
    # an operation that would call a Python function or module named by the file
    (lambda p: p[3].update(kind="call", params={"target": "os.system", "method": False, "kwargs": {},
                                                 "template": ["echo pwned"]}), "unknown kind 'call'"),
    (lambda p: p[3].update(kind="module", params={"module": "torch.hub.load"}), "unknown kind 'module'"),
    # a sparse convolution claiming 65,536 output channels without the index data behind them
    (lambda p: next(o for o in p if o["kind"] == "sparse_conv")["params"].update(cout=65536), "not a valid"),
])
def test_deploy_file_cannot_run_code_or_claim_a_huge_layer(tmp_path, watch, edit, match):
    import warnings

    import timm
    from robin_plugin.export import DeployFormatError, deploy_model, load_deploy, save_deploy

    model = timm.create_model("robin_resnet18", width=4, keep_ratio=0.05).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "sparse CSR support is in beta"
        path = save_deploy(deploy_model(model), tmp_path / "model.deploy.safetensors")
    _rewrite_metadata(path, lambda m: m.update(program=json.dumps(_edited(json.loads(m["program"]), edit))))
    with pytest.raises(DeployFormatError, match=match):
        load_deploy(path)


def _edited(program: list, edit) -> list:
    edit(program)
    return program
