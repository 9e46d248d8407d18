"""The built-in hooks; the :class:`Hook` base class and :func:`fire` live in :mod:`.events`.

Modifiers (``LRSchedule``, ``ProgressivePruning``, ``RandomCropFlip``, ``AdversarialTraining``
in :mod:`.attacks`) change the training state; observers (``MetricLogger``) only read it;
``BestModel`` and ``Checkpointing`` keep the run's best record and write its files. Stateful
hooks return their state from ``state_dict`` (tensors and JSON-able values) so that a resumed
run restores them exactly, and check it in ``load_state_dict``.
"""
from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ..data.augment import CropFlip, apply_crop_flip, sample_crop_flip
from ..errors import CheckpointError, ConfigError
from ..io import atomic_write_bytes
from ..pruning import check_p, is_masked, masked_layers, set_keep_ratio
from ..rng import stream_generator
from ..formats.checkpoint import save_checkpoint, save_state_dict
from .checkpoint import CHECKPOINT, training_state
from .events import Hook
from .schedules import lr_at, lr_at_epoch, progressive_keep_ratio
from .state import TrainState

__all__ = ["LRSchedule", "ProgressivePruning", "RandomCropFlip", "MetricLogger", "BestModel",
           "Checkpointing"]

_log = logging.getLogger(__name__)


class LRSchedule(Hook):
    """Modifier: the learning-rate schedule, a pure function of training progress.

    At every BATCH_START (before the batch's optimizer step) each param group's ``lr`` becomes
    :func:`~.schedules.lr_at_epoch` of the epochs done: a linear warm-up over
    ``warmup_epochs``, then the schedule over the rest. Stateless: the rate depends on progress
    only, so a resumed run continues the schedule exactly.

    Args:
        schedule: ``cosine`` (to 0 at the end), ``onecycle``, ``step`` (x0.1 at each milestone)
            or ``constant``.
        base_lr: learning rate after the warm-up, > 0.
        milestones: for ``step``, fractions of training where the rate drops. Default (0.5, 0.75).
        warmup_epochs: epochs of linear warm-up. Default 0.
        per_epoch: set the rate once per epoch from the whole epochs done (the official code),
            instead of at every step. Default False.
    """

    def __init__(self, schedule: str = "cosine", base_lr: float = 0.1, milestones: Sequence[float] = (0.5, 0.75),
                 warmup_epochs: int = 0, per_epoch: bool = False):
        lr_at(schedule, 0.0, base_lr, milestones)  # an unknown schedule is a ConfigError here, not mid-run
        if isinstance(base_lr, bool) or not isinstance(base_lr, (int, float)) or not 0 < base_lr < math.inf:
            raise ConfigError(f"base_lr must be a finite number > 0, got {base_lr!r}")
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise ConfigError(f"warmup_epochs must be an integer >= 0, got {warmup_epochs!r}")
        self.schedule, self.base_lr, self.milestones = schedule, base_lr, tuple(milestones)
        self.warmup_epochs, self.per_epoch = warmup_epochs, bool(per_epoch)

    def on_batch_start(self, state: TrainState) -> None:
        if state.optimizer is None:
            raise ConfigError("LRSchedule needs state.optimizer")
        epochs = max(1, state.epochs)
        if self.per_epoch:
            lr = lr_at_epoch(self.schedule, float(state.epoch), epochs, self.base_lr, self.milestones, self.warmup_epochs)
        elif self.warmup_epochs:
            lr = lr_at_epoch(self.schedule, state.progress * epochs, epochs, self.base_lr, self.milestones,
                             self.warmup_epochs, max(1, state.steps_per_epoch))
        else:  # straight from the progress fraction (the same floats as lr_at_epoch without rounding through epochs)
            lr = lr_at(self.schedule, state.progress, self.base_lr, self.milestones)
        for group in state.optimizer.param_groups:
            group["lr"] = lr


class RandomCropFlip(Hook):
    """Modifier: the paper's batch augmentation, a random crop of the zero-padded image and a flip.

    At BATCH_START ``state.x`` is replaced by its augmented copy (pad ``pad`` on each side, crop
    back to H x W, flip horizontally with probability 1/2; :func:`robin_plugin.data.apply_crop_flip`)
    and ``state.crop_flip`` holds the draws, which the fast attack uses to move its per-sample
    perturbations. The draws come from a generator seeded from ``(seed, "augment", epoch)`` at
    each EPOCH_START, so a resumed run draws the same crops. Under ``torchrun`` every rank draws
    the crops of the whole global batch and applies its own share, so k processes augment
    exactly as one.

    Args:
        pad: padding in pixels, >= 0. Default 4 (the CIFAR recipe).
        seed: the run's seed.
        fill: pixel value of the padding, in [0, 1]. Default 0 (torchvision's ``RandomCrop``);
            the official fast attack pads with 0.5 (``code/util/augmentation.py``).
        offsets: crop positions per axis (see :func:`robin_plugin.data.sample_crop_flip`);
            default ``2 * pad + 1``; the official fast attack draws ``2 * pad``.
    """

    def __init__(self, pad: int = 4, seed: int = 0, fill: float = 0.0, offsets: int | None = None):
        if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
            raise ConfigError(f"pad must be an integer >= 0 (pixels), got {pad!r}")
        if isinstance(fill, bool) or not isinstance(fill, (int, float)) or not 0.0 <= fill <= 1.0:
            raise ConfigError(f"fill must be a pixel value in [0, 1], got {fill!r}")
        sample_crop_flip(0, pad, offsets=offsets)  # a bad offsets count fails here, not mid-run
        self.pad, self.seed, self.fill, self.offsets = pad, seed, float(fill), offsets
        self._generator: torch.Generator | None = None
        self._epoch: int | None = None

    def on_epoch_start(self, state: TrainState) -> None:
        self._generator = stream_generator(self.seed, "augment", state.epoch)
        self._epoch = state.epoch

    def on_batch_start(self, state: TrainState) -> None:
        if self._generator is None or self._epoch != state.epoch:  # a loop that does not fire EPOCH_START
            self.on_epoch_start(state)
        rank, world = _rank_and_world()
        n = len(state.x)
        draws = sample_crop_flip(n * world, self.pad, self._generator, offsets=self.offsets)  # the global batch's crops, in order
        own = slice(rank * n, (rank + 1) * n)
        device = state.x.device
        crop_flip = CropFlip(draws.dy[own].to(device), draws.dx[own].to(device), draws.flip[own].to(device), draws.pad)
        state.x = apply_crop_flip(state.x, crop_flip, self.fill)
        state.crop_flip = crop_flip


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ProgressivePruning(Hook):
    """Set every masked layer's adaptive keep ratio from the progressive schedule.

    At each epoch start the model keeps ``progressive_keep_ratio(epoch / epochs, keep_ratio,
    stages)`` of its weights, spread over layers with exponent ``p``: ``stages`` geometric stages
    from 1 down to ``keep_ratio`` (``stages = 1`` keeps the target from the start). Logs
    ``prune/keep_ratio``. This hook is the one writer of keep ratios during training.

    One source of truth: by default the target ``keep_ratio`` and ``p`` are the model's own (the
    ones a robin model was built with; for other masked models, the fraction its layers keep now
    and the paper's p = 0.1). Values given here override them, and a warning says so when they
    differ from the model's.

    Args:
        keep_ratio: final fraction of weights kept, in (0, 1]; None (default): the model's.
        p: adaptive exponent in [0, 1] (see :func:`robin_plugin.adaptive_keep_ratios`);
            None (default): the model's.
        stages: number of geometric stages from 1 down to ``keep_ratio``. Default 3. A run needs
            at least ``stages`` epochs (each stage starts at an epoch start, so the last epoch is
            in the last stage exactly when ``epochs >= stages``); FIT_START refuses fewer with a
            :class:`ConfigError`.
    """

    def __init__(self, keep_ratio: float | None = None, p: float | None = None, stages: int = 3):
        progressive_keep_ratio(0.0, keep_ratio if keep_ratio is not None else 1.0, stages)  # validates both
        self.keep_ratio, self.p, self.stages = keep_ratio, (check_p(p) if p is not None else None), stages
        self.current: float | None = None

    def _apply(self, state: TrainState) -> None:
        k = progressive_keep_ratio(state.epoch / max(1, state.epochs), self.keep_ratio, self.stages)
        if k != self.current:
            set_keep_ratio(state.model, k, self.p)
            _log.info("prune/keep_ratio=%.5f (epoch %d)", k, state.epoch)
        self.current = k
        state.metrics["prune/keep_ratio"] = k

    def _resolve_targets(self, model) -> None:
        """Fill ``keep_ratio`` / ``p`` from the model; warn when given values differ from its own."""
        layers = masked_layers(model)
        own = dict(getattr(model, "masked_kwargs", None) or {})
        if "keep_ratio" not in own:  # a robinified model: what its layers keep now, the paper's p
            total = sum(m.weight.numel() for _, m in layers)
            own = {"keep_ratio": sum(m.kept for _, m in layers) / total, "p": 0.1}
        for name in ("keep_ratio", "p"):
            given = getattr(self, name)
            if given is None:
                setattr(self, name, float(own[name]))
            elif abs(given - own[name]) > 1e-12:
                _log.warning("ProgressivePruning: %s=%g given, the model was built with %g; the hook's value is used",
                             name, given, own[name])

    def on_fit_start(self, state: TrainState) -> None:
        if not is_masked(state.model):
            raise ConfigError("ProgressivePruning needs a model with masked layers (a robin model or robinify(model))")
        if state.epochs < self.stages:  # the last epoch would start before the last stage: never at the target
            raise ConfigError(
                f"ProgressivePruning: {self.stages} pruning stages need at least {self.stages} epochs, got "
                f"epochs={state.epochs}; the run would end above the target keep ratio. Use prune_steps <= epochs "
                f"(prune_steps=1 keeps the target from the start)"
            )
        self._resolve_targets(state.model)
        self._apply(state)

    def on_epoch_start(self, state: TrainState) -> None:
        self._apply(state)


class MetricLogger(Hook):
    """Observer: keep every epoch's metrics; write ``metrics.csv`` (and TensorBoard if installed).

    The CSV is rewritten atomically from the saved history after each epoch, so a resumed run
    holds exactly the rows of an uninterrupted one. A restored history must hold one row per
    finished epoch (checked in :meth:`load_state_dict` and at FIT_START).

    Args:
        out_dir: folder for ``metrics.csv`` (and ``tb/`` for TensorBoard); None keeps history only.
        tensorboard: also write TensorBoard scalars when the ``tensorboard`` package is installed.
    """

    def __init__(self, out_dir: str | Path | None = None, tensorboard: bool = True):
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.history: list[dict[str, float]] = []
        self._tb = None
        self._tensorboard = tensorboard
        self._restored = False

    def on_fit_start(self, state: TrainState) -> None:
        if self._restored and len(self.history) != state.epoch:  # the loop resumes after its last finished epoch
            raise CheckpointError(f"the restored state of hook {self.name}: 'history' must hold one row per finished "
                                  f"epoch (epochs 0..{state.epoch - 1}), got {len(self.history)} rows")
        if self.out_dir is not None and self._tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                self._tb = None
            else:
                self._tb = SummaryWriter(str(self.out_dir / "tb"))

    def on_validation(self, state: TrainState) -> None:
        row = {"epoch": state.epoch, **{k: float(v) for k, v in state.metrics.items()}}
        self.history.append(row)
        _log.info("epoch %d: %s", state.epoch, ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"))
        if self.out_dir is not None:
            self.write_csv(self.out_dir / "metrics.csv")
        if self._tb is not None:
            for k, v in row.items():
                if k != "epoch":
                    self._tb.add_scalar(k, v, state.epoch)
            self._tb.flush()

    def on_fit_end(self, state: TrainState) -> None:
        if self._tb is not None:
            self._tb.close()

    def write_csv(self, path: Path) -> None:
        """Write the history as CSV (columns: epoch, then every metric seen, in order)."""
        columns: list[str] = []
        for row in self.history:
            columns += [k for k in row if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in self.history:
            writer.writerow({k: (int(v) if k == "epoch" else repr(v)) for k, v in row.items()})
        atomic_write_bytes(path, buf.getvalue().encode())

    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(r) for r in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        history = state.get("history", [])
        ok = isinstance(history, list) and all(
            isinstance(r, dict) and all(isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
                                        for k, v in r.items()) for r in history)
        if not ok:
            raise CheckpointError(f"'history' must be a list of {{metric: number}} rows, got {str(history)[:80]}")
        epochs = [r.get("epoch") for r in history]
        if epochs != list(range(len(history))):
            raise CheckpointError(f"'history' must hold one row per finished epoch (epochs 0..{len(history) - 1}), "
                                  f"got epochs {str(epochs)[:80]}")
        self.history = [dict(r) for r in history]
        self._restored = True


class BestModel(Hook):
    """Keep the record of the best validation epoch in ``state.best`` and write that epoch's weights.

    At FIT_START an empty ``state.best`` becomes ``{monitor: -1.0, "epoch": -1}`` (nothing yet).
    At VALIDATION, when ``state.metrics[monitor]`` is larger than the record's, ``state.best``
    becomes ``{monitor: value, <the epoch's other val/* metrics>, "epoch": epoch}`` and, with an
    ``out_dir``, the model's state dict is written atomically to ``out_dir/model_best.safetensors``
    (metadata: the epoch and the value). An epoch without the metric (no validation set) changes
    nothing. The record is saved with the checkpoint (its ``best`` field), so resume continues it.

    Args:
        out_dir: folder for ``model_best.safetensors``; None keeps the record only.
        monitor: the metric to maximise. Default ``val/robust_acc`` (the paper's protocol: the
            epoch with the best held-out PGD accuracy).
    """

    FILE = "model_best.safetensors"

    def __init__(self, out_dir: str | Path | None = None, monitor: str = "val/robust_acc"):
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.monitor = monitor

    def on_fit_start(self, state: TrainState) -> None:
        if not state.best:
            state.best = {self.monitor: -1.0, "epoch": -1}

    def on_validation(self, state: TrainState) -> None:
        value = state.metrics.get(self.monitor)
        if value is None or value <= state.best.get(self.monitor, -math.inf):
            return
        others = {k: v for k, v in state.metrics.items() if k.startswith("val/") and k != self.monitor}
        state.best = {self.monitor: value, **others, "epoch": state.epoch}
        if self.out_dir is not None:
            save_state_dict(self.out_dir / self.FILE, state.model.state_dict(),
                            metadata={"epoch": str(state.epoch), self.monitor.replace("/", "_"): repr(value)})


class Checkpointing(Hook):
    """Write the checkpoint to resume from and the last weights, every ``every`` epochs and after the last.

    At EPOCH_CHECKPOINT (after validation): ``out_dir/model.safetensors`` (the plain state dict,
    which timm loads), then ``out_dir/checkpoint.safetensors`` (model, optimizer, epoch, step,
    ``state.best``, every hook's state under its name and the run's config; see
    :func:`robin_plugin.training.checkpoint.training_state`). Both are written atomically: a
    killed run leaves the previous files whole. The checkpoint is written last, so everything a
    resumed run does not redo is already on disk.

    Args:
        out_dir: folder for the two files.
        config: the run's config as a mapping (saved; a resume with another config is refused).
        every: epochs between checkpoints, >= 1. Default 1.
    """

    def __init__(self, out_dir: str | Path, config: dict[str, Any], every: int = 1):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigError(f"checkpoint_every must be an integer >= 1, got {every!r}")
        self.out_dir, self.config, self.every = Path(out_dir), dict(config), every

    def on_epoch_checkpoint(self, state: TrainState) -> None:
        last = state.epoch == state.epochs - 1
        if (state.epoch + 1) % self.every and not last:
            return
        # the weights first, the checkpoint last: a run killed between the two resumes from the
        # previous checkpoint and writes both again; the other order would leave model.safetensors
        # an epoch behind for good when the kill lands in the last epoch (nothing is left to rerun)
        save_state_dict(self.out_dir / "model.safetensors", state.model.state_dict(), metadata={"epoch": str(state.epoch)})
        save_checkpoint(self.out_dir / CHECKPOINT, state.model.state_dict(), training_state(state, self.config))
