"""Multi-process training with PyTorch's own engine: torchrun, DistributedDataParallel, DistributedSampler.

``torchrun --nproc_per_node=N -m sasrec train ...`` starts N processes; each reads its rank from the
environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). The process group uses
``nccl`` on GPUs and ``gloo`` on CPU. Every rank trains on its shard of the users (a seeded
:class:`torch.utils.data.DistributedSampler`, reshuffled per epoch), draws negatives from its own seeded
generator, and DDP averages the gradients; the loss is normalised by the number of loss terms of the
*global* batch, so one DDP step equals one single-process step on the union of the shards. Only rank 0
validates, logs and writes checkpoints; its early-stopping decision is broadcast to every rank.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from sasrec.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a (possibly single-process) run.

    Attributes:
        rank: global rank (0 for a single process).
        world_size: number of processes.
        local_rank: rank on this machine (selects the GPU).
        backend: ``nccl``, ``gloo`` or ``none`` for a single process.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = "none"

    @property
    def distributed(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: validates, logs and writes files."""
        return self.rank == 0


SINGLE = DistContext()


def context_from_env() -> DistContext:
    """The rank and world size torchrun put in the environment (a single process when absent)."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise ConfigError(
            "WORLD_SIZE, RANK and LOCAL_RANK must be integers (they are set by torchrun)"
        ) from None
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"invalid torchrun environment: RANK={rank}, WORLD_SIZE={world_size}")
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank)


def init_process_group(device: torch.device, context: DistContext | None = None) -> DistContext:
    """Join the process group of a torchrun launch (no-op for a single process); returns the context.

    ``nccl`` when training on CUDA, ``gloo`` otherwise.
    """
    context = context or context_from_env()
    if not context.distributed:
        return context
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=dt.timedelta(minutes=30))
    return DistContext(context.rank, context.world_size, context.local_rank, backend)


def shutdown(context: DistContext) -> None:
    """Leave the process group (after the run), once every rank has reached this point.

    The barrier keeps a rank from tearing down its gloo connections while a peer is still sending on them:
    without it the peer's gloo threads could abort the process ("terminate called without an active
    exception", seen as a SIGABRT of one rank in about one run in four on 2 cores).
    """
    if context.distributed and dist.is_initialized():
        gc.collect()  # free DistributedDataParallel wrappers (their reducer holds the group) while Python runs
        with contextlib.suppress(RuntimeError):  # a peer that already failed: leave anyway
            dist.barrier()
        dist.destroy_process_group()


def epoch_shard(n_users: int, epoch: int, seed: int, context: DistContext) -> torch.Tensor:
    """This rank's users (indices into the training sequences) for ``epoch``, in a seeded random order.

    The same (seed, epoch) gives every rank a disjoint shard of one permutation (DistributedSampler pads
    the last shard by repeating users so that every rank takes the same number of steps).
    """
    sampler = DistributedSampler(
        range(n_users), num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=seed
    )
    sampler.set_epoch(epoch)
    return torch.tensor(list(iter(sampler)), dtype=torch.int64)


def all_reduce_sum(value: torch.Tensor, context: DistContext) -> torch.Tensor:
    """Sum of ``value`` over ranks (``value`` itself for a single process)."""
    if not context.distributed:
        return value
    out = value.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def broadcast_flags(flags: list[bool], context: DistContext, device: torch.device) -> list[bool]:
    """Rank 0's boolean decisions (e.g. stop, improved) on every rank."""
    if not context.distributed:
        return flags
    tensor = torch.tensor([int(f) for f in flags], dtype=torch.int64, device=device)
    dist.broadcast(tensor, src=0)
    return [bool(v) for v in tensor.tolist()]
