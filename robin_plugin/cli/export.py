"""``robin export``: write a model as a compact, dense, shrunk, hub, deploy or ONNX file.

:func:`add_export_parser` adds the command to the ``robin`` parser; its ``func`` prints what
was written and raises :class:`~robin_plugin.errors.RobinError` on bad input.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..export.compact import compact_size_report, export_compact
from ..export.deploy import deploy_model, save_deploy
from ..export.dense import dense_model, export_dense
from ..export.shrink import pruned_channels
from ..export.hub import export_hub, run_data_config
from ..export.onnx import export_onnx
from ..formats.files import MAX_JSON_BYTES, parse_json
from ..io import read_limited
from ._common import add_source_args, load_model_for_cli

__all__ = ["add_export_parser"]


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
    add_source_args(p, required=True)
    p.add_argument("--format", choices=("compact", "dense", "dense-shrunk", "hub", "deploy", "onnx", "onnx-shrunk"),
                   default="compact",
                   help="what to write (default: compact); hub: a timm folder for timm.create_model('local-dir:OUT')")
    p.add_argument("--out", type=Path, required=True, help="output file (.safetensors), or folder for --format hub")
    p.add_argument("--model-info", type=Path, default=None,
                   help="with --format hub: a `robin eval` result JSON whose RobustBench fields go into the model card")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=_cmd_export)
    return p


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


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = parse_json(read_limited(path, MAX_JSON_BYTES))
    except (OSError, ValueError) as e:  # FileContentError (not UTF-8 / JSON, nested too deeply), size limit
        raise ConfigError(f"cannot read {path} as JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data
