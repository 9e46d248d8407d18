"""Robin models inside other people's tools: timm's EMA, hub writer, transforms and checkpoints (issue 26)."""
from __future__ import annotations

import pytest
import timm
import torch
from timm.utils import ModelEmaV3

import robin_plugin
from robin_plugin import ConfigError, masked_layers
from robin_plugin.training import Event, ProgressivePruning, TrainState, fire

TINY = dict(in_chans=1, num_classes=10, width=4, keep_ratio=0.05, p=0.1)


def _ratios(model: torch.nn.Module) -> list[float]:
    return [m.keep_ratio for _, m in masked_layers(model)]


# --- timm's ModelEmaV3 follows the keep ratios -----------------------------------------------
@pytest.mark.parametrize("foreach", [True, False], ids=["foreach", "loop"])
def test_model_ema_v3_keeps_the_live_keep_ratios_at_every_epoch_end(foreach):
    torch.manual_seed(0)
    model = timm.create_model("robin_resnet18", **TINY)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hooks = [ProgressivePruning(stages=3)]
    epochs, steps = 3, 2
    state = TrainState(model, opt, epochs=epochs, steps_per_epoch=steps)
    fire(hooks, Event.FIT_START, state)
    ema = ModelEmaV3(model, decay=0.9, foreach=foreach)  # created after FIT_START, as timm's train.py does
    seen = []
    for epoch in range(epochs):
        state.epoch = epoch
        fire(hooks, Event.EPOCH_START, state)
        for _ in range(steps):
            x, y = torch.rand(8, 1, 16, 16), torch.randint(0, 10, (8,))
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            ema.update(model, step=state.step)
            state.step += 1
        fire(hooks, Event.EPOCH_END, state)
        assert _ratios(ema.module) == _ratios(model), f"epoch {epoch}"
        assert [m.kept for _, m in masked_layers(ema.module)] == [m.kept for _, m in masked_layers(model)]
        assert ema.module.state_dict()["conv1.keep_ratio"].item() == model.conv1.keep_ratio
        seen.append(robin_plugin.summarize(ema.module).keep_ratio)
    assert seen[0] > seen[1] > seen[2]  # the EMA copy really was pruned along
    assert seen[-1] == pytest.approx(0.05, rel=0.1)


def test_model_ema_v3_with_exclude_buffers_and_set_also_follow():
    model = timm.create_model("robin_resnet18", **TINY)
    ema = ModelEmaV3(model, decay=0.99, exclude_buffers=True)
    robin_plugin.set_keep_ratio(model, 0.3, 0.1)
    ema.update(model)
    assert _ratios(ema.module) == _ratios(model)
    robin_plugin.set_keep_ratio(model, 0.2, 0.1)
    ema.set(model)
    assert _ratios(ema.module) == _ratios(model)


def test_keep_ratio_buffer_is_exact_and_survives_to_and_deepcopy():
    import copy

    layer = robin_plugin.layers.MaskedLinear(8, 4, keep_ratio=1 / 3)
    assert layer.keep_ratio_bits.dtype == torch.int64
    assert layer.keep_ratio == 1 / 3
    layer.keep_ratio_bits.copy_(torch.tensor(0.125, dtype=torch.float64).view(torch.int64))  # what an EMA does
    assert layer.keep_ratio == 0.125 and layer.kept == 4
    assert copy.deepcopy(layer).keep_ratio == 0.125
    assert layer.to(torch.float64).keep_ratio == 0.125


def test_keep_ratio_buffer_with_a_bad_value_is_a_clear_error():
    layer = robin_plugin.layers.MaskedLinear(8, 4, keep_ratio=0.5)
    layer.keep_ratio_bits.copy_(torch.tensor(1.5, dtype=torch.float64).view(torch.int64))
    with pytest.raises(ConfigError, match=r"keep_ratio_bits holds 1\.5"):
        layer.kept


# --- ProgressivePruning with fewer epochs than stages ----------------------------------------
def test_progressive_pruning_refuses_fewer_epochs_than_stages():
    model = timm.create_model("robin_resnet18", **TINY)
    with pytest.raises(ConfigError, match=r"3 pruning stages need at least 3 epochs, got epochs=2"):
        ProgressivePruning(stages=3).on_fit_start(TrainState(model, epochs=2))


@pytest.mark.parametrize("stages", [1, 2, 3, 5, 7])
def test_progressive_pruning_ends_exactly_at_the_target_whenever_it_runs(stages):
    model = timm.create_model("robin_resnet18", **TINY)
    for epochs in range(stages, stages + 12):
        hook = ProgressivePruning(stages=stages)
        state = TrainState(model, epochs=epochs)
        hook.on_fit_start(state)
        for epoch in range(epochs):
            state.epoch = epoch
            hook.on_epoch_start(state)
        assert state.metrics["prune/keep_ratio"] == pytest.approx(0.05, rel=1e-12), (stages, epochs)


# --- timm's hub writer and the data config of a hub folder -----------------------------------
def _pruned_model(name: str = "robin_resnet18") -> torch.nn.Module:
    """A model whose state differs from a fresh build: keep ratios, statistics, scores, BN stats."""
    kw = dict(TINY) if name.startswith("robin_resnet18") and not name.endswith("_dense") else dict(in_chans=1, width=4)
    model = timm.create_model(name, **kw, mean=(0.3,), std=(0.4,))
    if robin_plugin.is_masked(model):
        robin_plugin.set_keep_ratio(model, 0.2, 0.3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.01)
    model.train()
    model(torch.rand(16, 1, 28, 28))  # BatchNorm running statistics move
    return model.eval()


@pytest.mark.parametrize("name", ["robin_resnet18", "robin_resnet18_dense"])
def test_timm_save_for_hf_round_trips_through_local_dir(name, tmp_path):
    from timm.models import PretrainedCfg
    from timm.models._hub import save_for_hf

    model = _pruned_model(name)
    assert set(model.pretrained_cfg) <= {f for f in PretrainedCfg.__dataclass_fields__}
    PretrainedCfg(**model.pretrained_cfg)  # timm's own check: every key is a field
    save_for_hf(model, tmp_path / "hf")
    loaded = timm.create_model(f"local-dir:{tmp_path / 'hf'}", pretrained=True).eval()
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    if robin_plugin.is_masked(model):
        assert _ratios(loaded) == _ratios(model)


def test_every_registered_robin_model_has_only_timm_cfg_fields():
    from timm.models import PretrainedCfg

    fields = set(PretrainedCfg.__dataclass_fields__)
    for name in timm.list_models("robin_*"):
        model = timm.create_model(name, pretrained=False, device="meta")
        assert set(model.pretrained_cfg) <= fields, name


def test_hub_export_of_a_28x28_run_gives_robins_predictions_through_timm_transforms(tmp_path):
    """Real Fashion-MNIST test images through PIL and timm's eval transform: robin's own predictions."""
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    from robin_plugin.data import get_dataset, to_float
    from robin_plugin.eval.measure import predict
    from robin_plugin.export import export_hub

    ds = get_dataset("fashion_mnist", None, split="test")
    n = 200
    images, labels = ds.images[:n], ds.labels[:n]
    model = _pruned_model()
    folder = export_hub(model, tmp_path / "hub", train_config={"dataset": "fashion_mnist", "seed": 0})
    hub = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    cfg = resolve_data_config({}, model=hub)
    assert cfg["input_size"] == (1, 28, 28) and cfg["crop_pct"] == 1.0
    transform = create_transform(**cfg)
    x_timm = torch.stack([transform(Image.fromarray(img.squeeze(0).numpy(), mode="L")) for img in images])
    x_robin = to_float(images)
    assert torch.equal(x_timm, x_robin)  # the transform does not resize a 28x28 image
    with torch.no_grad():
        ours, theirs = predict(model, x_robin, 100), predict(hub, x_timm, 100)
    assert torch.equal(ours, theirs)
    assert (ours == labels).float().mean() == (theirs == labels).float().mean()


def test_hub_model_card_shows_one_evaluation_with_its_settings_and_file(tmp_path):
    from robin_plugin.export import export_hub

    info = {"name": "x", "architecture": "y", "dataset": "cifar100", "threat_model": "Linf", "eps": "4/255",
            "n_points": 500, "attack_set": "apgd-ce", "robust_acc": "31.00", "clean_acc": "60.00",
            "settings": {"seed": 7}}
    results = {"dataset": "fashion_mnist", "eps": 0.1, "test": {"n": 1000, "clean_acc": 0.85, "pgd20_acc": 0.7}}
    folder = export_hub(_pruned_model(), tmp_path / "hub", results=results, model_info=info,
                        model_info_path=tmp_path / "eval_result.json")
    card = (folder / "README.md").read_text()
    assert "`eval_result.json`" in card and "| seed | 7 |" in card and "| n (first test points) | 500 |" in card
    assert "| attack set | apgd-ce |" in card and "| eps | 4/255 |" in card and "| dataset | cifar100 |" in card
    assert "85.00" not in card and "| n (first test points) | 1000 |" not in card  # not mixed with the run's test
    assert "autoattack_acc" not in card


# --- timm's CheckpointSaver files --------------------------------------------------------------
class _Foreign:
    """A class outside the allow-list: unpickling it would import and build arbitrary code."""


def _timm_checkpoint(tmp_path, model, ema_model=None):
    """A checkpoint exactly as timm's CheckpointSaver writes it (timm/utils/checkpoint_saver.py)."""
    import argparse

    from timm.utils import CheckpointSaver

    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    args = argparse.Namespace(model="robin_resnet18", lr=0.1, epochs=2, model_kwargs={"width": 4})
    saver = CheckpointSaver(model, opt, args=args, model_ema=ema_model, checkpoint_dir=str(tmp_path),
                            recovery_dir=str(tmp_path), max_history=1)
    saver.save_checkpoint(epoch=0, metric=0.5)
    return tmp_path / "model_best.pth.tar"


def test_timm_checkpoint_saver_file_loads_with_weights_only(tmp_path):
    from robin_plugin.loading import load_model, read_state_dict

    model = _pruned_model()
    ema = ModelEmaV3(model, decay=0.5)
    robin_plugin.set_keep_ratio(model, 0.1, 0.1)  # live and EMA differ until the next update
    ema.update(model)
    path = _timm_checkpoint(tmp_path, model, ema)
    loaded = load_model(path, model="robin_resnet18", model_kwargs=dict(TINY))
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert _ratios(loaded) == _ratios(model)
    sd_ema = read_state_dict(path, ema=True)
    assert torch.equal(sd_ema["conv1.scores"], ema.module.state_dict()["conv1.scores"])


def test_torch_save_file_with_a_foreign_class_is_refused(tmp_path):
    from robin_plugin.loading import ModelFileError, read_state_dict

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "extra": _Foreign()}, path)
    with pytest.raises(ModelFileError, match="weights_only=True"):
        read_state_dict(path)


# --- ONNX export ---------------------------------------------------------------------------------
def _calibrated(model: torch.nn.Module) -> torch.nn.Module:
    """BatchNorm statistics of real-looking activations (an untrained model's are at their init: huge logits)."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for i in range(4):
            model(torch.rand(32, 1, 28, 28, generator=torch.Generator().manual_seed(i)))
    return model.eval()


@pytest.mark.parametrize("fmt", ["onnx", "onnx-shrunk"])
def test_onnx_export_gives_equal_logits_in_onnxruntime(fmt, tmp_path, capsys):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import safetensors.torch

    from robin_plugin.cli import main

    model = _calibrated(_pruned_model())
    ckpt = tmp_path / "m.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    out = tmp_path / "m.onnx"
    kwargs = '{"in_chans": 1, "width": 4, "keep_ratio": 0.05, "mean": [0.3], "std": [0.4]}'
    assert main(["export", "--model", "robin_resnet18", "--model-kwargs", kwargs, "--checkpoint", str(ckpt),
                 "--format", fmt, "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("wrote") == 1
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.rand(7, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    (logits,) = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        expected = model(x)
    assert logits.shape == (7, 10)
    assert torch.allclose(torch.from_numpy(logits), expected, rtol=1e-5, atol=1e-5), (torch.from_numpy(logits) - expected).abs().max()
