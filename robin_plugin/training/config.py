"""Training configuration (a frozen dataclass), presets, and parsing of overrides at the edge."""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import timm
import yaml

from .. import models  # noqa: F401  (registers the robin models with timm)
from ..errors import ConfigError, UnknownNameError, closest
from ..io import read_limited
from ..models.spec import ModelSpec, builds_masked, check_model_args
from ..pruning import check_keep_ratio, check_p
from ..pgd import check_iterate
from .attacks import ATTACK_MODES, ATTACKS, check_label_smoothing
from .paper import PAPER_PRESETS, official_overrides
from .schedules import LR_SCHEDULES

__all__ = ["TrainConfig", "PRESETS", "AUGMENTED_DATASETS", "MAX_CONFIG_BYTES", "MAX_SEED", "get_preset", "apply_overrides",
           "load_config_file", "parse_override"]

MAX_CONFIG_BYTES = 2**20
"""Largest config file :func:`load_config_file` reads (1 MiB); real configs are a few hundred bytes."""

MAX_SEED = 2**63 - 1
"""Largest seed: torch's generators take 64-bit seeds, and derived seeds are 63-bit."""

AUGMENTED_DATASETS = ("cifar10", "cifar100", "imagenet100")
"""Datasets whose runs augment (random crop with padding 4, horizontal flip) unless ``augment`` says
otherwise: the natural-image ones of the paper; Fashion-MNIST is not augmented."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run depends on; saved as ``config.json`` beside its checkpoints."""

    # model
    model: str = "robin_resnet18"          # timm model name (robin_* or robin_*_dense)
    model_kwargs: dict = field(default_factory=dict)  # extra timm kwargs, e.g. {"width": 16}
    keep_ratio: float = 0.01               # final fraction of weights KEPT (masked models)
    p: float = 0.1                         # adaptive keep-ratio exponent in [0, 1]
    prune_steps: int = 1                   # geometric stages from 1 down to keep_ratio (1: target from the start)
    # data
    dataset: str = "fashion_mnist"         # fashion_mnist | cifar10 | cifar100 | imagenet100
    data_root: str | None = None           # folder with the dataset (None: the dataset's default)
    train_subset: int | None = None        # use only the first n training images (None: all)
    val_fraction: float = 0.02             # held out from the training set to pick the best epoch
    augment: bool | None = None            # random crop (pad 4) + flip; None: on for AUGMENTED_DATASETS, off otherwise
    image_size: int | None = None          # ImageNet-100: side of the decoded images (None: the dataset's, 224)
    class_list: str | None = None          # ImageNet-100: text file naming its 100 wnids (None: every class folder)
    # optimisation
    epochs: int = 3
    batch_size: int = 128
    lr: float = 0.1
    lr_schedule: str = "cosine"            # cosine | onecycle | step | constant (per optimizer step)
    lr_milestones: tuple = (0.5, 0.75)     # for step: fractions of training where lr drops 10x
    lr_warmup_epochs: int = 0              # linear warm-up epochs before the schedule
    lr_per_epoch: bool = False             # set lr once per epoch (the official code) instead of every step
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0           # of the training cross-entropy (not with attack fast)
    # attack
    attack: str = "pgd"                    # pgd | ffgsm | fast | trades | none
    eps: float | None = None               # Linf radius in [0, 1] pixel units (None: dataset default)
    step_size: float | None = None         # attack step (None: dataset default; fast: eps / 2)
    attack_steps: int = 10                 # PGD / TPGD iterations
    trades_beta: float = 6.0
    attack_mode: str | None = None         # train | eval: model mode while crafting (None: the official, eval for trades only)
    pgd_iterate: str = "last"              # last | worst: PGD's returned iterate, in training and validation / test
    # validation, test, checkpoints
    eval_step_size: float | None = None    # PGD step for validation / test (None: eps / 4, as robin eval)
    val_pgd_steps: int = 10
    test_n: int = 1000                     # final evaluation on the first n test images (0: skip)
    test_pgd_steps: int = 20
    checkpoint_every: int = 1              # epochs between checkpoints
    # run
    seed: int = 0
    device: str = "auto"                   # auto | cpu | cuda | cuda:N
    amp: bool = False                      # bfloat16 mixed precision on CUDA (ignored on the CPU)
    channels_last: bool = False            # NHWC layout: faster convolutions on CPU (oneDNN) and CUDA
    # catastrophic-overfitting guard for single-step attacks (ffgsm, fast); see robin_plugin.training.guard
    co_guard: str = "warn"                 # off | warn | stop | rollback
    co_guard_every: int = 50               # optimizer steps between its PGD-5 checks
    co_guard_n: int = 64                   # held-out images in its fixed check batch
    progress: bool = True                  # tqdm progress bars
    out_dir: str = "runs/robin"

    def __post_init__(self) -> None:
        _check_types(self)
        check_keep_ratio(self.keep_ratio)
        check_p(self.p)
        _positive_int(self, "prune_steps", "epochs", "batch_size", "attack_steps", "val_pgd_steps", "test_pgd_steps", "checkpoint_every",
                      "co_guard_every", "co_guard_n")
        if self.co_guard not in ("off", "warn", "stop", "rollback"):
            raise UnknownNameError(f"unknown co_guard {self.co_guard!r}{closest(str(self.co_guard), ('off', 'warn', 'stop', 'rollback'))}; "
                                   "valid: off, warn, stop, rollback")
        if self.train_subset is not None and self.train_subset < 2:
            raise ConfigError(f"train_subset must be >= 2 or null, got {self.train_subset}")
        if self.test_n < 0:
            raise ConfigError(f"test_n must be >= 0, got {self.test_n}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"seed must be an integer >= 0 and <= 2**63 - 1 ({MAX_SEED}), got {self.seed}")
        if not all(_finite(m) and 0.0 <= m <= 1.0 for m in self.lr_milestones):
            raise ConfigError(f"lr_milestones must be fractions of training in [0, 1], got {list(self.lr_milestones)}")
        for name in ("lr", "momentum", "weight_decay", "trades_beta"):
            v = getattr(self, name)
            if not _finite(v) or v < 0 or (name == "lr" and v == 0):
                raise ConfigError(f"{name} must be a finite number {'> 0' if name == 'lr' else '>= 0'}, got {v}")
        for name in ("eps", "step_size", "eval_step_size"):
            v = getattr(self, name)
            if v is not None and not 0.0 < v <= 1.0:
                raise ConfigError(f"{name} must be in (0, 1] (pixel units of images in [0, 1]) or null, got {v}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise UnknownNameError(f"unknown lr_schedule {self.lr_schedule!r}{closest(self.lr_schedule, LR_SCHEDULES)}; "
                                   f"valid: {', '.join(LR_SCHEDULES)}")
        if not timm.is_model(self.model):
            names = timm.list_models("robin_*")
            raise UnknownNameError(f"unknown model {self.model!r}{closest(self.model, names)}; robin models: {', '.join(names)}")
        check_model_args(self.model, self.model_kwargs, source="model_kwargs")
        if self.attack not in ATTACKS:
            raise UnknownNameError(f"unknown attack {self.attack!r}{closest(self.attack, ATTACKS)}; valid: {', '.join(ATTACKS)}")
        if self.attack_mode is not None and self.attack_mode not in ATTACK_MODES:
            raise UnknownNameError(f"unknown attack_mode {self.attack_mode!r}{closest(self.attack_mode, ATTACK_MODES)}; "
                                   f"valid: {', '.join(ATTACK_MODES)} or null (the official mode of the attack)")
        check_iterate(self.pgd_iterate)
        check_label_smoothing(self.label_smoothing, self.attack)
        if self.lr_warmup_epochs < 0:  # >= epochs is allowed: the whole (shortened) run warms up
            raise ConfigError(f"lr_warmup_epochs must be an integer >= 0, got {self.lr_warmup_epochs}")
        if self.image_size is not None and self.image_size < 8:
            raise ConfigError(f"image_size must be an integer >= 8 (pixels) or null, got {self.image_size}")
        if (self.image_size is not None or self.class_list is not None) and self.dataset != "imagenet100":
            raise ConfigError(f"image_size and class_list apply to dataset imagenet100 only, not {self.dataset!r}: "
                              "the other datasets have one fixed size and class set")

    def model_spec(self, num_classes: int, in_chans: int, mean, std) -> ModelSpec:
        """The validated spec of this run's model for a dataset's classes, channels and statistics.

        ``seed`` and (masked models) ``keep_ratio`` and ``p`` come from the config, then
        ``model_kwargs`` override; build it with :func:`robin_plugin.models.spec.build_model`.
        """
        kwargs = dict(num_classes=num_classes, in_chans=in_chans, mean=tuple(mean), std=tuple(std), seed=self.seed)
        if builds_masked(self.model):
            kwargs.update(keep_ratio=self.keep_ratio, p=self.p)
        kwargs.update(self.model_kwargs)
        # the config may come from a file: only validated architecture arguments reach timm
        return ModelSpec.parse(self.model, kwargs, source="the run's model arguments")

    @property
    def augmentation_on(self) -> bool:
        """Whether the run augments its batches: ``augment``, or when it is None, whether
        ``dataset`` is one of :data:`AUGMENTED_DATASETS`."""
        return self.augment if self.augment is not None else self.dataset in AUGMENTED_DATASETS

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        d = dataclasses.asdict(self)
        d["lr_milestones"] = list(self.lr_milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Build from a dict, rejecting unknown keys with a suggestion."""
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a mapping of keys to values, got {type(d).__name__}")
        names = [f.name for f in fields(cls)]
        for k in d:
            _check_key(k, names)
        d = dict(d)
        if "lr_milestones" in d and isinstance(d["lr_milestones"], list):
            d["lr_milestones"] = tuple(d["lr_milestones"])
        return cls(**d)


def _finite(v: float) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:  # an int too large for a float
        return False


def _check_key(k: Any, names: list[str]) -> None:
    if not isinstance(k, str):
        raise UnknownNameError(f"config keys must be strings, got {type(k).__name__} {k!r:.40}; valid: {', '.join(names)}")
    if k not in names:
        raise UnknownNameError(f"unknown config key {k!r}{closest(k, names)}")


def _positive_int(cfg: TrainConfig, *names: str) -> None:
    for name in names:
        v = getattr(cfg, name)
        if v < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {v}")


def _check_types(cfg: TrainConfig) -> None:
    hints = typing.get_type_hints(TrainConfig)
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if not _is_instance(v, hints[f.name]):
            raise ConfigError(f"config key {f.name!r} must be {_type_name(hints[f.name])}, got {type(v).__name__} {v!r}")


def _is_instance(v: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_is_instance(v, a) for a in typing.get_args(tp))
    if tp is type(None):
        return v is None
    if tp is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if tp is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if tp is tuple:
        return isinstance(v, tuple) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
    return isinstance(v, tp)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


# --- presets ---------------------------------------------------------------------------------
_CPU = dict(dataset="fashion_mnist", model_kwargs={"width": 16}, eps=0.1, test_n=1000, test_pgd_steps=20,
            val_pgd_steps=10, batch_size=128, lr=0.1, train_subset=20000)

PRESETS: dict[str, dict[str, Any]] = {
    # CPU presets on Fashion-MNIST (eps 0.1): minutes on 2 cores
    # batch 64 and 5 epochs: the most PGD-20 accuracy found within 5 minutes of training on 2 cores
    # (docs/training.md has the tuning runs); channels_last cuts a CPU training step by ~15%;
    # lr 0.2 won the sweep of docs/results.md (held-out images)
    "fmnist-fast": dict(_CPU, model="robin_resnet18", keep_ratio=0.05, attack="ffgsm", step_size=0.125, epochs=5,
                        batch_size=64, lr=0.2, channels_last=True, val_pgd_steps=5),
    "fmnist-pgd": dict(_CPU, model="robin_resnet18", keep_ratio=0.05, attack="pgd", attack_steps=5, step_size=0.03, epochs=3),
    "fmnist-trades": dict(_CPU, model="robin_resnet18", keep_ratio=0.05, attack="trades", attack_steps=5, step_size=0.03, epochs=3),
    # the dense twin on the same budget with its own tuning: lr 0.2 won the sweep of docs/results.md
    "fmnist-dense-fast": dict(_CPU, model="robin_resnet18_dense", attack="ffgsm", step_size=0.125, epochs=5, lr=0.2,
                              batch_size=64, channels_last=True, val_pgd_steps=5),
}
# the paper presets: exactly the official code's recipes (robin_plugin.training.paper; the test
# evaluation on the whole test set is robin's own clean / PGD-20 check, the paper's is AutoAttack)
for _name in PAPER_PRESETS:
    PRESETS[_name] = dict(official_overrides(_name), test_n=5000 if _name.startswith("imagenet100") else 10000)
# robin's own: the paper's CIFAR-10 ResNet-34 recipes on the design card's WideResNet-34-10 (the
# official code has no WideResNet; these are not paper presets)
for _attack in ("pgd", "fast"):
    PRESETS[f"cifar10-wrn34-{_attack}"] = dict(official_overrides(f"cifar10-resnet34-{_attack}"), model="robin_wrn34",
                                               test_n=10000)
DEFAULT_PRESET = "fmnist-fast"


def get_preset(name: str) -> dict[str, Any]:
    """The overrides of preset ``name`` (a copy)."""
    if name not in PRESETS:
        raise UnknownNameError(f"unknown preset {name!r}{closest(name, PRESETS)}; valid: {', '.join(sorted(PRESETS))}")
    return json.loads(json.dumps(PRESETS[name]))


class _NoAliasError(Exception):
    def __init__(self, mark: Any):
        super().__init__(f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "")


class _SafeLoaderNoAliases(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses anchors (``&a``) and aliases (``*a``).

    A config never needs them, and nested aliases let a few hundred bytes expand into a value
    of billions of elements (the "billion laughs" attack), which then hangs every consumer.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _NoAliasError(event.start_mark)
        return super().compose_node(parent, index)


def _safe_load(text: str) -> Any:
    loader = _SafeLoaderNoAliases(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


_NO_ALIAS = "YAML anchors and aliases (&name, *name, <<: *name) are not allowed; write the values out"


def parse_override(text: str) -> tuple[str, Any]:
    """``"key=value"`` -> ``(key, value)`` with value parsed as YAML (numbers, true/false, null, lists, dicts).

    The value is parsed with the safe loader, without anchors and aliases (:class:`ConfigError`).
    """
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value")
    key, raw = text.split("=", 1)
    key = key.strip().replace("-", "_")
    try:
        value = _safe_load(raw) if raw.strip() else None
    except _NoAliasError as e:
        raise ConfigError(f"cannot parse the value of {key!r}: {_NO_ALIAS} ({e})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse the value of {key!r}: {raw!r:.200} ({e})") from e
    except RecursionError as e:
        raise ConfigError(f"cannot parse the value of {key!r}: nested too deeply") from e
    except Exception as e:  # PyYAML's constructors raise ValueError, IndexError ... on bad explicit tags
        raise ConfigError(f"cannot parse the value of {key!r}: {raw!r:.200} ({type(e).__name__}: {e})") from e
    return key, value


def apply_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> TrainConfig:
    """Merge ``overrides`` into ``base`` and validate; unknown keys suggest the closest valid key."""
    names = [f.name for f in fields(TrainConfig)]
    merged = dict(base)
    for k, v in overrides.items():
        _check_key(k, names)
        if k == "model_kwargs" and isinstance(v, dict):
            v = {**merged.get("model_kwargs", {}), **v}
        if k == "lr_milestones" and isinstance(v, list):
            v = tuple(v)
        merged[k] = v
    # YAML reads "1e-3" as a string; accept numbers written that way for float keys
    hints = typing.get_type_hints(TrainConfig)
    for k, v in merged.items():
        if isinstance(v, str) and float in typing.get_args(hints.get(k)) + (hints.get(k),):
            try:
                merged[k] = float(v)
            except ValueError:
                pass
    return TrainConfig.from_dict(merged)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a dict of overrides.

    Files are data: the YAML safe loader (no Python tags), no anchors or aliases, at most
    :data:`MAX_CONFIG_BYTES` (1 MiB), UTF-8 text. Anything else is a :class:`ConfigError`.
    """
    path = Path(path)
    try:
        text = read_limited(path, MAX_CONFIG_BYTES).decode("utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text ({e.reason} at byte {e.start})") from e
    except ValueError as e:  # read_limited: larger than the limit
        raise ConfigError(f"config file {path} is larger than {MAX_CONFIG_BYTES} bytes (1 MiB); "
                          "a config is a short mapping of keys to values") from e
    try:
        data = _safe_load(text)
    except _NoAliasError as e:
        raise ConfigError(f"config file {path}: {_NO_ALIAS} ({e})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML/JSON: {e}") from e
    except RecursionError as e:
        raise ConfigError(f"config file {path} is nested too deeply") from e
    except Exception as e:  # PyYAML's constructors raise ValueError, IndexError ... on bad explicit tags
        raise ConfigError(f"config file {path} is not valid YAML/JSON ({type(e).__name__}: {e})") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values, got {type(data).__name__}")
    return data
