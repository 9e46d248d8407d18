"""Files are data, never instructions: what a hostile or damaged file can and cannot do.

1. Config parsing cannot explode or mislead: no YAML anchors / aliases, a size limit, nulls
   only where null is valid; a run folder's ``config.json`` is refused with ``CheckpointError``.
2. Bad values give the package's typed errors naming the field: huge seeds, hand-edited
   checkpoint metadata, a deeply nested ``--state`` file, integer images, a full disk during a
   safetensors write.
3. Silent wrong results become errors: ``num_classes == 0``, an empty attack list, a resumed
   checkpoint whose step, scores, hook state or fixed weights do not fit the run.
4. The same model and seed give byte-identical files (compact, dense, checkpoint, hub).
5. One writer per ``out_dir`` (a lock that survives ``kill -9``), and output files follow the umask.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
from safetensors import SafetensorError

import robin_plugin  # noqa: F401  (registers the robin models)
from robin_plugin.cli import main as robin
from robin_plugin.errors import ConfigError, InputError, RobinError
from robin_plugin.io import (
    LOCK_NAME, FolderLock, FolderLockedError, WriteError, atomic_write_bytes, canonicalize_safetensors_header,
    save_safetensors,
)
from robin_plugin.training import CheckpointError, Trainer, apply_overrides, load_checkpoint, save_checkpoint
from robin_plugin.training.config import MAX_CONFIG_BYTES, MAX_SEED, load_config_file, parse_override
from robin_plugin.training.events import Hook
from robin_plugin.training.run import load_run
from robin_plugin.testing import tiny_robin_resnet, toy_dataset

# under 600 bytes of YAML that expand to 10**9 list elements (the "billion laughs")
YAML_BOMB = "\n".join(
    [f'a: &a ["{"lol" * 10}"]'] + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]" for i in range(9)]
) + "\n"


def _write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


@pytest.fixture(scope="module")
def fast_config(tiny_config):
    """``fast_config(**changes)``: the config of ``run_dir``'s 1-epoch 'fast' run."""
    return lambda **kw: tiny_config(**{**dict(epochs=1, attack="fast", step_size=0.05), **kw})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, fast_config) -> Path:
    """A finished 1-epoch run (attack 'fast', so its checkpoint holds a perturbation bank)."""
    out = tmp_path_factory.mktemp("run")
    Trainer(tiny_robin_resnet(), fast_config(), toy_dataset(64), toy_dataset(16, seed=1), out_dir=out).fit()
    return out


@pytest.fixture
def resume_with(tmp_path, run_dir, fast_config):
    """``resume_with(edit)``: copy ``run_dir``'s checkpoint, let ``edit(model_state, state)`` change it, and
    resume from it into ``tmp_path / "out"``."""
    def resume(edit) -> None:
        model_state, state = load_checkpoint(run_dir / "checkpoint.safetensors")
        edit(model_state, state)
        path = tmp_path / "edited.safetensors"
        save_checkpoint(path, model_state, state)
        Trainer(tiny_robin_resnet(), fast_config(epochs=2), toy_dataset(64), toy_dataset(16, seed=1),
                out_dir=tmp_path / "out").fit(resume=path)
    return resume


# --- 1. config parsing that cannot explode or mislead ------------------------------------------
def test_yaml_alias_bomb_is_refused_at_once(tmp_path):
    assert len(YAML_BOMB) < 600
    t = time.perf_counter()
    with pytest.raises(ConfigError, match="anchors and aliases .* are not allowed"):
        load_config_file(_write(tmp_path / "bomb.yaml", YAML_BOMB))
    assert time.perf_counter() - t < 2.0


@pytest.mark.parametrize("text", ["model_kwargs={a: &x 1, b: *x}", "lr_milestones=[&m 0.5, *m]",
                                  "model_kwargs={<<: *base}"])
def test_override_with_anchor_or_alias_is_refused(text):
    with pytest.raises(ConfigError, match="anchors and aliases"):
        parse_override(text)


def test_plain_yaml_and_json_still_load(tmp_path):
    assert load_config_file(_write(tmp_path / "c.yaml", "epochs: 3\nmodel_kwargs: {width: 8}\n")) == \
        {"epochs": 3, "model_kwargs": {"width": 8}}
    assert load_config_file(_write(tmp_path / "c.json", '{"lr": 0.05, "eps": null}')) == {"lr": 0.05, "eps": None}


def test_config_file_size_limit(tmp_path):
    assert MAX_CONFIG_BYTES == 2**20
    big = _write(tmp_path / "big.yaml", "epochs: 3\n" + "#" * MAX_CONFIG_BYTES)
    with pytest.raises(ConfigError, match=r"larger than 1048576 bytes \(1 MiB\)"):
        load_config_file(big)


@pytest.mark.parametrize("key,type_name", [("lr", "float"), ("epochs", "int"), ("seed", "int"), ("model", "str"),
                                           ("attack", "str"), ("amp", "bool"), ("lr_milestones", "tuple")])
def test_null_is_refused_where_it_is_not_a_valid_value(tmp_path, key, type_name):
    overrides = load_config_file(_write(tmp_path / "c.yaml", f"{key}: null\n"))
    with pytest.raises(ConfigError, match=f"config key '{key}' must be {type_name}, got NoneType None"):
        apply_overrides({}, overrides)
    with pytest.raises(ConfigError, match=f"'{key}' must be {type_name}"):
        apply_overrides({}, dict([parse_override(f"{key}=")]))


def test_null_is_accepted_where_it_means_default():
    cfg = apply_overrides({}, {"eps": None, "train_subset": None, "augment": None, "data_root": None})
    assert cfg.eps is None and cfg.train_subset is None


def _fake_run(tmp_path: Path, config: bytes) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    _write(run / "config.json", config)
    _write(run / "model.safetensors", b"not read: the config is refused first")
    return run


@pytest.mark.parametrize("config,match", [
    (b'{"epochs": 3, "model": "robin_resnet18\xff"}', "not UTF-8 text"),
    (b"[" * 100_000, "nested too deeply|not a valid run config"),
    (b'{"epochs": ' + b" " * MAX_CONFIG_BYTES + b"3}", r"larger than 1048576 bytes"),
    (b'{"epochs": 3', "not a valid run config"),
    (b'{"epoch": 3}', "did you mean 'epochs'"),
    (b'{"seed": 99999999999999999999999}', "seed must be an integer >= 0 and <= 2\\*\\*63 - 1"),
    (b'{"model_kwargs": {"pretrained": true}}', "not a valid run config"),
    (b'["a list"]', "must be a mapping"),
])
def test_load_run_refuses_bad_config_json_with_checkpoint_error(tmp_path, config, match):
    with pytest.raises(CheckpointError, match=match) as err:
        load_run(_fake_run(tmp_path, config), "last")
    assert "config.json" in str(err.value)


# --- 2. untyped errors that escaped ------------------------------------------------------------
def test_huge_seed_is_a_config_error_naming_the_bound(capsys):
    with pytest.raises(ConfigError, match=r"seed must be an integer >= 0 and <= 2\*\*63 - 1 \(9223372036854775807\), "
                                          r"got 99999999999999999999999"):
        apply_overrides({}, dict([parse_override("seed=99999999999999999999999")]))
    assert apply_overrides({}, {"seed": MAX_SEED}).seed == 2**63 - 1
    assert robin(["train", "seed=99999999999999999999999"]) == 2
    assert "seed must be an integer >= 0 and <= 2**63 - 1" in capsys.readouterr().err


def test_robin_eval_huge_seed_is_refused_before_anything_loads(capsys, tmp_path):
    argv = ["eval", "--model", "robin_resnet18", "--dataset", "fashion_mnist", "--data-root", str(tmp_path / "none"),
            "--out", str(tmp_path / "r.json")]
    assert robin(argv + ["--seed", "99999999999999999999999"]) == 2
    assert "--seed must be an integer >= 0 and <= 2**63 - 1" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"seed must be an integer >= 0 and <= 2\*\*63 - 1"):
        _evaluate(seed=2**63)


@pytest.mark.parametrize("field,value,match", [
    ("epoch", "x", "checkpoint field 'epoch' must be an integer >= 0"),
    ("epoch", 0.5, "checkpoint field 'epoch' must be an integer >= 0"),
    ("epoch", -3, "checkpoint field 'epoch' must be an integer >= 0"),
    ("step", -100, r"checkpoint field 'step' must be 2 \(optimizer steps after epoch 0 at 2 steps per epoch"),
    ("step", 3, "checkpoint field 'step' must be 2"),
    ("step", "2", "checkpoint field 'step' must be 2"),
    ("best", None, "checkpoint field 'best' must be a mapping"),
    ("best", {"val/robust_acc": float("nan"), "epoch": 0}, "checkpoint field 'best.val/robust_acc' must be a finite"),
    ("best", {"val/robust_acc": 0.5, "epoch": 7}, r"checkpoint field 'best.epoch' must be an integer in \[-1, 0\]"),
    ("optimizer", {}, "checkpoint field 'optimizer' must be an optimizer state dict"),
    ("hooks", "garbage", "checkpoint field 'hooks' must be a list"),
])
def test_hand_edited_checkpoint_metadata_is_refused(resume_with, field, value, match):
    def edit(model_state, state):
        state[field] = value

    with pytest.raises(CheckpointError, match=match):
        resume_with(edit)


def test_missing_checkpoint_field_is_named(resume_with):
    with pytest.raises(CheckpointError, match="checkpoint lacks the field 'best'"):
        resume_with(lambda m, s: s.pop("best"))


@pytest.mark.parametrize("edit,match", [
    (lambda opt: opt["param_groups"][0].update(momentum=0.5), "optimizer setting 'momentum' is 0.5"),
    (lambda opt: opt["param_groups"].append(dict(opt["param_groups"][0])), "optimizer state does not fit"),
    (lambda opt: next(iter(opt["state"].values())).update(momentum_buffer=torch.zeros(3)),
     "optimizer buffer 'momentum_buffer' must be a tensor of the parameter's shape"),
    (lambda opt: next(iter(opt["state"].values()))["momentum_buffer"].fill_(float("nan")),
     "optimizer buffer 'momentum_buffer' holds NaN or Inf"),
])
def test_bad_optimizer_state_is_refused(resume_with, edit, match):
    with pytest.raises(CheckpointError, match=match):
        resume_with(lambda m, s: edit(s["optimizer"]))


def _evaluate(model=None, x=None, y=None, **kw):
    from robin_plugin.eval import evaluate

    model = model if model is not None else tiny_robin_resnet().eval()
    x = x if x is not None else torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = y if y is not None else torch.tensor([0, 1, 0, 1])
    kw = {**dict(attacks=("apgd-ce",), run_checks=False, progress=False, pgd_steps=1), **kw}
    return evaluate(model, x, y, 0.1, **kw)


@pytest.mark.parametrize("content,match", [
    ("[" * 100_000, "nested too deeply"),
    (b"\xff\xfe{}", "not a valid evaluation state file"),
    ('{"version": 1, "key": "other", "robust": []}', "state of a different evaluation"),
])
def test_eval_state_file_garbage_is_a_robin_error(tmp_path, content, match):
    state = _write(tmp_path / "state.json", content)
    with pytest.raises(RobinError, match=match):
        _evaluate(state_path=state)


def test_eval_state_file_with_wrong_field_types_is_refused(tmp_path):
    state = tmp_path / "state.json"
    _evaluate(state_path=state)  # a real state file, then hand-edited
    good = json.loads(state.read_text())
    for field, value, match in [("robust", [1, 0, 1, 0], "'robust' must be a list of true/false"),
                                ("done", ["apgd-ce", "apgd-ce"], "'done' must list attacks"),
                                ("robust_acc_after", {"apgd-ce": "x"}, "'robust_acc_after' must map attacks"),
                                ("seconds", [], "'seconds' must map stages")]:
        state.write_text(json.dumps({**good, field: value}))
        with pytest.raises(RobinError, match=match):
            _evaluate(state_path=state)


def _dataset(images: torch.Tensor, labels: torch.Tensor):
    """A dataset the Trainer accepts that is not an ImageDataset (which holds uint8 only)."""

    class Tensors:
        def __init__(self):
            self.images, self.labels = images, labels

        def __len__(self):
            return images.shape[0]

    return Tensors()


def test_trainer_converts_float64_images_like_float32(tiny_config):
    ds = toy_dataset(32)
    x32 = ds.images.float() / 255
    cfg = tiny_config(epochs=1)
    r32 = Trainer(tiny_robin_resnet(), cfg, _dataset(x32, ds.labels)).fit()
    r64 = Trainer(tiny_robin_resnet(), cfg, _dataset(x32.double(), ds.labels)).fit()
    assert {k: v for k, v in r64.items() if not k.startswith("time/")} == \
        {k: v for k, v in r32.items() if not k.startswith("time/")}


@pytest.mark.parametrize("images,match", [
    (torch.zeros(8, 1, 8, 8, dtype=torch.int32), "train_set images must be uint8 .* got dtype torch.int32"),
    (torch.full((8, 1, 8, 8), 2.0, dtype=torch.float64), r"must be finite and lie in \[0, 1\]"),
    (torch.full((8, 1, 8, 8), float("nan")), r"must be finite and lie in \[0, 1\]"),
])
def test_trainer_refuses_other_image_dtypes_and_ranges(images, match, tiny_config):
    with pytest.raises(InputError, match=match):
        Trainer(tiny_robin_resnet(), tiny_config(), _dataset(images, torch.zeros(8, dtype=torch.long)))


def test_trainer_refuses_float_labels(tiny_config):
    with pytest.raises(InputError, match="train_set labels must be integer class indices, got dtype torch.float32"):
        Trainer(tiny_robin_resnet(), tiny_config(), _dataset(torch.zeros(8, 1, 8, 8), torch.zeros(8)))


def test_evaluate_converts_float64_images_and_refuses_integer_ones():
    from robin_plugin.eval.evaluate import check_eval_inputs

    x = torch.rand(4, 1, 8, 8)
    y = torch.tensor([0, 1, 0, 1])
    x64, _ = check_eval_inputs(x.double(), y, None)
    assert x64.dtype == torch.float32 and torch.equal(x64, x)
    assert _evaluate(x=x.double(), y=y).to_dict() | {"seconds": 0} == _evaluate(x=x, y=y).to_dict() | {"seconds": 0}
    with pytest.raises(InputError, match=r"images must be uint8 \(0..255\) or floats in \[0, 1\], got dtype torch.int16"):
        check_eval_inputs(torch.zeros(4, 1, 8, 8, dtype=torch.int16), y, None)


def _disk_full(*args, **kwargs):
    raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                          'message: "No space left on device" })')


def test_full_disk_during_a_safetensors_write_is_a_write_error(tmp_path, monkeypatch):
    from robin_plugin.export import export_compact

    path = tmp_path / "m.safetensors"
    export_compact(tiny_robin_resnet(), path)
    before = path.read_bytes()
    monkeypatch.setattr(safetensors.torch, "save_file", _disk_full)
    with pytest.raises(WriteError, match="No space left on device .*; the previous file is intact") as err:
        export_compact(tiny_robin_resnet(seed=1), path, overwrite=True)
    assert "nothing was changed" in str(err.value) and isinstance(err.value, OSError)
    assert path.read_bytes() == before
    with pytest.raises(WriteError, match="No space left on device .*; no file was written"):
        save_safetensors({"w": torch.zeros(2)}, tmp_path / "new.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_full_disk_during_a_checkpoint_write_is_a_write_error(tmp_path, monkeypatch):
    import robin_plugin.formats.checkpoint as ckpt_mod

    monkeypatch.setattr(ckpt_mod, "save_file", _disk_full)
    with pytest.raises(WriteError, match="No space left on device"):
        save_checkpoint(tmp_path / "c.safetensors", {"w": torch.zeros(2)}, {"epoch": 0})
    assert list(tmp_path.iterdir()) == []


# --- 3. silent wrong results become errors -----------------------------------------------------
def test_num_classes_zero_is_refused_for_training_and_evaluation(tiny_config):
    headless = timm.create_model("robin_resnet18", num_classes=0, in_chans=1, width=4, keep_ratio=0.2,
                                 mean=(0.5,), std=(0.25,))
    assert headless(torch.rand(2, 1, 12, 12)).shape == (2, 32)  # features, which would pass as 32 "logits"
    with pytest.raises(ConfigError, match="num_classes=0; training needs a classifier with num_classes >= 1"):
        Trainer(headless, tiny_config(), toy_dataset(16))
    with pytest.raises(ConfigError, match="num_classes=0; evaluation needs a classifier with num_classes >= 1"):
        _evaluate(model=headless.eval())


def test_model_whose_outputs_differ_from_its_num_classes_is_refused():
    model = tiny_robin_resnet().eval()
    model.num_classes = 5
    with pytest.raises(ConfigError, match="declares num_classes=5 but returns 2 outputs"):
        _evaluate(model=model)


def test_empty_attack_list_is_refused(tmp_path, capsys):
    with pytest.raises(ConfigError, match="attacks must name at least one AutoAttack component"):
        _evaluate(attacks=())
    argv = ["eval", "--model", "robin_resnet18", "--dataset", "fashion_mnist", "--data-root", str(tmp_path / "none"),
            "--out", str(tmp_path / "r.json")]
    for attacks in (",", "", " , "):
        assert robin(argv + ["--attacks", attacks]) == 2
        assert "--attacks must name at least one AutoAttack component" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_nan_scores_in_a_checkpoint_are_refused(resume_with):
    def edit(model_state, state):
        model_state["conv1.scores"][0] = float("nan")

    with pytest.raises(CheckpointError, match="model tensor 'conv1.scores' holds NaN or Inf"):
        resume_with(edit)


@pytest.mark.parametrize("change", ["scaled", "flipped", "float64"])
def test_altered_fixed_weights_are_refused(resume_with, change):
    def edit(model_state, state):
        w = model_state["layer1.0.conv1.weight"]
        model_state["layer1.0.conv1.weight"] = {"scaled": w * 1000, "flipped": -w, "float64": w.double()}[change]

    with pytest.raises(CheckpointError, match="the fixed weights 'layer1.0.conv1.weight' differ from the ones seed 0 "
                                              "regenerates"):
        resume_with(edit)


def test_checkpoint_of_another_seed_is_refused_by_its_fixed_weights(resume_with):
    """A checkpoint whose weights come from seed 1 and whose config says seed 0."""
    other = tiny_robin_resnet(seed=1).state_dict()

    def edit(model_state, state):
        for k in model_state:
            if k.endswith(".weight") and k in other and not k.startswith("head.fc.bn"):
                model_state[k] = other[k]

    with pytest.raises(CheckpointError, match="differ from the ones seed 0 regenerates"):
        resume_with(edit)


@pytest.mark.parametrize("hook_type,key,value,match", [
    ("MetricLogger", "history", "garbage", "'history' must be a list of {metric: number} rows"),
    ("MetricLogger", "history", [{"epoch": 5, "loss": 1.0}], r"one row per finished epoch \(epochs 0..0\)"),
    ("MetricLogger", "history", [{"epoch": 0, "loss": "x"}], "'history' must be a list"),
    ("AdversarialTraining", "bank", torch.zeros(3, 1, 12, 12), r"'bank' must be a float tensor of shape .*\(64, 1, 12, 12\)"),
    ("AdversarialTraining", "bank", "garbage", "'bank' must be a float tensor"),
    ("AdversarialTraining", "bank", torch.full((64, 1, 12, 12), 0.5), "within eps = 0.1"),
    ("AdversarialTraining", "bank", torch.full((64, 1, 12, 12), float("nan")), "must be finite"),
])
def test_garbage_hook_state_is_refused(resume_with, hook_type, key, value, match):
    def edit(model_state, state):
        hook = next(h for h in state["hooks"] if h["type"] == hook_type)
        hook["state"][key] = value

    with pytest.raises(CheckpointError, match=match):
        resume_with(edit)


def test_unedited_checkpoint_still_resumes(tmp_path, resume_with):
    resume_with(lambda m, s: None)
    assert load_checkpoint(tmp_path / "out" / "checkpoint.safetensors")[1]["epoch"] == 1


# --- 4. byte-identical files for the same model and seed ---------------------------------------
def test_safetensors_header_is_canonical(tmp_path):
    tensors = {f"t{i}": torch.full((i + 1,), float(i)) for i in range(12)}
    metadata = {f"k{i}": f"v{i}" for i in range(12)}
    paths = [save_safetensors(tensors, tmp_path / f"{i}.safetensors", metadata) for i in range(4)]
    assert len({p.read_bytes() for p in paths}) == 1
    data = paths[0].read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    assert list(header) == sorted(header) and list(header["__metadata__"]) == sorted(metadata)
    loaded = safetensors.torch.load_file(paths[0])
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    # safetensors itself writes the same content in another order; canonicalising gives our bytes
    raw = tmp_path / "raw.safetensors"
    safetensors.torch.save_file(tensors, raw, metadata=metadata)
    canonicalize_safetensors_header(raw)
    assert raw.read_bytes() == data


def test_same_model_gives_byte_identical_exports_and_checkpoints(tmp_path):
    from robin_plugin.export import export_compact, export_dense, export_hub

    model = tiny_robin_resnet().eval()
    for i in range(4):
        export_compact(model, tmp_path / f"compact{i}.safetensors")
        export_dense(model, tmp_path / f"dense{i}.safetensors")
        export_dense(model, tmp_path / f"shrunk{i}.safetensors", shrink=True)
        save_checkpoint(tmp_path / f"ckpt{i}.safetensors", model.state_dict(), {"epoch": 0, "best": {"a": 1.0}})
        export_hub(model, tmp_path / f"hub{i}")
        export_hub(tiny_robin_resnet(width=4).eval(), tmp_path / f"hub_rebuilt{i}")  # rebuilt from the seed: same bytes
    for name in ("compact", "dense", "shrunk", "ckpt"):
        assert len({(tmp_path / f"{name}{i}.safetensors").read_bytes() for i in range(4)}) == 1, name
    for f in ("model.safetensors", "config.json", "README.md"):
        assert len({(tmp_path / f"{hub}{i}" / f).read_bytes() for hub in ("hub", "hub_rebuilt") for i in range(4)}) == 1, f


def test_trainer_files_are_byte_identical_for_the_same_seed(tmp_path, tiny_config):
    """model.safetensors and model_best.safetensors of two identical runs (checkpoints hold wall times)."""
    for run in ("a", "b"):
        Trainer(tiny_robin_resnet(), tiny_config(epochs=1), toy_dataset(32), toy_dataset(8, seed=1), out_dir=tmp_path / run).fit()
    for name in ("model.safetensors", "model_best.safetensors", "config.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


# --- 5. one writer per out_dir; files follow the umask ----------------------------------------
_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.write(fd, f"{os.getpid()}\\n".encode())
print("locked", flush=True)
time.sleep(60)
"""


def test_second_writer_is_refused_and_a_killed_holder_is_taken_over(tmp_path, tiny_config):
    out = tmp_path / "run"
    out.mkdir()
    # another process holds the lock the way FolderLock does (flock + pid), then is killed with SIGKILL
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out / LOCK_NAME)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderLockedError, match=f"is being written by another run \\(pid {holder.pid};") as err:
            Trainer(tiny_robin_resnet(), tiny_config(epochs=1), toy_dataset(32), out_dir=out).fit()
        assert isinstance(err.value, RobinError) and isinstance(err.value, OSError)
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing was written
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    assert (out / LOCK_NAME).read_text().strip() == str(holder.pid)  # stale: its process is gone
    Trainer(tiny_robin_resnet(), tiny_config(epochs=1), toy_dataset(32), out_dir=out).fit()
    assert not (out / LOCK_NAME).exists() and (out / "checkpoint.safetensors").exists()


def test_two_trainers_in_one_process_cannot_share_an_out_dir(tmp_path, tiny_config, with_defaults):
    class Intruder(Hook):
        """Starts a second run on the same folder while the first is training."""

        def __init__(self):
            self.error = None

        def on_epoch_start(self, state):
            try:
                Trainer(tiny_robin_resnet(), tiny_config(epochs=1), toy_dataset(32), out_dir=tmp_path).fit()
            except FolderLockedError as e:
                self.error = e

    intruder = Intruder()
    with_defaults(tiny_robin_resnet(), tiny_config(epochs=1), toy_dataset(32), None, [intruder], out_dir=tmp_path).fit()
    assert intruder.error is not None and f"(pid {os.getpid()};" in str(intruder.error)
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_is_released_when_fit_fails(tmp_path, tiny_config, with_defaults):
    class Boom(Hook):
        def on_epoch_start(self, state):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with_defaults(tiny_robin_resnet(), tiny_config(epochs=1), toy_dataset(32), None, [Boom()], out_dir=tmp_path).fit()
    assert not (tmp_path / LOCK_NAME).exists()
    with FolderLock(tmp_path):  # free again
        assert (tmp_path / LOCK_NAME).read_text().strip() == str(os.getpid())


def test_only_rank_zero_takes_the_lock(tmp_path, monkeypatch, tiny_config):
    """Under torchrun rank 0 locks out_dir; the other ranks write nothing, so they do not lock (and run while it is held)."""
    import robin_plugin.training.trainer as trainer_module

    taken = []
    monkeypatch.setattr(trainer_module, "FolderLock", lambda path: taken.append(Path(path)) or FolderLock(path))
    for rank in (1, 0):
        out = tmp_path / f"rank{rank}"
        trainer = Trainer(tiny_robin_resnet(), tiny_config(epochs=1), toy_dataset(32), out_dir=out)
        trainer.rank = rank  # as under torchrun
        if rank:
            with FolderLock(out):  # rank 0 holds it
                trainer.fit()
        else:
            trainer.fit()
    assert taken == [tmp_path / "rank0"]


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664), (0o077, 0o600)])
def test_output_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        save_safetensors({"w": torch.zeros(2)}, tmp_path / "w.safetensors")
        save_checkpoint(tmp_path / "c.safetensors", {"w": torch.zeros(2)}, {"epoch": 0})
    finally:
        os.umask(old)
    for name in ("a.bin", "w.safetensors", "c.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name
