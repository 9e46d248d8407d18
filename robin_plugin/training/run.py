"""One training run from a :class:`TrainConfig`: data, model, trainer, final test evaluation."""
from __future__ import annotations

import dataclasses
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from ..data import dataset_info, get_dataset, validation_split
from ..errors import CheckpointError, ConfigError, RobinError
from ..formats.files import FileContentError, parse_json, read_safetensors, read_safetensors_checked
from ..io import atomic_write_json, read_limited
from ..models.spec import build_model
from ..pgd import default_pgd_step
from ..pruning import is_masked
from ..summary import storage_bytes, summarize
from .config import MAX_CONFIG_BYTES, TrainConfig
from .events import Hook
from .metrics import clean_and_pgd_accuracy
from .trainer import Trainer, default_hooks, gather

__all__ = ["resolve_attack_sizes", "load_data", "load_run", "model_figures", "train"]

_log = logging.getLogger(__name__)


def resolve_attack_sizes(config: TrainConfig) -> TrainConfig:
    """Fill ``eps`` and ``step_size`` from the dataset's defaults and the attack's rule.

    eps: the dataset's (0.1 Fashion-MNIST, 8/255 CIFAR, 2/255 ImageNet-100). step_size: the
    dataset's PGD step for ``pgd`` / ``trades``, 1.25 * eps for ``ffgsm`` (Wong et al.), eps / 2
    for the paper's ``fast``. eval_step_size (validation and test PGD): eps / 4, the rule
    ``robin eval`` uses.
    """
    info = dataset_info(config.dataset)
    eps = config.eps if config.eps is not None else info.default_eps
    step = config.step_size
    if step is None:
        step = {"ffgsm": 1.25 * eps, "fast": eps / 2}.get(config.attack, info.default_step)
    # validation / test PGD: the same step rule as `robin eval`, so both report the same PGD-k accuracy
    eval_step = config.eval_step_size if config.eval_step_size is not None else default_pgd_step(eps)
    return dataclasses.replace(config, eps=eps, step_size=min(step, 1.0), eval_step_size=eval_step)


def load_data(config: TrainConfig):
    """(train, val, test) datasets of ``config``: subset, then the held-out validation split."""
    options = {k: v for k, v in (("image_size", config.image_size), ("class_list", config.class_list)) if v is not None}
    train_full = get_dataset(config.dataset, config.data_root, split="train", **options)
    if config.train_subset is not None and config.train_subset < len(train_full):
        train_full = train_full.subset(torch.arange(config.train_subset))
    tr, va = validation_split(len(train_full), config.val_fraction, config.seed)
    if len(tr) < 2:  # BatchNorm needs two images per batch; torch would fail mid-step with its own ValueError
        raise ConfigError(f"val_fraction={config.val_fraction} leaves {len(tr)} of {len(train_full)} training images "
                          "for training; training needs at least 2 (lower val_fraction or raise train_subset)")
    test_split = "val" if config.dataset == "imagenet100" else "test"
    test = get_dataset(config.dataset, config.data_root, split=test_split, **options) if config.test_n else None
    return train_full.subset(tr), (train_full.subset(va) if len(va) else None), test


def train(config: TrainConfig, *, resume: bool | str = False, hooks: list[Hook] | None = None) -> dict[str, Any]:
    """Train ``config`` end to end and evaluate clean / PGD accuracy on the first ``test_n`` test images.

    The evaluated model is the epoch with the best PGD accuracy on the held-out split (the last
    epoch when there is no held-out split).

    Writes ``config.json``, ``checkpoint.safetensors``, ``model.safetensors``,
    ``model_best.safetensors``, ``metrics.csv`` and ``results.json`` into ``config.out_dir``.

    Returns:
        The results dict (also in ``results.json``).
    """
    config = resolve_attack_sizes(config)
    info = dataset_info(config.dataset)
    train_set, val_set, test_set = load_data(config)
    torch.manual_seed(config.seed)
    model = build_model(config.model_spec(info.num_classes, info.in_chans, info.mean, info.std))
    out_dir = Path(config.out_dir)
    run_hooks = [*default_hooks(config, model, train_set, val_set, out_dir), *(hooks or [])]
    trainer = Trainer(model, config, train_set, val_set, hooks=run_hooks, out_dir=out_dir)
    t0 = time.perf_counter()
    final = trainer.fit(resume=resume)
    train_time = time.perf_counter() - t0
    result: dict[str, Any] = {
        "model": config.model, "dataset": config.dataset, "attack": config.attack, "eps": config.eps,
        "epochs": config.epochs, "train_images": len(train_set), "train_time_s": train_time,
        "final": dict(final), "best_epoch": trainer.best.get("epoch"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "device": str(trainer.device),
                    "torch": torch.__version__,
                    **({"accelerator": torch.cuda.get_device_name(trainer.device)} if trainer.device.type == "cuda" else {})},
    }
    result.update(model_figures(model))
    best = out_dir / "model_best.safetensors"
    if best.is_file():  # the paper's protocol: evaluate the epoch with the best held-out PGD accuracy
        model.load_state_dict(read_safetensors(best)[0])  # a file this run wrote
        result["evaluated"] = f"best epoch ({trainer.best.get('epoch')})"
    else:
        result["evaluated"] = "last epoch"
    if test_set is not None and config.test_n:
        n = min(config.test_n, len(test_set))
        x, y = gather(test_set, torch.arange(n))  # in-memory or lazily decoded (ImageNet-100)
        m = clean_and_pgd_accuracy(model, x, y, eps=config.eps, step_size=config.eval_step_size,
                                   steps=config.test_pgd_steps, seed=config.seed, device=trainer.device,
                                   iterate=config.pgd_iterate)
        result["test"] = {"n": n, "clean_acc": m["clean_acc"], f"pgd{config.test_pgd_steps}_acc": m["robust_acc"]}
    if trainer.rank == 0:
        atomic_write_json(out_dir / "results.json", result)
    return result


def model_figures(model: torch.nn.Module) -> dict[str, Any]:
    """The model fields of ``results.json``: keep_ratio, kept_weights (masked models), total_weights, storage.

    ``storage`` is :func:`robin_plugin.summary.storage_bytes`, the figures ``robin models`` and
    ``robin eval`` print too. A dense model: keep_ratio 1.0 and total_weights its parameter count.
    """
    if is_masked(model):
        s = summarize(model)
        return dict(keep_ratio=s.keep_ratio, kept_weights=s.kept, total_weights=s.total, storage=storage_bytes(model))
    return dict(keep_ratio=1.0, total_weights=sum(p.numel() for p in model.parameters()), storage=storage_bytes(model))


def load_run(run_dir: str | Path, which: str = "best") -> tuple[torch.nn.Module, TrainConfig]:
    """Rebuild the model of a finished (or interrupted) run and load its weights.

    Reads ``config.json`` to rebuild the exact architecture (dataset classes, channels and
    statistics, keep ratio and p) and loads ``model_best.safetensors`` (``which="best"``) or
    ``model.safetensors`` (``"last"``). The model is returned in eval mode on the CPU.

    Raises:
        CheckpointError: the folder, its config or its weights are missing or do not match.
    """
    run_dir = Path(run_dir)
    files = {"best": "model_best.safetensors", "last": "model.safetensors"}
    if which not in files:
        raise CheckpointError(f"which must be 'best' or 'last', got {which!r}")
    cfg_path, weights = run_dir / "config.json", run_dir / files[which]
    if not cfg_path.is_file() or not weights.is_file():
        raise CheckpointError(f"{run_dir} is not a finished robin run: expected config.json and {files[which]} in it")
    try:  # a run folder may come from elsewhere: its config.json is data, refused with CheckpointError
        raw = read_limited(cfg_path, MAX_CONFIG_BYTES)
    except OSError as e:
        raise CheckpointError(f"cannot read {cfg_path}: {e.strerror or e}") from e
    except ValueError as e:
        raise CheckpointError(f"{cfg_path} is not a valid run config: larger than {MAX_CONFIG_BYTES} bytes (1 MiB)") from e
    try:
        config = TrainConfig.from_dict(parse_json(raw))
        info = dataset_info(config.dataset)
        model = build_model(config.model_spec(info.num_classes, info.in_chans, info.mean, info.std))
    except FileContentError as e:  # not UTF-8, not JSON, nested too deeply
        raise CheckpointError(f"{cfg_path} is not a valid run config: {e}") from None
    except RecursionError as e:
        raise CheckpointError(f"{cfg_path} is not a valid run config: nested too deeply") from e
    except RobinError as e:  # ConfigError / UnknownNameError naming the bad key, from the config or the model spec
        raise CheckpointError(f"{cfg_path} is not a valid run config: {e}") from e
    except (ValueError, TypeError) as e:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"{cfg_path} is not a valid run config ({e})") from e
    state, _ = read_safetensors_checked(weights, CheckpointError, "{path} is not a readable safetensors file ({reason})",
                                        finite="a model must have finite weights, scores and statistics")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{weights} does not fit the model of {cfg_path}: {str(e)[:300]}") from e
    return model.eval(), config
