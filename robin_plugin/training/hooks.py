"""Hooks: one no-op method per :class:`Event`, dispatched by name.

Modifiers (``ProgressivePruning``, ``AdversarialTraining``) change the training state;
observers (``MetricLogger``) only read it. Stateful hooks return their state from
``state_dict`` (tensors and JSON-able values) so that a resumed run restores them exactly.
"""
from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..io import atomic_write_bytes
from ..pruning import check_p, masked_layers, set_keep_ratio
from .events import Event
from .schedules import progressive_keep_ratio
from .state import TrainState

__all__ = ["Hook", "fire", "ProgressivePruning", "MetricLogger"]

_log = logging.getLogger(__name__)


class Hook:
    """Base class: override the ``on_<event>`` methods you need."""

    def on_fit_start(self, state: TrainState) -> None: ...
    def on_epoch_start(self, state: TrainState) -> None: ...
    def on_batch_start(self, state: TrainState) -> None: ...
    def on_adv_examples(self, state: TrainState) -> None: ...
    def on_after_backward(self, state: TrainState) -> None: ...
    def on_batch_end(self, state: TrainState) -> None: ...
    def on_epoch_end(self, state: TrainState) -> None: ...
    def on_validation(self, state: TrainState) -> None: ...
    def on_fit_end(self, state: TrainState) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        """State to save with a checkpoint (tensors and JSON-able values). Default: none."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


def fire(hooks: Iterable[Hook], event: Event, state: TrainState) -> None:
    """Call ``hook.on_<event>(state)`` on every hook, in order."""
    for hook in hooks:
        getattr(hook, event.method)(state)


class ProgressivePruning(Hook):
    """Set every masked layer's adaptive keep ratio from the progressive schedule.

    At each epoch start the model keeps ``progressive_keep_ratio(epoch / epochs, keep_ratio,
    steps)`` of its weights, spread over layers with exponent ``p``: ``steps`` geometric stages
    from 1 down to ``keep_ratio`` (``steps = 1`` keeps the target from the start). Logs
    ``prune/keep_ratio``. This hook is the one writer of keep ratios during training.

    One source of truth: by default the target ``keep_ratio`` and ``p`` are the model's own (the
    ones a robin model was built with; for other masked models, the fraction its layers keep now
    and the paper's p = 0.1). Values given here override them, and a warning says so when they
    differ from the model's.

    Args:
        keep_ratio: final fraction of weights kept, in (0, 1]; None (default): the model's.
        p: adaptive exponent in [0, 1] (see :func:`robin_plugin.adaptive_keep_ratios`);
            None (default): the model's.
        steps: number of geometric stages from 1 down to ``keep_ratio``. Default 3.
    """

    def __init__(self, keep_ratio: float | None = None, p: float | None = None, steps: int = 3):
        progressive_keep_ratio(0.0, keep_ratio if keep_ratio is not None else 1.0, steps)  # validates both
        self.keep_ratio, self.p, self.steps = keep_ratio, (check_p(p) if p is not None else None), steps
        self.current: float | None = None

    def _apply(self, state: TrainState) -> None:
        k = progressive_keep_ratio(state.epoch / max(1, state.epochs), self.keep_ratio, self.steps)
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
        if not masked_layers(state.model):
            raise ConfigError("ProgressivePruning needs a model with masked layers (a robin model or robinify(model))")
        self._resolve_targets(state.model)
        self._apply(state)

    def on_epoch_start(self, state: TrainState) -> None:
        self._apply(state)


class MetricLogger(Hook):
    """Observer: keep every epoch's metrics; write ``metrics.csv`` (and TensorBoard if installed).

    The CSV is rewritten atomically from the saved history after each epoch, so a resumed run
    holds exactly the rows of an uninterrupted one.

    Args:
        out_dir: folder for ``metrics.csv`` (and ``tb/`` for TensorBoard); None keeps history only.
        tensorboard: also write TensorBoard scalars when the ``tensorboard`` package is installed.
    """

    def __init__(self, out_dir: str | Path | None = None, tensorboard: bool = True):
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.history: list[dict[str, float]] = []
        self._tb = None
        self._tensorboard = tensorboard

    def on_fit_start(self, state: TrainState) -> None:
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
        self.history = [dict(r) for r in state.get("history", [])]
