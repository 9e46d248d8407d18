"""A timm hub folder: ``config.json`` + ``model.safetensors`` + a ``README.md`` model card.

timm (1.0.31) loads such a folder with ``timm.create_model('local-dir:FOLDER', pretrained=True)``
and a Hugging Face Hub repository holding the same three files with
``timm.create_model('hf-hub:USER/REPO', pretrained=True)`` (``timm/models/_hub.py``,
``_factory.py``). Either way ``import robin_plugin`` must come first: it registers the robin
architectures that ``config.json`` names.

- ``config.json``: ``architecture``, ``num_classes``, ``num_features``, ``global_pool``,
  ``pretrained_cfg`` (only fields of timm's ``PretrainedCfg``; ``mean`` 0 and ``std`` 1 because
  robin models normalise inside) and ``model_args`` (the validated architecture arguments of
  :mod:`robin_plugin.models.spec`, among them the seed that regenerates the fixed weights), plus a
  ``robin`` entry with the format, the encoding, the keep ratio and the statistics applied inside.
- ``model.safetensors``: for a masked model, the compact encoding (:mod:`.compact`: seed recipe
  + coded masks + BatchNorm statistics, about one bit per weight or less); timm reads it with
  safetensors and hands it to the robin entry point's filter function, which decodes it. For a
  dense twin, its plain state dict.
- ``README.md``: a model card with the training recipe and the results in RobustBench's fields.

The folder is written next to its destination and renamed into place, so a failed export never
leaves a half-written folder.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch.nn as nn

from ..errors import ConfigError
from ..io import FileExistsRobinError, WriteError, _umask, save_safetensors
from ..formats.compact import METADATA
from ..models.spec import model_spec
from ..pruning import is_masked
from ..summary import summarize
from .compact import ExportError, compact_tensors

__all__ = ["HUB_FORMAT", "export_hub", "hub_config"]

HUB_FORMAT = "robin_hub/1"

# fields of timm's PretrainedCfg worth publishing (timm refuses unknown fields)
_CFG_FIELDS = ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std", "num_classes", "pool_size",
               "first_conv", "classifier", "license", "fixed_input_size")


def hub_config(model: nn.Module) -> dict[str, Any]:
    """The ``config.json`` of ``model``'s hub folder (see the module docstring)."""
    spec = model_spec(model, include_masked=is_masked(model))
    if spec is None:
        raise ExportError(f"{type(model).__name__} is not a robin timm model; a hub folder needs a registered architecture")
    cfg = model.pretrained_cfg
    masked = is_masked(model)
    model_args = spec.to_json()["kwargs"]
    return {
        "architecture": spec.name,
        "num_classes": model.num_classes,
        "num_features": model.num_features,
        "global_pool": "avg",
        "pretrained_cfg": {k: list(cfg[k]) if isinstance(cfg.get(k), tuple) else cfg[k] for k in _CFG_FIELDS if k in cfg},
        "model_args": model_args,
        "robin": {
            "format": HUB_FORMAT,
            "encoding": "robin_compact" if masked else "state_dict",
            "masked": masked,
            "keep_ratio": summarize(model).keep_ratio if masked else 1.0,
            "dataset_mean": list(cfg["dataset_mean"]),
            "dataset_std": list(cfg["dataset_std"]),
        },
    }


def export_hub(
    model: nn.Module,
    folder: str | os.PathLike,
    *,
    overwrite: bool = False,
    train_config: Mapping[str, Any] | None = None,
    results: Mapping[str, Any] | None = None,
    model_info: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` as a timm hub folder (``config.json``, ``model.safetensors``, ``README.md``).

    Args:
        model: a robin timm model (masked or dense twin), float32.
        folder: destination folder (created; refused if it exists unless ``overwrite``).
        overwrite: replace an existing folder.
        train_config: the run's ``config.json`` (its recipe goes into the model card).
        results: the run's ``results.json`` (clean / PGD test accuracy).
        model_info: a RobustBench-style result written by ``robin eval`` (AutoAttack accuracy).

    Returns:
        The folder. Load it with ``timm.create_model('local-dir:' + str(folder), pretrained=True)``
        after ``import robin_plugin``.
    """
    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise FileExistsRobinError(f"{folder} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} exists and is not a folder")
    config = hub_config(model)
    if is_masked(model):
        tensors, _ = compact_tensors(model)
        metadata = METADATA
    else:
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        metadata = {"format": "pt"}
    card = model_card(config, train_config=train_config, results=results, model_info=model_info)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    except OSError as e:
        raise WriteError(f"cannot write {folder}: {e.strerror or e}; nothing was changed") from e
    try:
        save_safetensors(tensors, tmp / "model.safetensors", metadata)  # sorted header: same model -> same bytes
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(card, encoding="utf-8")
        for f in tmp.iterdir():
            os.chmod(f, 0o666 & ~_umask())
        os.chmod(tmp, 0o777 & ~_umask())
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            folder.rename(old)
        tmp.rename(folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise WriteError(f"cannot write {folder}: {e.strerror or e}; nothing was changed") from e
        raise
    return folder


def _short(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _pct(x: Any) -> str | None:
    if x is None:
        return None
    return f"{100 * x:.2f}" if isinstance(x, (int, float)) and not isinstance(x, bool) else str(x)


def model_card(
    config: Mapping[str, Any],
    *,
    train_config: Mapping[str, Any] | None = None,
    results: Mapping[str, Any] | None = None,
    model_info: Mapping[str, Any] | None = None,
) -> str:
    """The ``README.md`` of a hub folder: usage, architecture, recipe and results (Markdown)."""
    arch, robin = config["architecture"], config["robin"]
    lines = [
        "---",
        "library_name: timm",
        "license: mit",
        "tags: [timm, image-classification, adversarial-robustness, robin_plugin"
        + (", binary-weights, pruning]" if robin["masked"] else "]"),
        "---",
        "",
        f"# {arch}" + (f": robust binary subnetwork, keep ratio {robin['keep_ratio']:.4g}" if robin["masked"] else ""),
        "",
        ("A masked binary network (Liu, Zhao, Süsstrunk, Salzmann, *Robust Binary Models by Pruning "
         "Randomly-initialized Networks*, NeurIPS 2022): fixed +-1 weights regenerated from a seed, a learned "
         "mask keeping the stated fraction of them, non-affine BatchNorm. " if robin["masked"] else
         "A dense full-precision model from robin_plugin (the dense twin of a robin architecture). ")
        + "Exported by robin_plugin, a timm plugin.",
        "",
        "## Use",
        "",
        "```python",
        "import timm",
        "import robin_plugin  # registers the robin architectures with timm",
        "",
        "model = timm.create_model('local-dir:PATH/TO/THIS/FOLDER', pretrained=True).eval()",
        "# or, from the Hugging Face Hub: timm.create_model('hf-hub:USER/REPO', pretrained=True)",
        "```",
        "",
        f"Inputs: images in [0, 1], shape (N, {config['model_args'].get('in_chans', 3)}, H, W); the model normalises "
        f"inside with mean {_short(robin['dataset_mean'])} and std {_short(robin['dataset_std'])}. timm's "
        "`create_transform(**resolve_data_config({}, model=model))` yields exactly such tensors.",
        "",
        "## Files",
        "",
        f"- `model.safetensors`: {'the robin compact encoding (seed recipe, coded masks, BatchNorm statistics)' if robin['masked'] else 'the state dict'}",
        "- `config.json`: architecture, `model_args` (validated by robin_plugin before anything is built), `pretrained_cfg`",
        "",
    ]
    if train_config:
        keys = ("dataset", "keep_ratio", "p", "attack", "eps", "step_size", "attack_steps", "epochs", "batch_size", "lr",
                "lr_schedule", "momentum", "weight_decay", "train_subset", "seed", "model_kwargs")
        lines += ["## Training recipe", "", "| key | value |", "|---|---|"]
        lines += [f"| `{k}` | `{json.dumps(train_config[k])}` |" for k in keys if k in train_config]
        lines.append("")
    fields: dict[str, Any] = {}
    if results:
        test = results.get("test") or {}
        fields.update(dataset=results.get("dataset"), eps=results.get("eps"), n=test.get("n"),
                      clean_acc=_pct(test.get("clean_acc")))
        for k, v in test.items():
            if k.startswith("pgd") and k.endswith("_acc"):
                fields[k] = _pct(v)
    if model_info:
        for k in ("name", "link", "authors", "venue", "architecture", "eps", "clean_acc", "autoattack_acc", "dataset",
                  "threat_model", "additional_data", "number_forward_passes", "reported"):
            if k in model_info:
                fields[k] = model_info[k]
    if fields:
        lines += ["## Results (RobustBench fields; accuracies in percent)", "", "| field | value |", "|---|---|"]
        lines += [f"| `{k}` | {v} |" for k, v in fields.items() if v is not None]
        lines += ["", "`autoattack_acc` appears only when the folder was exported with an evaluation result "
                  "(`robin eval`); PGD figures are not AutoAttack figures.", ""]
    return "\n".join(lines)
