"""Pieces shared by the robin model families: the layer factory, input normalisation, the head, the base class.

Long (about 590 lines) because the base class :class:`RobinNetBase` is the whole timm model
contract every family answers the same way (``forward_features`` / ``forward_head``,
``reset_classifier``, ``forward_intermediates`` and ``prune_intermediate_layers``, gradient
checkpointing, ``group_matcher``, the legacy state-dict hook): splitting it would scatter one
class over several files. The family files keep only their blocks and stage layout.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from dataclasses import dataclass
from functools import partial
from typing import Callable, Iterator

import torch
import torch.nn as nn
from timm.models import PretrainedCfg, checkpoint_seq
from timm.models._features import feature_take_indices

from ..errors import ConfigError, InputError
from ..layers.masked import LegacyStateWarning, MaskedConv2d, MaskedLayer, MaskedLinear, check_init, check_score_scale
from ..pruning import adaptive_keep_ratios, check_keep_ratio, check_p, masked_layers, set_keep_ratio
from ..rng import stream_generator
from .channels import ChannelGraph
from .timm_loading import compact_load_pre_hook

_PRETRAINED_CFG_FIELDS = frozenset(f.name for f in dataclasses.fields(PretrainedCfg))

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Settings that only make sense for masked models, with their defaults there.
MASKED_DEFAULTS = dict(
    keep_ratio=0.01, p=0.1, init="binary", score_init_scale=0.01, score_scale_by_fan_in=False
)


def default_cfg(pool_size: tuple[int, int], **kwargs) -> dict:
    """timm ``default_cfgs`` entry of a robin model: CIFAR-10 size (3x32x32, 10 classes), no hosted weights.

    Robin models normalise inside, so the cfg's ``mean`` / ``std`` (what timm's transforms
    apply) are 0 / 1: ``timm.data.create_transform(**resolve_data_config({}, model=m))`` yields
    [0, 1] images, exactly what the model takes. The statistics a model applies inside are its
    buffers (:meth:`RobinNetBase.input_stats`), not cfg fields: timm's ``PretrainedCfg`` has none
    for them.
    """
    return {
        "url": "", "num_classes": 10, "input_size": (3, 32, 32), "pool_size": pool_size,
        "crop_pct": 1.0, "interpolation": "bilinear", "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0),
        "first_conv": "conv1", "classifier": "head.fc", "license": "mit", **kwargs,
    }


@dataclass(frozen=True)
class LayerFactory:
    """Constructors a model family builds itself from: masked binary or dense full precision.

    ``conv(in, out, kernel_size, stride, padding)``, ``linear(in, out)``, ``norm2d(c)`` and
    ``norm1d(c)``. (Called ``Layers`` before: ``layers`` means blocks per stage, as in timm.)
    """

    conv: Callable[..., nn.Module]
    linear: Callable[..., nn.Module]
    norm2d: Callable[[int], nn.Module]
    norm1d: Callable[[int], nn.Module]
    masked: bool


def make_layer_factory(masked: bool, generator: torch.Generator, **masked_kwargs) -> LayerFactory:
    """Masked layers with non-affine BatchNorm, or dense layers with affine BatchNorm."""
    if masked:
        init = check_init(masked_kwargs["init"])
        check_score_scale(masked_kwargs["score_init_scale"])
        kw = dict(
            init=init,
            score_init_scale=masked_kwargs["score_init_scale"],
            score_scale_by_fan_in=masked_kwargs["score_scale_by_fan_in"],
            generator=generator,
        )
        return LayerFactory(
            conv=partial(MaskedConv2d, **kw),
            linear=partial(MaskedLinear, **kw),
            norm2d=partial(nn.BatchNorm2d, affine=False),
            norm1d=partial(nn.BatchNorm1d, affine=False),
            masked=True,
        )

    def dense_conv(cin: int, cout: int, kernel_size: int, stride: int = 1, padding: int = 0) -> nn.Conv2d:
        conv = nn.Conv2d(cin, cout, kernel_size, stride, padding, bias=False)
        with torch.no_grad():  # seeded Kaiming normal, independent of the global RNG
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * math.sqrt(2.0 / (cin * kernel_size**2)))
        return conv

    def dense_linear(cin: int, cout: int) -> nn.Linear:
        fc = nn.Linear(cin, cout)
        with torch.no_grad():
            bound = 1.0 / math.sqrt(cin)
            fc.weight.copy_((torch.rand(fc.weight.shape, generator=generator) * 2 - 1) * bound)
            fc.bias.zero_()
        return fc

    return LayerFactory(dense_conv, dense_linear, nn.BatchNorm2d, nn.BatchNorm1d, masked=False)


def resolve_masked_kwargs(masked: bool, kwargs: dict) -> dict:
    """Fill the masked-only settings with their defaults, or refuse them on a dense model."""
    given = {k: v for k, v in kwargs.items() if v is not None}
    if not masked:
        if given:
            raise ConfigError(
                f"{sorted(given)} only apply to masked robin models, not to the dense twin"
            )
        return {}
    out = {**MASKED_DEFAULTS, **given}
    check_keep_ratio(out["keep_ratio"])
    check_p(out["p"])
    return out


class InputNormalize(nn.Module):
    """Normalise images in [0, 1] with the model's own mean and std.

    Models take inputs in [0, 1] (the RobustBench convention) so attacks work in pixel units.
    ``mean`` and ``std`` are persistent buffers: they travel in the state dict, so a model
    loaded from a file normalises as the saved model did, whatever statistics it was built with.
    A state dict without them (written by robin_plugin 0.1) keeps the model's own and warns.

    Inputs are validated at the package's boundaries (CLI, :func:`robin_plugin.evaluate`, the
    trainer's data), not here: ``forward`` does no data-dependent check, so it costs no host
    synchronisation and compiles into one graph.

    Args:
        in_chans: expected channel count C.
        mean, std: per-channel statistics (length C; std > 0, all finite).
        check_inputs: debugging aid: validate every batch with :func:`check_images` (shape,
            dtype, channels, NaN/Inf, values in [0, 1]); one min/max reduction and a host sync
            per forward pass. Default False.

    Shapes: (N, C, H, W) -> (N, C, H, W).
    """

    def __init__(self, in_chans: int, mean: tuple[float, ...], std: tuple[float, ...], check_inputs: bool = False):
        super().__init__()
        check_stats(in_chans, mean, std)
        self.in_chans = in_chans
        self.check_inputs = bool(check_inputs)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.check_inputs and not torch.jit.is_scripting():  # a Python-only debugging check
            check_images(x, self.in_chans, self.mean.dtype)
        return (x - self.mean) / self.std

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        absent = [k for k in ("mean", "std") if prefix + k not in state_dict]
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        if absent:  # robin_plugin 0.1 files: the statistics were not state
            for k in absent:
                if prefix + k in missing_keys:
                    missing_keys.remove(prefix + k)
            warnings.warn(LEGACY_STATS_MESSAGE, LegacyStateWarning, stacklevel=2)
            return
        mean, std = state_dict[prefix + "mean"], state_dict[prefix + "std"]
        if mean.shape == self.mean.shape and std.shape == self.std.shape:
            try:
                check_stats(self.in_chans, mean.flatten().tolist(), std.flatten().tolist())
            except ConfigError as e:
                error_msgs.append(f"{prefix}mean/std: {e}")

    def extra_repr(self) -> str:
        return f"in_chans={self.in_chans}, check_inputs={self.check_inputs}"


def check_stats(in_chans: int, mean, std) -> None:
    """Raise :class:`ConfigError` unless mean and std have ``in_chans`` finite values and std > 0."""
    if len(mean) != in_chans or len(std) != in_chans:
        raise ConfigError(f"mean and std need {in_chans} values (one per channel), got {list(mean)} and {list(std)}")
    if not all(math.isfinite(m) for m in mean):
        raise ConfigError(f"mean values must be finite, got {list(mean)}")
    if not all(math.isfinite(s) and s > 0 for s in std):
        raise ConfigError(f"std values must be finite and > 0, got {list(std)}")


def check_images(x: torch.Tensor, in_chans: int, dtype: torch.dtype | None = None) -> None:
    """Raise :class:`InputError` unless ``x`` is a float (N, in_chans, H, W) batch in [0, 1].

    The input contract of every robin model: float images in [0, 1] (the model normalises
    inside), shape (N, C, H, W); with ``dtype`` (the model's parameter dtype) also of that
    dtype, so a float64 batch for a float32 model gets this message, not torch's.
    """
    if not isinstance(x, torch.Tensor):
        raise InputError(f"expected a torch.Tensor of images, got {type(x).__name__}")
    if x.dim() != 4:
        raise InputError(f"expected images of shape (N, {in_chans}, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != in_chans:
        raise InputError(
            f"expected {in_chans} input channel(s), got {x.shape[1]} (shape {tuple(x.shape)}); "
            f"build the model with in_chans={x.shape[1]} for such inputs"
        )
    if not x.is_floating_point():
        raise InputError(f"expected floating-point images in [0, 1], got dtype {x.dtype}")
    if dtype is not None and x.dtype != dtype:
        raise InputError(f"expected {str(dtype).removeprefix('torch.')} images (the model's dtype), got dtype "
                         f"{x.dtype}; convert them with images.to({dtype})")
    if x.numel():
        lo, hi = torch.aminmax(x.detach())
        if not (torch.isfinite(lo) and torch.isfinite(hi)):
            raise InputError("images contain NaN or Inf")
        if lo < 0 or hi > 1:
            raise InputError(
                f"images must lie in [0, 1] (models normalise inside), got values in [{lo.item():.4g}, {hi.item():.4g}]"
            )


LEGACY_STATS_MESSAGE = (
    "this state dict has no input mean/std (written by robin_plugin 0.1): the model keeps its own, so build it with "
    "the statistics it was trained with (robin_plugin.training.load_run does); save it again to store them"
)


def default_stats(in_chans: int, mean, std) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """CIFAR-10 statistics for RGB; 0.5 / 0.25 per channel otherwise, unless given."""
    if mean is None:
        mean = CIFAR10_MEAN if in_chans == 3 else (0.5,) * in_chans
    if std is None:
        std = CIFAR10_STD if in_chans == 3 else (0.25,) * in_chans
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


class ClassifierHead(nn.Module):
    """Global pooling, dropout, classifier, and (optionally) a final BatchNorm on the logits.

    Args:
        num_features: channels C of the features it takes.
        num_classes: number of classes; 0 gives no classifier (the head returns pooled features).
        factory: the model's layer constructors (masked or dense classifier).
        last_bn: non-affine BatchNorm on the logits (only with a classifier).
        global_pool: ``"avg"`` (global average pool) or ``""`` (no pooling: without a
            classifier the head returns the features unchanged; with one, the classifier acts
            on each position like a 1x1 convolution and gives logit maps).
        drop_rate: dropout probability on the pooled features, before the classifier.

    Shapes: ``"avg"``: (N, C, H, W) -> (N, num_classes), or (N, C) with ``pre_logits=True`` or
    ``num_classes=0``. ``""``: (N, C, H, W) -> (N, num_classes, H, W), or (N, C, H, W) with
    ``pre_logits=True`` or ``num_classes=0``.
    """

    POOL_TYPES = ("avg", "")

    def __init__(
        self, num_features: int, num_classes: int, factory: LayerFactory, last_bn: bool,
        global_pool: str = "avg", drop_rate: float = 0.0,
    ):
        super().__init__()
        self.check_pool(global_pool)
        self.pool_type = global_pool
        self.per_position = not global_pool and num_classes > 0  # logit maps, see forward
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = factory.linear(num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.last_bn = factory.norm1d(num_classes) if (last_bn and num_classes > 0) else nn.Identity()

    @staticmethod
    def check_pool(global_pool: str) -> None:
        """Raise :class:`ConfigError` unless ``global_pool`` is one of :attr:`POOL_TYPES`."""
        if global_pool not in ClassifierHead.POOL_TYPES:
            raise ConfigError(
                f"robin models support global_pool='avg' (global average pool) or '' (no pooling), got {global_pool!r}"
            )

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.pool_type == "avg":
            x = x.mean(dim=(2, 3))  # (N, C)
        x = self.drop(x)
        if pre_logits:
            return x
        if not self.per_position:
            return self.last_bn(self.fc(x))  # (N, num_classes), or x itself without a classifier
        logits = self.fc(x.flatten(2).transpose(1, 2))  # (N, H*W, num_classes)
        logits = self.last_bn(logits.transpose(1, 2))  # (N, num_classes, H*W): BatchNorm1d over classes
        return logits.reshape(x.shape[0], -1, x.shape[2], x.shape[3])  # (N, num_classes, H, W)

    def channel_flow(self, g: ChannelGraph, x: int) -> None:
        """Declare the head in the channel graph ``g``: pooling, then the classifier reading value ``x``."""
        if self.pool_type == "avg":
            x = g.pool(x)
        if not isinstance(self.fc, nn.Identity):
            g.linear(self.fc, x)

    def extra_repr(self) -> str:
        return f"pool_type={self.pool_type!r}"


class RobinNetBase(nn.Module):
    """timm model API and robin bookkeeping shared by every robin model family.

    Subclasses build their body between :meth:`_setup` and :meth:`_finish` inside
    ``with self._building(device, dtype)``, and define:

    - ``feature_info``: one timm dict (``num_chs``, ``reduction``, ``module``) per feature
      level, the stem first, then one per stage;
    - ``stage_names``: the attributes holding the stages (``nn.Sequential`` of blocks), in order;
    - ``norm_names``: the modules after the last stage (final norm / activation), if any;
    - ``_forward_stem`` (input normalisation and stem) and, with a final norm, ``_forward_norm``;
    - ``forward_features``, spelled out per family so that TorchScript can compile it;
    - ``channel_graph``: the forward pass as channel operations (:mod:`.channels`), which
      channel shrinking reads instead of knowing the architecture.

    On top of those, this class gives timm's model API: ``forward_intermediates``,
    ``prune_intermediate_layers``, ``set_grad_checkpointing``, ``get_classifier``,
    ``reset_classifier``, ``no_weight_decay`` and ``head_hidden_size``.
    """

    # No class-level annotations: TorchScript reads them as attribute types and cannot resolve
    # PEP 563 strings. num_classes (int) and num_features (int) are set by _setup / subclasses.
    stage_names = ()  # tuple[str, ...]
    norm_names = ()  # tuple[str, ...]
    # TorchScript compiles properties unless told not to; these hold Python-only values
    __jit_unused_properties__ = ["pretrained_cfg", "default_cfg", "head_hidden_size"]

    def _setup(
        self, *, masked: bool, num_classes: int, in_chans: int, seed: int, last_bn: bool | None,
        mean, std, check_inputs: bool, masked_kwargs: dict,
        drop_rate: float = 0.0, drop_path_rate: float = 0.0, global_pool: str = "avg",
    ) -> LayerFactory:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ConfigError(f"num_classes must be an integer >= 0, got {num_classes!r}")
        if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
            raise ConfigError(f"in_chans must be an integer >= 1, got {in_chans!r}")
        for key, rate in (("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate)):
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
                raise ConfigError(f"{key} must be a probability in [0, 1), got {rate!r}")
        ClassifierHead.check_pool(global_pool)
        self.masked_kwargs = resolve_masked_kwargs(masked, masked_kwargs)
        self.masked = masked
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.seed = seed
        self.last_bn = masked if last_bn is None else bool(last_bn)
        self.drop_rate = float(drop_rate)
        self.drop_path_rate = float(drop_path_rate)
        self.global_pool = global_pool
        self.grad_checkpointing = False
        self.generator = stream_generator(seed, "body")
        mean, std = default_stats(in_chans, mean, std)
        self.normalize = InputNormalize(in_chans, mean, std, check_inputs)
        return make_layer_factory(masked, self.generator, **self.masked_kwargs)

    def _finish(self, factory: LayerFactory) -> None:
        """Build the head, apply the adaptive keep ratios and drop the construction generator."""
        self.head = ClassifierHead(
            self.num_features, self.num_classes, factory, self.last_bn, self.global_pool, self.drop_rate
        )
        if self.masked:
            set_keep_ratio(self, self.masked_kwargs["keep_ratio"], self.masked_kwargs["p"])
            self.register_load_state_dict_pre_hook(compact_load_pre_hook)  # timm's checkpoint_path= route
        del self.generator  # not part of the model's state: every draw has been made

    @contextlib.contextmanager
    def _building(self, device=None, dtype: torch.dtype | None = None) -> Iterator[None]:
        """Context for a constructor's body: build on the CPU, then move to ``device`` / ``dtype``.

        The seeded generators draw on the CPU, so the fixed weights do not depend on where the
        model goes. ``device`` None means the current default device (e.g. a ``with
        torch.device(...)`` block around :func:`timm.create_model`); a ``meta`` model is built on
        ``meta`` directly (nothing is drawn or allocated).
        """
        target = torch.device(device) if device is not None else torch.get_default_device()
        with torch.device(self._build_device(target)):
            yield
        if target != torch.device("cpu") or dtype is not None:
            self.to(device=target, dtype=dtype)

    @staticmethod
    def _build_device(target: torch.device) -> torch.device:
        """Where modules for ``target`` are built: ``meta`` for meta, else the CPU (seeded draws)."""
        return torch.device("meta") if target.type == "meta" else torch.device("cpu")

    @staticmethod
    def drop_path_rates(num_blocks: int, drop_path_rate: float) -> list[float]:
        """Stochastic-depth rate of each of ``num_blocks`` residual blocks, in network order.

        As timm: linear from 0 (first block) to ``drop_path_rate`` (last block); a single block
        gets ``drop_path_rate``.
        """
        if num_blocks <= 1:
            return [float(drop_path_rate)] * num_blocks
        return [drop_path_rate * i / (num_blocks - 1) for i in range(num_blocks)]

    # --- timm model API -------------------------------------------------------------------
    def _forward_stem(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) in [0, 1] -> stem features
        raise NotImplementedError

    def _forward_norm(self, x: torch.Tensor) -> torch.Tensor:  # last stage -> final features
        return x

    def _forward_stage(self, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(stage, x)  # one checkpoint per block
        return stage(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> unpooled
        raise NotImplementedError

    @torch.jit.ignore
    def channel_graph(self) -> ChannelGraph:
        """This model's forward pass as channel operations (see :mod:`robin_plugin.models.channels`)."""
        raise NotImplementedError(f"{type(self).__name__} declares no channel graph")

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # torch.fx copies the root forward's annotations into the code it generates; PEP 563 strings
    # there ("torch.Tensor") make TorchScript reject an fx-traced robin model
    forward.__annotations__ = {"x": torch.Tensor, "return": torch.Tensor}

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Forward pass that also returns the features of the levels in ``feature_info``.

        Args:
            x: images (N, in_chans, H, W) in [0, 1].
            indices: levels to return: None for all, an int n for the last n, or a sequence
                of indices (negative ones count from the end). Level 0 is the stem.
            norm: apply the final norm (WideResNets: BN + ReLU) to the last level's feature.
            stop_early: stop after the deepest level asked for; the returned final features
                are then that level's (without the final norm).
            output_fmt: only ``"NCHW"``.
            intermediates_only: return only the list of features.

        Returns:
            ``(final, [features])``, where ``final`` equals ``forward_features(x)`` unless
            ``stop_early`` stopped before the last stage; or ``[features]`` alone. Level i has
            ``feature_info[i]["num_chs"]`` channels at 1 / ``feature_info[i]["reduction"]`` of
            the input size.
        """
        if output_fmt != "NCHW":
            raise ConfigError(f"robin models only give output_fmt='NCHW' features, got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        last = len(self.stage_names)
        intermediates = []
        x = self._forward_stem(x)
        if 0 in take_indices:
            intermediates.append(x)
        feat_idx = 0
        for feat_idx, name in enumerate(self.stage_names[:max_index] if stop_early else self.stage_names, start=1):
            x = self._forward_stage(getattr(self, name), x)
            if feat_idx in take_indices:
                intermediates.append(self._forward_norm(x) if (norm and feat_idx == last) else x)
        if intermediates_only:
            return intermediates
        if feat_idx == last:
            x = self._forward_norm(x)
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] | tuple[int, ...] = 1, prune_norm: bool = False, prune_head: bool = True,
    ) -> list[int]:
        """Remove what ``forward_intermediates(indices=...)`` does not need (as timm does).

        Stages after the deepest level asked for become empty; the final norm goes with
        ``prune_norm`` or when the last stage goes (then ``num_features`` becomes that level's
        width); the classifier and pooling go with ``prune_head`` or when the last stage goes.
        State-dict keys of the removed modules disappear.

        Returns:
            The absolute indices to pass to :meth:`forward_intermediates`.
        """
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        prune_end = max_index < len(self.stage_names)
        for name in self.stage_names[max_index:]:
            setattr(self, name, nn.Sequential())  # empty, so checkpoint_seq and forward_features still run
        if prune_norm or prune_end:
            for name in self.norm_names:
                setattr(self, name, nn.Identity())
        if prune_end:
            self.num_features = self.feature_info[max_index]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return take_indices

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each residual block in the backward pass instead of storing its activations.

        Outputs and gradients are unchanged; BatchNorm running statistics are updated twice per
        training step (the recomputation runs the block again).
        """
        self.grad_checkpointing = bool(enable)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameter names to exclude from weight decay: none.

        A masked model's only parameters are its scores, and robin trains them with weight decay
        (as the paper does). A dense twin's 1-D parameters (BatchNorm affine, classifier bias) are
        already left undecayed by timm's optimizer factory (``filter_bias_and_bn``). The input
        statistics ``normalize.mean`` / ``normalize.std`` are buffers, never optimised.
        """
        return set()

    @property
    def head_hidden_size(self) -> int:
        """Width of ``forward_head(x, pre_logits=True)``: ``num_features`` (no pre-logits layer)."""
        return self.num_features

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False):
        return "head.fc" if name_only else self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier (and last BatchNorm) for ``num_classes`` classes.

        ``global_pool`` (``"avg"`` or ``""``; None keeps the current one) sets the pooling (see
        :class:`ClassifierHead`). The new head keeps the model's device, dtype, dropout
        and train/eval mode.

        The new classifier's weights come from the stream ``(seed, "head/<num_classes>")``.
        Every other layer keeps its keep ratio; a masked classifier keeps the old classifier's
        ratio (or, if there was none, the adaptive ratio the construction-time ``keep_ratio`` and
        ``p`` give a layer of its size).
        """
        if global_pool is None:
            global_pool = self.head.pool_type
        ClassifierHead.check_pool(global_pool)
        ref = next(self.parameters())
        device, dtype = ref.device, ref.dtype
        old_fc = self.head.fc
        self.num_classes = num_classes
        self.global_pool = global_pool
        with torch.device(self._build_device(device)):  # seeded draws on the CPU, then moved
            factory = make_layer_factory(self.masked, stream_generator(self.seed, f"head/{num_classes}"), **self.masked_kwargs)
            head = ClassifierHead(self.num_features, num_classes, factory, self.last_bn, global_pool, self.drop_rate)
        self.head = head.to(device=device, dtype=dtype)
        self.head.train(self.training)
        if isinstance(self.head.fc, MaskedLayer):
            if isinstance(old_fc, MaskedLayer):
                self.head.fc.keep_ratio = old_fc.keep_ratio
            else:
                sizes = [m.weight.numel() for _, m in masked_layers(self)]  # the classifier is last
                mk = self.masked_kwargs
                self.head.fc.keep_ratio = adaptive_keep_ratios(sizes, mk["keep_ratio"], mk["p"])[-1]

    # --- timm's pretrained_cfg, kept true to the instance ---------------------------------------
    @property
    def pretrained_cfg(self) -> dict:
        """timm's ``pretrained_cfg`` of this instance, true to what the model expects.

        The model normalises inside, so timm's data config must not: ``mean`` is 0 and ``std``
        is 1 per channel, and ``input_size`` has this model's ``in_chans``; ``num_classes`` is the
        current one. Only fields of timm's ``PretrainedCfg`` appear (timm's hub writer
        ``save_for_hf`` copies the dict into ``config.json`` and ``PretrainedCfg(**cfg)`` refuses
        other keys). The statistics the model applies inside are its buffers
        ``normalize.mean`` / ``normalize.std`` (see :meth:`input_stats`).
        """
        try:
            base = self.__dict__["_pretrained_cfg"]
        except KeyError:
            raise AttributeError("pretrained_cfg") from None
        c = self.in_chans
        input_size = tuple(base.get("input_size") or (3, 32, 32))
        cfg = {k: v for k, v in base.items() if k in _PRETRAINED_CFG_FIELDS}
        cfg.update({"num_classes": self.num_classes, "input_size": (c, *input_size[1:]), "mean": (0.0,) * c,
                    "std": (1.0,) * c})
        return cfg

    @torch.jit.ignore
    def input_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(mean, std)`` the model applies to its [0, 1] inputs, one value per channel (from its buffers)."""
        return (tuple(float(v) for v in self.normalize.mean.flatten().tolist()),
                tuple(float(v) for v in self.normalize.std.flatten().tolist()))

    @pretrained_cfg.setter
    def pretrained_cfg(self, cfg: dict) -> None:
        self.__dict__["_pretrained_cfg"] = dict(cfg)

    @property
    def default_cfg(self) -> dict:  # timm's older name for pretrained_cfg
        return self.pretrained_cfg

    @default_cfg.setter
    def default_cfg(self, cfg: dict) -> None:
        self.pretrained_cfg = cfg
