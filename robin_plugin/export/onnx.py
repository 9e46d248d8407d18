"""ONNX export of a robin model's dense twin (or its shrunk twin), for runtimes outside PyTorch.

The masked layers' top-k selection is data dependent Python; the dense twin
(:func:`robin_plugin.export.dense.dense_model`) computes the same function with plain
convolutions whose pruned weights are zero, so it exports as a standard ONNX graph. With
``shrink=True`` provably dead channels are removed first (the same logits, fewer FLOPs).

Needs the optional extra ``onnx`` (``pip install robin_plugin[onnx]``: ``onnx`` for the exporter,
``onnxruntime`` to run the file). The legacy TorchScript-based exporter is used
(``dynamo=False``): the ``torch.export`` one needs ``onnxscript`` besides.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..io import atomic_write
from .dense import dense_model

__all__ = ["ONNX_OPSET", "export_onnx"]

ONNX_OPSET = 17
"""The ONNX opset written (onnxruntime >= 1.14 runs it)."""


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    shrink: bool = False,
    input_size: tuple[int, int, int] | None = None,
    overwrite: bool = False,
    opset: int = ONNX_OPSET,
) -> Path:
    """Write ``model``'s dense (or shrunk) twin as an ONNX file, atomically.

    Args:
        model: a robin timm model (masked or dense twin) or a robinified model, float32.
        path: the ``.onnx`` file.
        shrink: remove provably dead channels first (:func:`~robin_plugin.export.dense.dense_model`).
        input_size: (C, H, W) of the example input that traces the graph; default the model's
            ``pretrained_cfg["input_size"]``. The batch axis is dynamic; H and W are fixed.
        overwrite: replace an existing file.
        opset: ONNX opset version.

    Returns:
        ``path``. Input ``images`` (N, C, H, W) in [0, 1]; output ``logits`` (N, num_classes).

    Raises:
        ConfigError: ``onnx`` is not installed, or no input size is known.
    """
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
    except ImportError:
        raise ConfigError("ONNX export needs the onnx package: pip install 'robin_plugin[onnx]'") from None
    if input_size is None:
        input_size = tuple((getattr(model, "pretrained_cfg", None) or {}).get("input_size") or ())
    if len(input_size) != 3:
        raise ConfigError(f"input_size must be (C, H, W), got {input_size!r}")
    net = dense_model(model, shrink=shrink).eval()
    example = torch.zeros(1, *input_size)

    def write(tmp: str) -> None:
        with warnings.catch_warnings():  # the exporter's notices about its own future, not about this model
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (example,), tmp, dynamo=False, input_names=["images"], output_names=["logits"],
                              dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset)

    return atomic_write(path, write, overwrite=overwrite)
