"""Events of the adversarial training loop, and the :class:`Hook` base class that acts on them.

The loop, with each event where it fires (``Trainer.fit`` runs exactly this; a plain PyTorch
loop fires the same events with :func:`fire`). The trainer itself knows no algorithm: the
learning-rate schedule, augmentation, the attack, the loss, best-model tracking and
checkpointing are hooks::

    fire(FIT_START)                        # AdversarialTraining builds its attack
    for epoch in range(epochs):
        fire(EPOCH_START)                  # ProgressivePruning sets this epoch's keep ratios
        for x, y, index in batches:        # state.set_batch(x, y, index)
            fire(BATCH_START)              # LRSchedule sets this step's learning rate (the scheduler);
                                           # RandomCropFlip augments state.x (state.crop_flip);
                                           # AdversarialTraining makes state.x_adv
            fire(ADV_EXAMPLES)             # observers see the adversarial batch
            model.train()
            fire(LOSS)                     # AdversarialTraining sets state.loss (CE on x_adv, or TRADES)
            fire(AFTER_LOSS)               # modifiers may change or replace state.loss
            state.loss.backward()
            fire(AFTER_BACKWARD)           # gradients of the scores are ready
            optimizer.step()
            fire(BATCH_END)                # metrics of the batch are in state.batch_metrics
        fire(EPOCH_END)                    # training metrics of the epoch in state.metrics
        validate(); fire(VALIDATION)       # val/* in state.metrics; BestModel, MetricLogger
        fire(EPOCH_CHECKPOINT)             # Checkpointing writes the checkpoint
    fire(FIT_END)

The forward pass and loss at LOSS run under ``torch.autocast`` when the trainer's ``amp`` is on.
"""
from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:  # annotations only: state.py is a leaf like this module
    from .state import TrainState

__all__ = ["Event", "Hook", "fire"]


class Event(str, Enum):
    """Where a hook can act; the hook method is ``on_<value>``."""

    FIT_START = "fit_start"
    EPOCH_START = "epoch_start"
    BATCH_START = "batch_start"
    ADV_EXAMPLES = "adv_examples"
    LOSS = "loss"
    AFTER_LOSS = "after_loss"
    AFTER_BACKWARD = "after_backward"
    BATCH_END = "batch_end"
    EPOCH_END = "epoch_end"
    VALIDATION = "validation"
    EPOCH_CHECKPOINT = "epoch_checkpoint"
    FIT_END = "fit_end"

    @property
    def method(self) -> str:
        """Name of the hook method this event calls."""
        return f"on_{self.value}"


class Hook:
    """Base class: override the ``on_<event>`` methods you need (all are no-ops here).

    Modifiers change the training state; observers only read it. Stateful hooks return their
    state from :meth:`state_dict` (tensors and JSON-able values) so that a resumed run restores
    them exactly, and check what they are given back in :meth:`load_state_dict`.

    Every hook has a :attr:`name`, by default its class name. The Trainer saves each hook's state
    under its name and gives it back to the hook of the same name on resume, so the names of one
    trainer's hooks must be unique: set ``hook.name = "..."`` to tell two hooks of one class apart.
    """

    @property
    def name(self) -> str:
        """The hook's name in checkpoints (default: the class name)."""
        return self.__dict__.get("_hook_name") or type(self).__name__

    @name.setter
    def name(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"a hook name must be a non-empty string, got {value!r}")
        self.__dict__["_hook_name"] = value

    def on_fit_start(self, state: TrainState) -> None: ...
    def on_epoch_start(self, state: TrainState) -> None: ...
    def on_batch_start(self, state: TrainState) -> None: ...
    def on_adv_examples(self, state: TrainState) -> None: ...
    def on_loss(self, state: TrainState) -> None: ...
    def on_after_loss(self, state: TrainState) -> None: ...
    def on_after_backward(self, state: TrainState) -> None: ...
    def on_batch_end(self, state: TrainState) -> None: ...
    def on_epoch_end(self, state: TrainState) -> None: ...
    def on_validation(self, state: TrainState) -> None: ...
    def on_epoch_checkpoint(self, state: TrainState) -> None: ...
    def on_fit_end(self, state: TrainState) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        """State to save with a checkpoint (tensors and JSON-able values). Default: none."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; raise ``CheckpointError`` (or ``ValueError``) on bad state."""


def fire(hooks: Iterable[Hook], event: Event, state: TrainState) -> None:
    """Call ``hook.on_<event>(state)`` on every hook, in order."""
    for hook in hooks:
        getattr(hook, event.method)(state)
