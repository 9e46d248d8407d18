"""The paper presets against the official code's table, and the official training behaviours.

- every paper preset's resolved config equals :data:`robin_plugin.training.paper.OFFICIAL`,
  field by field, and changing any one value of a preset makes the comparison fail;
- the model's mode while a training attack crafts its examples (train for PGD and the fast
  attack, eval for TRADES), seen by a forward pre-hook, in the README's loop and in ``robin train``;
- PGD's worst-loss iterate, label smoothing, the learning-rate warm-up and per-epoch schedule.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import timm
import torch
import torch.nn.functional as F

from robin_plugin.errors import ConfigError
from robin_plugin.pgd import WorstLossPGD, pgd_attack
from robin_plugin.rng import isolated_rng
from robin_plugin.training import AdversarialTraining, Event, ProgressivePruning, TrainState, fire
from robin_plugin.training.attacks import default_attack_mode
from robin_plugin.training.config import PRESETS, TrainConfig, apply_overrides, get_preset
from robin_plugin.training.events import Hook
from robin_plugin.training.paper import DEPARTURES, OFFICIAL, PAPER_PRESETS
from robin_plugin.training.run import resolve_attack_sizes, train
from robin_plugin.training.schedules import lr_at_epoch

MODEL_ARGS = ("init", "score_init_scale", "score_scale_by_fan_in", "last_bn", "mean", "std")


def resolved(preset: dict[str, Any]) -> TrainConfig:
    return resolve_attack_sizes(apply_overrides(preset, {}))


def config_value(cfg: TrainConfig, key: str) -> Any:
    """What the run of ``cfg`` uses for the table's ``key``."""
    if key in MODEL_ARGS:
        v = cfg.model_kwargs.get(key)
        return tuple(v) if isinstance(v, list) else v
    if key == "attack_mode":
        return cfg.attack_mode or default_attack_mode(cfg.attack)
    if key == "augment":
        return cfg.augmentation_on
    if key == "eval_attack":  # `robin eval --run` evaluates at the run's eps with the standard ensemble
        return f"AutoAttack standard, Linf, eps {round(cfg.eps * 255):d}/255, whole test set"
    return getattr(cfg, key)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
            and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def mismatches(name: str, preset: dict[str, Any]) -> list[str]:
    cfg = resolved(preset)
    return [f"{name}: {key} is {config_value(cfg, key)!r}, official {o.value!r} ({o.source})"
            for key, o in OFFICIAL[name].items() if not same(config_value(cfg, key), o.value)]


def test_the_paper_presets_are_the_table():
    assert set(PAPER_PRESETS) == {n for n in PRESETS if not n.startswith("fmnist-")} - {
        n for n in PRESETS if n.startswith("cifar10-wrn")}
    assert "cifar100-resnet34-pgd" in PAPER_PRESETS and "imagenet100-resnet34-fast" in PAPER_PRESETS


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_paper_preset_matches_the_official_code(name: str):
    assert mismatches(name, get_preset(name)) == []


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_every_official_value_cites_its_file(name: str):
    for key, o in OFFICIAL[name].items():
        assert o.source.split(":")[0].startswith(("code/", "bash_scripts/")), (key, o.source)


def _changed(value: Any) -> Any:
    """Another valid value of the same kind."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 0.5 if value else 0.125
    if isinstance(value, (list, tuple)):
        return [x * 0.5 for x in value]
    return {"pgd": "trades", "fast": "pgd", "trades": "pgd", "train": "eval", "eval": "train", "worst": "last",
            "cosine": "step", "step": "cosine", "binary": "kaiming_normal", "cifar10": "cifar100",
            "cifar100": "cifar10", "imagenet100": "cifar10"}.get(value, "robin_resnet18" if str(value).startswith("robin_resnet34")
                                                                 else "robin_resnet34")


def _preset_keys(name: str) -> list[tuple[str, ...]]:
    preset = get_preset(name)
    keys = [(k,) for k in preset if k not in ("model_kwargs", "test_n")]
    return keys + [("model_kwargs", k) for k in preset["model_kwargs"]]


@pytest.mark.parametrize("name", ["cifar10-resnet34-pgd", "cifar100-resnet18-fast", "cifar10-resnet34-trades",
                                  "cifar100-resnet50-dense-pgd", "imagenet100-resnet34-fast"])
def test_changing_any_preset_value_breaks_the_match(name: str):
    for path in _preset_keys(name):
        preset = copy.deepcopy(get_preset(name))
        holder = preset if len(path) == 1 else preset["model_kwargs"]
        holder[path[-1]] = _changed(holder[path[-1]])
        if path == ("dataset",) and name.startswith("imagenet"):
            preset.pop("image_size")  # image_size belongs to imagenet100 only
        try:
            found = mismatches(name, preset)
        except ConfigError:  # the change is refused outright (e.g. label smoothing with the fast attack)
            continue
        assert found, f"changing {'.'.join(path)} of {name} went unnoticed"


def test_departures_name_paper_presets():
    assert set(DEPARTURES) - {"*"} <= set(PAPER_PRESETS)


def test_cifar100_presets_train_and_validate_at_4_over_255():
    cfg = resolved(get_preset("cifar100-resnet34-pgd"))
    assert math.isclose(cfg.eps, 4 / 255) and math.isclose(cfg.step_size, 1 / 255)
    assert math.isclose(cfg.eval_step_size, 1 / 255)
    fast = resolved(get_preset("cifar100-resnet34-fast"))
    assert math.isclose(fast.eps, 4 / 255) and math.isclose(fast.step_size, 2 / 255)


def test_imagenet100_preset_builds_a_7x7_stem_resnet34_for_224px():
    cfg = get_preset("imagenet100-resnet34-fast")
    model = timm.create_model(cfg["model"], num_classes=100, keep_ratio=cfg["keep_ratio"], p=cfg["p"], width=8)
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
    assert isinstance(model.maxpool, torch.nn.MaxPool2d)
    assert model.pretrained_cfg["input_size"] == (3, 224, 224)
    assert sum(1 for n in model.state_dict() if n.startswith("layer")) > 0
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 3, 224, 224)).shape == (1, 100)


# --- model mode while crafting ----------------------------------------------------------------


class _ModeRecorder:
    """A forward pre-hook that records ``model.training`` for the forward passes made while crafting.

    Crafting passes are the ones whose input requires a gradient, inside the epochs (validation
    attacks run after EPOCH_END).
    """

    def __init__(self, model: torch.nn.Module):
        self.model, self.active, self.modes = model, False, []
        self.handle = model.register_forward_pre_hook(self)

    def __call__(self, module, args):
        if self.active and args[0].requires_grad:
            self.modes.append(module.training)


class _Window(Hook):
    """Switches the recorder on for the epochs only."""

    def __init__(self):
        self.recorder: _ModeRecorder | None = None

    def on_fit_start(self, state: TrainState) -> None:
        self.recorder = _ModeRecorder(state.model)

    def on_epoch_start(self, state: TrainState) -> None:
        self.recorder.active = True

    def on_epoch_end(self, state: TrainState) -> None:
        self.recorder.active = False


def _toy(n: int = 32):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    x = torch.rand(n, 1, 12, 12, generator=g) * 0.4
    x[y == 0, :, :6] += 0.5
    x[y == 1, :, 6:] += 0.5
    return x.clamp(0, 1), y


@pytest.mark.parametrize("attack, expected", [("pgd", True), ("fast", True), ("trades", False)])
def test_readme_loop_crafts_in_the_official_mode(attack: str, expected: bool):
    """The README's hook loop, verbatim in structure, with a pre-hook watching the attack's passes."""
    model = timm.create_model("robin_resnet18", num_classes=2, in_chans=1, width=4, keep_ratio=0.2, mean=(0.5,), std=(0.25,))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    x_all, y_all = _toy()
    loader = [(x_all[i:i + 8], y_all[i:i + 8], torch.arange(i, i + 8)) for i in range(0, 32, 8)]
    adv = AdversarialTraining(attack, eps=0.1, step_size=0.025, steps=2, num_samples=32)
    window = _Window()
    hooks = [window, ProgressivePruning(stages=1), adv]
    state = TrainState(model, opt, epochs=1, steps_per_epoch=len(loader))
    fire(hooks, Event.FIT_START, state)
    for epoch in range(1):
        state.epoch = epoch
        fire(hooks, Event.EPOCH_START, state)
        for state.batch_idx, (x, y, idx) in enumerate(loader):
            state.set_batch(x, y, idx)
            fire(hooks, Event.BATCH_START, state)
            fire(hooks, Event.ADV_EXAMPLES, state)
            model.train()
            loss = adv.loss(state)
            opt.zero_grad(); loss.backward()
            opt.step(); state.step += 1
        fire(hooks, Event.EPOCH_END, state)
    modes = window.recorder.modes
    assert modes and all(m is expected for m in modes), (attack, modes)


def _fmnist_config(tmp_path, **kw) -> TrainConfig:
    base = dict(model="robin_resnet18", model_kwargs={"width": 4}, keep_ratio=0.2, epochs=1, batch_size=16,
                train_subset=48, val_fraction=0.0, test_n=0, attack_steps=2, progress=False, co_guard="off",
                dataset="fashion_mnist", out_dir=str(tmp_path / "run"))
    return TrainConfig.from_dict({**base, **kw})


@pytest.mark.parametrize("attack, mode, expected", [("pgd", None, True), ("fast", None, True), ("trades", None, False),
                                                    ("pgd", "eval", False), ("trades", "train", True)])
def test_robin_train_crafts_in_the_configured_mode(tmp_path, attack, mode, expected):
    window = _Window()
    train(_fmnist_config(tmp_path, attack=attack, attack_mode=mode), hooks=[window])
    modes = window.recorder.modes
    assert modes and all(m is expected for m in modes), modes


# --- worst-loss PGD, label smoothing, schedules -------------------------------------------------


def _reference_worst_pgd(model, x, y, eps, alpha, steps, start):
    """The official PGD.attack, transcribed: keep each example's highest-loss evaluated iterate."""
    adv = torch.clamp(x + start, 0, 1)
    best, best_loss = adv.clone(), torch.zeros(len(x))
    for _ in range(steps):
        adv = adv.detach().requires_grad_(True)
        logits = model(adv)
        F.cross_entropy(logits, y).backward()
        loss = F.cross_entropy(logits.detach(), y, reduction="none")
        upd = (loss > best_loss).float().view(-1, 1, 1, 1)
        best = best * (1 - upd) + adv.detach() * upd
        best_loss = torch.maximum(best_loss, loss)
        nxt = adv.detach() + torch.sign(adv.grad) * alpha
        adv = torch.clamp(x + torch.clamp(nxt - x, -eps, eps), 0, 1)
    return best


def test_worst_loss_pgd_matches_the_official_rule():
    model = timm.create_model("robin_resnet18", num_classes=2, in_chans=1, width=4, keep_ratio=0.3).eval()
    x, y = _toy(8)
    attack = pgd_attack(model, 0.1, 4, alpha=0.03, iterate="worst")
    assert isinstance(attack, WorstLossPGD)
    with isolated_rng(5, torch.device("cpu")):
        ours = attack(x, y)
    with isolated_rng(5, torch.device("cpu")):
        start = torch.empty_like(x).uniform_(-0.1, 0.1)
    ref = _reference_worst_pgd(model, x, y, 0.1, 0.03, 4, start)
    assert torch.allclose(ours, ref, atol=1e-6)
    assert (ours - x).abs().max() <= 0.1 + 1e-6
    with torch.no_grad():  # the returned point is at least as bad as the random start
        worst = F.cross_entropy(model(ours), y, reduction="none")
        start_loss = F.cross_entropy(model(torch.clamp(x + start, 0, 1)), y, reduction="none")
    assert (worst >= start_loss - 1e-6).all()


def test_label_smoothing_reaches_the_loss_and_is_refused_with_fast():
    model = timm.create_model("robin_resnet18", num_classes=2, in_chans=1, width=4, keep_ratio=0.3).train()
    x, y = _toy(8)
    state = TrainState(model, None, epochs=1, steps_per_epoch=1)
    state.set_batch(x, y, torch.arange(8))
    state.x_adv = x
    plain = AdversarialTraining("pgd", eps=0.1, step_size=0.02).loss(state).item()
    smooth = AdversarialTraining("pgd", eps=0.1, step_size=0.02, label_smoothing=0.1).loss(state).item()
    with torch.no_grad():
        expected = F.cross_entropy(model(x), y, label_smoothing=0.1).item()
    assert smooth == pytest.approx(expected, rel=1e-4) and smooth != pytest.approx(plain, rel=1e-6)
    with pytest.raises(ConfigError, match="soft targets"):
        AdversarialTraining("fast", num_samples=8, label_smoothing=0.1)
    with pytest.raises(ConfigError, match="label_smoothing"):
        TrainConfig(attack="fast", label_smoothing=0.1)


def test_warmup_then_cosine_per_epoch_is_the_official_schedule():
    """code/util/schedulers.py: lr * (e + 1) / W during warm-up, then cosine over the other epochs."""
    lrs = [lr_at_epoch("cosine", e, 100, 0.1, warmup_epochs=5) for e in range(100)]
    assert lrs[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])
    assert lrs[5] == pytest.approx(0.1)
    assert lrs[50] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 45 / 95)))
    assert lrs[99] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 94 / 95)))
    # the official multistep of the dense baselines: x0.1 at epochs 200 and 300 of 400
    steps = [lr_at_epoch("step", e, 400, 0.1, (0.5, 0.75)) for e in (199, 200, 299, 300, 399)]
    assert steps == pytest.approx([0.1, 0.01, 0.01, 0.001, 0.001])


def test_lr_is_set_once_per_epoch_when_asked(tmp_path):
    seen = []

    class Rec(Hook):
        def on_batch_end(self, state):
            seen.append((state.epoch, state.optimizer.param_groups[0]["lr"]))

    train(_fmnist_config(tmp_path, attack="none", epochs=3, lr_per_epoch=True, lr_warmup_epochs=1, lr=0.1), hooks=[Rec()])
    by_epoch = {}
    for e, lr in seen:
        by_epoch.setdefault(e, set()).add(lr)
    assert all(len(v) == 1 for v in by_epoch.values())
    assert [by_epoch[e].pop() for e in range(3)] == pytest.approx([0.1, 0.1, 0.1 * 0.5 * (1 + math.cos(math.pi / 2))])
