"""Several processes: what the pruning loop needs beyond what the Trainer already does.

Started with ``torchrun --nproc_per_node=N``, the ``transformers`` Trainer wraps the model in
DistributedDataParallel (gloo on CPU, nccl on GPUs) and averages gradients across ranks before every optimizer
step, so callbacks that read gradients (movement scores) see the same values everywhere. Outside the
Trainer, the loop computes gradient-based scores on each rank's share of the scoring batches and averages
them here; it checks after every round that all ranks pruned the same weights and units, and only rank 0
writes files. On one process every function is a no-op.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from accelerate import PartialState

from ..prune.plan import PruningPlan


def init_distributed():
    """Join the process group when started by ``torchrun`` (gloo on CPU, nccl on GPUs); no-op otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:

        PartialState(cpu=not torch.cuda.is_available())


def _dist():

    return dist if dist.is_available() and dist.is_initialized() else None


def rank_and_world() -> tuple[int, int]:
    dist = _dist()
    return (dist.get_rank(), dist.get_world_size()) if dist else (0, 1)


def is_main() -> bool:
    return rank_and_world()[0] == 0


def barrier() -> None:
    if _dist():
        _dist().barrier()


def average_across_ranks(tensors, weight: float):
    """``sum_r weight_r * t_r / sum_r weight_r`` for each tensor, in place (identity on one process)."""
    dist = _dist()
    if not dist:
        return tensors
    total = torch.tensor([float(weight)])
    dist.all_reduce(total)
    for t in tensors:
        t.mul_(weight)
        dist.all_reduce(t)
        t.div_(total.item())
    return tensors


def plan_digest(model) -> torch.Tensor:
    """The SHA-256 of the model's :class:`PruningPlan` (its layers, heads, neurons and weight masks, which live
    masks and the same masks made permanent share) as four int64 words, so ranks can compare it with
    ``all_reduce``."""
    h = PruningPlan.of(model).digest()
    return torch.tensor([int(h[i:i + 15], 16) for i in range(0, 60, 15)], dtype=torch.int64)


def identical_across_ranks(digest: torch.Tensor) -> bool:
    """True when every rank holds the same :func:`plan_digest` (min and max over ranks agree)."""
    dist = _dist()
    if not dist:
        return True
    lo, hi = digest.clone(), digest.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    return bool(torch.equal(lo, hi))
