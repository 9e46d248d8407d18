"""Deployable inference model: a masked binary network run as sparse convolutions.

A robin model at keep ratio 0.01 multiplies by zero 99% of the time; its dense twin (and the
masked model itself) still pays for every multiply-add. :func:`deploy_model` turns a trained
masked model into a plain inference module (:class:`DeployModel`) that only does the kept
multiply-adds. Three modules, one job each:

- :mod:`.builder`: :func:`deploy_model` traces the model with ``torch.fx`` and turns each graph
  node into program steps through a table of op builders (BatchNorm and ReLU folded into the
  convolutions, sparse or dense by each convolution's kept fraction);
- :mod:`.program`: :class:`DeployModel` runs the program, a straight line of steps, freeing each
  value after its last reader; :func:`save_deploy` / :func:`load_deploy` write and read it;
- :mod:`.kernels`: one function per operation kind, over a padded-grid layout in which a
  convolution is a sum of CSR matrix products with shifted views of the activations.

The file layout and its validation are :mod:`robin_plugin.formats.deploy`.

The logits equal the masked model's to float32 rounding: folding the BatchNorm scale into the
weights and summing the taps in another order changes the last bits. ``DEPLOY_RTOL`` /
``DEPLOY_ATOL`` state the tolerance that the tests check on every robin family.
"""
from __future__ import annotations

from ...formats.deploy import DeployError, DeployFormatError
from .builder import (
    DEPLOY_ATOL,
    DEPLOY_RTOL,
    SMALL_POSITIONS,
    SPARSE_BELOW,
    SPARSE_BELOW_SMALL,
    deploy_model,
    kept_macs,
)
from .program import DeployModel, load_deploy, save_deploy

__all__ = ["DEPLOY_ATOL", "DEPLOY_RTOL", "SMALL_POSITIONS", "SPARSE_BELOW", "SPARSE_BELOW_SMALL", "DeployError",
           "DeployFormatError", "DeployModel", "deploy_model", "kept_macs", "load_deploy", "save_deploy"]
