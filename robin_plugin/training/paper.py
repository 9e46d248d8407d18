"""The official code's training recipes, as data: what every paper preset must reproduce.

The reference is the official code of Liu, Zhao, Süsstrunk and Salzmann, "Robust Binary Models
by Pruning Randomly-initialized Networks" (NeurIPS 2022): github.com/IVRL/RobustBinarySubNet.
Every value in :data:`OFFICIAL` names the file it comes from (paths in that repository). The
paper presets of :mod:`.config` are built from this table, and ``tests/training/test_paper_fidelity.py``
checks each preset's resolved :class:`~.config.TrainConfig` against it, field by field.

Names: the official ``--prune-rate`` is the fraction of weights KEPT, robin's ``keep_ratio`` (the
paper's pruning rate r is ``1 - keep_ratio``); ``--pr-scale`` is ``p``; ``threshold`` and
``step_size`` in 1/255 units are robin's ``eps`` and ``step_size`` in [0, 1] pixel units.

Where robin cannot or does not do exactly what the official code does, :data:`DEPARTURES` says
what differs and why; the preset docs (docs/training.md) repeat it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..models.args import ModelArgs

__all__ = ["Official", "OFFICIAL", "DEPARTURES", "PAPER_PRESETS", "official_overrides"]

_REPO = "IVRL/RobustBinarySubNet"


@dataclass(frozen=True)
class Official:
    """One official value and where it is written.

    Attributes:
        value: the value in robin's units and names (e.g. eps 8/255 as a float).
        source: the file of the official repository that sets it (and how, when not obvious).
    """

    value: Any
    source: str


def _cfg(dataset: str, arch: str, name: str) -> str:
    return f"code/configs/advprune/{dataset}/{arch}/{name}.yaml"


_BEST_SETTINGS = "bash_scripts/best_settings_rn34_cifar10_bn.sh"
_IN100_SCRIPT = "bash_scripts/best_settings_rn34_imagenet100_bn_fast.sh"
_TRADES_SCRIPT = "bash_scripts/best_settings_trades_rn34_cifar10_bn.sh"
_FP_SCRIPT = "bash_scripts/baseline_rn34_fp_at_cifar10_bn.sh"
_NORMALIZE = "code/util/model_parser.py (cifar10_normalize, cifar100_normalize, imagenet_normalize)"

# the input statistics the official models normalise with (``normalize:`` of each config)
_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "imagenet100": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
# the threat model: ``threshold`` (training and ``aa-standard.yaml``) in 1/255 units
_EPS = {"cifar10": 8, "cifar100": 4, "imagenet100": 2}


def _masked(source_script: str, cfg: str) -> dict[str, Official]:
    """What the best-settings scripts pass on the command line to every binary-weights run."""
    return {
        "keep_ratio": Official(0.01, f"{source_script}: --prune-rate 0.01 (the fraction kept)"),
        "p": Official(0.1, f"{source_script}: --pr-scale 0.1"),
        "prune_steps": Official(1, "code/args.py: --pr-steps default 1 (the target from the start)"),
        "init": Official("binary", cfg + ": init: binary (code/arch/builder.py: weight.sign())"),
        "score_init_scale": Official(0.01, f"{source_script}: --score-init-scale 0.01"),
        "score_scale_by_fan_in": Official(False, f"{source_script}: --fan-scaled-score-mode none"),
        "last_bn": Official(True, f"{source_script}: --end-with-bn (a non-affine BatchNorm on the logits)"),
    }


def _common(dataset: str, arch: str, name: str) -> dict[str, Official]:
    cfg = _cfg(dataset, arch, name)
    eps = _EPS[dataset]
    mean, std = _STATS[dataset]
    return {
        "dataset": Official(dataset, cfg + ": dataset"),
        "val_fraction": Official(0.02, cfg + ": valid_ratio: 0.02"),
        "lr": Official(0.1, cfg + ": lr: 0.1"),
        "momentum": Official(0.9, cfg + ": momentum: 0.9"),
        "weight_decay": Official(5e-4, cfg + ": weight_decay: 0.0005"),
        "lr_per_epoch": Official(True, "code/run/train.py: lr_policy(epoch, iteration=None) once per epoch"),
        "lr_warmup_epochs": Official(0, "code/args.py: --warmup_length default 0"),
        "label_smoothing": Official(0.0, "code/args.py: --label_smoothing default None"),
        "mean": Official(mean, _NORMALIZE),
        "std": Official(std, _NORMALIZE),
        "eps": Official(eps / 255, cfg + f": attack threshold: {eps}"),
        "eval_attack": Official(f"AutoAttack standard, Linf, eps {eps}/255, whole test set",
                                _cfg(dataset, arch, "aa-standard") + f": attack: {{norm: Linf, threshold: {eps}}}, subset: test"),
        "val_pgd_steps": Official(10, cfg + ": eval_attack (or attack): PGD iter_num 10"),
        "eval_step_size": Official(eps / 4 / 255, cfg + f": eval_attack (or attack): PGD step_size {eps / 4:g}"),
        "pgd_iterate": Official("worst", "code/util/attack.py: PGD.attack returns the highest-loss iterate"),
        "augment": Official(True, "code/dataset/{cifar10,cifar100}.py: RandomCrop(32, padding=4) + RandomHorizontalFlip; "
                                  "the fast attack crops and flips by itself (code/util/augmentation.py)"),
    }


def _pgd(dataset: str, arch: str) -> dict[str, Official]:
    cfg = _cfg(dataset, arch, f"{arch}-binary-weights")
    eps = _EPS[dataset]
    return {
        **_common(dataset, arch, f"{arch}-binary-weights"), **_masked(_BEST_SETTINGS, cfg),
        "model": Official(f"robin_{arch}", f"{cfg}: model_type: c{arch.replace('resnet', 'ResNet')} (code/arch/resnet_cifar.py)"),
        "attack": Official("pgd", cfg + ": trainer: adv_step, attack: PGD"),
        "step_size": Official(eps / 4 / 255, cfg + f": attack step_size: {eps / 4:g}"),
        "attack_steps": Official(10, cfg + ": attack iter_num: 10"),
        "attack_mode": Official("train", "code/trainers/adv_step.py: model.train() once per epoch, the attack inside it"),
        "epochs": Official(400, f"{_BEST_SETTINGS}: epochs=400"),
        "batch_size": Official(256, cfg + ": batch_size: 256"),
        "lr_schedule": Official("cosine", cfg + ": lr_policy: cosine_lr, alpha: 0"),
    }


def _fast(dataset: str, arch: str) -> dict[str, Official]:
    cfg = _cfg(dataset, arch, f"{arch}-binary-weights-fast")
    eps = _EPS[dataset]
    return {
        **_common(dataset, arch, f"{arch}-binary-weights-fast"), **_masked(_BEST_SETTINGS, cfg),
        "model": Official(f"robin_{arch}", f"{cfg}: model_type: c{arch.replace('resnet', 'ResNet')} (code/arch/resnet_cifar.py)"),
        "attack": Official("fast", cfg + ": trainer: adv_step_fast, attack: FGSM-RS (code/util/attack.py: FGSM_RS)"),
        "step_size": Official(eps / 2 / 255, cfg + f": attack step_size: {eps / 2:g}"),
        "attack_mode": Official("train", "code/trainers/adv_step_fast.py: model.train() once per epoch, the attack inside it"),
        "epochs": Official(100, cfg + ": epochs: 100"),
        "batch_size": Official(256, cfg + ": batch_size: 256"),
        "lr_schedule": Official("cosine", cfg + ": lr_policy: cosine_lr, alpha: 0"),
    }


def _dense_pgd(dataset: str, arch: str) -> dict[str, Official]:
    cfg = _cfg(dataset, arch, f"{arch}-fp-at")
    eps = _EPS[dataset]
    common = _common(dataset, arch, f"{arch}-fp-at")
    common["eval_attack"] = Official(f"AutoAttack standard, Linf, eps {eps}/255, whole test set",
                                     f"code/configs/advprune/{dataset}/conv/aa-standard.yaml (used by {_FP_SCRIPT})")
    return {
        **common,
        "model": Official(f"robin_{arch}_dense", f"{cfg}: conv_type: DenseConv, bn_type: LearnedBatchNorm (affine)"),
        "last_bn": Official(True, f"{_FP_SCRIPT}: --end-with-bn (an affine BatchNorm on the logits)"),
        "attack": Official("pgd", cfg + ": trainer: adv_step, attack: PGD"),
        "step_size": Official(eps / 4 / 255, cfg + f": attack step_size: {eps / 4:g}"),
        "attack_steps": Official(10, cfg + ": attack iter_num: 10"),
        "attack_mode": Official("train", "code/trainers/adv_step.py: model.train() once per epoch, the attack inside it"),
        "epochs": Official(400, f"{cfg}: epochs: 400 ({_FP_SCRIPT}: epochs=400)"),
        "batch_size": Official(512, cfg + ": batch_size: 512"),
        "lr_schedule": Official("step", cfg + ": lr_policy: manual_multistep_lr, lr_gamma: 0.1"),
        "lr_milestones": Official((0.5, 0.75), cfg + ": lr_epochs: [200, 300, 400] of 400 epochs"),
    }


def _trades(dataset: str, arch: str) -> dict[str, Official]:
    cfg = _cfg(dataset, arch, f"{arch}-binary-weights-trades")
    return {
        **_common(dataset, arch, f"{arch}-binary-weights-trades"), **_masked(_TRADES_SCRIPT, cfg),
        "model": Official(f"robin_{arch}", f"{cfg}: model_type: cResNet34 (code/arch/resnet_cifar.py)"),
        "attack": Official("trades", cfg + ": trainer: adv_trades, trades_attack: TradesKL"),
        "step_size": Official(2 / 255, cfg + ": trades_attack step_size: 2"),
        "attack_steps": Official(10, cfg + ": trades_attack iter_num: 10"),
        "trades_beta": Official(6.0, cfg + ": beta: 6.0"),
        "attack_mode": Official("eval", "code/util/attack.py: TradesKL.attack calls model.eval(), then model.train()"),
        "epochs": Official(400, f"{_TRADES_SCRIPT}: epochs=400"),
        "batch_size": Official(256, cfg + ": batch_size: 256"),
        "lr_schedule": Official("cosine", cfg + ": lr_policy: cosine_lr, alpha: 0"),
    }


def _imagenet100_fast() -> dict[str, Official]:
    ds, arch = "imagenet100", "resnet34"
    cfg = _cfg(ds, arch, "resnet34-binary-weights-fast")
    common = _common(ds, arch, "resnet34-binary-weights-fast")
    common.update({
        "momentum": Official(0.875, cfg + ": momentum: 0.875"),
        "weight_decay": Official(2**-15, cfg + ": weight_decay: 0.000030517578125 (2^-15)"),
        "lr_warmup_epochs": Official(5, cfg + ": warmup_length: 5"),
        # the config sets label_smoothing: 0.1, but adv_step_fast trains on FGSM_RS's own soft
        # targets and never calls the criterion in its loss: the value that acts is none
        "label_smoothing": Official(0.0, "code/trainers/adv_step_fast.py: the loss is the soft-target cross-entropy; "
                                         f"{cfg}'s label_smoothing: 0.1 only reaches the criterion, which it does not call"),
        "val_pgd_steps": Official(10, f"{_IN100_SCRIPT}: --eval-attack name=PGD,iter_num=10"),
        "eval_step_size": Official(0.5 / 255, f"{_IN100_SCRIPT}: --eval-attack step_size=0.00196078 (0.5/255)"),
        "eps": Official(2 / 255, f"{_IN100_SCRIPT}: --attack threshold=2"),
        "image_size": Official(224, "code/dataset/imagenet.py: CenterCrop(224) / RandomResizedCrop(224)"),
        "augment": Official(True, "code/util/attack.py: FGSM_RS crops (pad 4) and flips the batch itself"),
    })
    return {
        **common, **_masked(_IN100_SCRIPT, cfg),
        "model": Official("robin_resnet34_imagenet", f"{cfg}: model_type: ResNet34_imagenet100 (code/arch/resnet.py: "
                                                     "7x7 stride-2 stem, 3x3 stride-2 max-pool)"),
        "attack": Official("fast", cfg + ": trainer: adv_step_fast, attack: FGSM-RS"),
        "step_size": Official(1 / 255, f"{_IN100_SCRIPT}: --attack name=FGSM-RS,step_size=1,threshold=2"),
        "attack_mode": Official("train", "code/trainers/adv_step_fast.py: model.train() once per epoch, the attack inside it"),
        "epochs": Official(100, f"{_IN100_SCRIPT}: epochs=100"),
        "batch_size": Official(256, cfg + ": batch_size: 256"),
        "lr_schedule": Official("cosine", cfg + ": lr_policy: cosine_lr, alpha: 0"),
    }


OFFICIAL: dict[str, dict[str, Official]] = {}
"""Preset name -> field -> the official value (robin's names and units) and its source file."""
for _ds in ("cifar10", "cifar100"):
    for _arch in ("resnet18", "resnet34", "resnet50"):
        OFFICIAL[f"{_ds}-{_arch}-pgd"] = _pgd(_ds, _arch)
        OFFICIAL[f"{_ds}-{_arch}-fast"] = _fast(_ds, _arch)
        OFFICIAL[f"{_ds}-{_arch}-dense-pgd"] = _dense_pgd(_ds, _arch)
OFFICIAL["cifar10-resnet34-trades"] = _trades("cifar10", "resnet34")
OFFICIAL["imagenet100-resnet34-fast"] = _imagenet100_fast()

PAPER_PRESETS: tuple[str, ...] = tuple(OFFICIAL)
"""The presets that reproduce an official configuration."""

DEPARTURES: dict[str, dict[str, str]] = {
    "*": {
        "seed": "official seed 1234 through Python, NumPy and torch global RNGs; robin derives named random streams "
                "from its seed (robin_plugin.rng), so no robin run repeats an official run's random draws",
        "test": "robin train also reports clean / PGD-20 accuracy on the first test_n test images (robin's own check); "
                "the paper's numbers are AutoAttack's: run `robin eval --run RUN`",
    },
    "imagenet100-resnet34-fast": {
        "train_transform": "official: ToTensor() only on the training images when FGSM-RS is used (augmentation=False), "
                           "which batches only if every image already has one size; robin decodes training images "
                           "with the test transform (Resize 256, CenterCrop 224) so any ImageNet folder batches",
    },
    **{f"{ds}-{arch}-dense-pgd": {
        "classifier_bias": "official: a bias-free 1x1 convolution; robin's dense twin: nn.Linear with a bias. The "
                           "affine BatchNorm on the logits (last_bn) subtracts the batch mean, so the bias has no "
                           "effect on the function (its gradient through that BatchNorm is zero)",
    } for ds in ("cifar10", "cifar100") for arch in ("resnet18", "resnet34", "resnet50")},
}
"""Preset name (``*``: all) -> what robin does differently from the official code, and why."""

# model arguments a preset sets in model_kwargs; keep_ratio and p are config keys (the run prunes towards them)
_MODEL_ARGS = tuple(k for k in ModelArgs.checks() if k not in ("keep_ratio", "p"))
_NOT_CONFIG = ("eval_attack",)


def official_overrides(preset: str) -> dict[str, Any]:
    """The :class:`~.config.TrainConfig` overrides that reproduce ``preset``'s official values.

    Model arguments (``init``, ``last_bn``, ``mean`` ...) go into ``model_kwargs``; the masked
    model's ``keep_ratio`` and ``p`` are config keys.
    """
    out: dict[str, Any] = {"model_kwargs": {}}
    for key, official in OFFICIAL[preset].items():
        if key in _NOT_CONFIG:
            continue
        value = official.value
        if key in _MODEL_ARGS:
            out["model_kwargs"][key] = list(value) if isinstance(value, tuple) else value
        else:
            out[key] = value
    return out
