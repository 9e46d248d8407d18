"""``robin train``: run a preset, a config file and key=value overrides."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist

from ..errors import ConfigError
from ..io import FolderLock, WriteError
from ..summary import format_storage
from ..training.checkpoint import CHECKPOINT
from ..training.config import DEFAULT_PRESET, PRESETS, apply_overrides, get_preset, load_config_file, parse_override
from ..training.run import resolve_attack_sizes, train

__all__ = ["add_train_parser"]


def add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``robin train`` to the ``robin`` command."""
    p = subparsers.add_parser(
        "train", help="adversarially train a robin model (default: Fashion-MNIST on the CPU)",
        description="Train with a preset, then a config file, then key=value overrides (e.g. epochs=5 keep_ratio=0.01).",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override any config key (values parsed as YAML)")
    p.add_argument("--preset", default=DEFAULT_PRESET, help=f"preset name (default {DEFAULT_PRESET}); see --list-presets")
    p.add_argument("--config", help="YAML or JSON file of config keys (applied after the preset)")
    p.add_argument("--resume", action="store_true",
                   help="continue from out_dir/checkpoint.safetensors (an error if there is none)")
    p.add_argument("--resume-or-start", action="store_true",
                   help="continue from out_dir/checkpoint.safetensors if it exists, else start a new run there")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in an out_dir that holds another run's files (they are deleted first)")
    p.add_argument("--list-presets", action="store_true", help="print the presets and exit")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (eps and steps filled in) as JSON and exit without training")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    if args.list_presets:
        for name in sorted(PRESETS):
            print(f"{name}: {json.dumps(PRESETS[name])}")
        return 0
    overrides = {}
    if args.config:
        overrides.update(load_config_file(args.config))
    overrides.update(dict(parse_override(o) for o in args.overrides))
    config = apply_overrides(get_preset(args.preset), overrides)
    if args.print_config:
        print(json.dumps(resolve_attack_sizes(config).to_dict(), indent=2))
        return 0
    if args.resume and args.resume_or_start:
        raise ConfigError("give --resume or --resume-or-start, not both")
    if args.overwrite and (args.resume or args.resume_or_start):
        raise ConfigError("give --overwrite (start over) or --resume / --resume-or-start (continue), not both")
    if not (args.resume or args.resume_or_start):  # before any rank starts: all refuse alike
        _check_fresh_out_dir(Path(config.out_dir), overwrite=args.overwrite)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        backend = "nccl" if torch.cuda.is_available() and config.device != "cpu" else "gloo"
        dist.init_process_group(backend)
        if backend == "nccl":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            config = config.__class__.from_dict({**config.to_dict(), "device": f"cuda:{local}"})
    if args.resume and not (Path(config.out_dir) / CHECKPOINT).is_file():
        raise ConfigError(f"nothing to resume: {Path(config.out_dir) / CHECKPOINT} does not exist (out_dir={config.out_dir}); "
                          "drop --resume to start a new run, or pass --resume-or-start")
    try:
        result = train(config, resume=args.resume or args.resume_or_start)
    finally:
        if distributed:
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        _print_result(result, config.out_dir)
    return 0


RUN_FILES = ("results.json", CHECKPOINT, "model.safetensors", "model_best.safetensors", "metrics.csv", "config.json")
"""The files a run writes into its out_dir (``robin train --overwrite`` deletes them first)."""


def _check_fresh_out_dir(out_dir: Path, *, overwrite: bool) -> None:
    """Refuse to start a new run over another run's files unless ``overwrite``; then delete them.

    A new run would replace the old one's checkpoint and weights one by one, and until its own
    ``results.json`` is written the folder would mix the two runs. Only rank 0 deletes, under
    the folder lock, so a run still writing there is not disturbed (it holds the lock).
    """
    found = [name for name in RUN_FILES[:5] if (out_dir / name).is_file()]
    if not found:
        return
    if not overwrite:
        what = "a finished run" if "results.json" in found else "an unfinished run"
        raise ConfigError(f"{out_dir} holds {what} ({', '.join(found)}); pass --resume to continue it, "
                          "--overwrite to delete it and start over there, or choose another out_dir")
    if int(os.environ.get("RANK", "0")) != 0:
        return
    with FolderLock(out_dir):  # FolderLockedError if a run is writing there
        for name in RUN_FILES:
            try:
                (out_dir / name).unlink()
            except FileNotFoundError:
                pass
            except OSError as e:
                raise WriteError(f"cannot delete {out_dir / name} to start over: {e.strerror or e}") from e


def _print_result(r: dict, out_dir: str) -> None:
    print()
    print(f"model {r['model']} on {r['dataset']}, attack {r['attack']} (eps {r['eps']:.4g}), {r['epochs']} epochs, "
          f"{r['train_images']} training images, {r['train_time_s']:.0f} s of training on {r['machine']['device']}")
    if "test" in r:
        t = r["test"]
        pgd_key = next(k for k in t if k.startswith("pgd"))
        print(f"test (first {t['n']} images): clean accuracy {100 * t['clean_acc']:.2f}%, "
              f"{pgd_key.split('_')[0].upper()} accuracy {100 * t[pgd_key]:.2f}%")
    s = r["storage"]
    print(f"keep ratio {r['keep_ratio']:.4f} ({r.get('kept_weights', r['total_weights']):,} of {r['total_weights']:,} weights); "
          + f"storage: {format_storage(s)}")
    print(f"files in {out_dir}: config.json, metrics.csv, checkpoint.safetensors, model.safetensors, model_best.safetensors, results.json")
