"""robin_plugin.eval.evaluate: full-strength AutoAttack via torchattacks, the reference cross-check, bad input.

The cross-check trains a small masked binary network (robinified MLP: fixed +-1 weights, learned
scores, 30% kept) with PGD adversarial training on 5,000 Fashion-MNIST images, then runs our
AutoAttack and the original (pyautoattack) on the same points.
"""
from __future__ import annotations

import copy
import json
import logging

import re
from pathlib import Path
import pytest
import torch

from robin_plugin.errors import ConfigError, InputError, RobinError, UnknownNameError
from robin_plugin.eval import AutoAttackConfig, evaluate
from robin_plugin.eval.attacks import STANDARD_ATTACKS, build_attack, standard_attacks
from robin_plugin.testing import fashion_mnist_subset, pgd_train, tiny_robin_mlp

EPS = 0.1


@pytest.fixture(scope="module")
def trained():
    x, y = fashion_mnist_subset("train", 5000)
    model = pgd_train(tiny_robin_mlp(), x, y, steps=300, eps=EPS)
    xt, yt = fashion_mnist_subset("test", 200)
    return model, xt, yt


@pytest.mark.slow
def test_reference_cross_check_agrees(trained):
    """Our full-strength AutoAttack and the original agree within 0.5 points on a robust model."""
    model, xt, yt = trained
    rng_before = torch.random.get_rng_state()
    r = evaluate(model, xt, yt, EPS, n=40, reference=True, batch_size=40, progress=False)
    assert torch.equal(torch.random.get_rng_state(), rng_before), "evaluation must not disturb the global RNG"
    # meaningful: the model is robust, and the attacks matter (they break points PGD-free accuracy keeps)
    assert r.clean_acc >= 0.6
    assert 0.2 <= r.autoattack_acc < r.clean_acc
    assert r.autoattack_acc <= r.pgd_acc + 1 / 40
    assert r.reference is not None
    assert abs(r.autoattack_acc - r.reference["autoattack_acc"]) <= 0.005, (r.robust_acc_after, r.reference)
    assert r.reference["agrees"]
    assert r.reference["clean_acc"] == pytest.approx(r.clean_acc)
    # accuracy never rises along the ensemble, and the last value is the AutoAttack accuracy
    accs = [r.robust_acc_after[a] for a in STANDARD_ATTACKS]
    assert accs == sorted(accs, reverse=True)
    assert accs[-1] == r.autoattack_acc
    assert r.worst_case_acc <= min(r.autoattack_acc, r.pgd_acc)
    assert sum(r.robust) == round(r.autoattack_acc * 40)
    assert r.checks_passed, [c.message for c in r.checks]
    assert not model.training and all(p.requires_grad for p in model.parameters())


def test_standard_settings_are_the_original():
    """The ensemble uses AutoAttack's standard strengths, not torchattacks.AutoAttack's 10 iterations."""
    m = tiny_robin_mlp().eval()
    atk = standard_attacks(m, EPS, num_classes=10)
    assert list(atk) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert atk["apgd-ce"].steps == 100 and atk["apgd-ce"].n_restarts == 1 and atk["apgd-ce"].loss == "ce"
    assert atk["apgd-t"].steps == 100 and atk["apgd-t"].n_restarts == 1 and atk["apgd-t"].n_target_classes == 9
    assert atk["fab-t"].steps == 100 and atk["fab-t"].n_restarts == 1 and atk["fab-t"].n_target_classes == 9
    assert atk["fab-t"].multi_targeted
    sq = atk["square"]
    assert sq.n_queries == 5000 and sq.p_init == 0.8 and sq.n_restarts == 1 and sq.rescale_schedule is False
    # CIFAR-100: still 9 target classes (as the original), 4 classes: 3
    assert build_attack("apgd-t", m, EPS, num_classes=100).n_target_classes == 9
    assert build_attack("fab-t", m, EPS, num_classes=4).n_target_classes == 3


def test_progress_resume_and_state(tmp_path, trained):
    """An interrupted evaluation resumes from its state file; a foreign state file is refused."""
    model, xt, yt = trained
    cfg = AutoAttackConfig(apgd_iter=5, apgdt_iter=5, apgdt_target_classes=2, fab_iter=5, fab_target_classes=2, square_queries=50)
    state = tmp_path / "state.json"
    first = evaluate(model, xt, yt, EPS, n=20, attacks=("apgd-ce",), config=cfg, run_checks=False, state_path=state, progress=False)
    saved = json.loads(state.read_text())
    assert saved["done"] == ["apgd-ce"] and len(saved["robust"]) == 20
    # rerunning with the same settings skips the finished attack and gives the same numbers
    again = evaluate(model, xt, yt, EPS, n=20, attacks=("apgd-ce",), config=cfg, run_checks=False, state_path=state, progress=False)
    assert again.robust == first.robust and again.robust_acc_after == first.robust_acc_after
    with pytest.raises(RobinError, match="different evaluation"):
        evaluate(model, xt, yt, EPS, n=21, attacks=("apgd-ce",), config=cfg, run_checks=False, state_path=state, progress=False)
    other = copy.deepcopy(model)  # another checkpoint: one parameter changed
    with torch.no_grad():
        next(other.parameters()).view(-1)[0] += 1.0
    with pytest.raises(RobinError, match="different evaluation"):
        evaluate(other, xt, yt, EPS, n=20, attacks=("apgd-ce",), config=cfg, run_checks=False, state_path=state, progress=False)
    state.write_text("{not json")
    with pytest.raises(RobinError, match="not a valid evaluation state"):
        evaluate(model, xt, yt, EPS, n=20, attacks=("apgd-ce",), config=cfg, run_checks=False, state_path=state, progress=False)


def test_training_mode_is_handled(trained, caplog):
    model, xt, yt = trained
    model.train()
    cfg = AutoAttackConfig(apgd_iter=3)
    with caplog.at_level(logging.WARNING, logger="robin_plugin.eval.evaluate"):
        r = evaluate(model, xt, yt, EPS, n=10, attacks=("apgd-ce",), config=cfg, run_checks=False, progress=False)
    assert model.training, "the caller's mode is restored"
    assert "training mode" in caplog.text
    model.eval()
    r2 = evaluate(model, xt, yt, EPS, n=10, attacks=("apgd-ce",), config=cfg, run_checks=False, progress=False)
    assert r.robust == r2.robust, "training mode must not change the result (eval-mode BatchNorm)"


@pytest.mark.parametrize("eps", [0, -0.1, 1.5, float("nan"), "8/255", True])
def test_bad_eps(eps):
    m = tiny_robin_mlp().eval()
    x, y = torch.rand(4, 1, 28, 28), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ConfigError, match="eps"):
        evaluate(m, x, y, eps)


def test_bad_inputs():
    m = tiny_robin_mlp().eval()
    x, y = torch.rand(4, 1, 28, 28), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ConfigError, match=r"n must be an integer in \[1, 4\]"):
        evaluate(m, x, y, EPS, n=5)
    with pytest.raises(ConfigError, match="n must be"):
        evaluate(m, x, y, EPS, n=0)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        evaluate(m, x * 3, y, EPS)
    with pytest.raises(InputError, match="NaN"):
        evaluate(m, torch.full_like(x, float("nan")), y, EPS)
    with pytest.raises(InputError, match="shape"):
        evaluate(m, x[:, 0], y, EPS)
    with pytest.raises(InputError, match="labels"):
        evaluate(m, x, y[:3], EPS)
    with pytest.raises(InputError, match="integer"):
        evaluate(m, x, y.float(), EPS)
    with pytest.raises(InputError, match="< 10"):
        evaluate(m, x, torch.full((4,), 10), EPS, attacks=("apgd-ce",), run_checks=False)
    with pytest.raises(UnknownNameError, match="apgd-ce"):
        evaluate(m, x, y, EPS, attacks=("apgd-cee",))
    with pytest.raises(ConfigError, match="batch_size"):
        evaluate(m, x, y, EPS, batch_size=0)
    with pytest.raises(ConfigError, match="square_queries"):
        AutoAttackConfig(square_queries=0)


def test_uint8_images_are_scaled(trained):
    model, xt, yt = trained
    cfg = AutoAttackConfig(apgd_iter=2)
    x8 = (xt[:10] * 255).round().to(torch.uint8)
    r8 = evaluate(model, x8, yt[:10], EPS, attacks=("apgd-ce",), config=cfg, run_checks=False, progress=False)
    rf = evaluate(model, x8.float() / 255, yt[:10], EPS, attacks=("apgd-ce",), config=cfg, run_checks=False, progress=False)
    assert r8.clean_acc == rf.clean_acc and r8.robust == rf.robust


# --- robin eval (the CLI function, wired into `robin` by robin_plugin.cli) ----------------------
def _run_cli(argv: list[str]) -> int:
    import argparse

    from robin_plugin.cli.eval import add_eval_parser

    parser = argparse.ArgumentParser(prog="robin")
    add_eval_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def fake_data(monkeypatch):
    """robin_plugin.data.get_dataset stand-in: 30 Fashion-MNIST test images as uint8 (N, 1, 28, 28)."""
    import types

    import robin_plugin.data

    x, y = fashion_mnist_subset("test", 30)
    ds = types.SimpleNamespace(images=(x * 255).round().to(torch.uint8), labels=y)
    calls = []

    def get_dataset(name, root, split="train"):
        calls.append((name, root, split))
        return ds

    monkeypatch.setattr(robin_plugin.data, "get_dataset", get_dataset)
    return calls


def test_cli_eval_writes_model_info(tmp_path, fake_data, capsys):
    import timm
    from safetensors.torch import save_file

    from robin_plugin.eval.report import load_result

    model = timm.create_model("robin_resnet18", in_chans=1, width=4, keep_ratio=0.1)
    ckpt = tmp_path / "m.safetensors"
    save_file(model.state_dict(), str(ckpt))
    out = tmp_path / "result.json"
    argv = ["eval", "--model", "robin_resnet18", "--model-kwargs", '{"width": 4, "keep_ratio": 0.1}', "--checkpoint", str(ckpt),
            "--dataset", "fashion_mnist", "--data-root", str(tmp_path), "--n", "8", "--attacks", "apgd-ce",
            "--pgd-steps", "2", "--no-checks", "--no-progress", "--out", str(out)]
    assert _run_cli(argv) == 0
    assert fake_data == [("fashion_mnist", str(tmp_path), "test")]
    info = load_result(out)
    assert info["eps"] == "0.1" and info["n_points"] == 8 and info["dataset"] == "fashion_mnist"
    assert info["keep_ratio"] == pytest.approx(0.1, abs=0.01) and info["storage_bytes"]["sign_mask_bytes"] > 0
    assert info["model"]["checkpoint"] == str(ckpt)
    text = capsys.readouterr().out
    assert "AutoAttack" not in text and "robust under apgd-ce" in text and "wrote" in text  # one component is not AutoAttack
    assert info["attack_set"] == "apgd-ce" and "autoattack_acc" not in info and "autoattack_acc" not in out.read_text()
    assert (info["dataset"], info["threat_model"], info["eps"]) == ("fashion_mnist", "Linf", "0.1")
    with pytest.raises(ConfigError, match="--overwrite"):
        _run_cli(argv)
    assert info["name"].startswith("robin_resnet18: robust binary subnetwork, keep ratio 0.1")
    assert (info["link"], info["authors"], info["venue"]) == ("", "", "")

    # the RobustBench fields can be filled, and the file has the shape of RobustBench's own model_info files
    argv += ["--overwrite", "--name", "Robust Binary Models", "--link", "https://arxiv.org/abs/2210.xxxxx",
             "--authors", "A, B", "--venue", "NeurIPS 2022", "--footnote", "first 8 points"]
    assert _run_cli(argv) == 0
    info = load_result(out)
    assert (info["name"], info["link"], info["authors"], info["venue"], info["footnote"]) == (
        "Robust Binary Models", "https://arxiv.org/abs/2210.xxxxx", "A, B", "NeurIPS 2022", "first 8 points")
    for key, kind in ROBUSTBENCH_FIELDS.items():
        if key != "autoattack_acc":  # a subset of AutoAttack writes robust_acc instead
            assert isinstance(info[key], kind), (key, info[key])
    for key in ("clean_acc", "robust_acc"):
        assert re.fullmatch(r"\d{1,3}\.\d{2}", info[key]), info[key]
    shared = Path(__file__).resolve().parents[3] / "shared" / "data" / "robustbench-model-info" / "cifar10" / "Linf"
    for f in sorted(shared.glob("*.json"))[:20]:  # the shipped snapshot's files have exactly these types
        real = json.loads(f.read_text())
        assert all(isinstance(real[k], kind) for k, kind in ROBUSTBENCH_FIELDS.items() if k in real), f


#: The fields of RobustBench's model_info files and their JSON types (percents and eps are strings).
ROBUSTBENCH_FIELDS = {"link": str, "name": str, "authors": str, "additional_data": bool, "number_forward_passes": int,
                      "dataset": str, "venue": str, "architecture": str, "eps": str, "clean_acc": str, "reported": str,
                      "autoattack_acc": str}


def test_cli_eval_errors(tmp_path, fake_data):
    import timm
    from safetensors.torch import save_file

    base = ["eval", "--dataset", "fashion_mnist", "--data-root", str(tmp_path), "--n", "4", "--no-progress",
            "--out", str(tmp_path / "r.json")]
    with pytest.raises(UnknownNameError, match="robin_resnet18"):
        _run_cli(base + ["--model", "robin_resnet81"])
    with pytest.raises(ConfigError, match="model-kwargs"):
        _run_cli(base + ["--model", "robin_resnet18", "--model-kwargs", "[1]"])
    with pytest.raises(UnknownNameError, match="attack"):
        _run_cli(base + ["--model", "robin_resnet18", "--attacks", "apgd,square"])
    other = timm.create_model("robin_resnet18", in_chans=1, width=8)
    ckpt = tmp_path / "w8.safetensors"
    save_file(other.state_dict(), str(ckpt))
    with pytest.raises(InputError, match="does not match"):
        _run_cli(base + ["--model", "robin_resnet18", "--model-kwargs", '{"width": 4}', "--checkpoint", str(ckpt)])
    pickle_file = tmp_path / "w.pt"
    pickle_file.write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(InputError, match="never unpickles"):
        _run_cli(base + ["--model", "robin_resnet18", "--checkpoint", str(pickle_file)])
    corrupt = tmp_path / "bad.safetensors"
    corrupt.write_bytes(b"\x00" * 20)
    with pytest.raises(InputError, match="cannot read checkpoint"):
        _run_cli(base + ["--model", "robin_resnet18", "--model-kwargs", '{"width": 4}', "--checkpoint", str(corrupt)])
    with pytest.raises(SystemExit):
        _run_cli(base + ["--model", "robin_resnet18", "--eps", "2"])


def test_cli_eval_with_the_real_data_module(tmp_path):
    """The same command against robin_plugin.data's real Fashion-MNIST loader (default folder)."""
    data = pytest.importorskip("robin_plugin.data")
    if not hasattr(data, "get_dataset"):
        pytest.skip("robin_plugin.data.get_dataset not available")
    out = tmp_path / "r.json"
    code = _run_cli(["eval", "--model", "robin_resnet18", "--model-kwargs", '{"width": 4}', "--dataset", "fashion_mnist",
                     "--n", "6", "--attacks", "apgd-ce", "--pgd-steps", "2", "--no-checks", "--no-progress", "--out", str(out)])
    assert code == 0 and json.loads(out.read_text())["n_points"] == 6


def test_cli_eval_reports_progress_in_its_output_without_a_terminal(tmp_path, fake_data, capsys):
    """`robin eval ... > log.txt`: one line per attack stage (and every 30 s) lands in stdout."""
    import timm
    from safetensors.torch import save_file

    from robin_plugin.cli import main

    model = timm.create_model("robin_resnet18", in_chans=1, width=4, keep_ratio=0.1)
    ckpt = tmp_path / "m.safetensors"
    save_file(model.state_dict(), str(ckpt))
    argv = ["eval", "--model", "robin_resnet18", "--model-kwargs", '{"width": 4, "keep_ratio": 0.1}', "--checkpoint", str(ckpt),
            "--dataset", "fashion_mnist", "--n", "4", "--attacks", "apgd-ce", "--pgd-steps", "1", "--no-checks",
            "--out", str(tmp_path / "r.json")]
    assert main(argv) in (0, 1)
    out = capsys.readouterr().out
    assert "apgd-ce: started" in out and "(done)" in out


def test_names_stay_importable_from_the_evaluate_module():
    """The split moved code into measure, resume and reference; the old imports still work."""
    import importlib

    import robin_plugin.eval as ev

    module = importlib.import_module("robin_plugin.eval.evaluate")  # the attribute is the function
    reference = importlib.import_module("robin_plugin.eval.reference")
    measure = importlib.import_module("robin_plugin.eval.measure")
    assert module.reference_autoattack is reference.reference_autoattack is ev.reference_autoattack
    assert module.accuracy is measure.accuracy and module.zero_gradient_count is measure.zero_gradient_count
    assert set(module.__all__) == {"EvalResult", "evaluate", "reference_autoattack", "accuracy",
                                   "zero_gradient_count", "check_eval_inputs"}


def test_parse_autoattack_log():
    """pyautoattack's accuracy-after lines become fractions; warnings are kept; other lines ignored."""
    from robin_plugin.eval.reference import parse_autoattack_log

    records = [
        (logging.INFO, "clean accuracy: 80.00%"),
        (logging.DEBUG, "apgd-ce - 1/1 - 3 out of 8 successfully perturbed"),
        (logging.DEBUG, "robust accuracy after APGD-CE: 62.50% (total time 1.2 s)"),
        (logging.DEBUG, "robust accuracy after APGD-T: 50.00% (total time 3.4 s)"),
        (logging.WARNING, "Square Attack has decreased the robust accuracy of 0.50%."),
        (logging.DEBUG, "robust accuracy after SQUARE: 49.50% (total time 9.9 s)"),
    ]
    after, warnings = parse_autoattack_log(records)
    assert after == pytest.approx({"apgd-ce": 0.625, "apgd-t": 0.5, "square": 0.495})
    assert warnings == ["Square Attack has decreased the robust accuracy of 0.50%."]
    assert parse_autoattack_log([]) == ({}, [])


def test_model_fingerprint_follows_the_state_dict():
    """Equal state dicts share a fingerprint; a changed weight or buffer changes it."""
    from robin_plugin.eval.resume import model_fingerprint

    m = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2, affine=False))
    fp = model_fingerprint(m)
    assert len(fp) == 64 and fp == model_fingerprint(copy.deepcopy(m))
    other = copy.deepcopy(m)
    other[1].running_mean[0] = 1.0
    assert model_fingerprint(other) != fp
    other = copy.deepcopy(m)
    with torch.no_grad():
        other[0].weight[0, 0] += 1e-6
    assert model_fingerprint(other) != fp


def test_resume_file_round_trip_and_refusals(tmp_path):
    """save_state then load_state gives the state back; a changed key, length or field is refused."""
    from robin_plugin.eval.resume import load_state, save_state, state_key

    x, y = torch.rand(3, 1, 4, 4), torch.tensor([0, 1, 2])
    key = state_key(x, y, {"seed": 0, "attacks": ["apgd-ce"]})
    assert key == state_key(x.clone(), y.clone(), {"attacks": ["apgd-ce"], "seed": 0}), "key ignores dict order"
    assert key != state_key(x, y, {"seed": 1, "attacks": ["apgd-ce"]})
    assert key != state_key(x + 1e-3, y, {"seed": 0, "attacks": ["apgd-ce"]})
    path = tmp_path / "s.json"
    assert load_state(path, key, 3, ("apgd-ce",)) is None
    save_state(path, key, torch.tensor([True, False, True]), {"apgd-ce": 2 / 3}, ["apgd-ce"], {"clean": 0.1})
    state = load_state(path, key, 3, ("apgd-ce",))
    assert state["robust"] == [True, False, True] and state["done"] == ["apgd-ce"]
    assert state["robust_acc_after"] == pytest.approx({"apgd-ce": 2 / 3}) and state["seconds"] == {"clean": 0.1}
    with pytest.raises(RobinError, match="different evaluation"):
        load_state(path, "0" * 64, 3, ("apgd-ce",))
    with pytest.raises(RobinError, match="different evaluation"):
        load_state(path, key, 4, ("apgd-ce",))
    with pytest.raises(RobinError, match="'done' must list attacks"):
        load_state(path, key, 3, ("apgd-t",))
    bad = json.loads(path.read_text())
    bad["robust"] = [1, 0, 1]
    path.write_text(json.dumps(bad))
    with pytest.raises(RobinError, match="'robust' must be a list of true/false"):
        load_state(path, key, 3, ("apgd-ce",))


def test_robin_eval_tells_an_untrained_model_apart():
    """An untrained +-1 network in eval mode keeps BatchNorm's initial statistics: robin eval warns about it."""
    import timm

    from robin_plugin.cli.eval import never_trained

    model = timm.create_model("robin_resnet18", in_chans=1, width=4, keep_ratio=0.2)
    assert never_trained(model)
    model.train()(torch.rand(4, 1, 16, 16))
    assert not never_trained(model)
    assert not never_trained(torch.nn.Linear(2, 2))  # no BatchNorm: nothing to tell
