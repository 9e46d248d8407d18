"""Events of the adversarial training loop.

The loop, with each event where it fires (``Trainer.fit`` runs exactly this; a plain PyTorch
loop fires the same events with :func:`robin_plugin.training.fire`)::

    fire(FIT_START)
    for epoch in range(epochs):
        fire(EPOCH_START)                  # ProgressivePruning sets this epoch's keep ratios
        for x, y, index in batches:        # x already augmented (crop / flip)
            fire(BATCH_START)              # AdversarialTraining makes state.x_adv
            fire(ADV_EXAMPLES)             # observers see the adversarial batch
            loss = adversarial.loss(state)  # cross-entropy on x_adv, or TRADES
            loss.backward()
            fire(AFTER_BACKWARD)           # gradients of the scores are ready
            optimizer.step(); scheduler.step()
            fire(BATCH_END)                # metrics of the batch are in state.batch_metrics
        fire(EPOCH_END)                    # training metrics of the epoch in state.metrics
        validate(); fire(VALIDATION)       # val/clean_acc, val/robust_acc in state.metrics
    fire(FIT_END)
"""
from __future__ import annotations

from enum import Enum

__all__ = ["Event"]


class Event(str, Enum):
    """Where a hook can act; the hook method is ``on_<value>``."""

    FIT_START = "fit_start"
    EPOCH_START = "epoch_start"
    BATCH_START = "batch_start"
    ADV_EXAMPLES = "adv_examples"
    AFTER_BACKWARD = "after_backward"
    BATCH_END = "batch_end"
    EPOCH_END = "epoch_end"
    VALIDATION = "validation"
    FIT_END = "fit_end"

    @property
    def method(self) -> str:
        """Name of the hook method this event calls."""
        return f"on_{self.value}"
