"""robin_plugin: robust binary subnetworks for PyTorch, timm and torchattacks.

Liu, Zhao, Suesstrunk, Salzmann, "Robust Binary Models by Pruning Randomly-initialized
Networks" (NeurIPS 2022). Importing the package registers the ``robin_*`` models with timm.
"""
from .errors import ConfigError, InputError, RobinError, UnknownNameError
from .layers import MaskedConv2d, MaskedLayer, MaskedLinear, kept_count, topk_mask
from .models import RobinResNet, RobinWideResNet, robinify
from .export import compact_size_report, export_compact, export_dense, load_compact
from .eval import evaluate
from .pruning import adaptive_keep_ratios, is_masked, masked_layers, set_keep_ratio
from .summary import ModelSummary, storage_bytes, summarize

__version__ = "0.1.0"

__all__ = [
    "ConfigError", "InputError", "RobinError", "UnknownNameError",
    "MaskedConv2d", "MaskedLayer", "MaskedLinear", "kept_count", "topk_mask",
    "RobinResNet", "RobinWideResNet", "robinify",
    "adaptive_keep_ratios", "is_masked", "masked_layers", "set_keep_ratio",
    "ModelSummary", "storage_bytes", "summarize",
    "compact_size_report", "export_compact", "export_dense", "load_compact",
    "evaluate",
]
