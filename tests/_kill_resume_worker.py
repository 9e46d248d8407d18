"""Subprocess of ``tests/test_reliability.py``: tiny training runs to be killed and resumed.

Run as ``python tests/_kill_resume_worker.py``. It imports torch, timm and robin_plugin once,
prints ``idle``, then reads commands from stdin, one per line: ``OUT_DIR EPOCHS``. For each it
forks a child that builds the model and data, prints ``ready <pid>`` (the parent starts its
kill timer then, so kills land inside training and checkpoint writes rather than inside
imports), trains with ``Trainer.fit(resume=True)`` and, when the run completes, writes
``worker_result.json`` (the returned metrics) atomically into OUT_DIR. The server waits for the
child and prints ``exit <code or -signal>``. Forking keeps the 5 s of imports out of every
attempt; each child is a separate process, so SIGKILL hits it mid-step or mid-write exactly as
it would hit ``robin train``.
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)  # two OpenMP threads on a busy 2-core box make tiny ops ~100x slower

from robin_plugin.io import atomic_write_json  # noqa: E402
from robin_plugin.testing import tiny_robin_resnet, toy_dataset  # noqa: E402  (the training tests' model and data)
from robin_plugin.training import TrainConfig, Trainer  # noqa: E402

RESULT = "worker_result.json"


def config(epochs: int, out_dir: str) -> TrainConfig:
    """The run under test: the paper's fast training (per-sample state), augmentation, progressive pruning."""
    return TrainConfig(
        model="robin_resnet18", keep_ratio=0.2, p=0.1, prune_steps=2, epochs=epochs, batch_size=16, lr=0.05,
        attack="fast", eps=0.1, step_size=0.05, eval_step_size=0.05, val_pgd_steps=2, progress=False, seed=0,
        lr_schedule="cosine", augment=True, dataset="fashion_mnist", checkpoint_every=1, out_dir=out_dir,
    )


def run(out_dir: str, epochs: int) -> None:
    """One attempt: build everything, resume from ``out_dir`` if it holds a checkpoint, train to the end."""
    trainer = Trainer(tiny_robin_resnet(), config(epochs, out_dir), toy_dataset(48), toy_dataset(16, seed=1), out_dir=out_dir)
    print(f"ready {os.getpid()}", flush=True)
    result = trainer.fit(resume=True)
    atomic_write_json(os.path.join(out_dir, RESULT), dict(result))


def serve() -> None:
    print("idle", flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        out_dir, epochs = line.split()
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                run(out_dir, int(epochs))
            except BaseException as e:  # report, never fall back into the server loop
                print(f"error {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                code = 1
            finally:
                sys.stdout.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        print(f"exit {code}", flush=True)


if __name__ == "__main__":
    serve()
