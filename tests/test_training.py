"""Adversarial training: schedules, hooks, attacks, trainer, plain loop, resume, config."""
from __future__ import annotations

import dataclasses
import logging
import math

import pytest
import timm
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import robin_plugin
from robin_plugin import masked_layers
from robin_plugin.data import ImageDataset, sample_crop_flip, apply_crop_flip
from robin_plugin.errors import ConfigError, UnknownNameError
from robin_plugin.training import (
    AdversarialTraining, CheckpointError, Event, Hook, MetricLogger, PersistentFGSM, ProgressivePruning,
    TrainConfig, Trainer, TrainState, apply_overrides, epoch_order, fire, get_preset, progressive_keep_ratio,
    resolve_attack_sizes, trades_loss, PRESETS,
)
from robin_plugin.training.attacks import isolated_rng
from robin_plugin.training.checkpoint import flatten_state, load_checkpoint, save_checkpoint, unflatten_state
from robin_plugin.training.config import parse_override
from robin_plugin.training.schedules import cosine_lr, lr_at, step_lr


def toy_dataset(n: int = 96, size: int = 12, seed: int = 0) -> ImageDataset:
    """Two easy classes: bright top half vs bright bottom half, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.rand(n, 1, size, size, generator=g) * 0.4
    half = size // 2
    x[y == 0, :, :half] += 0.5
    x[y == 1, :, half:] += 0.5
    return ImageDataset((x.clamp(0, 1) * 255).to(torch.uint8), y.long(), ["top", "bottom"], "toy")


def tiny_model(seed: int = 0, width: int = 4, **kw):
    return timm.create_model("robin_resnet18", num_classes=2, in_chans=1, width=width, keep_ratio=0.2, seed=seed,
                             mean=(0.5,), std=(0.25,), **kw)


def tiny_config(**kw) -> TrainConfig:
    base = dict(model="robin_resnet18", keep_ratio=0.2, p=0.1, epochs=2, batch_size=32, lr=0.05, attack="ffgsm",
                eps=0.1, step_size=0.125, eval_step_size=0.05, val_pgd_steps=2, progress=False, seed=0,
                lr_schedule="cosine", augment=False, dataset="fashion_mnist")
    base.update(kw)
    return TrainConfig(**base)


# --- schedules -----------------------------------------------------------------------------
@given(target=st.floats(1e-4, 1.0), steps=st.integers(1, 10), a=st.floats(0, 1), b=st.floats(0, 1))
def test_progressive_keep_ratio_is_geometric_and_monotone(target, steps, a, b):
    lo, hi = sorted((a, b))
    k_lo, k_hi = progressive_keep_ratio(lo, target, steps), progressive_keep_ratio(hi, target, steps)
    assert target - 1e-12 <= k_hi <= k_lo <= 1.0
    assert math.isclose(progressive_keep_ratio(1.0, target, steps), target)
    assert math.isclose(progressive_keep_ratio(0.0, target, 1), target)
    if steps > 1:
        assert math.isclose(progressive_keep_ratio(0.0, target, steps), target ** (1 / steps))


def test_lr_schedules():
    assert cosine_lr(0.0, 0.1) == pytest.approx(0.1) and cosine_lr(1.0, 0.1) == pytest.approx(0.0)
    assert cosine_lr(0.5, 0.1) == pytest.approx(0.05)
    assert step_lr(0.6, 0.1) == pytest.approx(0.01) and step_lr(0.8, 0.1) == pytest.approx(0.001)
    assert lr_at("constant", 0.9, 0.1) == 0.1
    with pytest.raises(ConfigError):
        lr_at("linear", 0.5, 0.1)
    with pytest.raises(ConfigError):
        progressive_keep_ratio(0.5, 1.5, 2)


# --- hooks and events ----------------------------------------------------------------------
def test_every_event_has_a_hook_method_and_fire_dispatches_by_name():
    calls = []

    class Recorder(Hook):
        pass

    for event in Event:
        assert hasattr(Hook, event.method)
        setattr(Recorder, event.method, lambda self, state, e=event: calls.append(e))
    fire([Recorder()], Event.BATCH_END, TrainState(model=torch.nn.Linear(1, 1)))
    assert calls == [Event.BATCH_END]


def test_progressive_pruning_hook_sets_and_logs_keep_ratio():
    model = tiny_model()
    hook = ProgressivePruning(keep_ratio=0.01, p=0.1, steps=2)
    state = TrainState(model, epochs=4)
    hook.on_fit_start(state)
    assert state.metrics["prune/keep_ratio"] == pytest.approx(0.1)
    assert robin_plugin.summary(model).keep_ratio == pytest.approx(0.1, rel=0.05)
    state.epoch = 2
    hook.on_epoch_start(state)
    assert state.metrics["prune/keep_ratio"] == pytest.approx(0.01)
    assert robin_plugin.summary(model).keep_ratio == pytest.approx(0.01, rel=0.2)


def test_metric_logger_writes_csv_and_restores_history(tmp_path):
    logger = MetricLogger(tmp_path, tensorboard=False)
    state = TrainState(torch.nn.Linear(1, 1))
    for epoch in range(2):
        state.epoch, state.metrics = epoch, {"train/loss": 1.0 / (epoch + 1), "val/robust_acc": 0.5}
        logger.on_validation(state)
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0] == "epoch,train/loss,val/robust_acc" and len(lines) == 3
    other = MetricLogger(None)
    other.load_state_dict(logger.state_dict())
    assert other.history == logger.history


# --- attacks ---------------------------------------------------------------------------------
def test_trades_loss_matches_definition():
    torch.manual_seed(0)
    a, b, y = torch.randn(5, 3), torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1])
    p = F.softmax(a, 1)
    kl = (p * (p.log() - F.log_softmax(b, 1))).sum(1).mean()
    assert trades_loss(a, b, y, beta=6.0).item() == pytest.approx((F.cross_entropy(a, y) + 6 * kl).item(), rel=1e-5)


@pytest.mark.parametrize("attack", ["pgd", "ffgsm", "fast", "trades"])
def test_attacks_stay_in_ball_and_leave_global_rng_alone(attack):
    model = tiny_model().eval()
    ds = toy_dataset(16)
    x, y = ds.images.float() / 255, ds.labels
    hook = AdversarialTraining(attack, eps=0.1, step_size=0.05, steps=2, num_samples=16, seed=1)
    state = TrainState(model)
    hook.on_fit_start(state)
    state.set_batch(x, y, torch.arange(16))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    hook.on_batch_start(state)
    assert torch.equal(torch.rand(3), expected), "the attack disturbed the global RNG"
    assert (state.x_adv - x).abs().max() <= 0.1 + 1e-6
    assert state.x_adv.min() >= 0 and state.x_adv.max() <= 1
    model.train()
    loss = hook.loss(state)
    assert loss.requires_grad and math.isfinite(loss.item())


def test_persistent_fgsm_keeps_and_moves_perturbations_with_the_crop():
    model = tiny_model().eval()
    ds = toy_dataset(8)
    x, y = ds.images.float() / 255, ds.labels
    atk = PersistentFGSM(model, num_samples=8, eps=0.1, alpha=0.05)
    cf = sample_crop_flip(4, 2, torch.Generator().manual_seed(0))
    idx = torch.tensor([1, 3, 5, 7])
    with isolated_rng(0, torch.device("cpu")):
        adv = atk(apply_crop_flip(x[idx], cf), y[idx], idx, cf)
    bank = atk.bank.clone()
    assert bank.abs().max() <= 0.1 + 1e-6
    # the stored perturbation, moved through the same crop/flip, is what was applied (on the
    # pixels of the image; perturbations of the zero padding are not kept)
    moved = apply_crop_flip(bank[idx], cf)
    visible = apply_crop_flip(torch.ones_like(x[idx]), cf) > 0
    expected = (apply_crop_flip(x[idx], cf) + moved).clamp(0, 1)
    assert torch.allclose(adv[visible], expected[visible], atol=1e-6)
    assert not torch.equal(bank[idx], torch.zeros_like(bank[idx]))
    # untouched samples keep their initial perturbation
    adv2 = atk(x[[0]], y[[0]], torch.tensor([0]), None)
    assert torch.equal(atk.bank[[2, 4, 6]], bank[[2, 4, 6]])
    assert (adv2 - x[[0]]).abs().max() <= 0.1 + 1e-6


def test_adversarial_training_rejects_bad_settings():
    with pytest.raises(UnknownNameError, match="did you mean 'pgd'"):
        AdversarialTraining("pdg")
    with pytest.raises(ConfigError, match="eps"):
        AdversarialTraining("pgd", eps=-0.1)
    with pytest.raises(ConfigError, match="num_samples"):
        AdversarialTraining("fast")


# --- trainer ---------------------------------------------------------------------------------
def _scores(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_trainer_learns_the_toy_task(tmp_path):
    ds = toy_dataset(384)
    cfg = tiny_config(epochs=6, attack="ffgsm", out_dir=str(tmp_path))
    trainer = Trainer(tiny_model(), cfg, ds.subset(torch.arange(320)), ds.subset(torch.arange(320, 384)), out_dir=tmp_path)
    result = trainer.fit()
    assert result["val/clean_acc"] >= 0.85 and result["val/robust_acc"] >= 0.7, result
    for name in ("config.json", "metrics.csv", "checkpoint.safetensors", "model.safetensors", "model_best.safetensors"):
        assert (tmp_path / name).is_file(), name
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(rows) == 7 and "val/robust_acc" in rows[0] and "prune/keep_ratio" in rows[0]


def test_plain_loop_with_hooks_equals_trainer():
    """The documented plain-PyTorch loop and the Trainer give the same scores and metrics."""
    ds = toy_dataset(96)
    cfg = tiny_config(epochs=2, attack="pgd", attack_steps=2, step_size=0.05, lr_schedule="constant")
    trainer = Trainer(tiny_model(), cfg, ds, None)
    result = trainer.fit()

    # --- the README's plain loop ---
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    adv = AdversarialTraining("pgd", eps=0.1, step_size=0.05, steps=2, seed=0)
    hooks = [ProgressivePruning(keep_ratio=0.2, p=0.1, steps=1), adv]
    steps_per_epoch = len(ds) // 32
    state = TrainState(model, opt, epochs=2, steps_per_epoch=steps_per_epoch)
    fire(hooks, Event.FIT_START, state)
    for epoch in range(2):
        state.epoch = epoch
        fire(hooks, Event.EPOCH_START, state)
        sums: dict[str, float] = {}
        order = epoch_order(len(ds), 0, epoch)
        for state.batch_idx in range(steps_per_epoch):
            idx = order[state.batch_idx * 32:(state.batch_idx + 1) * 32]
            state.set_batch(ds.images[idx].float() / 255, ds.labels[idx], idx)
            fire(hooks, Event.BATCH_START, state)
            fire(hooks, Event.ADV_EXAMPLES, state)
            model.train()
            loss = adv.loss(state)
            opt.zero_grad()
            loss.backward()
            fire(hooks, Event.AFTER_BACKWARD, state)
            opt.step()
            state.step += 1
            fire(hooks, Event.BATCH_END, state)
            for k, v in state.batch_metrics.items():
                sums[k] = sums.get(k, 0.0) + v
        fire(hooks, Event.EPOCH_END, state)
    fire(hooks, Event.FIT_END, state)

    mine, theirs = _scores(model), _scores(trainer.model)
    assert mine.keys() == theirs.keys()
    for k in mine:
        assert torch.equal(mine[k], theirs[k]), k
    assert sums["train/loss"] / steps_per_epoch == pytest.approx(result["train/loss"], abs=1e-12)
    assert sums["train/robust_acc"] / steps_per_epoch == pytest.approx(result["train/robust_acc"], abs=1e-12)


@pytest.mark.parametrize("attack,channels_last", [("fast", False), ("trades", False), ("ffgsm", True)])
def test_resume_gives_the_uninterrupted_result(tmp_path, attack, channels_last):
    ds = toy_dataset(96)
    val = toy_dataset(32, seed=1)
    cfg = tiny_config(epochs=3, attack=attack, attack_steps=2, step_size=0.05, augment=True, prune_steps=2,
                      channels_last=channels_last)
    # width 8: narrower shortcuts would make the channels_last guard keep the default layout
    make = (lambda: tiny_model(width=8)) if channels_last else tiny_model
    full = Trainer(make(), cfg, ds, val, out_dir=tmp_path / "full")
    assert full.channels_last is channels_last
    r_full = full.fit()

    class Crash(Hook):
        def on_batch_start(self, state):
            if state.epoch == 1 and state.batch_idx == 1:
                raise KeyboardInterrupt  # as if the run died in the middle of epoch 1

    with pytest.raises(KeyboardInterrupt):
        Trainer(make(), cfg, ds, val, hooks=[Crash()], out_dir=tmp_path / "part").fit()
    resumed = Trainer(make(), cfg, ds, val, out_dir=tmp_path / "part")
    r_resumed = resumed.fit(resume=True)

    timeless = lambda r: {k: v for k, v in r.items() if not k.startswith("time/")}
    assert timeless(r_resumed) == timeless(r_full)
    a, b = _scores(full.model), _scores(resumed.model)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    import csv

    rows = lambda p: [timeless(r) for r in csv.DictReader(open(p / "metrics.csv"))]
    assert rows(tmp_path / "full") == rows(tmp_path / "part")
    assert len(rows(tmp_path / "full")) == 3
    # the saved weights load into a plain (NCHW) model and give the trained model's logits
    from safetensors.torch import load_file

    plain = make()
    plain.load_state_dict(load_file(str(tmp_path / "full" / "model.safetensors")))
    x = val.images[:8].float() / 255
    full.model.eval(), plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(x), full.model(x), rtol=1e-4, atol=1e-5)


def test_resume_refuses_a_different_config(tmp_path):
    ds = toy_dataset(64)
    Trainer(tiny_model(), tiny_config(epochs=1), ds, None, out_dir=tmp_path).fit()
    with pytest.raises(CheckpointError, match="different config"):
        Trainer(tiny_model(), tiny_config(epochs=2, lr=0.01), ds, None, out_dir=tmp_path).fit(resume=True)


# --- checkpoints -----------------------------------------------------------------------------
plain = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False) | st.text(max_size=5)
    | st.builds(lambda n: torch.arange(n, dtype=torch.float32), st.integers(0, 4)),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.integers(0, 5) | st.text(max_size=3), children, max_size=3)
    | st.lists(children, max_size=3).map(tuple),
    max_leaves=10,
)


@settings(max_examples=60, deadline=None)
@given(obj=plain)
def test_flatten_unflatten_roundtrip(obj):
    tensors: dict = {}
    back = unflatten_state(flatten_state(obj, tensors), tensors)

    def same(a, b):
        if isinstance(a, torch.Tensor):
            return isinstance(b, torch.Tensor) and torch.equal(a, b)
        if isinstance(a, dict):
            return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, (list, tuple)):
            return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        return a == b

    assert same(obj, back)


def test_checkpoint_roundtrip_and_corrupt_files(tmp_path):
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.rand(4, 1, 12, 12)).sum().backward()
    opt.step()
    path = save_checkpoint(tmp_path / "c.safetensors", model.state_dict(), {"optimizer": opt.state_dict(), "epoch": 3})
    ms, st_ = load_checkpoint(path)
    assert st_["epoch"] == 3
    opt2 = torch.optim.SGD(tiny_model().parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(st_["optimizer"])
    data = path.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "trunc.safetensors")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.safetensors")


# --- config ----------------------------------------------------------------------------------
def test_every_preset_is_a_valid_config():
    for name in PRESETS:
        cfg = apply_overrides(get_preset(name), {})
        assert cfg.keep_ratio <= 1


def test_config_overrides_and_errors():
    cfg = apply_overrides(get_preset("fmnist-fast"), dict(map(parse_override, ["epochs=5", "lr=1e-3", "model_kwargs={width: 8}"])))
    assert cfg.epochs == 5 and cfg.lr == 1e-3 and cfg.model_kwargs == {"width": 8}
    with pytest.raises(UnknownNameError, match="did you mean 'epochs'"):
        apply_overrides({}, {"epoch": 3})
    with pytest.raises(ConfigError, match="'lr' must be float"):
        apply_overrides({}, {"lr": "fast"})
    with pytest.raises(ConfigError, match="KEPT"):
        apply_overrides({}, {"keep_ratio": 0})
    with pytest.raises(UnknownNameError, match="preset"):
        get_preset("fmnist-fats")


@pytest.mark.parametrize("dataset,eps", [("fashion_mnist", None), ("fashion_mnist", 0.2), ("cifar10", None), ("imagenet100", None)])
def test_train_and_eval_use_one_pgd_step_rule(dataset, eps):
    """`robin train` reports PGD-k with the step `robin eval` uses, so the two numbers agree."""
    from robin_plugin.eval import default_pgd_step, pgd_attack

    cfg = resolve_attack_sizes(TrainConfig(dataset=dataset, eps=eps, progress=False))
    attack = pgd_attack(torch.nn.Linear(2, 2), cfg.eps, 20)
    assert cfg.eval_step_size == attack.alpha == default_pgd_step(cfg.eps) == pytest.approx(cfg.eps / 4)


# --- ProgressivePruning: one source of truth for the target ---------------------------------
def test_progressive_pruning_defaults_to_the_models_own_target_in_three_stages():
    model = timm.create_model("robin_resnet18", in_chans=1, width=4, keep_ratio=0.05, p=0.3)
    hook = ProgressivePruning()
    state = TrainState(model, None, epochs=3, steps_per_epoch=1)
    hook.on_fit_start(state)
    assert (hook.keep_ratio, hook.p, hook.steps) == (0.05, 0.3, 3)
    assert state.metrics["prune/keep_ratio"] == pytest.approx(0.05 ** (1 / 3))  # progressive from the start
    state.epoch = 2
    hook.on_epoch_start(state)
    assert state.metrics["prune/keep_ratio"] == pytest.approx(0.05)
    assert [m.keep_ratio for _, m in masked_layers(model)] == robin_plugin.adaptive_keep_ratios(
        [m.weight.numel() for _, m in masked_layers(model)], 0.05, 0.3)


def test_progressive_pruning_says_when_it_overrides_the_model(caplog):
    model = timm.create_model("robin_resnet18", in_chans=1, width=4, keep_ratio=0.05)
    with caplog.at_level(logging.WARNING, logger="robin_plugin.training.hooks"):
        ProgressivePruning(keep_ratio=0.1, steps=1).on_fit_start(TrainState(model, None, epochs=1, steps_per_epoch=1))
    assert "keep_ratio=0.1 given, the model was built with 0.05" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="robin_plugin.training.hooks"):
        ProgressivePruning(keep_ratio=0.05, p=0.1, steps=1).on_fit_start(TrainState(model, None, epochs=1, steps_per_epoch=1))
    assert caplog.text == ""


def test_progressive_pruning_on_a_robinified_model_keeps_what_its_layers_keep():
    import torch.nn as nn

    model = robin_plugin.robinify(nn.Sequential(nn.Conv2d(1, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 2)), keep_ratio=0.2)
    kept = sum(m.kept for _, m in masked_layers(model)) / sum(m.weight.numel() for _, m in masked_layers(model))
    hook = ProgressivePruning(steps=1)
    hook.on_fit_start(TrainState(model, None, epochs=1, steps_per_epoch=1))
    assert hook.keep_ratio == pytest.approx(kept) and hook.p == 0.1
