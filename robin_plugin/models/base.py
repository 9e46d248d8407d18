"""RobinNetBase: the timm model API and robin bookkeeping every robin model family shares.

Long (about 400 lines) because the class is the whole timm model contract every family answers the
same way (``forward_features`` / ``forward_head``, ``reset_classifier``, ``forward_intermediates``
and ``prune_intermediate_layers``, gradient checkpointing, ``group_matcher``, ``pretrained_cfg``):
splitting it would scatter one class over several files. The family files keep only their blocks
and stage layout.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator

import torch
import torch.nn as nn
from timm.models import PretrainedCfg, build_model_with_cfg, checkpoint_seq
from timm.models._features import feature_take_indices

from ..errors import ConfigError
from ..layers.masked import MaskedLayer
from ..pruning import adaptive_keep_ratios, masked_layers, set_keep_ratio
from ..rng import stream_generator
from .args import ModelArgs, check_global_pool
from .channels import ChannelGraph
from .factory import LayerFactory, make_layer_factory
from .head import ClassifierHead
from .inputs import InputNormalize, default_stats
from .timm_loading import check_weight_source, checkpoint_filter_fn, compact_load_pre_hook, missing_weights_message

__all__ = ["RobinNetBase", "default_cfg"]

_PRETRAINED_CFG_FIELDS = frozenset(f.name for f in dataclasses.fields(PretrainedCfg))


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
        self, masked: bool, kwargs: dict, default_mean: tuple[float, ...] | None = None,
        default_std: tuple[float, ...] | None = None,
    ) -> LayerFactory:
        """Check the model's arguments and build what every family has; returns the layer factory.

        Args:
            masked: masked binary layers, or the dense twin.
            kwargs: the constructor's keyword arguments, :class:`ModelArgs` fields (anything else
                is a ``TypeError``, as for any constructor).
            default_mean, default_std: the family's input statistics for 3 channels when ``mean``
                / ``std`` are not given (else :func:`default_stats`).
        """
        args = ModelArgs(**kwargs).for_model(masked)
        if args.in_chans == 3:
            args = dataclasses.replace(args, mean=args.mean or default_mean, std=args.std or default_std)
        mean, std = default_stats(args.in_chans, args.mean, args.std)
        self.args = args
        self.masked_kwargs = args.masked_kwargs()
        self.masked = masked
        self.num_classes = args.num_classes
        self.in_chans = args.in_chans
        self.seed = args.seed
        self.last_bn = masked if args.last_bn is None else args.last_bn
        self.drop_rate = args.drop_rate
        self.drop_path_rate = args.drop_path_rate
        self.global_pool = args.global_pool
        self.grad_checkpointing = False
        self.generator = stream_generator(args.seed, "body")
        self.normalize = InputNormalize(args.in_chans, mean, std, args.check_inputs)
        return make_layer_factory(masked, self.generator, args)

    def _finish(self, factory: LayerFactory) -> None:
        """Build the head, apply the adaptive keep ratios and drop the construction generator."""
        self.head = ClassifierHead(
            self.num_features, self.num_classes, factory, self.last_bn, self.global_pool, self.drop_rate
        )
        if self.masked:
            set_keep_ratio(self, self.args.keep_ratio, self.args.p)
            self.register_load_state_dict_pre_hook(compact_load_pre_hook)  # timm's checkpoint_path= route
        del self.generator  # not part of the model's state: every draw has been made

    @classmethod
    def create(cls, variant: str, pretrained: bool = False, **kwargs) -> nn.Module:
        """Build the registered model ``variant`` with timm's ``build_model_with_cfg`` (what each entry point does).

        Weights come only from local sources (:func:`~robin_plugin.models.timm_loading.check_weight_source`).
        ``pretrained=True`` with a file in ``pretrained_cfg_overlay`` loads it here; without one,
        the weights can only come from ``timm.create_model``'s ``checkpoint_path=``, which timm
        loads after the entry point returns and never passes to it. Such a model refuses to run
        or switch mode (:class:`ConfigError`: it has no hosted weights) until a state dict is
        loaded into it, so ``pretrained=True`` never gives random weights silently.
        """
        load_now = check_weight_source(variant, pretrained, kwargs)
        model = build_model_with_cfg(
            cls, variant, load_now, pretrained_filter_fn=checkpoint_filter_fn,
            feature_cfg=dict(feature_cls="getter", out_indices=tuple(range(len(cls.stage_names) + 1))), **kwargs,
        )
        if pretrained and not load_now:
            getattr(model, "model", model)._await_weights(missing_weights_message(variant))  # inside a features wrapper
        return model

    def _await_weights(self, message: str) -> None:
        """Refuse ``forward`` and ``train`` / ``eval`` with ``message`` until a state dict is loaded."""
        handles = []

        def refuse(module: nn.Module, inputs: tuple) -> None:
            raise ConfigError(message)

        def loaded(module: nn.Module, incompatible_keys) -> None:
            for handle in handles:
                handle.remove()
            self.__dict__.pop("_weights_missing", None)

        handles += [self.register_forward_pre_hook(refuse), self.register_load_state_dict_post_hook(loaded)]
        self.__dict__["_weights_missing"] = message

    def train(self, mode: bool = True) -> "RobinNetBase":
        message = self.__dict__.get("_weights_missing")
        if message is not None:
            raise ConfigError(message)
        return super().train(mode)

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
        check_global_pool("global_pool", global_pool)
        ref = next(self.parameters())
        device, dtype = ref.device, ref.dtype
        old_fc = self.head.fc
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.args = dataclasses.replace(self.args, num_classes=num_classes, global_pool=global_pool)
        with torch.device(self._build_device(device)):  # seeded draws on the CPU, then moved
            factory = make_layer_factory(self.masked, stream_generator(self.seed, f"head/{num_classes}"), self.args)
            head = ClassifierHead(self.num_features, num_classes, factory, self.last_bn, global_pool, self.drop_rate)
        self.head = head.to(device=device, dtype=dtype)
        self.head.train(self.training)
        if isinstance(self.head.fc, MaskedLayer):
            if isinstance(old_fc, MaskedLayer):
                self.head.fc.keep_ratio = old_fc.keep_ratio
            else:
                sizes = [m.weight.numel() for _, m in masked_layers(self)]  # the classifier is last
                self.head.fc.keep_ratio = adaptive_keep_ratios(sizes, self.args.keep_ratio, self.args.p)[-1]

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
    def current_args(self) -> ModelArgs:
        """The arguments that rebuild this model as it is now: the construction's, with the current
        classifier, resolved ``last_bn``, input statistics (buffers) and ``check_inputs``."""
        mean, std = self.input_stats()
        return dataclasses.replace(self.args, last_bn=self.last_bn, mean=mean, std=std,
                                   check_inputs=bool(self.normalize.check_inputs))

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
