"""Options and helpers shared by the ``robin`` commands: model arguments, the model source, matplotlib's folder."""
from __future__ import annotations

import argparse
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import timm
import torch.nn as nn

from .. import models  # noqa: F401  (registers the robin models with timm)
from ..errors import ConfigError, UnknownNameError, closest
from ..export.compact import load_compact
from ..formats.files import FileContentError, parse_json
from ..loading import load_model

__all__ = ["add_source_args", "check_model_name", "keep_matplotlib_out_of_home", "load_model_for_cli", "parse_model_kwargs"]


def parse_model_kwargs(text: str) -> dict[str, Any]:
    """``--model-kwargs`` as a dict: a JSON object; list values of ``mean`` / ``std`` become tuples."""
    try:
        kwargs = parse_json(text, max_bytes=1 << 20)
    except FileContentError as e:
        raise ConfigError(f"--model-kwargs must be a JSON object, got {text!r:.200} ({e})") from None
    if not isinstance(kwargs, dict):
        raise ConfigError(f"--model-kwargs must be a JSON object, got {text!r}")
    for key in ("mean", "std"):
        if isinstance(kwargs.get(key), list):
            kwargs[key] = tuple(kwargs[key])
    return kwargs


def check_model_name(name: str) -> str:
    """Return ``name`` if timm knows it, else raise :class:`UnknownNameError` with the closest robin model."""
    if not timm.is_model(name):
        names = timm.list_models("robin_*")
        raise UnknownNameError(f"unknown model {name!r}{closest(name, names)}; robin models: {', '.join(names)}")
    return name


def keep_matplotlib_out_of_home() -> None:
    """Point matplotlib's config and cache folder (``MPLCONFIGDIR``) away from the home directory.

    matplotlib creates ``~/.config/matplotlib`` and ``~/.cache/matplotlib`` (its font cache) on
    import; a command that only draws PNGs with the Agg canvas should not write there. Unless the
    user set ``MPLCONFIGDIR``, it becomes ``<tmp>/robin-matplotlib-<uid>`` (created 0700, used
    only if it is our own folder and not a link), or else a fresh temporary folder. Call it
    before matplotlib is imported (``robin inspect``, ``robin leaderboard``).
    """
    if os.environ.get("MPLCONFIGDIR"):
        return
    uid = os.getuid() if hasattr(os, "getuid") else 0
    folder = os.path.join(tempfile.gettempdir(), f"robin-matplotlib-{uid}")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        st = os.lstat(folder)
        ours = stat.S_ISDIR(st.st_mode) and (not hasattr(os, "getuid") or st.st_uid == uid) and not st.st_mode & 0o022
    except OSError:
        ours = False
    os.environ["MPLCONFIGDIR"] = folder if ours else tempfile.mkdtemp(prefix="robin-matplotlib-")


def add_source_args(p: argparse.ArgumentParser, *, required: bool) -> None:
    """Add the model source options of ``robin export`` and ``robin inspect`` (read by :func:`load_model_for_cli`).

    ``required``: whether the command needs a model (``robin inspect`` may draw metrics alone).
    """
    src = p.add_argument_group("model source (a run folder, a compact file, or a model name with a checkpoint)")
    src.add_argument("--run", type=Path, help="a finished `robin train` folder: its config.json decides the architecture")
    src.add_argument("--which", choices=("best", "last"), default="best",
                     help="with --run: the best epoch (model_best.safetensors, default) or the last one")
    src.add_argument("--compact", type=Path, help="a compact export (.safetensors) to read")
    src.add_argument("--model", help="timm model name, e.g. robin_resnet34")
    src.add_argument("--model-kwargs", default="{}",
                     help="JSON keyword arguments for timm.create_model, e.g. '{\"keep_ratio\": 0.01, \"p\": 0.1}'; "
                          "use the keep_ratio and p the model was trained with")
    src.add_argument("--checkpoint", type=Path,
                     help="the model's state dict: a safetensors file (a plain one, or a robin training checkpoint) or a "
                          "timm CheckpointSaver / torch.save file (read with weights_only=True)")
    p.set_defaults(_source_required=required)


def load_model_for_cli(args: argparse.Namespace) -> nn.Module | None:
    """The model named by ``--run``, ``--compact`` or ``--model/--model-kwargs/--checkpoint`` (:func:`~robin_plugin.loading.load_model`).

    Returns None when no source is given and the command does not need one; raises
    :class:`~robin_plugin.errors.ConfigError` on sources that contradict each other.
    """
    if args.run is not None:
        if args.compact is not None or args.model is not None or args.checkpoint is not None:
            raise ConfigError("give one model source: --run, --compact, or --model with --checkpoint")
        return load_model(args.run, which=args.which)
    if args.compact is not None:
        if args.model is not None or args.checkpoint is not None:
            raise ConfigError("give either --compact or --model with --checkpoint, not both")
        return load_compact(args.compact)
    if args.model is None:
        if args.checkpoint is not None:
            raise ConfigError("--checkpoint needs --model (the architecture the state dict belongs to)")
        if args._source_required:
            raise ConfigError("no model given: pass --run DIR, --compact FILE, or --model NAME --checkpoint FILE")
        return None
    check_model_name(args.model)
    kwargs = parse_model_kwargs(args.model_kwargs)
    if args.checkpoint is None:
        raise ConfigError("--model needs --checkpoint (a freshly initialised model has nothing to export or inspect)")
    return load_model(args.checkpoint, model=args.model, model_kwargs=kwargs)
