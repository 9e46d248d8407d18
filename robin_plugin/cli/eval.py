"""``robin eval``: RobustBench-style evaluation of a model, written as a model_info JSON.

:func:`add_eval_parser` adds the command to the ``robin`` parser; its ``func``
(:func:`run_eval`) returns the exit code: 0 success, 1 evaluation done but a gradient-masking
check failed or the reference cross-check disagreed (the JSON is still written), 2 an error
(``robin`` prints it).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from .. import data
from ..data.registry import DATASETS, dataset_info
from ..errors import ConfigError, InputError, UnknownNameError, closest
from ..eval.attacks import STANDARD_ATTACKS
from ..eval.evaluate import evaluate
from ..eval.report import format_report, make_model_info
from ..formats.result import parse_eps, write_result
from ..loading import load_model
from ..pruning import is_masked, masked_layers
from ..training.run import load_run
from ._common import check_model_name, parse_model_kwargs

__all__ = ["add_eval_parser", "default_entry_name", "never_trained", "run_eval"]


def _eps_arg(text: str) -> float:
    try:
        return parse_eps(text)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_eval_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``robin eval`` to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    p = subparsers.add_parser(
        "eval", help="clean / PGD / full-strength AutoAttack accuracy with gradient-masking checks; writes RobustBench JSON",
        description="Evaluate a model the RobustBench way on the first N test points: clean accuracy, PGD-k, the "
                    "standard AutoAttack ensemble at its original strength (via torchattacks), the robust accuracy "
                    "after each attack, and gradient-masking checks.")
    p.add_argument("--run", default=None, help="a robin train output folder: model, weights (best epoch), dataset and eps from it")
    p.add_argument("--model", default=None, help="timm model name, e.g. robin_resnet18 (when not using --run)")
    p.add_argument("--model-kwargs", default="{}", help='JSON object of model keyword arguments, e.g. \'{"width": 16, "keep_ratio": 0.01}\'')
    p.add_argument("--checkpoint", default=None,
                   help="state dict: a .safetensors file, or a timm CheckpointSaver / torch.save file (read with weights_only=True)")
    p.add_argument("--dataset", default=None, choices=sorted(DATASETS), help="test set (required without --run)")
    p.add_argument("--data-root", default=None, help="folder holding the dataset files (Fashion-MNIST has a default)")
    p.add_argument("--n", type=int, default=1000, help="evaluate the first N test points (RobustBench: 10000; default 1000)")
    p.add_argument("--eps", type=_eps_arg, default=None, help="Linf radius, '8/255' or 0.1 (default: 8/255 CIFAR, 0.1 Fashion-MNIST)")
    p.add_argument("--attacks", default="apgd-ce,apgd-t,fab-t,square",
                   help="comma-separated AutoAttack components, at least one (default: standard)")
    p.add_argument("--pgd-steps", type=int, default=20, help="iterations of the PGD baseline (default 20)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--seed", type=int, default=0, help="seed of every attack, in [0, 2**63 - 1] (default 0)")
    p.add_argument("--reference", action="store_true", help="also run the original AutoAttack (pip install pyautoattack) and compare")
    p.add_argument("--no-checks", dest="checks", action="store_false", help="skip the gradient-masking checks")
    p.add_argument("--exact-attacks", action="store_true",
                   help="run the attacks on the model itself, not on its fast copy (masks and BatchNorms folded, "
                        "channels-last; adversarial examples are judged on the model either way)")
    p.add_argument("--state", default=None, help="resume file: an interrupted run with the same settings continues from it")
    p.add_argument("--out", default=None, help="result JSON (default: <model>_<dataset>_eval.json)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing result file")
    card = p.add_argument_group("RobustBench model_info fields of the result")
    card.add_argument("--name", default=None,
                      help="the entry's name, RobustBench's paper-title field (default: '<model>: robust binary subnetwork, "
                           "keep ratio K' or '<model>: dense baseline')")
    card.add_argument("--architecture", default=None, help="architecture string (default: the timm name)")
    card.add_argument("--link", default="", help="URL of the paper or code")
    card.add_argument("--authors", default="", help="authors, comma-separated")
    card.add_argument("--venue", default="", help="e.g. 'NeurIPS 2022'")
    card.add_argument("--footnote", default=None, help="footnote (default: 'robin eval, first N test points')")
    card.add_argument("--additional-data", action="store_true", help="trained with data beyond the training set")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=run_eval)
    return p


def _load_model(args: argparse.Namespace, info):
    """The timm model of ``--model`` / ``--model-kwargs`` for the dataset ``info`` (classes, channels,
    and the input statistics ``robin train`` uses), with ``--checkpoint`` loaded (:func:`~robin_plugin.loading.load_model`)."""
    kwargs = parse_model_kwargs(args.model_kwargs)
    check_model_name(args.model)
    kwargs.setdefault("in_chans", info.in_chans)
    kwargs.setdefault("num_classes", info.num_classes)
    if kwargs["in_chans"] == info.in_chans:  # the statistics robin train builds its models with
        kwargs.setdefault("mean", tuple(info.mean))
        kwargs.setdefault("std", tuple(info.std))
    return load_model(Path(args.checkpoint) if args.checkpoint else None, model=args.model, model_kwargs=kwargs)


def default_entry_name(timm_name: str, model: Any) -> str:
    """A RobustBench-style entry name for a robin model: what it is, not only its timm name."""
    if not is_masked(model):
        return f"{timm_name}: dense baseline"
    layers = masked_layers(model)
    kept = sum(m.kept for _, m in layers) / sum(m.weight.numel() for _, m in layers)
    return f"{timm_name}: robust binary subnetwork, keep ratio {kept:.3g}"


def run_eval(args: argparse.Namespace) -> int:
    """Run ``robin eval``; returns the exit code (see the module docstring)."""
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    # checked before the model and the data are loaded (evaluate checks them again)
    if not 0 <= args.seed <= 2**63 - 1:
        raise ConfigError(f"--seed must be an integer >= 0 and <= 2**63 - 1 ({2**63 - 1}), got {args.seed}")
    attacks = tuple(a.strip() for a in args.attacks.split(",") if a.strip())
    if not attacks:  # else autoattack_acc would be the clean accuracy
        raise ConfigError(f"--attacks must name at least one AutoAttack component, got {args.attacks!r}; "
                          f"valid: {', '.join(STANDARD_ATTACKS)} (comma-separated)")
    for a in attacks:
        if a not in STANDARD_ATTACKS:
            raise UnknownNameError(f"unknown attack {a!r}{closest(a, STANDARD_ATTACKS)}; valid: {', '.join(STANDARD_ATTACKS)}")
    run_model = None
    if args.run:
        run_model, run_config = load_run(args.run, "best")
        args.model = args.model or run_config.model
        args.dataset = args.dataset or run_config.dataset
        args.data_root = args.data_root or run_config.data_root
        if args.eps is None:
            args.eps = run_config.eps
    if not args.model or not args.dataset:
        raise ConfigError("robin eval needs --run DIR, or --model and --dataset (with --checkpoint for trained weights)")
    info = dataset_info(args.dataset)
    eps = args.eps if args.eps is not None else info.default_eps
    out = Path(args.out) if args.out else Path(f"{args.model}_{args.dataset}_eval.json")
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out} exists; pass --overwrite to replace it")

    ds = data.get_dataset(args.dataset, args.data_root, split="test")
    model = run_model if run_model is not None else _load_model(args, info)
    if never_trained(model):
        print("robin eval: warning: no BatchNorm of this model has seen a training batch (num_batches_tracked is 0 "
              "everywhere): it holds its initial statistics, so the logits of an untrained +-1 network can reach "
              "1e11 and the accuracies mean nothing; pass --checkpoint or --run for trained weights")
    result = evaluate(model, ds.images, ds.labels, eps, n=args.n, attacks=attacks, pgd_steps=args.pgd_steps,
                      reference=args.reference, batch_size=args.batch_size, seed=args.seed, run_checks=args.checks,
                      state_path=args.state, progress=args.progress, fast=not args.exact_attacks)
    info = make_model_info(result, name=args.name or default_entry_name(args.model, model),
                           architecture=args.architecture or args.model, dataset=args.dataset, model=model,
                           link=args.link, authors=args.authors, venue=args.venue, additional_data=args.additional_data,
                           footnote=args.footnote if args.footnote is not None else f"robin eval, first {result.n} test points")
    info["model"] = {"timm_name": args.model, "kwargs": json.loads(args.model_kwargs),
                     "checkpoint": str(args.checkpoint) if args.checkpoint else None, "run": args.run}
    write_result(out, info)
    print(format_report(info))
    print(f"wrote {out}")
    if result.warnings:
        for w in result.warnings:
            print(w)
        return 1
    return 0


def never_trained(model: torch.nn.Module) -> bool:
    """Whether the model has BatchNorm layers and none of them has seen a training batch."""
    counts = [m.num_batches_tracked for m in model.modules()
              if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.num_batches_tracked is not None]
    return bool(counts) and all(int(c) == 0 for c in counts)

