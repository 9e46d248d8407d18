"""The catastrophic-overfitting guard: its rule, each action, resume, and a real run."""
from __future__ import annotations

import logging

import pytest
import torch

from robin_plugin.testing import tiny_robin_resnet, toy_dataset
from robin_plugin.training import (
    AdversarialTraining, CatastrophicOverfittingError, CatastrophicOverfittingGuard, Trainer, TrainState, is_collapse,
)


@pytest.mark.parametrize("pgd, best, train, collapse", [
    (0.10, 0.50, 0.90, True),    # PGD fell 0.4 below the best, training attack 0.8 above: collapse
    (0.35, 0.50, 0.90, False),   # fell only 0.15
    (0.10, 0.50, 0.35, False),   # the training attack's accuracy fell with it: plain underfitting
    (0.10, -1.0, 0.90, False),   # no good check yet, and not under the floor
    (0.02, -1.0, 0.55, True),    # never robust: under the floor while the training attack says 55%
    (0.02, -1.0, 0.10, False),   # an untrained model: both low
])
def test_the_rule(pgd, best, train, collapse):
    assert is_collapse(pgd, best, train) is collapse
    if best < 0:  # the floor only counts after the first epoch
        assert is_collapse(pgd, best, train, warm=False) is False


def _guard(action, model, **kw):
    x = torch.rand(8, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    adv = AdversarialTraining("ffgsm", eps=0.1, step_size=0.125)
    adv.build(model)
    return CatastrophicOverfittingGuard(adv, x, torch.zeros(8, dtype=torch.long), eps=0.1, every=1, action=action, **kw)


def _run_checks(guard, state, pgd_accs, train_accs):
    """Feed the guard checks with scripted PGD accuracies (the measurement itself is tested below)."""
    it = iter(pgd_accs)
    guard.measure = lambda model, step: next(it)
    for train_acc in train_accs:
        state.step += 1
        state.batch_metrics = {"train/robust_acc": train_acc}
        with torch.no_grad():  # the model moves between checks, as training would move it
            next(iter(state.model.parameters())).add_(1.0)
        guard.on_batch_end(state)


def test_warn_logs_counts_and_reports_in_metrics(caplog):
    model = tiny_robin_resnet()
    guard, state = _guard("warn", model), TrainState(model, None)
    with caplog.at_level(logging.WARNING, logger="robin_plugin.training.guard"):
        _run_checks(guard, state, [0.5, 0.55, 0.1], [0.5, 0.6, 0.9])
    assert guard.collapses == 1 and "catastrophic overfitting at step 3" in caplog.text
    assert state.batch_metrics["guard/pgd_acc"] == 0.1  # the progress line shows it
    guard.on_epoch_end(state)
    assert state.metrics == {"guard/pgd_acc": 0.1, "guard/train_acc": 0.9, "guard/collapses": 1.0}


def test_stop_raises_a_typed_error():
    model = tiny_robin_resnet()
    guard, state = _guard("stop", model), TrainState(model, None)
    with pytest.raises(CatastrophicOverfittingError, match="training stopped"):
        _run_checks(guard, state, [0.5, 0.1], [0.5, 0.9])


def test_rollback_restores_the_last_good_state_and_halves_the_step():
    model = tiny_robin_resnet()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    guard, state = _guard("rollback", model, max_rollbacks=1), TrainState(model, opt)
    _run_checks(guard, state, [0.5], [0.5])
    good = {k: v.clone() for k, v in model.state_dict().items()}
    _run_checks(guard, state, [0.1], [0.9])  # collapse: back to the state of the good check
    assert all(torch.equal(good[k], v) for k, v in model.state_dict().items())
    adv = guard.adversarial  # and on with PGD-2, step eps / 2
    assert (adv.attack_name, adv.steps, adv.step_size) == ("pgd", 2, 0.05) and type(adv.attack).__name__ == "PGD"
    assert adv.attack.steps == 2 and adv.attack.alpha == pytest.approx(0.05)
    with pytest.raises(CatastrophicOverfittingError, match="1 rollbacks already"):
        _run_checks(guard, state, [0.1], [0.9])


def test_measure_is_pgd_accuracy_in_eval_mode_and_leaves_the_rng_alone():
    model = tiny_robin_resnet().train()
    guard = _guard("warn", model)
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    acc = guard.measure(model, step=5)
    assert 0.0 <= acc <= 1.0 and model.training
    assert torch.equal(torch.rand(1), expected_next)
    assert guard.measure(model, step=5) == acc  # seeded per step


def test_state_round_trips_for_resume():
    model = tiny_robin_resnet()
    guard, state = _guard("rollback", model), TrainState(model, None)
    _run_checks(guard, state, [0.5], [0.5])
    guard.adversarial.attack_name, guard.adversarial.steps, guard.adversarial.step_size = "pgd", 2, 0.05
    saved = guard.state_dict()
    fresh = _guard("rollback", tiny_robin_resnet())
    fresh.load_state_dict(saved)
    assert (fresh.best, fresh.collapses, fresh.rollbacks) == (0.5, 0, 0)
    assert (fresh.adversarial.attack_name, fresh.adversarial.steps, fresh.adversarial.step_size) == ("pgd", 2, 0.05)


def test_trainer_runs_it_for_single_step_attacks_only(tmp_path, tiny_config):
    ds, val = toy_dataset(96), toy_dataset(32, seed=1)
    fast = Trainer(tiny_robin_resnet(), tiny_config(attack="ffgsm", co_guard_every=2), ds, val, out_dir=tmp_path / "a")
    assert fast.guard is not None and fast.guard in fast.hooks
    result = fast.fit()
    assert result["guard/collapses"] == 0.0 and 0.0 <= result["guard/pgd_acc"] <= 1.0  # a normal run never fires it
    assert "guard/pgd_acc" in (tmp_path / "a" / "metrics.csv").read_text().splitlines()[0]
    assert Trainer(tiny_robin_resnet(), tiny_config(attack="pgd", attack_steps=2), ds, val).guard is None
    assert Trainer(tiny_robin_resnet(), tiny_config(attack="ffgsm", co_guard="off"), ds, val).guard is None


FMNIST = __import__("pathlib").Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


@pytest.mark.slow
@pytest.mark.skipif(not FMNIST.exists(), reason="Debian's dataset-fashion-mnist is not installed")
@pytest.mark.parametrize("action", ["warn", "rollback"])
def test_plain_fgsm_with_a_large_step_collapses_and_the_guard_fires(action, caplog):
    """Provoked on purpose: FGSM without a random start at eps 0.2 on 576 Fashion-MNIST images, crafted in
    eval mode (crafted in train mode, as the training attacks are by default, this budget does not collapse)."""
    from robin_plugin.data import dataset_info
    from robin_plugin.training import TrainConfig
    from robin_plugin.training.run import load_data, resolve_attack_sizes
    from robin_plugin.models.spec import build_model

    cfg = resolve_attack_sizes(TrainConfig(
        model="robin_resnet18", keep_ratio=0.2, model_kwargs={"width": 8}, attack="fgsm", eps=0.2, step_size=0.2, epochs=3,
        batch_size=64, train_subset=640, val_fraction=0.1, progress=False, device="cpu", test_n=0, val_pgd_steps=2,
        co_guard=action, co_guard_every=5, attack_mode="eval"))
    train_set, val_set, _ = load_data(cfg)
    info = dataset_info(cfg.dataset)
    trainer = Trainer(build_model(cfg.model_spec(10, 1, info.mean, info.std)), cfg, train_set, val_set)
    with caplog.at_level(logging.WARNING, logger="robin_plugin.training.guard"):
        try:
            result = trainer.fit()
        except CatastrophicOverfittingError:  # rollback gives up after max_rollbacks
            result = {"guard/collapses": trainer.guard.collapses}
    assert result["guard/collapses"] >= 1 and "catastrophic overfitting" in caplog.text
    if action == "rollback":
        assert trainer.guard.rollbacks >= 1 and trainer.adversarial.attack_name == "pgd"
