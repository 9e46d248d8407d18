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
leaves a half-written folder. The config file itself is written and read by
:mod:`robin_plugin.formats.hub`.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch.nn as nn

from ..data.registry import dataset_info
from ..errors import ConfigError
from ..io import FileExistsRobinError, WriteError, _umask, save_safetensors
from ..formats.compact import METADATA
from ..formats.hub import HUB_FORMAT, write_hub_config
from ..models.spec import model_spec
from ..pruning import is_masked
from ..summary import summarize
from .compact import ExportError, compact_tensors

__all__ = ["export_hub", "hub_config", "run_data_config"]

# fields of timm's PretrainedCfg worth publishing (timm refuses unknown fields)
_CFG_FIELDS = ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std", "num_classes", "pool_size",
               "first_conv", "classifier", "license", "fixed_input_size")


def run_data_config(train_config: Mapping[str, Any]) -> dict[str, Any]:
    """timm's data fields for a model trained by ``robin train`` with ``train_config`` (its config.json).

    The images the run saw: ``input_size`` (C, S, S) with the dataset's channels and side S (the
    config's ``image_size`` when it has one, else the dataset's), ``crop_pct`` 1.0 and center
    crop, so that timm's eval transform (``Resize(S / crop_pct)``, ``CenterCrop(S)``) leaves an
    S x S image as it is: a 28x28 Fashion-MNIST run says (1, 28, 28), and timm's transform of a
    raw test image is robin's own test tensor. ``interpolation`` is bilinear, as robin's
    ImageFolder loader resizes.

    Raises:
        ConfigError: ``train_config`` names no known dataset.
    """
    name = train_config.get("dataset")
    if not isinstance(name, str):
        raise ConfigError(f"the run's config.json names no dataset (got {name!r}); pass data_config= instead")
    info = dataset_info(name)
    size = train_config.get("image_size") or info.image_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"image_size must be an integer >= 1, got {size!r}")
    return {"input_size": (info.in_chans, size, size), "crop_pct": 1.0, "crop_mode": "center",
            "interpolation": "bilinear", "fixed_input_size": False}


def hub_config(model: nn.Module, data_config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``config.json`` of ``model``'s hub folder (see the module docstring).

    ``data_config``: timm data fields (``input_size``, ``crop_pct``, ``crop_mode``,
    ``interpolation``) of the data the model was trained on (:func:`run_data_config`); by
    default the architecture's (CIFAR size, 32x32).
    """
    spec = model_spec(model, include_masked=is_masked(model))
    if spec is None:
        raise ExportError(f"{type(model).__name__} is not a robin timm model; a hub folder needs a registered architecture")
    cfg = dict(model.pretrained_cfg)
    if data_config:
        unknown = sorted(set(data_config) - {"input_size", "crop_pct", "crop_mode", "interpolation", "fixed_input_size"})
        if unknown:
            raise ConfigError(f"data_config takes input_size, crop_pct, crop_mode, interpolation, fixed_input_size; got {unknown}")
        cfg.update(data_config)
        if tuple(cfg["input_size"])[0] != model.in_chans:
            raise ConfigError(f"data_config input_size {tuple(cfg['input_size'])} does not match the model's "
                              f"in_chans={model.in_chans}")
    mean, std = model.input_stats()
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
            "dataset_mean": list(mean),
            "dataset_std": list(std),
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
    model_info_path: str | os.PathLike | None = None,
    data_config: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` as a timm hub folder (``config.json``, ``model.safetensors``, ``README.md``).

    Args:
        model: a robin timm model (masked or dense twin), float32.
        folder: destination folder (created; refused if it exists unless ``overwrite``).
        overwrite: replace an existing folder.
        train_config: the run's ``config.json`` (its recipe goes into the model card).
        results: the run's ``results.json`` (clean / PGD test accuracy).
        model_info: a result written by ``robin eval``: the evaluation the model card shows.
        model_info_path: the file ``model_info`` was read from (named in the model card).
        data_config: timm data fields of the training data (see :func:`hub_config`); by
            default :func:`run_data_config` of ``train_config`` when it names a dataset, else
            the architecture's defaults.

    Returns:
        The folder. Load it with ``timm.create_model('local-dir:' + str(folder), pretrained=True)``
        after ``import robin_plugin``.
    """
    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise FileExistsRobinError(f"{folder} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} exists and is not a folder")
    if data_config is None and train_config and train_config.get("dataset"):
        data_config = run_data_config(train_config)
    config = hub_config(model, data_config)
    if is_masked(model):
        tensors, _ = compact_tensors(model)
        metadata = METADATA
    else:
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        metadata = {"format": "pt"}
    card = model_card(config, train_config=train_config, results=results, model_info=model_info,
                      model_info_path=model_info_path)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    except OSError as e:
        raise WriteError(f"cannot write {folder}: {e.strerror or e}; nothing was changed") from e
    try:
        save_safetensors(tensors, tmp / "model.safetensors", metadata)  # sorted header: same model -> same bytes
        write_hub_config(tmp, config)
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


def _evaluation_section(results: Mapping[str, Any] | None, model_info: Mapping[str, Any] | None,
                        model_info_path: str | os.PathLike | None,
                        train_config: Mapping[str, Any] | None = None) -> list[str]:
    """The model card's one evaluation: what ran (dataset, norm, eps, n, attack set, seed), its figures, its file."""
    if model_info:
        settings = model_info.get("settings") if isinstance(model_info.get("settings"), Mapping) else {}
        attack_set = model_info.get("attack_set") or ("autoattack" if "autoattack_acc" in model_info else "?")
        robust_key = "autoattack_acc" if attack_set == "autoattack" and "autoattack_acc" in model_info else "robust_acc"
        source = Path(model_info_path).name if model_info_path is not None else "a robin eval result"
        rows = [("source", f"`{source}` (robin eval)"), ("dataset", model_info.get("dataset")),
                ("threat model", model_info.get("threat_model", "Linf")), ("eps", model_info.get("eps")),
                ("n (first test points)", model_info.get("n_points")), ("attack set", attack_set),
                ("seed", settings.get("seed")), ("clean accuracy (%)", model_info.get("clean_acc")),
                (f"robust accuracy under {attack_set} (%)", model_info.get(robust_key))]
        if model_info.get("pgd_acc") is not None:
            rows.append((f"PGD-{model_info.get('pgd_steps')} accuracy (%)", model_info["pgd_acc"]))
        if model_info.get("unreliable"):
            rows.append(("checks", "a gradient-masking check failed: the robust accuracy is an upper bound"))
        note = ("`autoattack` is the full standard AutoAttack ensemble at its original strength; any other attack set "
                "is named by its components and is not an AutoAttack figure.")
    elif results:
        test = results.get("test") or {}
        rows = [("source", "`results.json` (robin train's test of the best epoch)"), ("dataset", results.get("dataset")),
                ("threat model", "Linf"), ("eps", results.get("eps")), ("n (first test points)", test.get("n")),
                ("attack set", " ".join(k.removesuffix("_acc").upper() for k in test if k.startswith("pgd")) or "none"),
                ("seed", (train_config or {}).get("seed")), ("clean accuracy (%)", _pct(test.get("clean_acc")))]
        rows += [(f"{k.removesuffix('_acc')} accuracy (%)", _pct(v)) for k, v in test.items()
                 if k.startswith("pgd") and k.endswith("_acc")]
        note = "PGD figures are not AutoAttack figures: run `robin eval` and export with `--model-info` for those."
    else:
        return []
    lines = ["## Evaluation", "", "| field | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows if v is not None]
    return lines + ["", note, ""]


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
    model_info_path: str | os.PathLike | None = None,
) -> str:
    """The ``README.md`` of a hub folder: usage, architecture, recipe and one evaluation (Markdown).

    The evaluation is ``model_info`` (a ``robin eval`` result, from ``model_info_path``) when
    given, else the run's own test in ``results``: never figures of the two mixed.
    """
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
    lines += _evaluation_section(results, model_info, model_info_path, train_config)
    return "\n".join(lines)
