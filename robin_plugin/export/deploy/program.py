"""The deploy program: :class:`DeployModel` runs a straight line of operations, and its file.

A program is a list of :class:`~robin_plugin.formats.deploy.DeployOp` steps, each computing
``values[out] = kernel(params, *values[args])`` with a kernel of
:mod:`robin_plugin.export.deploy.kernels`. :func:`save_deploy` / :func:`load_deploy` write and
read it as one file through :mod:`robin_plugin.formats.deploy`, which holds the layout and
validates every field.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ...formats.deploy import DeployError, DeployOp, read_deploy_file, write_deploy_file
from .kernels import IN_MEMORY_ONLY, KERNELS, InteriorMasks, plain

__all__ = ["DeployModel", "load_deploy", "save_deploy"]


class DeployModel(nn.Module):
    """Plain inference module built by :func:`~robin_plugin.export.deploy.deploy_model` or read by
    :func:`load_deploy`.

    A straight-line program of operations (``program``) over fixed tensors; no parameters, no
    gradients, always in eval mode. Shapes: (N, C, H, W) floats in [0, 1] -> (N, num_classes).

    Attributes:
        nnz: weights the convolutions multiply by (sparse and dense layers together).
        fallbacks: operations run unchanged in the ordinary layout (by node name).
    """

    def __init__(self, program: list[DeployOp], output: int, *, num_classes: int = 0, source: str = ""):
        super().__init__()
        self.program = program
        self.output = output
        self.num_classes = num_classes
        self.source = source
        self._interior = InteriorMasks()
        self._release = _release_after(program, output)
        self.nnz = sum(_op_nnz(op) for op in program)
        self.fallbacks = [op.params.get("name", op.kind) for op in program if op.kind in IN_MEMORY_ONLY + ("max_pool2d",)]
        self.eval()

    def train(self, mode: bool = True) -> "DeployModel":
        if mode:
            raise DeployError("a deploy model is inference-only; train the masked model instead")
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: list[Any] = [None] * (len(self.program) + 1)
        values[0] = x
        interior = self._interior
        for op, done in zip(self.program, self._release):
            values[op.out] = KERNELS[op.kind](op.params, *(values[a] for a in op.args), interior=interior)
            for v in done:  # free each value after its last reader, as eager PyTorch would
                values[v] = None
        return plain(values[self.output])

    def kinds(self) -> dict[str, int]:
        """How many operations of each kind the program has."""
        out: dict[str, int] = {}
        for op in self.program:
            out[op.kind] = out.get(op.kind, 0) + 1
        return out

    def extra_repr(self) -> str:
        return f"ops={len(self.program)}, nnz={self.nnz}, kinds={self.kinds()}"


def _release_after(program: list[DeployOp], output: int) -> list[tuple[int, ...]]:
    """For each op, the values no later op reads (never ``output``): freed right after it runs.

    Holding every intermediate to the end of the forward pass made the heap grow by all the
    activations and shrink again on every call; at batch 64 the allocator then gave the memory
    back to the kernel, and each call paid tens of thousands of page faults to touch it anew.
    """
    last: dict[int, int] = {0: -1}  # the input is released after its last reader too
    for j, op in enumerate(program):
        last[op.out] = j  # a value nobody reads is released right after the op that made it
        for a in op.args:
            last[a] = j
    done: list[list[int]] = [[] for _ in program]
    for v, j in last.items():
        if v != output and j >= 0:
            done[j].append(v)
    return [tuple(d) for d in done]


def _op_nnz(op: DeployOp) -> int:
    if op.kind == "sparse_conv":
        return sum(int(w.values().numel()) for w in op.params["weights"])
    if op.kind == "dense_conv":
        return int(torch.count_nonzero(op.params["weight"]))
    return 0



def save_deploy(deploy: DeployModel, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Write ``deploy`` as one safetensors file: its tensors, and its program as JSON metadata.

    The file holds data only: operation kinds from a fixed list, integer arguments and tensors;
    :func:`load_deploy` validates every field before building. Programs with operations that run
    arbitrary modules (``deploy.fallbacks`` other than max-pooling) cannot be saved.
    """
    return write_deploy_file(deploy.program, deploy.output, deploy.num_classes, path, overwrite=overwrite)


def load_deploy(path: str | os.PathLike) -> DeployModel:
    """Read a file written by :func:`save_deploy`; every field is checked, nothing is executed.

    Raises:
        DeployFormatError: not a deploy file, or a field is missing, of the wrong type or out of
            range (the message names it).
    """
    file = read_deploy_file(path)
    return DeployModel(file.program, file.output, num_classes=file.num_classes, source=str(Path(path)))
