"""``robin export`` and ``robin inspect``: argument parsers and their commands.

The integrator adds them to the top-level parser::

    from .export.cli import add_export_parser, add_inspect_parser
    add_export_parser(sub)
    add_inspect_parser(sub)

Each sets ``func`` to a function ``(args) -> int`` that prints its results (the only prints of
this package live in CLI functions) and raises :class:`~robin_plugin.errors.RobinError` on bad
input.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch.nn as nn

from .._cli_common import check_model_name, keep_matplotlib_out_of_home, parse_model_kwargs
from ..errors import ConfigError
from ..formats.files import MAX_JSON_BYTES, parse_json
from ..io import read_limited
from ..loading import load_model, read_state_dict
from .compact import compact_size_report, export_compact, load_compact
from .dense import dense_model, export_dense
from .deploy import deploy_model, save_deploy
from .shrink import pruned_channels
from .hub import export_hub, run_data_config
from .onnx import export_onnx

__all__ = ["add_export_parser", "add_inspect_parser", "load_model_for_cli"]

def _add_source_args(p: argparse.ArgumentParser, *, required: bool) -> None:
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
    """The model named by ``--run``, ``--compact`` or ``--model/--model-kwargs/--checkpoint`` (:func:`~robin_plugin.loading.load_model`)."""
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


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = parse_json(read_limited(path, MAX_JSON_BYTES))
    except (OSError, ValueError) as e:  # FileContentError (not UTF-8 / JSON, nested too deeply), size limit
        raise ConfigError(f"cannot read {path} as JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def _cmd_export(args: argparse.Namespace) -> int:
    model = load_model_for_cli(args)
    out: Path = args.out
    if args.format == "hub":
        run_files = {}
        if args.run is not None:
            for key, name in (("train_config", "config.json"), ("results", "results.json")):
                path = args.run / name
                run_files[key] = _read_json(path) if path.is_file() else None
        info = _read_json(args.model_info) if args.model_info is not None else None
        export_hub(model, out, overwrite=args.overwrite, model_info=info, model_info_path=args.model_info, **run_files)
        print(f"wrote {out}/: config.json, model.safetensors ({(out / 'model.safetensors').stat().st_size:,} bytes), README.md")
        print(f"  load it with: import robin_plugin; timm.create_model('local-dir:{out}', pretrained=True)")
        return 0
    if args.model_info is not None:
        raise ConfigError("--model-info only goes into a hub folder's model card (--format hub)")
    if args.format in ("onnx", "onnx-shrunk"):
        shrink = args.format == "onnx-shrunk"
        size = None
        if args.run is not None and (args.run / "config.json").is_file():  # the run's image size (28x28 Fashion-MNIST)
            size = run_data_config(_read_json(args.run / "config.json"))["input_size"]
        export_onnx(model, out, shrink=shrink, input_size=size, overwrite=args.overwrite)
        print(f"wrote {out}: ONNX, the {'shrunk ' if shrink else ''}dense twin, {out.stat().st_size:,} bytes")
        print("  run it with: onnxruntime.InferenceSession(path).run(None, {'images': x})  # (N, C, H, W) in [0, 1]")
        return 0
    if args.format == "deploy":
        deploy = deploy_model(model)
        save_deploy(deploy, out, overwrite=args.overwrite)
        kinds = deploy.kinds()
        print(f"wrote {out}: deploy model, {len(deploy.program)} operations ({kinds.get('sparse_conv', 0)} sparse and "
              f"{kinds.get('dense_conv', 0)} dense convolutions), {deploy.nnz:,} kept convolution weights, "
              f"{out.stat().st_size:,} bytes")
        print("  load it with: robin_plugin.export.load_deploy(path)(images)  # (N, C, H, W) in [0, 1] -> logits")
        return 0
    if args.format == "compact":
        export_compact(model, out, overwrite=args.overwrite)
        r = compact_size_report(model)
        print(f"wrote {out}: {r['file_bytes']:,} bytes (weights: {r['weights']})")
        print(f"  information bound {r['bound_bytes']:,} bytes  (file / bound = {r['ratio_to_bound']:.3f})")
        print(f"  dense fp32        {r['fp32_bytes']:,} bytes  ({r['fp32_over_file']:.1f}x larger than the file)")
    else:
        shrink = args.format == "dense-shrunk"
        sd = export_dense(model, out, shrink=shrink, overwrite=args.overwrite)
        n = sum(v.numel() for k, v in sd.items() if k.endswith("weight"))
        print(f"wrote {out}: dense state dict, {n:,} weights" + (" after channel shrinking" if shrink else ""))
        if shrink:
            full = sum(p.numel() for p in dense_model(model).parameters())
            small = sum(v.numel() for k, v in sd.items() if v.is_floating_point() and "running" not in k)
            print(f"  parameters {full:,} -> {small:,}; all-pruned output channels: {sum(pruned_channels(model).values()):,}")
    return 0


def add_export_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``robin export`` to ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        "export",
        help="export a trained masked model: compact (seed + coded masks), dense, or dense with dead channels removed",
        description="Export a model. hub: a timm hub folder (config.json, model.safetensors, README.md) that "
                    "timm.create_model('local-dir:FOLDER', pretrained=True) loads after `import robin_plugin`. "
                    "compact: a safetensors file with the seed recipe, the coded "
                    "masks and the BatchNorm statistics (load with robin_plugin.export.load_compact or timm "
                    "pretrained_cfg_overlay=dict(file=...)). dense: a plain state dict for the <model>_dense twin. "
                    "dense-shrunk: the same with provably dead channels removed (load with "
                    "robin_plugin.export.dense.load_dense). deploy: a fast inference program with sparse "
                    "convolutions over the kept weights (load with robin_plugin.export.load_deploy). onnx / onnx-shrunk: "
                    "the dense (or shrunk) twin as an ONNX file (needs pip install 'robin_plugin[onnx]').",
    )
    _add_source_args(p, required=True)
    p.add_argument("--format", choices=("compact", "dense", "dense-shrunk", "hub", "deploy", "onnx", "onnx-shrunk"),
                   default="compact",
                   help="what to write (default: compact); hub: a timm folder for timm.create_model('local-dir:OUT')")
    p.add_argument("--out", type=Path, required=True, help="output file (.safetensors), or folder for --format hub")
    p.add_argument("--model-info", type=Path, default=None,
                   help="with --format hub: a `robin eval` result JSON whose RobustBench fields go into the model card")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=_cmd_export)
    return p


def _cmd_inspect(args: argparse.Namespace) -> int:
    keep_matplotlib_out_of_home()  # before matplotlib is imported
    from ..viz import format_table, inspect_model, layer_table  # here: matplotlib takes a second to import

    model = load_model_for_cli(args)
    if model is None and args.metrics is None:
        raise ConfigError("nothing to inspect: pass a model (--run, --compact, or --model with --checkpoint) and/or --metrics")
    if args.run is not None and args.metrics is None and (args.run / "metrics.csv").is_file():
        args.metrics = args.run / "metrics.csv"  # the run's training curves
    if model is not None:
        print(format_table(layer_table(model)))
        if args.compact is not None:
            print(f"compact file: {args.compact.stat().st_size:,} bytes")
    if args.out is not None:
        for path in inspect_model(model if args.plots else None, args.out, metrics=args.metrics):
            print(f"wrote {path}")
    return 0


def add_inspect_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``robin inspect`` to ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        "inspect",
        help="per-layer keep ratios, kept counts, pruned channels and bits; mask-structure and training-curve plots",
    )
    _add_source_args(p, required=False)
    p.add_argument("--metrics", type=Path, help="metric log CSV (column 'epoch' plus e.g. train/loss, val/robust_acc)")
    p.add_argument("--out", type=Path, help="folder for the PNG plots (none are drawn without it)")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="table only, no mask plots")
    p.set_defaults(func=_cmd_inspect)
    return p
