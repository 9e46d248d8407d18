"""A minimal adversarial trainer that fires the hook events (see :mod:`.events`)."""
from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn

from ..errors import ConfigError, InputError
from ..io import FolderLock, atomic_write_json, remove_stale_temp_files
from ..layers.masked import MaskedLayer
from ..memory_format import to_channels_last
from ..progress import progress
from ..models.spec import ModelSpec, build_model as build_from_spec
from ..summary import summary
from .attacks import AdversarialTraining, derive_seed
from .checkpoint import CheckpointError, check_train_state, load_checkpoint, save_checkpoint, save_state_dict
from .config import TrainConfig
from .events import Event
from .guard import SINGLE_STEP_ATTACKS, CatastrophicOverfittingGuard
from .hooks import Hook, MetricLogger, ProgressivePruning, fire
from .metrics import clean_and_pgd_accuracy
from .schedules import lr_at
from .state import TrainState

__all__ = ["Trainer", "TrainResult", "build_model", "epoch_order", "make_optimizer", "resolve_device"]

_log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.safetensors"


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA if available else CPU; otherwise ``torch.device(name)`` (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available here; use device=cpu or auto")
    return device


def build_model(config: TrainConfig, num_classes: int, in_chans: int, mean, std) -> nn.Module:
    """Create the timm model of ``config`` for a dataset's classes, channels and statistics."""
    kwargs = dict(num_classes=num_classes, in_chans=in_chans, mean=tuple(mean), std=tuple(std), seed=config.seed)
    if not config.model.endswith("_dense"):
        kwargs.update(keep_ratio=config.keep_ratio, p=config.p)
    kwargs.update(config.model_kwargs)
    # the config may come from a file: only validated architecture arguments reach timm
    return build_from_spec(ModelSpec.parse(config.model, kwargs, source="the run's model arguments"))


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.SGD:
    """SGD over the trainable parameters (the scores of a masked model)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


class TrainResult(dict):
    """Final metrics of a run (a dict) with ``out_dir`` attribute."""

    out_dir: Path


class Trainer:
    """Adversarially train a robin model (or its dense twin) on an in-memory image dataset.

    Args:
        model: the model (inputs in [0, 1]).
        config: the run's :class:`TrainConfig`.
        train_set: training data with ``images`` (N, C, H, W) uint8 and ``labels`` (N,) int64
            (e.g. :class:`robin_plugin.data.ImageDataset`). Floating-point images (float16 /
            32 / 64, values in [0, 1]) are accepted and converted to float32 per batch; other
            dtypes are refused with :class:`InputError`.
        val_set: held-out data of the same kind, or None.
        hooks: extra hooks, fired after the built-in ones.
        out_dir: folder for checkpoints, ``config.json`` and ``metrics.csv`` (None: no files).
            :meth:`fit` locks it (``out_dir/.robin.lock``): a second run on the same folder is
            refused with :class:`robin_plugin.io.FolderLockedError` naming the holder's pid.

    The model must be a classifier: ``model.num_classes`` (when it has one) must be >= 1.

    Under ``torchrun`` (``torch.distributed`` initialised) each rank trains on its share of every
    global batch of ``config.batch_size`` with DistributedDataParallel; rank 0 writes the files.
    """

    def __init__(self, model: nn.Module, config: TrainConfig, train_set: Any, val_set: Any = None,
                 hooks: Sequence[Hook] = (), out_dir: str | Path | None = None):
        self.config = config
        self.device = resolve_device(config.device)
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        if config.batch_size % self.world:
            raise ConfigError(f"batch_size {config.batch_size} must divide evenly over {self.world} processes")
        self.model = model.to(self.device)
        if self.distributed:
            from .distributed import convert_sync_batchnorm

            # BatchNorm statistics over the whole global batch, as in a one-process run
            self.model = convert_sync_batchnorm(self.model, self.device)
        # the guard keeps the default layout where torch's CPU backward would crash
        self.channels_last = bool(config.channels_last) and to_channels_last(self.model, self.device)
        self.train_set, self.val_set = train_set, val_set
        num_classes = getattr(model, "num_classes", None)
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1):
            # timm's num_classes=0 drops the classifier: the loss would treat pooled features as logits
            raise ConfigError(f"the model has num_classes={num_classes!r}; training needs a classifier with "
                              "num_classes >= 1 (num_classes=0 makes a timm model return features, not logits)")
        for name, ds in (("train_set", train_set), ("val_set", val_set)):
            _check_images(name, getattr(ds, "images", None))
            labels = getattr(ds, "labels", None)
            if isinstance(labels, torch.Tensor) and (labels.dtype.is_floating_point or labels.dtype == torch.bool
                                                     or labels.is_complex()):
                raise InputError(f"{name} labels must be integer class indices, got dtype {labels.dtype}")
            if num_classes and isinstance(labels, torch.Tensor) and labels.numel():
                lo, hi = int(labels.min()), int(labels.max())
                if lo < 0 or hi >= num_classes:
                    raise InputError(f"{name} has labels in [{lo}, {hi}], but the model has {num_classes} classes "
                                     f"(labels must be in [0, {num_classes - 1}])")
        n = len(train_set)
        if n < 1:
            raise ConfigError("the training set is empty")
        self.batch_size = min(config.batch_size, n - n % self.world) if n >= self.world else n
        self.steps_per_epoch = max(1, n // self.batch_size)  # last partial batch dropped
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.optimizer = make_optimizer(self.model, config)
        eps, step = config.eps, config.step_size
        if eps is None or step is None:
            raise ConfigError("config.eps and config.step_size must be set (robin_plugin.training.resolve_attack_sizes fills them)")
        self.adversarial = AdversarialTraining(
            config.attack, eps=eps, step_size=step, steps=config.attack_steps, trades_beta=config.trades_beta,
            num_samples=n, seed=config.seed,
        )
        self.logger = MetricLogger(self.out_dir if self.rank == 0 else None)
        builtin: list[Hook] = []
        if getattr(model, "masked", False) or any(hasattr(m, "scores") for m in model.modules()):
            builtin.append(ProgressivePruning(config.keep_ratio, config.p, config.prune_steps))
        self.guard = self._make_guard(config, train_set, val_set)
        extra = [self.guard] if self.guard is not None else []
        self.hooks: list[Hook] = [*builtin, self.adversarial, self.logger, *extra, *hooks]
        self.state = TrainState(self.model, self.optimizer, epochs=config.epochs, steps_per_epoch=self.steps_per_epoch)
        self.best: dict[str, float] = {"val/robust_acc": -1.0, "epoch": -1}
        self.start_epoch = 0
        self._net = self.model
        if self.distributed:
            # the fixed weights are identical on every rank (same seed): no need to broadcast buffers
            self._net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False,
            )

    def _make_guard(self, config: TrainConfig, train_set: Any, val_set: Any) -> CatastrophicOverfittingGuard | None:
        """The catastrophic-overfitting guard of single-step attacks, checking on held-out images."""
        if config.co_guard == "off" or config.attack not in SINGLE_STEP_ATTACKS:
            return None
        source = val_set if val_set is not None and len(val_set) else train_set
        idx = torch.arange(min(config.co_guard_n, len(source)))
        x, y = _gather(source, idx)
        return CatastrophicOverfittingGuard(self.adversarial, x, y, eps=config.eps, every=config.co_guard_every,
                                            action=config.co_guard, seed=config.seed)

    # --- data ------------------------------------------------------------------------------
    def _augment(self) -> bool:
        if self.config.augment is not None:
            return self.config.augment
        return self.config.dataset in ("cifar10", "cifar100", "imagenet100")

    def _batches(self, epoch: int):
        """Yield (x, y, index, crop_flip) for this rank; the same global order on every rank."""
        from ..data.augment import apply_crop_flip, sample_crop_flip

        perm = epoch_order(len(self.train_set), self.config.seed, epoch)
        g_aug = torch.Generator().manual_seed(derive_seed(self.config.seed, "augment", epoch))
        per_rank = self.batch_size // self.world
        for b in range(self.steps_per_epoch):
            idx = perm[b * self.batch_size:(b + 1) * self.batch_size]
            x, y = _gather(self.train_set, idx)
            crop_flip = None
            if self._augment():
                crop_flip = sample_crop_flip(len(idx), 4, g_aug)
                x = apply_crop_flip(x, crop_flip)
            sl = slice(self.rank * per_rank, (self.rank + 1) * per_rank)
            if self.world > 1:
                idx, x, y = idx[sl], x[sl], y[sl]
                if crop_flip is not None:
                    crop_flip = _slice_crop_flip(crop_flip, sl)
            yield (x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True),
                   idx.to(self.device), _to_device(crop_flip, self.device))

    # --- loop ------------------------------------------------------------------------------
    def fit(self, resume: bool | str | Path = False) -> TrainResult:
        """Train for ``config.epochs`` epochs (continuing from a checkpoint if ``resume``).

        Holds the lock of ``out_dir`` (rank 0) from start to end, so two runs never mix their
        files in one folder; the lock goes with the process, even when it is killed.

        Args:
            resume: False; True to continue from ``out_dir/checkpoint.safetensors`` if it exists;
                or the path of a checkpoint.

        Returns:
            Final metrics: the last epoch's ``train/*``, ``val/*`` and ``prune/keep_ratio``.

        Raises:
            FolderLockedError: another run is writing ``out_dir``.
            CheckpointError: the checkpoint to resume from is missing, corrupt or not this run's.
        """
        if self.out_dir is None or self.rank != 0:
            return self._fit(resume)
        with FolderLock(self.out_dir):
            return self._fit(resume)

    def _fit(self, resume: bool | str | Path) -> TrainResult:
        cfg, state = self.config, self.state
        if self.out_dir is not None and self.rank == 0:
            atomic_write_json(self.out_dir / "config.json", cfg.to_dict())
        if resume:
            if self.out_dir is not None and self.rank == 0:  # what a killed write left behind
                for name in (CHECKPOINT, "model.safetensors", "model_best.safetensors", "metrics.csv", "config.json"):
                    remove_stale_temp_files(self.out_dir / name)
            path = Path(resume) if not isinstance(resume, bool) else (self.out_dir / CHECKPOINT if self.out_dir else None)
            if path is not None and path.exists():
                self._load(path)
            elif not isinstance(resume, bool):
                raise CheckpointError(f"no checkpoint to resume from at {path}")
        state.epoch = self.start_epoch
        fire(self.hooks, Event.FIT_START, state)
        amp = cfg.amp and self.device.type == "cuda"
        for epoch in range(self.start_epoch, cfg.epochs):
            state.epoch, state.batch_idx = epoch, 0
            state.metrics = {}
            fire(self.hooks, Event.EPOCH_START, state)
            sums: dict[str, float] = {}
            t0 = time.perf_counter()
            self._net.train()
            bar = progress(self._batches(epoch), total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                           unit="step", enabled=cfg.progress and self.rank == 0)  # log lines without a terminal
            for b, (x, y, idx, crop_flip) in enumerate(bar):
                state.batch_idx = b
                lr = lr_at(cfg.lr_schedule, state.progress, cfg.lr, cfg.lr_milestones)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                state.set_batch(x, y, idx, crop_flip)
                fire(self.hooks, Event.BATCH_START, state)
                fire(self.hooks, Event.ADV_EXAMPLES, state)
                self._net.train()
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):  # bf16: no loss scaling needed
                    loss = self._loss()
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                fire(self.hooks, Event.AFTER_BACKWARD, state)
                self.optimizer.step()
                state.step += 1
                fire(self.hooks, Event.BATCH_END, state)
                for k, v in state.batch_metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
                if b % 10 == 0:
                    bar.set_postfix({k.split("/")[-1]: f"{v:.3f}" for k, v in state.batch_metrics.items()})
            bar.close()
            state.batch_idx = self.steps_per_epoch
            state.metrics.update({k: _mean_over_ranks(v / self.steps_per_epoch, self.device, self.distributed) for k, v in sums.items()})
            state.metrics["lr"] = self.optimizer.param_groups[0]["lr"]  # of the epoch's last step
            state.metrics["time/epoch_s"] = time.perf_counter() - t0
            fire(self.hooks, Event.EPOCH_END, state)
            self._validate(epoch)
            fire(self.hooks, Event.VALIDATION, state)
            last = epoch == cfg.epochs - 1
            if self.rank == 0 and self.out_dir is not None and ((epoch + 1) % cfg.checkpoint_every == 0 or last):
                self._save(epoch)
        if self.start_epoch >= cfg.epochs and self.logger.history:  # resumed a run that had finished
            state.metrics = {k: v for k, v in self.logger.history[-1].items() if k != "epoch"}
        fire(self.hooks, Event.FIT_END, state)
        result = TrainResult(state.metrics)
        result.out_dir = self.out_dir
        return result

    def _loss(self) -> torch.Tensor:
        if self._net is self.model:
            return self.adversarial.loss(self.state)
        # under DDP the forward must go through the wrapper so gradients are all-reduced
        model = self.state.model
        self.state.model = self._net
        try:
            return self.adversarial.loss(self.state)
        finally:
            self.state.model = model

    def _validate(self, epoch: int) -> None:
        if self.val_set is None or len(self.val_set) == 0:
            return
        cfg = self.config
        x, y = _gather(self.val_set, torch.arange(len(self.val_set)))
        m = clean_and_pgd_accuracy(
            self.model, x, y, eps=self.adversarial.eps, step_size=cfg.eval_step_size or self.adversarial.step_size,
            steps=cfg.val_pgd_steps, seed=derive_seed(cfg.seed, "val", epoch), device=self.device,
        )
        self.state.metrics["val/clean_acc"] = m["clean_acc"]
        self.state.metrics["val/robust_acc"] = m["robust_acc"]
        if m["robust_acc"] > self.best["val/robust_acc"]:
            self.best = {"val/robust_acc": m["robust_acc"], "val/clean_acc": m["clean_acc"], "epoch": epoch}
            if self.rank == 0 and self.out_dir is not None:
                save_state_dict(self.out_dir / "model_best.safetensors", self.model.state_dict(),
                                metadata={"epoch": str(epoch), "val_robust_acc": repr(m["robust_acc"])})

    # --- checkpoints ---------------------------------------------------------------------------
    def _save(self, epoch: int) -> None:
        state = {
            "epoch": epoch,
            "step": self.state.step,
            "best": self.best,
            "optimizer": self.optimizer.state_dict(),
            "hooks": [{"type": type(h).__name__, "state": h.state_dict()} for h in self.hooks],
            "config": self.config.to_dict(),
        }
        save_checkpoint(self.out_dir / CHECKPOINT, self.model.state_dict(), state)
        save_state_dict(self.out_dir / "model.safetensors", self.model.state_dict(), metadata={"epoch": str(epoch)})

    def _load(self, path: Path) -> None:
        """Restore the model, optimizer, hooks and progress; every field is checked first."""
        model_state, state = load_checkpoint(path)
        saved = state.get("config", {})
        if not isinstance(saved, dict):
            raise CheckpointError(f"{path}: checkpoint field 'config' must be the run's config as a mapping, "
                                  f"got {type(saved).__name__}")
        mine = self.config.to_dict()
        ignore = {"out_dir", "progress", "device", "epochs"}
        defaults = TrainConfig().to_dict()  # keys added since the checkpoint was written count as their default
        diff = sorted(k for k in set(saved) | set(mine)
                      if k not in ignore and saved.get(k, defaults.get(k)) != mine.get(k))
        if diff:
            raise CheckpointError(
                f"{path} was written by a run with a different config ({', '.join(f'{k}: {saved.get(k)!r} != {mine.get(k)!r}' for k in diff[:5])}); "
                "resume with the same config or start a new out_dir"
            )
        check_train_state(path, state, self.steps_per_epoch)
        self._check_model_state(path, model_state)
        try:
            self.model.load_state_dict(model_state)
        except RuntimeError as e:
            raise CheckpointError(f"{path} does not fit this model: {str(e)[:300]}") from e
        self._load_optimizer(path, state["optimizer"])
        saved_hooks = state.get("hooks", [])
        for i, h in enumerate(self.hooks):
            if i < len(saved_hooks) and saved_hooks[i]["type"] == type(h).__name__:
                hook_state = saved_hooks[i]["state"]
                self._check_hook_state(path, h, hook_state, state["epoch"])
                try:
                    h.load_state_dict(hook_state)
                except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as e:
                    raise CheckpointError(f"{path}: the state of hook {type(h).__name__} cannot be restored "
                                          f"({type(e).__name__}: {str(e)[:200]})") from e
        self.best = state["best"]
        self.start_epoch = state["epoch"] + 1
        self.state.step = state["step"]
        _log.info("resumed from %s after epoch %d", path, state["epoch"])

    def _check_model_state(self, path: Path, model_state: dict[str, torch.Tensor]) -> None:
        """Finite values everywhere, and the fixed weights the seed regenerates (never trained)."""
        for key, t in model_state.items():
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise CheckpointError(f"{path}: model tensor {key!r} holds NaN or Inf; a checkpoint to resume from "
                                      "must hold finite scores, weights and statistics")
        current = self.model.state_dict()
        for name, module in self.model.named_modules():
            if not isinstance(module, MaskedLayer):
                continue
            key = f"{name}.weight" if name else "weight"
            saved, fresh = model_state.get(key), current.get(key)
            if saved is None or fresh is None or saved.shape != fresh.shape:
                continue  # load_state_dict names missing keys and shape mismatches
            fresh = fresh.detach().cpu()
            if saved.dtype != fresh.dtype or not torch.equal(saved, fresh):
                raise CheckpointError(
                    f"{path}: the fixed weights {key!r} differ from the ones seed {self.config.seed} regenerates for "
                    "this model; fixed weights are never trained, so the checkpoint was altered or made for another "
                    "model or seed"
                )

    def _load_optimizer(self, path: Path, saved: dict[str, Any]) -> None:
        """Load the optimizer state; its settings and buffers must fit this run."""
        fixed = ("momentum", "dampening", "weight_decay", "nesterov", "maximize")
        want = [{k: g.get(k) for k in fixed} for g in self.optimizer.param_groups]
        try:
            self.optimizer.load_state_dict(saved)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as e:
            raise CheckpointError(f"{path}: the optimizer state does not fit this run's optimizer "
                                  f"({type(e).__name__}: {str(e)[:200]})") from e
        for g, w in zip(self.optimizer.param_groups, want):
            for k, v in w.items():
                if g.get(k) != v:
                    raise CheckpointError(f"{path}: optimizer setting {k!r} is {g.get(k)!r}, but the run's config gives {v!r}")
            lr = g.get("lr")
            if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 <= lr < math.inf:
                raise CheckpointError(f"{path}: optimizer setting 'lr' must be a finite number >= 0, got {lr!r}")
            for prm in g["params"]:
                for k, v in self.optimizer.state.get(prm, {}).items():
                    if v is None:
                        continue
                    if not isinstance(v, torch.Tensor) or v.shape != prm.shape:
                        got = f"shape {tuple(v.shape)}" if isinstance(v, torch.Tensor) else type(v).__name__
                        raise CheckpointError(f"{path}: optimizer buffer {k!r} must be a tensor of the parameter's "
                                              f"shape {tuple(prm.shape)}, got {got}")
                    if v.is_floating_point() and not torch.isfinite(v).all():
                        raise CheckpointError(f"{path}: optimizer buffer {k!r} holds NaN or Inf")

    def _check_hook_state(self, path: Path, hook: Hook, hook_state: dict[str, Any], epoch: int) -> None:
        """The built-in hooks' states: the metric history and the fast attack's perturbation bank."""
        where = f"{path}: hook {type(hook).__name__}"
        if isinstance(hook, MetricLogger):
            history = hook_state.get("history", [])
            ok = isinstance(history, list) and all(
                isinstance(r, dict) and all(isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
                                            for k, v in r.items()) for r in history)
            if not ok:
                raise CheckpointError(f"{where}: 'history' must be a list of {{metric: number}} rows, got {str(history)[:80]}")
            epochs = [r.get("epoch") for r in history]
            if epochs != list(range(epoch + 1)):
                raise CheckpointError(f"{where}: 'history' must hold one row per finished epoch (epochs 0..{epoch}), "
                                      f"got epochs {str(epochs)[:80]}")
        elif isinstance(hook, AdversarialTraining) and "bank" in hook_state:
            bank = hook_state["bank"]
            if hook.name != "fast":
                raise CheckpointError(f"{where}: a perturbation 'bank' belongs to attack 'fast', this run's attack is {hook.name!r}")
            shape = (hook.num_samples, *_image_shape(self.train_set))
            if not isinstance(bank, torch.Tensor) or not bank.is_floating_point() or bank.dim() != 4 \
                    or tuple(bank.shape[:len(shape)]) != shape:
                got = f"{bank.dtype} tensor of shape {tuple(bank.shape)}" if isinstance(bank, torch.Tensor) else type(bank).__name__
                raise CheckpointError(f"{where}: 'bank' must be a float tensor of shape (num_samples, C, H, W) = "
                                      f"{shape}{'' if len(shape) == 4 else ' + (C, H, W)'}, got {got}")
            if not torch.isfinite(bank).all() or bank.abs().max() > hook.eps + 1e-5:
                raise CheckpointError(f"{where}: 'bank' perturbations must be finite and within eps = {hook.eps} "
                                      f"(Linf), got max |delta| {bank.abs().max().item():.4g}")


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The Trainer's sample order in ``epoch``: a permutation of ``range(n)`` from ``(seed, epoch)`` only.

    Stateless, so a resumed run visits the samples in the same order without saving RNG state.
    """
    return torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, "shuffle", epoch)))


def _check_images(name: str, images: Any) -> None:
    """In-memory images: uint8 (0..255) or floats in [0, 1] (checked once, before training)."""
    if not isinstance(images, torch.Tensor):
        return  # lazily decoded datasets: each batch is checked by _gather and the model
    if images.dtype == torch.uint8:
        return
    if not images.is_floating_point():
        raise InputError(f"{name} images must be uint8 (0..255) or floats in [0, 1], got dtype {images.dtype}")
    if images.numel() and (not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1):
        raise InputError(f"{name} images are floats ({images.dtype}), so they must be finite and lie in [0, 1]; "
                         f"got values in [{images.min().item():.4g}, {images.max().item():.4g}]")


def _image_shape(dataset: Any) -> tuple[int, ...]:
    images = getattr(dataset, "images", None)
    return tuple(images.shape[1:]) if isinstance(images, torch.Tensor) else ()


def _gather(dataset: Any, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as float32 in [0, 1] and labels for the given indices.

    uint8 images are divided by 255; floating-point images (float16 / 32 / 64) are converted
    to float32 as they are; any other dtype is refused with :class:`InputError`.
    """
    if hasattr(dataset, "images") and hasattr(dataset, "labels"):
        x, y = dataset.images[idx], dataset.labels[idx]
    else:  # lazily decoded datasets (ImageNet-100)
        items = [dataset[int(i)] for i in idx]
        x = torch.stack([it[0] for it in items])
        y = torch.as_tensor([int(it[1]) for it in items])
    if x.dtype == torch.uint8:
        x = x.float().div_(255)
    elif x.is_floating_point():
        x = x.float()
    else:
        raise InputError(f"images must be uint8 (0..255) or floats in [0, 1], got dtype {x.dtype}")
    return x, y.long()


def _slice_crop_flip(cf: Any, sl: slice) -> Any:
    import dataclasses

    return dataclasses.replace(cf, dy=cf.dy[sl], dx=cf.dx[sl], flip=cf.flip[sl])


def _to_device(cf: Any, device: torch.device) -> Any:
    if cf is None:
        return None
    import dataclasses

    return dataclasses.replace(cf, dy=cf.dy.to(device), dx=cf.dx.to(device), flip=cf.flip.to(device))


def _mean_over_ranks(v: float, device: torch.device, distributed: bool) -> float:
    if not distributed:
        return v
    t = torch.tensor([v], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / dist.get_world_size()).item()
