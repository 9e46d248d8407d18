"""Adversarial training: schedules, hooks, attacks, trainer, plain loop, resume, config."""
from __future__ import annotations

import dataclasses
import json
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
from robin_plugin.data import apply_crop_flip, sample_crop_flip, take_crop_flip
from robin_plugin.errors import ConfigError, UnknownNameError
from robin_plugin.training import (
    AdversarialTraining, BestModel, CheckpointError, Checkpointing, Event, Hook, LRSchedule, MetricLogger,
    PersistentFGSM, ProgressivePruning, RandomCropFlip, TrainConfig, Trainer, TrainState, apply_overrides,
    default_hooks, epoch_order, fire, get_preset, progressive_keep_ratio, resolve_attack_sizes, trades_loss, PRESETS,
)
from robin_plugin.rng import isolated_rng
from robin_plugin.formats.checkpoint import flatten_state, save_checkpoint, unflatten_state
from robin_plugin.training.checkpoint import load_checkpoint
from robin_plugin.training.config import parse_override
from robin_plugin.training.schedules import cosine_lr, lr_at, step_lr
from robin_plugin.testing import tiny_robin_resnet, toy_dataset


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
    # one cycle (Wong et al. 2020): 0 -> base at 40% of training -> 0
    assert lr_at("onecycle", 0.0, 0.2) == 0.0 and lr_at("onecycle", 0.4, 0.2) == pytest.approx(0.2)
    assert lr_at("onecycle", 0.2, 0.2) == pytest.approx(0.1) and lr_at("onecycle", 0.7, 0.2) == pytest.approx(0.1)
    assert lr_at("onecycle", 1.0, 0.2) == 0.0
    with pytest.raises(ConfigError):
        lr_at("linear", 0.5, 0.1)
    with pytest.raises(UnknownNameError, match="did you mean 'onecycle'"):
        TrainConfig(lr_schedule="one_cycle")
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
    model = tiny_robin_resnet()
    hook = ProgressivePruning(keep_ratio=0.01, p=0.1, stages=2)
    state = TrainState(model, epochs=4)
    hook.on_fit_start(state)
    assert state.metrics["prune/keep_ratio"] == pytest.approx(0.1)
    assert robin_plugin.summarize(model).keep_ratio == pytest.approx(0.1, rel=0.05)
    state.epoch = 2
    hook.on_epoch_start(state)
    assert state.metrics["prune/keep_ratio"] == pytest.approx(0.01)
    assert robin_plugin.summarize(model).keep_ratio == pytest.approx(0.01, rel=0.2)


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
    model = tiny_robin_resnet().eval()
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
    """The official FGSM_RS: perturbations live in padded coordinates and move with the crop."""
    model = tiny_robin_resnet().eval()
    ds = toy_dataset(8)
    x, y = ds.images.float() / 255, ds.labels
    atk = PersistentFGSM(model, num_samples=8, eps=0.1, alpha=0.05)
    cf = sample_crop_flip(4, 2, torch.Generator().manual_seed(0))
    idx = torch.tensor([1, 3, 5, 7])
    h, w = x.shape[2:]
    with isolated_rng(0, torch.device("cpu")):
        adv = atk(apply_crop_flip(x[idx], cf, 0.5), y[idx], idx, cf)
    bank = atk.bank.clone()
    assert bank.shape == (8, x.shape[1], h + 4, w + 4)  # (N, C, H + 2 pad, W + 2 pad)
    assert bank.abs().max() <= 0.1 + 1e-6
    # the stored window, read through the same crop/flip, is exactly what was applied
    expected = apply_crop_flip(x[idx], cf, 0.5) + take_crop_flip(bank[idx], cf, h, w)
    assert torch.allclose(adv, expected, atol=1e-6)
    assert adv.min() >= 0 and adv.max() <= 1
    # untouched samples keep their initial perturbation; a batch without the bank's padding is refused
    with pytest.raises(ConfigError, match="padding 0"):
        atk(x[[0]], y[[0]], torch.tensor([0]), None)
    assert torch.equal(atk.bank[[0, 2, 4, 6]], bank[[0, 2, 4, 6]])


def test_persistent_fgsm_soft_targets_follow_the_official_rule():
    """targets = beta * onehot + (1 - beta) * t, with t <- rho * t + (1 - rho) * softmax (t starts one-hot)."""
    model = tiny_robin_resnet().eval()
    ds = toy_dataset(4)
    x, y = ds.images.float() / 255, ds.labels
    atk = PersistentFGSM(model, num_samples=4, eps=0.1, alpha=0.05)
    idx = torch.arange(4)
    seen = []
    handle = model.register_forward_hook(lambda m, i, o: seen.append(o.detach().softmax(1)))
    with isolated_rng(0, torch.device("cpu")):
        atk(x, y, idx, None)
    onehot = torch.nn.functional.one_hot(y, seen[0].shape[1]).float()
    t1 = 0.9 * onehot + 0.1 * seen[0]
    assert torch.allclose(atk.targets, 0.1 * onehot + 0.9 * t1, atol=1e-6)
    with isolated_rng(1, torch.device("cpu")):
        atk(x, y, idx, None)
    handle.remove()
    t2 = 0.9 * t1 + 0.1 * seen[1]
    assert torch.allclose(atk.targets, 0.1 * onehot + 0.9 * t2, atol=1e-6)
    assert torch.allclose(atk.targets.sum(1), torch.ones(4))


def test_persistent_fgsm_compresses_large_images_like_the_official_code():
    assert PersistentFGSM.bank_shape((3, 224, 224), 4) == (3, 29, 29)  # ceil(232 / 8)
    assert PersistentFGSM.bank_shape((3, 32, 32), 4) == (3, 40, 40)


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


def test_trainer_learns_the_toy_task(tmp_path, tiny_config):
    ds = toy_dataset(384)
    cfg = tiny_config(epochs=6, attack="ffgsm", out_dir=str(tmp_path))
    trainer = Trainer(tiny_robin_resnet(), cfg, ds.subset(torch.arange(320)), ds.subset(torch.arange(320, 384)), out_dir=tmp_path)
    result = trainer.fit()
    assert result["val/clean_acc"] >= 0.85 and result["val/robust_acc"] >= 0.7, result
    for name in ("config.json", "metrics.csv", "checkpoint.safetensors", "model.safetensors", "model_best.safetensors"):
        assert (tmp_path / name).is_file(), name
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(rows) == 7 and "val/robust_acc" in rows[0] and "prune/keep_ratio" in rows[0]


def test_plain_loop_with_hooks_equals_trainer(tiny_config):
    """The documented plain-PyTorch loop and the Trainer give the same scores and metrics."""
    ds = toy_dataset(96)
    cfg = tiny_config(epochs=2, attack="pgd", attack_steps=2, step_size=0.05, lr_schedule="constant")
    trainer = Trainer(tiny_robin_resnet(), cfg, ds, None)
    result = trainer.fit()

    # --- the plain loop of docs/training.md ---
    model = tiny_robin_resnet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    adv = AdversarialTraining("pgd", eps=0.1, step_size=0.05, steps=2, seed=0)
    hooks = [ProgressivePruning(keep_ratio=0.2, p=0.1, stages=1), adv]
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
            fire(hooks, Event.LOSS, state)         # adv sets state.loss
            fire(hooks, Event.AFTER_LOSS, state)
            opt.zero_grad()
            state.loss.backward()
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
def test_resume_gives_the_uninterrupted_result(tmp_path, attack, channels_last, tiny_config, with_defaults):
    ds = toy_dataset(96)
    val = toy_dataset(32, seed=1)
    cfg = tiny_config(epochs=3, attack=attack, attack_steps=2, step_size=0.05, augment=True, prune_steps=2,
                      channels_last=channels_last)
    # width 8: narrower shortcuts would make the channels_last guard keep the default layout
    make = (lambda: tiny_robin_resnet(width=8)) if channels_last else tiny_robin_resnet
    full = Trainer(make(), cfg, ds, val, out_dir=tmp_path / "full")
    assert full.channels_last is channels_last
    r_full = full.fit()

    class Crash(Hook):
        def on_batch_start(self, state):
            if state.epoch == 1 and state.batch_idx == 1:
                raise KeyboardInterrupt  # as if the run died in the middle of epoch 1

    with pytest.raises(KeyboardInterrupt):
        with_defaults(make(), cfg, ds, val, [Crash()], out_dir=tmp_path / "part").fit()
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


def test_resume_refuses_a_different_config(tmp_path, tiny_config):
    ds = toy_dataset(64)
    Trainer(tiny_robin_resnet(), tiny_config(epochs=1), ds, None, out_dir=tmp_path).fit()
    with pytest.raises(CheckpointError, match="different config"):
        Trainer(tiny_robin_resnet(), tiny_config(epochs=2, lr=0.01), ds, None, out_dir=tmp_path).fit(resume=True)


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
    model = tiny_robin_resnet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.rand(4, 1, 12, 12)).sum().backward()
    opt.step()
    path = save_checkpoint(tmp_path / "c.safetensors", model.state_dict(), {"optimizer": opt.state_dict(), "epoch": 3})
    ms, st_ = load_checkpoint(path)
    assert st_["epoch"] == 3
    opt2 = torch.optim.SGD(tiny_robin_resnet().parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(st_["optimizer"])
    data = path.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "trunc.safetensors")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.safetensors")


# --- config ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_survives_its_config_json_and_resolves(name):
    """A preset's run writes config.json and load_run / resume read it back: the same config must come back."""
    from robin_plugin.data import dataset_info

    cfg = apply_overrides(get_preset(name), {})
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    resolved = resolve_attack_sizes(cfg)
    assert 0 < resolved.eps <= 1 and 0 < resolved.step_size <= 1 and 0 < resolved.eval_step_size <= 1
    assert dataset_info(cfg.dataset).name == cfg.dataset


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


def test_validation_uses_the_pgd_step_of_robin_eval(monkeypatch, tiny_config):
    """`robin train` reports PGD-k with the step `robin eval` uses (eps / 4), not the training attack's step."""
    import robin_plugin.training.trainer as trainer_mod
    from robin_plugin.eval import default_pgd_step, pgd_attack

    seen = []
    real = trainer_mod.clean_and_pgd_accuracy

    def recording(model, x, y, **kw):
        seen.append(kw)
        return real(model, x, y, **kw)

    monkeypatch.setattr(trainer_mod, "clean_and_pgd_accuracy", recording)
    cfg = resolve_attack_sizes(tiny_config(epochs=1, attack="ffgsm", step_size=0.125, eval_step_size=None))
    Trainer(tiny_robin_resnet(), cfg, toy_dataset(64), toy_dataset(16, seed=1)).fit()
    assert len(seen) == 1 and seen[0]["eps"] == 0.1
    assert seen[0]["step_size"] == default_pgd_step(0.1) == pgd_attack(torch.nn.Linear(2, 2), 0.1, 20).alpha != 0.125


# --- ProgressivePruning: one source of truth for the target ---------------------------------
def test_progressive_pruning_defaults_to_the_models_own_target_in_three_stages():
    model = timm.create_model("robin_resnet18", in_chans=1, width=4, keep_ratio=0.05, p=0.3)
    hook = ProgressivePruning()
    state = TrainState(model, None, epochs=3, steps_per_epoch=1)
    hook.on_fit_start(state)
    assert (hook.keep_ratio, hook.p, hook.stages) == (0.05, 0.3, 3)
    assert state.metrics["prune/keep_ratio"] == pytest.approx(0.05 ** (1 / 3))  # progressive from the start
    state.epoch = 2
    hook.on_epoch_start(state)
    assert state.metrics["prune/keep_ratio"] == pytest.approx(0.05)
    assert [m.keep_ratio for _, m in masked_layers(model)] == robin_plugin.adaptive_keep_ratios(
        [m.weight.numel() for _, m in masked_layers(model)], 0.05, 0.3)


def test_progressive_pruning_says_when_it_overrides_the_model(caplog):
    model = timm.create_model("robin_resnet18", in_chans=1, width=4, keep_ratio=0.05)
    with caplog.at_level(logging.WARNING, logger="robin_plugin.training.hooks"):
        ProgressivePruning(keep_ratio=0.1, stages=1).on_fit_start(TrainState(model, None, epochs=1, steps_per_epoch=1))
    assert "keep_ratio=0.1 given, the model was built with 0.05" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="robin_plugin.training.hooks"):
        ProgressivePruning(keep_ratio=0.05, p=0.1, stages=1).on_fit_start(TrainState(model, None, epochs=1, steps_per_epoch=1))
    assert caplog.text == ""


def test_progressive_pruning_on_a_robinified_model_keeps_what_its_layers_keep():
    import torch.nn as nn

    model = robin_plugin.robinify(nn.Sequential(nn.Conv2d(1, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 2)), keep_ratio=0.2)
    kept = sum(m.kept for _, m in masked_layers(model)) / sum(m.weight.numel() for _, m in masked_layers(model))
    hook = ProgressivePruning(stages=1)
    hook.on_fit_start(TrainState(model, None, epochs=1, steps_per_epoch=1))
    assert hook.keep_ratio == pytest.approx(kept) and hook.p == 0.1


# --- a trainer that knows no algorithm: loss events, declared built-ins, hook state by name ---
def test_the_loss_is_whatever_the_hooks_leave_in_state_loss(tiny_config, with_defaults):
    """An AFTER_LOSS hook that zeroes the loss leaves the scores where they started (no weight decay)."""

    class NoLearning(Hook):
        def on_after_loss(self, state):
            state.loss = state.loss * 0.0

    model = tiny_robin_resnet()
    before = {k: v.clone() for k, v in model.state_dict().items() if k.endswith("scores")}
    with_defaults(model, tiny_config(epochs=1, weight_decay=0.0), toy_dataset(64), None, [NoLearning()]).fit()
    after = {k: v for k, v in model.state_dict().items() if k.endswith("scores")}
    assert before and all(torch.equal(before[k], after[k]) for k in before)

    class Forgets(Hook):
        def on_loss(self, state):
            state.loss = None

    with pytest.raises(ConfigError, match="no hook set state.loss"):
        with_defaults(tiny_robin_resnet(), tiny_config(epochs=1), toy_dataset(64), None, [Forgets()]).fit()


def test_adversarial_loss_goes_through_state_net():
    """Under DDP the loss's forward must go through the wrapper: the hook calls state.net, not state.model."""
    model = tiny_robin_resnet()
    calls = []

    class Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            calls.append(x.shape[0])
            return self.inner(x)

    x = toy_dataset(8).images.float() / 255
    with torch.no_grad():
        logits = model(x)
    y = logits.argmax(1)
    y[:2] = 1 - y[:2]  # 6 of 8 right: 0.75, an accuracy that no mix-up of right and wrong keeps
    adv = AdversarialTraining("none", eps=0.1, step_size=0.05)
    state = TrainState(model, net=Wrapper(model))
    state.set_batch(x, y)
    adv.on_batch_start(state)
    fire([adv], Event.LOSS, state)
    assert calls == [8] and torch.allclose(state.loss.detach(), F.cross_entropy(logits, y))
    assert state.batch_metrics["train/clean_acc"] == 0.75
    assert TrainState(model).net is model  # a plain loop: the model itself


def test_default_hooks_are_declared_and_the_trainer_runs_what_it_receives(tiny_config):
    masked = Trainer(tiny_robin_resnet(), tiny_config(), toy_dataset(64), None)
    assert [type(h).__name__ for h in masked.hooks] == [
        "LRSchedule", "ProgressivePruning", "AdversarialTraining", "BestModel", "MetricLogger",
        "CatastrophicOverfittingGuard"]
    assert masked.state.hooks is masked.hooks and masked.guard is masked.hooks[-1]
    assert [type(h) for h in default_hooks(tiny_config(), tiny_robin_resnet(), toy_dataset(64))] == [type(h) for h in masked.hooks]
    only = [AdversarialTraining("none")]
    bare = Trainer(tiny_robin_resnet(), tiny_config(), toy_dataset(64), None, hooks=only)
    assert bare.hooks == only and bare.adversarial is only[0] and bare.lr_schedule is None and bare.logger is None
    dense = timm.create_model("robin_resnet18_dense", num_classes=2, in_chans=1, width=4, mean=(0.5,), std=(0.25,))
    plain = Trainer(dense, tiny_config(model="robin_resnet18_dense", attack="pgd", attack_steps=1, augment=True),
                    toy_dataset(64), None, out_dir=None)
    assert plain.pruning is None and isinstance(plain.augmentation, RandomCropFlip) and plain.guard is None
    assert plain.checkpointing is None
    assert [type(h).__name__ for h in plain.hooks] == [
        "LRSchedule", "RandomCropFlip", "AdversarialTraining", "BestModel", "MetricLogger"]


def test_the_dataset_decides_augmentation_only_when_augment_is_unset():
    assert TrainConfig(dataset="cifar10", progress=False).augmentation_on
    assert not TrainConfig(dataset="fashion_mnist", progress=False).augmentation_on
    assert not TrainConfig(dataset="cifar10", augment=False, progress=False).augmentation_on
    assert TrainConfig(dataset="fashion_mnist", augment=True, progress=False).augmentation_on


def test_hook_names_default_to_the_class_and_must_be_unique(tiny_config, with_defaults):
    class Counter(Hook):
        pass

    a, b = Counter(), Counter()
    assert a.name == "Counter" and MetricLogger().name == "MetricLogger"
    with pytest.raises(ConfigError, match="two hooks are named 'Counter'"):
        with_defaults(tiny_robin_resnet(), tiny_config(), toy_dataset(64), None, [a, b])
    b.name = "Counter2"
    with_defaults(tiny_robin_resnet(), tiny_config(), toy_dataset(64), None, [a, b])
    with pytest.raises(ConfigError, match="MetricLogger"):
        with_defaults(tiny_robin_resnet(), tiny_config(), toy_dataset(64), None, [MetricLogger()])
    with pytest.raises(ConfigError, match="non-empty string"):
        a.name = ""


class _Tally(Hook):
    """A stateful user hook: counts its batches and keeps a tag, so a restore into the wrong hook shows."""

    def __init__(self, tag: str):
        self.name, self.tag, self.batches = tag, tag, 0

    def on_batch_end(self, state):
        self.batches += 1

    def state_dict(self):
        return {"tag": self.tag, "batches": self.batches}

    def load_state_dict(self, state):
        if state["tag"] != self.tag:
            raise CheckpointError(f"got the state of {state['tag']!r}")
        self.batches = state["batches"]


def test_hook_state_is_restored_by_name_whatever_the_order(tmp_path, tiny_config, with_defaults):
    ds = toy_dataset(64)
    cfg = tiny_config(epochs=2, attack="none")
    first = [_Tally("a"), _Tally("b")]
    with_defaults(tiny_robin_resnet(), dataclasses.replace(cfg, epochs=1), ds, None, first, out_dir=tmp_path).fit()
    _, saved = robin_plugin.training.load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert [h["name"] for h in saved["hooks"]][-2:] == ["a", "b"]
    again = [_Tally("b"), _Tally("a"), _Tally("c")]  # another order, and a new hook that starts fresh
    with_defaults(tiny_robin_resnet(), cfg, ds, None, again, out_dir=tmp_path).fit(resume=True)
    assert [h.batches for h in again] == [4, 4, 2]  # 2 batches per epoch; c saw only epoch 1


def test_old_checkpoints_without_hook_names_still_resume(tmp_path, tiny_config, with_defaults):
    """Checkpoints written before hook names list {type, state} in the old trainer's order."""
    ds, val = toy_dataset(64), toy_dataset(16, seed=1)
    cfg = tiny_config(epochs=2, attack="fast", step_size=0.05, augment=True)
    full = Trainer(tiny_robin_resnet(), cfg, ds, val).fit()

    class Crash(Hook):
        def on_epoch_start(self, state):
            if state.epoch == 1:
                raise KeyboardInterrupt  # the run dies after its checkpoint of epoch 0

    with pytest.raises(KeyboardInterrupt):
        with_defaults(tiny_robin_resnet(), cfg, ds, val, [Crash()], out_dir=tmp_path).fit()
    path = tmp_path / "checkpoint.safetensors"
    model_state, state = robin_plugin.training.load_checkpoint(path)
    by_type = {h["type"]: h["state"] for h in state["hooks"]}
    old_order = ["ProgressivePruning", "AdversarialTraining", "MetricLogger", "CatastrophicOverfittingGuard"]
    state["hooks"] = [{"type": t, "state": by_type[t]} for t in old_order]
    robin_plugin.training.save_checkpoint(path, model_state, state)
    resumed = Trainer(tiny_robin_resnet(), cfg, ds, val, out_dir=tmp_path).fit(resume=True)
    timeless = lambda r: {k: v for k, v in r.items() if not k.startswith("time/")}
    assert timeless(resumed) == timeless(full)


def test_a_restored_history_must_match_the_checkpoint_epoch(tmp_path, tiny_config):
    ds = toy_dataset(64)
    cfg = tiny_config(epochs=2, attack="none")
    Trainer(tiny_robin_resnet(), cfg, ds, None, out_dir=tmp_path).fit()
    path = tmp_path / "checkpoint.safetensors"
    model_state, state = robin_plugin.training.load_checkpoint(path)
    logger = next(h for h in state["hooks"] if h["name"] == "MetricLogger")
    logger["state"]["history"] = logger["state"]["history"][:1]  # one row for two finished epochs
    robin_plugin.training.save_checkpoint(path, model_state, state)
    with pytest.raises(CheckpointError, match=r"one row per finished epoch \(epochs 0..1\), got 1 rows"):
        Trainer(tiny_robin_resnet(), cfg, ds, None, out_dir=tmp_path).fit(resume=True)


def test_lr_schedule_hook_sets_the_rate_of_each_step(tiny_config):
    model = tiny_robin_resnet()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    hook = LRSchedule("step", base_lr=0.1, milestones=(0.5,))
    state = TrainState(model, opt, epochs=2, steps_per_epoch=4)
    for epoch, batch, lr in [(0, 0, 0.1), (0, 3, 0.1), (1, 0, 0.01), (1, 3, 0.01)]:
        state.epoch, state.batch_idx = epoch, batch
        hook.on_batch_start(state)
        assert [g["lr"] for g in opt.param_groups] == [pytest.approx(lr)] * len(opt.param_groups)
    with pytest.raises(ConfigError, match="lr_schedule"):
        LRSchedule("linear")
    # in a real loop: the epoch's logged lr is the schedule's at the last step
    cfg = tiny_config(epochs=2, attack="none", lr_schedule="cosine")
    result = Trainer(tiny_robin_resnet(), cfg, toy_dataset(64), None).fit()
    assert result["lr"] == robin_plugin.training.lr_at("cosine", (1 + 1 / 2) / 2, cfg.lr)


def test_random_crop_flip_hook_augments_reproducibly_and_sets_crop_flip():
    ds = toy_dataset(8)
    x = ds.images.float() / 255

    def run(epoch):
        hook = RandomCropFlip(pad=2, seed=3)
        state = TrainState(torch.nn.Identity(), epoch=epoch)
        hook.on_epoch_start(state)
        state.set_batch(x.clone(), ds.labels, torch.arange(8))
        hook.on_batch_start(state)
        return state

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    assert torch.equal(a.x, apply_crop_flip(x, a.crop_flip)) and a.crop_flip.pad == 2
    with pytest.raises(ConfigError, match="pad"):
        RandomCropFlip(pad=-1)


def test_best_model_keeps_the_best_record_and_writes_its_weights(tmp_path):
    model = tiny_robin_resnet()
    hook = BestModel(tmp_path)
    state = TrainState(model)
    hook.on_fit_start(state)
    assert state.best == {"val/robust_acc": -1.0, "epoch": -1}
    for epoch, robust in enumerate([0.4, 0.6, 0.5]):
        state.epoch, state.metrics = epoch, {"train/loss": 1.0, "val/clean_acc": 0.9, "val/robust_acc": robust}
        hook.on_validation(state)
    assert state.best == {"val/robust_acc": 0.6, "val/clean_acc": 0.9, "epoch": 1}
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model_best.safetensors"), "pt") as f:
        assert f.metadata() == {"epoch": "1", "val_robust_acc": "0.6"}
    state.metrics = {"train/loss": 1.0}  # no validation set: nothing changes
    hook.on_validation(state)
    assert state.best["epoch"] == 1


def test_checkpointing_hook_writes_every_n_epochs_and_after_the_last(tmp_path):
    model = tiny_robin_resnet()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    hook = Checkpointing(tmp_path, {"seed": 0}, every=2)
    state = TrainState(model, opt, epochs=3, hooks=[hook, MetricLogger()])
    written = []
    for epoch in range(3):
        state.epoch, state.step = epoch, epoch + 1
        hook.on_epoch_checkpoint(state)
        if (tmp_path / "checkpoint.safetensors").exists():
            written.append(robin_plugin.training.load_checkpoint(tmp_path / "checkpoint.safetensors")[1]["epoch"])
    assert sorted(set(written)) == [1, 2]
    _, saved = robin_plugin.training.load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert [(h["name"], h["type"]) for h in saved["hooks"]] == [("Checkpointing", "Checkpointing"),
                                                                ("MetricLogger", "MetricLogger")]
    assert saved["config"] == {"seed": 0} and (tmp_path / "model.safetensors").exists()


def test_progressive_pruning_takes_stages_only():
    assert ProgressivePruning(stages=2).stages == 2 and ProgressivePruning().stages == 3
    with pytest.raises(TypeError):
        ProgressivePruning(steps=2)
    with pytest.raises(TypeError):
        progressive_keep_ratio(0.0, 0.25, steps=2)
