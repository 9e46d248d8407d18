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
