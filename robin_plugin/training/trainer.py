"""A minimal trainer that knows no algorithm: it loads batches and fires the hook events (see :mod:`.events`).

What a run does beyond the loop is the list of hooks it receives (:func:`default_hooks` of the config): the
learning-rate schedule, progressive pruning (masked models), augmentation, the adversarial
attack and loss, best-model tracking, metric logging, the catastrophic-overfitting guard and
checkpointing. The trainer owns the data order, the device and distributed set-up, mixed
precision, the optimizer step, validation and resuming from a checkpoint.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn

from ..errors import ConfigError, InputError
from ..io import FolderLock, atomic_write_json, remove_stale_temp_files
from ..memory_format import to_channels_last
from ..progress import progress
from ..data.base import pixel_range_problem, to_float
from ..pruning import is_masked
from ..rng import derive_seed, stream_generator
from .attacks import AdversarialTraining
from .checkpoint import CHECKPOINT, CheckpointError, restore_training_state
from .config import TrainConfig
from .distributed import convert_sync_batchnorm, wrap_ddp
from .events import Event, Hook, fire
from .guard import SINGLE_STEP_ATTACKS, CatastrophicOverfittingGuard
from .hooks import BestModel, Checkpointing, LRSchedule, MetricLogger, ProgressivePruning, RandomCropFlip
from .metrics import clean_and_pgd_accuracy
from .state import TrainState

__all__ = ["Trainer", "TrainResult", "default_hooks", "epoch_order", "gather", "make_optimizer", "resolve_device",
           "CHECKPOINT"]

_log = logging.getLogger(__name__)


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


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.SGD:
    """SGD over the trainable parameters (the scores of a masked model)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


class TrainResult(dict):
    """Final metrics of a run (a dict) with ``out_dir`` attribute."""

    out_dir: Path


def default_hooks(config: TrainConfig, model: nn.Module, train_set: Any, val_set: Any = None,
                  out_dir: str | Path | None = None) -> list[Hook]:
    """The hooks a run of ``config`` is made of, in firing order (what ``robin train`` runs).

    ``LRSchedule``; ``ProgressivePruning`` for a model with masked layers; ``RandomCropFlip``
    when ``config.augmentation_on`` (padding 0.5 and crop offsets 0-7 for the ``fast`` attack,
    which crops like the official ``FGSM_RS``; zero padding and offsets 0-8 otherwise);
    ``AdversarialTraining``; ``BestModel``; ``MetricLogger``; the
    ``CatastrophicOverfittingGuard`` for single-step attacks unless ``co_guard=off``; and
    ``Checkpointing`` when there is an ``out_dir`` (on rank 0 only: the other ranks write nothing).

    Args:
        config: the run's config, with ``eps`` and ``step_size`` set
            (:func:`robin_plugin.training.resolve_attack_sizes`).
        model: the model (is it masked; its number of classes).
        train_set, val_set: the data (size, image shape; the guard's fixed check batch).
        out_dir: the run folder, or None for no files.
    """
    if config.eps is None or config.step_size is None:
        raise ConfigError("config.eps and config.step_size must be set (robin_plugin.training.resolve_attack_sizes fills them)")
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    writes = Path(out_dir) if out_dir is not None and rank == 0 else None
    augmentation = None
    if config.augmentation_on:
        fast = config.attack == "fast"
        augmentation = RandomCropFlip(pad=4, seed=config.seed, fill=0.5 if fast else 0.0, offsets=8 if fast else None)
    adversarial = AdversarialTraining(
        config.attack, eps=config.eps, step_size=config.step_size, steps=config.attack_steps,
        trades_beta=config.trades_beta, num_samples=len(train_set), num_classes=_num_classes(model, train_set),
        seed=config.seed, sample_shape=_image_shape(train_set), crop_pad=augmentation.pad if augmentation else 0,
        attack_mode=config.attack_mode, pgd_iterate=config.pgd_iterate, label_smoothing=config.label_smoothing,
    )
    hooks = [
        LRSchedule(config.lr_schedule, config.lr, config.lr_milestones, config.lr_warmup_epochs, config.lr_per_epoch),
        ProgressivePruning(config.keep_ratio, config.p, config.prune_steps) if is_masked(model) else None,
        augmentation,
        adversarial,
        BestModel(writes),
        MetricLogger(writes),
        _make_guard(config, adversarial, train_set, val_set),
        Checkpointing(writes, config.to_dict(), config.checkpoint_every) if writes is not None else None,
    ]
    return [h for h in hooks if h is not None]


def _make_guard(config: TrainConfig, adversarial: AdversarialTraining, train_set: Any,
                val_set: Any) -> CatastrophicOverfittingGuard | None:
    """The catastrophic-overfitting guard of single-step attacks, checking on held-out images."""
    if config.co_guard == "off" or config.attack not in SINGLE_STEP_ATTACKS:
        return None
    source = val_set if val_set is not None and len(val_set) else train_set
    idx = torch.arange(min(config.co_guard_n, len(source)))
    x, y = gather(source, idx)
    return CatastrophicOverfittingGuard(adversarial, x, y, eps=config.eps, every=config.co_guard_every,
                                        action=config.co_guard, seed=config.seed)


class Trainer:
    """Adversarially train a robin model (or its dense twin) on an in-memory image dataset.

    The trainer knows no algorithm: it receives its hooks (as Composer's Trainer receives its
    algorithms) and fires their events around the loop it owns.

    Args:
        model: the model (inputs in [0, 1]).
        config: the run's :class:`TrainConfig`.
        train_set: training data with ``images`` (N, C, H, W) uint8 and ``labels`` (N,) int64
            (e.g. :class:`robin_plugin.data.ImageDataset`). Floating-point images (float16 /
            32 / 64, values in [0, 1]) are accepted and converted to float32 per batch; other
            dtypes are refused with :class:`InputError`.
        val_set: held-out data of the same kind, or None.
        hooks: the run's hooks, in firing order; None: :func:`default_hooks` of the config
            (``robin train`` adds yours after them: ``[*default_hooks(...), mine]``). One of
            them must set ``state.loss`` at ``Event.LOSS`` (``AdversarialTraining`` does). Hook
            names (``hook.name``, default the class name) must be unique: hook state is saved and
            restored by name.
        out_dir: folder for checkpoints, ``config.json`` and ``metrics.csv`` (None: no files).
            :meth:`fit` locks it (``out_dir/.robin.lock``): a second run on the same folder is
            refused with :class:`robin_plugin.io.FolderLockedError` naming the holder's pid.

    The hooks of the standard kinds are also reachable by name (None when the run has none):
    ``lr_schedule`` (:class:`LRSchedule`), ``pruning`` (:class:`ProgressivePruning`),
    ``augmentation`` (:class:`RandomCropFlip`), ``adversarial`` (:class:`AdversarialTraining`),
    ``best_model`` (:class:`BestModel`), ``logger`` (:class:`MetricLogger`), ``guard``
    (:class:`CatastrophicOverfittingGuard`) and ``checkpointing`` (:class:`Checkpointing`).

    The model must be a classifier: ``model.num_classes`` (when it has one) must be >= 1.

    Under ``torchrun`` (``torch.distributed`` initialised) each rank trains on its share of every
    global batch of ``config.batch_size`` with DistributedDataParallel; rank 0 writes the files.
    """

    def __init__(self, model: nn.Module, config: TrainConfig, train_set: Any, val_set: Any = None,
                 hooks: Sequence[Hook] | None = None, out_dir: str | Path | None = None):
        self.config = config
        self.device = resolve_device(config.device)
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        if config.batch_size % self.world:
            raise ConfigError(f"batch_size {config.batch_size} must divide evenly over {self.world} processes")
        self.model = model.to(self.device)
        if self.distributed:
            # BatchNorm statistics over the whole global batch, as in a one-process run
            self.model = convert_sync_batchnorm(self.model, self.device)
        # the guard keeps the default layout where torch's CPU backward would crash
        self.channels_last = bool(config.channels_last) and to_channels_last(self.model, self.device)
        self.train_set, self.val_set = train_set, val_set
        _check_data(model, train_set, val_set)
        n = len(train_set)
        if n < 1:
            raise ConfigError("the training set is empty")
        self.batch_size = min(config.batch_size, n - n % self.world) if n >= self.world else n
        self.steps_per_epoch = max(1, n // self.batch_size)  # last partial batch dropped
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.optimizer = make_optimizer(self.model, config)
        if config.eps is None or config.step_size is None:
            raise ConfigError("config.eps and config.step_size must be set (robin_plugin.training.resolve_attack_sizes fills them)")
        self.hooks: list[Hook] = list(hooks) if hooks is not None else default_hooks(
            config, self.model, train_set, val_set, self.out_dir)
        _check_hook_names(self.hooks)

        net = self.model
        if self.distributed:  # the loss's forward goes through the wrapper, so gradients are all-reduced
            net = wrap_ddp(self.model, self.device)
        self.state = TrainState(self.model, self.optimizer, epochs=config.epochs, steps_per_epoch=self.steps_per_epoch,
                                net=net, hooks=self.hooks)
        self.start_epoch = 0

    def _hook(self, kind: type) -> Any:
        return next((h for h in self.hooks if isinstance(h, kind)), None)

    lr_schedule = property(lambda self: self._hook(LRSchedule), doc="The run's :class:`LRSchedule`, or None.")
    pruning = property(lambda self: self._hook(ProgressivePruning), doc="The run's :class:`ProgressivePruning`, or None.")
    augmentation = property(lambda self: self._hook(RandomCropFlip), doc="The run's :class:`RandomCropFlip`, or None.")
    adversarial = property(lambda self: self._hook(AdversarialTraining), doc="The run's :class:`AdversarialTraining`, or None.")
    best_model = property(lambda self: self._hook(BestModel), doc="The run's :class:`BestModel`, or None.")
    logger = property(lambda self: self._hook(MetricLogger), doc="The run's :class:`MetricLogger`, or None.")
    guard = property(lambda self: self._hook(CatastrophicOverfittingGuard), doc="The run's guard, or None.")
    checkpointing = property(lambda self: self._hook(Checkpointing), doc="The run's :class:`Checkpointing`, or None.")

    @property
    def best(self) -> dict[str, float]:
        """The best validation record (``state.best``, kept by the :class:`BestModel` hook)."""
        return self.state.best

    # --- data ------------------------------------------------------------------------------
    def _batches(self, epoch: int):
        """Yield (x, y, index) of this rank's share of each global batch; the same global order on every rank."""
        perm = epoch_order(len(self.train_set), self.config.seed, epoch)
        per_rank = self.batch_size // self.world
        for b in range(self.steps_per_epoch):
            idx = perm[b * self.batch_size:(b + 1) * self.batch_size]
            idx = idx[self.rank * per_rank:(self.rank + 1) * per_rank]
            x, y = gather(self.train_set, idx)
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True), idx.to(self.device)

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
                for name in (CHECKPOINT, "model.safetensors", BestModel.FILE, "metrics.csv", "config.json"):
                    remove_stale_temp_files(self.out_dir / name)
            path = Path(resume) if not isinstance(resume, bool) else (self.out_dir / CHECKPOINT if self.out_dir else None)
            if path is not None and path.exists():
                self.start_epoch = restore_training_state(path, state, cfg) + 1
                _log.info("resumed from %s after epoch %d", path, self.start_epoch - 1)
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
            state.net.train()
            bar = progress(self._batches(epoch), total=self.steps_per_epoch, desc=f"epoch {epoch}/{cfg.epochs - 1}",
                           unit="step", enabled=cfg.progress and self.rank == 0)  # log lines without a terminal
            for b, (x, y, idx) in enumerate(bar):
                state.batch_idx = b
                state.set_batch(x, y, idx)
                fire(self.hooks, Event.BATCH_START, state)
                fire(self.hooks, Event.ADV_EXAMPLES, state)
                state.net.train()
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):  # bf16: no loss scaling needed
                    fire(self.hooks, Event.LOSS, state)
                    fire(self.hooks, Event.AFTER_LOSS, state)
                if state.loss is None:
                    raise ConfigError("no hook set state.loss at Event.LOSS; the trainer's AdversarialTraining hook does "
                                      "unless a hook of yours clears it")
                self.optimizer.zero_grad(set_to_none=True)
                state.loss.backward()
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
            fire(self.hooks, Event.EPOCH_CHECKPOINT, state)
        if self.start_epoch >= cfg.epochs and self.logger is not None and self.logger.history:  # resumed a finished run
            state.metrics = {k: v for k, v in self.logger.history[-1].items() if k != "epoch"}
        fire(self.hooks, Event.FIT_END, state)
        result = TrainResult(state.metrics)
        result.out_dir = self.out_dir
        return result

    def _validate(self, epoch: int) -> None:
        """Clean and PGD accuracy on the whole validation set (eps and step from the config) into ``state.metrics``."""
        if self.val_set is None or len(self.val_set) == 0:
            return
        cfg = self.config
        x, y = gather(self.val_set, torch.arange(len(self.val_set)))
        m = clean_and_pgd_accuracy(
            self.model, x, y, eps=cfg.eps, step_size=cfg.eval_step_size or cfg.step_size,
            steps=cfg.val_pgd_steps, seed=derive_seed(cfg.seed, "val", epoch), device=self.device, iterate=cfg.pgd_iterate,
        )
        self.state.metrics["val/clean_acc"] = m["clean_acc"]
        self.state.metrics["val/robust_acc"] = m["robust_acc"]


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The Trainer's sample order in ``epoch``: a permutation of ``range(n)`` from ``(seed, epoch)`` only.

    Stateless, so a resumed run visits the samples in the same order without saving RNG state.
    """
    return torch.randperm(n, generator=stream_generator(seed, "shuffle", epoch))


def _check_data(model: nn.Module, train_set: Any, val_set: Any) -> None:
    """The model is a classifier and both datasets hold valid images and labels for it."""
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


def _check_hook_names(hooks: Sequence[Hook]) -> None:
    """Hook state is saved by name: two hooks of one trainer must not share a name."""
    seen: dict[str, Hook] = {}
    for h in hooks:
        if h.name in seen:
            raise ConfigError(f"two hooks are named {h.name!r} ({type(seen[h.name]).__name__} and {type(h).__name__}); "
                              "hook state is saved and restored by name, so give one another name: hook.name = '...'")
        seen[h.name] = h


def _check_images(name: str, images: Any) -> None:
    """In-memory images: uint8 (0..255) or floats in [0, 1] (checked once, before training)."""
    if not isinstance(images, torch.Tensor):
        return  # lazily decoded datasets: each batch is checked by gather and the model
    if images.dtype == torch.uint8:
        return
    if not images.is_floating_point():
        raise InputError(f"{name} images must be uint8 (0..255) or floats in [0, 1], got dtype {images.dtype}")
    problem = pixel_range_problem(images)
    if problem is not None:
        raise InputError(f"{name} images are floats ({images.dtype}), so they must be finite and lie in [0, 1]; got {problem}")


def _image_shape(dataset: Any) -> tuple[int, ...]:
    images = getattr(dataset, "images", None)
    if isinstance(images, torch.Tensor):
        return tuple(images.shape[1:])
    size = getattr(dataset, "image_size", None)  # lazily decoded RGB images (ImageNet-100)
    return (3, size, size) if isinstance(size, int) else ()


def _num_classes(model: nn.Module, dataset: Any) -> int | None:
    n = getattr(model, "num_classes", None)
    return n if isinstance(n, int) and n > 0 else getattr(dataset, "num_classes", None)


def gather(dataset: Any, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as float32 in [0, 1] and labels for the given indices.

    The images go through :func:`robin_plugin.data.base.to_float`: uint8 images are divided by
    255, floating-point images (float16 / 32 / 64) are converted to float32 as they are, any
    other dtype is refused with :class:`InputError`.
    """
    if hasattr(dataset, "images") and hasattr(dataset, "labels"):
        x, y = dataset.images[idx], dataset.labels[idx]
    else:  # lazily decoded datasets (ImageNet-100)
        items = [dataset[int(i)] for i in idx]
        x = torch.stack([it[0] for it in items])
        y = torch.as_tensor([int(it[1]) for it in items])
    return to_float(x), y.long()


def _mean_over_ranks(v: float, device: torch.device, distributed: bool) -> float:
    if not distributed:
        return v
    t = torch.tensor([v], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / dist.get_world_size()).item()
