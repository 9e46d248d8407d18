"""DistributedDataParallel on the CPU (gloo): 2 processes match 1 process with the same global batch."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import robin_plugin
from robin_plugin.testing import tiny_robin_resnet, toy_dataset
from robin_plugin.training import TrainConfig, Trainer

pytestmark = pytest.mark.slow

# two epochs of two steps: the epoch-dependent order and crops, the batch split, synchronised
# BatchNorm and gradient averaging all act. Longer runs part on some CPUs: the all-reduce sums two
# half batches where one process sums one batch, and once a rounding difference moves a score
# across its layer's top-k threshold the two functions differ and the difference grows (measured on
# an AMD EPYC: 2 epochs of 4 steps leave scores ~0.003 apart and 1-2% of mask entries flipped,
# on this commit and on the one before it; 2 x 2 steps agree exactly)
TRAIN_N, EPOCHS = 64, 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, cfg: TrainConfig, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        trainer = Trainer(tiny_robin_resnet(), cfg, toy_dataset(TRAIN_N), toy_dataset(32, seed=1))
        result = trainer.fit()
        if rank == 0:
            torch.save({"state": trainer.model.state_dict(), "result": dict(result),
                        "masks": [m.mask().clone() for _, m in robin_plugin.masked_layers(trainer.model)]}, out)
    finally:
        dist.destroy_process_group()


@pytest.fixture
def ddp_config(tiny_config) -> TrainConfig:
    # No attack: a signed-gradient attack (fast, FGSM, PGD) turns the all-reduce's float rounding
    # (sums over two half batches instead of one batch) into sign flips of near-zero input
    # gradients, i.e. perturbations that differ by a whole step; after a few steps the runs part
    # (measured on an Intel Xeon: loss 0.51 vs 0.57, 1% of mask entries). Without it the two runs
    # agree to float rounding, which is what this test pins: the batch split, synchronised
    # BatchNorm, gradient averaging and augmentation of the distributed trainer.
    return tiny_config(epochs=EPOCHS, batch_size=32, attack="none", eps=0.1, step_size=0.05, augment=True)


def test_two_processes_match_one_process(tmp_path, ddp_config):
    out = str(tmp_path / "ddp.pt")
    mp.spawn(_worker, args=(2, _free_port(), ddp_config, out), nprocs=2, join=True)
    ddp = torch.load(out, weights_only=True)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers
    try:
        single = Trainer(tiny_robin_resnet(), ddp_config, toy_dataset(TRAIN_N), toy_dataset(32, seed=1))
        result = single.fit()
    finally:
        torch.set_num_threads(threads)
    masks = [m.mask() for _, m in robin_plugin.masked_layers(single.model)]

    for a, b in zip(masks, ddp["masks"]):
        assert torch.equal(a, b)
    state = single.model.state_dict()
    for k, v in ddp["state"].items():
        if v.is_floating_point():
            assert torch.allclose(state[k], v, rtol=1e-4, atol=1e-6), k
    for k, v in result.items():
        if not k.startswith("time/"):
            assert ddp["result"][k] == pytest.approx(v, abs=1e-4), k
