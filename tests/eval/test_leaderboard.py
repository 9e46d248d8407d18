"""robin_plugin.eval.leaderboard and report: snapshot, ranking, plot, result files, `robin leaderboard`."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch.nn as nn
from hypothesis import given
from hypothesis import strategies as st

from robin_plugin.cli.leaderboard import add_leaderboard_parser, format_ranking
from robin_plugin.cli.leaderboard_snapshot import main as rebuild_main
from robin_plugin.errors import InputError, UnknownNameError
from robin_plugin.eval.checks import check_black_box, check_zero_gradients
from robin_plugin.eval.evaluate import EvalResult
from robin_plugin.eval.leaderboard import (
    LEADERBOARDS,
    TIMM_ARCHITECTURES,
    arch_params,
    build_snapshot,
    comparability,
    he_cifar_resnet_params,
    load_leaderboard,
    model_bytes,
    rank,
    result_threat,
)
from robin_plugin.eval.report import format_report, load_result, make_model_info
from robin_plugin.formats.result import REQUIRED_FIELDS, eps_string, parse_eps
from robin_plugin.models import robinify

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "robustbench-model-info"


def _result(**kw) -> EvalResult:
    base = dict(n=100, eps=8 / 255, clean_acc=0.7730, pgd_steps=20, pgd_acc=0.48, attacks=["apgd-ce", "apgd-t", "fab-t", "square"],
                robust_acc_after={"apgd-ce": 0.47, "apgd-t": 0.4506, "fab-t": 0.4506, "square": 0.4506}, autoattack_acc=0.4506,
                worst_case_acc=0.45, robust=[True] * 45 + [False] * 55,
                checks=[check_zero_gradients(0, 100), check_black_box(0.4506, 0.4506)])
    base.update(kw)
    return EvalResult(**base)


def _info(tmp_path: Path, **kw) -> Path:
    model = robinify(nn.Sequential(nn.Flatten(), nn.Linear(3072, 64), nn.ReLU(), nn.Linear(64, 10)), keep_ratio=0.01)
    info = make_model_info(_result(**kw), name="robin-test", architecture="ResNet-34 (binary)", dataset="cifar10", model=model)
    path = tmp_path / "result.json"
    path.write_text(json.dumps(info))
    return path


@pytest.mark.parametrize("board", sorted(LEADERBOARDS))
def test_shipped_snapshot(board):
    d = load_leaderboard(board)
    assert d["snapshot_date"] and "RobustBench" in d["citation"] and d["threat_model"] == "Linf"
    entries = d["entries"]
    assert len(entries) >= 30
    accs = [e["autoattack_acc"] for e in entries]
    assert accs == sorted(accs, reverse=True)
    for e in entries:
        assert {"id", "name", "architecture", "clean_acc", "autoattack_acc", "additional_data", "venue", "params"} <= set(e)
        assert 0 <= e["autoattack_acc"] <= e["clean_acc"] <= 100
        assert e["params"] is None or e["params"] > 1e5
    known = sum(e["params"] is not None for e in entries)
    assert known >= 0.8 * len(entries)


def test_snapshot_facts():
    c10 = {e["id"]: e for e in load_leaderboard("cifar10_linf")["entries"]}
    hydra = c10["Sehwag2020Hydra"]
    assert (hydra["clean_acc"], hydra["autoattack_acc"], hydra["additional_data"]) == (88.98, 57.14, True)
    assert hydra["params"] == arch_params("WideResNet-28-10", 10)[0] == 36479194
    assert c10["Kundu2020Tunable"]["architecture"] == "ResNet-18"
    assert arch_params("WideResNet-34-10", 100) == (46218164, "computed")
    assert arch_params("PreActResNet-18", 10)[1] == "approx"
    assert arch_params("5-layer-CNN", 10) == (None, None)


@pytest.mark.parametrize("board", sorted(LEADERBOARDS))
def test_shipped_parameter_counts_are_the_ones_counted_on_the_models(board):
    """Every entry's params and params_source are what arch_params counts for its architecture today."""
    d = load_leaderboard(board)
    for e in d["entries"]:
        assert (e["params"], e["params_source"]) == arch_params(e["architecture"], d["num_classes"]), e["id"]


def test_parameter_counts_are_counted_on_the_models():
    assert all(timm.is_model(name) for name in TIMM_ARCHITECTURES.values())
    # published figures: torchvision's ResNet-18 (11.69M), Zagoruyko & Komodakis' WRN-28-10 (36.5M)
    assert arch_params("ResNet-18", 1000) == (11689512, "computed")
    assert arch_params("WideResNet-28-10", 10) == (36479194, "computed")
    assert arch_params("WideResNet-34-10", 100) == (46218164, "computed")
    assert arch_params("Swin-B + ConvNeXt-L", 1000) == (arch_params("Swin-B", 1000)[0] + arch_params("ConvNeXt-L", 1000)[0], "approx")
    assert arch_params("RaWideResNet-70-16", 10) == arch_params("WideResNet-34-R", 10) == (None, None)


def _he_cifar_resnet(depth: int, num_classes: int) -> nn.Module:
    """He et al.'s CIFAR ResNet built layer by layer, to check :func:`he_cifar_resnet_params` against."""
    def conv_bn(cin, cout, k):
        return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout)]
    layers, cin = conv_bn(3, 16, 3), 16
    for width in (16, 32, 64):
        for _ in range((depth - 2) // 6):
            layers += conv_bn(cin, width, 3) + conv_bn(width, width, 3) + (conv_bn(cin, width, 1) if cin != width else [])
            cin = width
    return nn.Sequential(*layers, nn.Linear(64, num_classes))


@pytest.mark.parametrize(("depth", "num_classes", "published"), [(20, 10, 0.27e6), (32, 10, 0.46e6), (56, 10, 0.85e6),
                                                                   (110, 10, 1.7e6)])
def test_he_cifar_resnet_counts(depth, num_classes, published):
    built = sum(p.numel() for p in _he_cifar_resnet(depth, num_classes).parameters())
    assert he_cifar_resnet_params(depth, num_classes) == built == arch_params(f"ResNet-{depth}", num_classes)[0]
    assert abs(built - published) < 0.02 * published  # He et al. 2016, table 6


def test_rebuild_command_writes_and_prints_each_board(tmp_path, capsys):
    src = tmp_path / "src"
    for dataset in ("cifar10", "cifar100", "imagenet"):
        (src / dataset / "Linf").mkdir(parents=True)
    assert rebuild_main(["--rebuild", str(src), "--out", str(tmp_path / "out"), "--date", "2024-01-02"]) == 0
    out = capsys.readouterr().out
    assert all(f"{board}: {tmp_path / 'out' / board}.json" in out for board in LEADERBOARDS)
    assert rebuild_main(["--rebuild", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        rebuild_main(["--rebuild", str(src), "--date", "January"])


def test_rebuild_command_runs_with_python_m(tmp_path):
    """``python -m robin_plugin.cli.leaderboard_snapshot`` runs without runpy's double-import warning."""
    src = tmp_path / "src"
    for dataset in ("cifar10", "cifar100", "imagenet"):
        (src / dataset / "Linf").mkdir(parents=True)
    proc = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", "robin_plugin.cli.leaderboard_snapshot",
                           "--rebuild", str(src), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr
    assert "cifar10_linf:" in proc.stdout and not proc.stderr


@pytest.mark.skipif(not SHARED.is_dir(), reason="RobustBench model_info copy not available")
def test_rebuild_reproduces_the_shipped_snapshot(tmp_path):
    out = build_snapshot(SHARED, tmp_path, date="2000-01-01")
    for board, path in out.items():
        rebuilt, shipped = json.loads(path.read_text()), load_leaderboard(board)
        assert rebuilt["entries"] == shipped["entries"]


def test_build_snapshot_from_files(tmp_path):
    src = tmp_path / "src"
    for dataset in ("cifar10", "cifar100", "imagenet"):
        (src / dataset / "Linf").mkdir(parents=True)
    entry = {"name": "Paper", "architecture": "WideResNet-28-10", "clean_acc": "80.00", "autoattack_acc": "50.00",
             "additional_data": False, "venue": "X", "eps": "8/255"}
    (src / "cifar10" / "Linf" / "A.json").write_text(json.dumps(entry))
    (src / "cifar10" / "Linf" / "B.json").write_text(json.dumps(dict(entry, autoattack_acc="60.00", architecture="Mystery-Net")))
    out = build_snapshot(src, tmp_path / "out", date="2024-01-02")
    d = json.loads(out["cifar10_linf"].read_text())
    assert [e["id"] for e in d["entries"]] == ["B", "A"] and d["snapshot_date"] == "2024-01-02"
    assert d["entries"][0]["params"] is None and d["entries"][1]["params"] == 36479194
    (src / "cifar10" / "Linf" / "C.json").write_text("{broken")
    with pytest.raises(InputError, match="C.json"):
        build_snapshot(src, tmp_path / "out2")
    with pytest.raises(InputError, match="does not exist"):
        build_snapshot(tmp_path / "nowhere", tmp_path / "out3")


def test_rank_and_neighbours(tmp_path):
    info = load_result(_info(tmp_path))
    board = load_leaderboard("cifar10_linf")
    r = rank(info, board, neighbours=2)
    better = sum(e["autoattack_acc"] >= 45.06 for e in board["entries"])
    assert r.rank == better + 1 and r.total == len(board["entries"]) + 1
    assert len(r.above) == 2 and len(r.below) == 2
    assert r.above[-1]["autoattack_acc"] >= 45.06 > r.below[0]["autoattack_acc"]
    text = format_ranking(info, r, board)
    assert f"rank {r.rank} of {r.total}" in text and "robin-test" in text and "RobustBench" in text


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="robin")
    add_leaderboard_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_leaderboard_table_and_plot(tmp_path, capsys):
    path = _info(tmp_path)
    plot = tmp_path / "plot.png"
    assert _run(["leaderboard", str(path), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "would rank" in out and str(plot) in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    with pytest.raises(InputError, match="use --board cifar10_linf"):  # a CIFAR-10 result on the CIFAR-100 board
        _run(["leaderboard", str(path), "--board", "cifar100_linf", "--no-plot"])


def _shared_files(dataset: str, threat: str) -> list[Path]:
    folder = SHARED / dataset / threat
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


@pytest.mark.skipif(not SHARED.is_dir(), reason="the RobustBench model_info snapshot (../shared/data) is not beside the repo")
@pytest.mark.parametrize("dataset", ["cifar10", "cifar100", "imagenet"])
def test_every_real_robustbench_file_of_a_board_ranks(dataset, capsys):
    files = _shared_files(dataset, "Linf")
    assert files
    for f in files:
        assert _run(["leaderboard", str(f), "--no-plot"]) == 0, f
    assert "would rank" in capsys.readouterr().out


@pytest.mark.skipif(not SHARED.is_dir(), reason="the RobustBench model_info snapshot (../shared/data) is not beside the repo")
def test_real_robustbench_file_without_storage_plots_at_its_architecture_size(tmp_path):
    f = SHARED / "cifar10" / "Linf" / "Addepalli2022Efficient_RN18.json"
    plot = tmp_path / "p.png"
    assert _run(["leaderboard", str(f), "--plot", str(plot)]) == 0
    assert plot.stat().st_size > 10_000
    assert model_bytes(load_result(f)) == 4 * arch_params("ResNet-18", 10)[0]


@pytest.mark.skipif(not SHARED.is_dir(), reason="the RobustBench model_info snapshot (../shared/data) is not beside the repo")
def test_l2_files_are_refused_on_the_linf_board():
    files = _shared_files("cifar10", "L2")
    assert files
    for f in files[:5]:
        with pytest.raises(InputError, match="L2 result \\(from its folder\\)"):
            _run(["leaderboard", str(f), "--no-plot"])


def test_threat_model_is_read_from_the_field_the_folder_or_the_eps(tmp_path):
    assert result_threat({"threat_model": "L2", "eps": "8/255"}) == ("L2", "field")
    assert result_threat({"eps": "0.5"}, tmp_path / "Linf" / "x.json") == ("Linf", "folder")
    assert result_threat({"eps": "0.5"}) == ("L2", "eps")
    assert result_threat({"eps": "8/255"}) == ("Linf", "eps")
    l2 = json.loads(_info(tmp_path).read_text())
    l2.update(eps="0.5", threat_model="L2")
    (tmp_path / "l2.json").write_text(json.dumps(l2))
    with pytest.raises(InputError, match="L2 result"):
        _run(["leaderboard", str(tmp_path / "l2.json"), "--no-plot"])


def test_a_result_of_another_dataset_or_eps_is_refused_and_says_why(tmp_path):
    """Ranked only among entries of the same dataset and threat model (issue 25)."""
    fm = json.loads(_info(tmp_path).read_text())
    fm.update(dataset="fashion_mnist", eps="0.1")
    path = tmp_path / "fm.json"
    path.write_text(json.dumps(fm))
    board = load_leaderboard("cifar10_linf")
    with pytest.raises(InputError, match="on fashion_mnist, the cifar10_linf board ranks cifar10: refusing"):
        comparability(load_result(path), board)
    with pytest.raises(InputError, match="RobustBench has no fashion_mnist leaderboard"):
        _run(["leaderboard", str(path), "--board", "cifar10_linf", "--no-plot"])
    c100 = json.loads(_info(tmp_path).read_text())
    c100.update(dataset="cifar100", eps="4/255")  # the paper's CIFAR-100 threat model
    path.write_text(json.dumps(c100))
    with pytest.raises(InputError, match=r"eps 4/255, the cifar100_linf board ranks eps 8/255: refusing"):
        _run(["leaderboard", str(path), "--no-plot"])


def test_cli_leaderboard_bad_results(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        _run(["leaderboard", str(bad)])
    bad.write_text(json.dumps({"name": "x"}))
    with pytest.raises(InputError, match="lacks the field"):
        _run(["leaderboard", str(bad)])
    bad.write_text(json.dumps({"name": "x", "architecture": "y", "eps": "8/255", "clean_acc": "abc", "autoattack_acc": "1"}))
    with pytest.raises(InputError, match="clean_acc"):
        _run(["leaderboard", str(bad)])
    with pytest.raises(InputError, match="does not exist"):
        _run(["leaderboard", str(tmp_path / "missing.json")])
    fm = json.loads(_info(tmp_path).read_text())
    fm["dataset"] = "fashion_mnist"
    bad.write_text(json.dumps(fm))
    with pytest.raises(UnknownNameError, match="fashion_mnist"):
        _run(["leaderboard", str(bad)])


def test_model_info_format(tmp_path):
    info = json.loads(_info(tmp_path).read_text())
    assert set(REQUIRED_FIELDS) <= set(info)
    assert info["eps"] == "8/255" and info["clean_acc"] == "77.30" and info["autoattack_acc"] == "45.06"
    assert info["number_forward_passes"] == 1 and info["additional_data"] is False and info["unreliable"] is False
    assert info["robust_acc_after"]["apgd-ce"] == "47.00"
    assert info["kept_weights"] < info["total_weights"] and info["storage_bytes"]["sign_mask_bytes"] < info["storage_bytes"]["fp32_bytes"]
    assert info["checks_passed"] is True and info["warnings"] == []
    text = format_report(info)
    assert "AutoAttack" in text and "45.06" in text and "[pass]" in text
    failed = json.loads(_info(tmp_path, checks=[check_zero_gradients(5, 100)]).read_text())
    assert failed["unreliable"] is True and failed["warnings"][0].startswith("WARNING")
    assert "FAIL" in format_report(failed)


@given(st.integers(1, 127))
def test_eps_string_roundtrip(k):
    assert parse_eps(eps_string(k / 255)) == pytest.approx(k / 255)


def test_eps_strings():
    assert eps_string(8 / 255) == "8/255" and eps_string(0.1) == "0.1" and eps_string(0.2) == "0.2"
    for bad in ("0", "2", "a/b", "1/0", "nan", None):
        with pytest.raises(InputError):
            parse_eps(bad)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12)
fieldish = st.fixed_dictionaries({k: json_values | st.sampled_from(["8/255", "45.06", "0.1", ""]) for k in REQUIRED_FIELDS},
                                 optional={"storage_bytes": json_values, "dataset": json_values})


@given(st.one_of(json_values, fieldish) | st.binary(max_size=40).map(lambda b: b.decode("latin-1")))
def test_result_reader_fuzz(tmp_path_factory, value):
    """Any file content gives a validated dict or an InputError, never another exception."""
    path = tmp_path_factory.mktemp("fuzz") / "r.json"
    path.write_text(value if isinstance(value, str) and not value.startswith('"') else json.dumps(value))
    try:
        info = load_result(path)
    except InputError:
        return
    assert isinstance(info, dict) and 0 <= float(info["autoattack_acc"]) <= 100


# --- labels, threat model, RobustBench's own files, duplicates (issues 25 and 26) -------------
def test_a_subset_of_autoattack_is_labelled_by_its_components_and_never_ranked(tmp_path, capsys):
    path = _info(tmp_path, attacks=["apgd-ce"], robust_acc_after={"apgd-ce": 0.47}, autoattack_acc=0.47)
    info = json.loads(path.read_text())
    assert "autoattack_acc" not in info and info["robust_acc"] == "47.00" and info["attack_set"] == "apgd-ce"
    assert "AutoAttack" not in format_report(info) and "robust under apgd-ce" in format_report(info)
    with pytest.raises(InputError, match="under apgd-ce, not the full standard AutoAttack"):
        _run(["leaderboard", str(path), "--no-plot"])
    full = json.loads(_info(tmp_path).read_text())
    assert full["attack_set"] == "autoattack" and full["autoattack_acc"] == "45.06"


def test_custom_strength_autoattack_is_not_autoattack(tmp_path):
    from robin_plugin.eval.report import attack_set_label
    from robin_plugin.eval.attacks import STANDARD_ATTACKS
    assert attack_set_label(STANDARD_ATTACKS) == "autoattack"
    assert attack_set_label(STANDARD_ATTACKS, {"apgd_iter": 10}) == "apgd-ce+apgd-t+fab-t+square (custom settings)"
    assert attack_set_label(("apgd-ce", "square")) == "apgd-ce+square"


def test_a_subset_result_of_release_0_2_is_relabelled_on_reading(tmp_path):
    info = json.loads(_info(tmp_path).read_text())
    info.pop("attack_set")
    info.update(attacks=["apgd-ce", "apgd-t"])  # 0.2 wrote autoattack_acc for any attack set
    path = tmp_path / "old.json"
    path.write_text(json.dumps(info))
    read = load_result(path)
    assert read["attack_set"] == "apgd-ce+apgd-t" and "autoattack_acc" not in read and read["robust_acc"] == "45.06"


def test_results_record_dataset_norm_and_eps(tmp_path):
    info = json.loads(_info(tmp_path).read_text())
    assert (info["dataset"], info["threat_model"], info["eps"]) == ("cifar10", "Linf", "8/255")
    board = load_leaderboard("cifar100_linf")
    assert all((e["dataset"], e["threat_model"], e["eps"]) == ("cifar100", "Linf", "8/255") for e in board["entries"])


def test_robustbench_to_disk_file_is_accepted(tmp_path, capsys):
    """What robustbench.eval.benchmark(..., to_disk=True) writes: asdict(ModelInfo) with nulls and a float eps."""
    rb = {"link": None, "name": None, "authors": None, "additional_data": None, "number_forward_passes": None,
          "dataset": "cifar10", "venue": None, "architecture": None, "eps": 8 / 255, "clean_acc": "81.2",
          "reported": None, "corruptions_acc": None, "corruptions_acc_3d": None, "corruptions_mce": None,
          "corruptions_mce_3d": None, "autoattack_acc": "40.1", "footnote": None}
    path = tmp_path / "model_info" / "cifar10" / "Linf" / "My2024Model.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(rb, indent=2))
    info = load_result(path)
    assert info["name"] == "My2024Model" and info["eps"] == "8/255"
    assert _run(["leaderboard", str(path), "--no-plot"]) == 0
    assert "My2024Model would rank" in capsys.readouterr().out


@pytest.mark.skipif(not SHARED.is_dir(), reason="RobustBench model_info copy not available")
def test_an_entry_already_on_the_board_is_counted_once(tmp_path, capsys):
    src = SHARED / "cifar10" / "Linf" / "Sehwag2020Hydra.json"
    board = load_leaderboard("cifar10_linf")
    path = tmp_path / "Sehwag2020Hydra.json"
    path.write_text(src.read_text())
    r = rank(load_result(path), board, path=path)
    assert r.total == len(board["entries"]) and r.duplicate == "Sehwag2020Hydra"
    assert all(e["id"] != "Sehwag2020Hydra" for e in r.above + r.below)
    renamed = tmp_path / "copy.json"  # another file name: found by name and accuracies
    renamed.write_text(src.read_text())
    assert rank(load_result(renamed), board, path=renamed).total == len(board["entries"])
    assert _run(["leaderboard", str(path), "--no-plot"]) == 0
    assert "counted once" in capsys.readouterr().out
