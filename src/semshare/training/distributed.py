"""Many processes on PyTorch's own engine: DistributedDataParallel over gloo (CPU) or NCCL (GPU).

The launcher (torchrun) tells each process its rank; the application reads that where it starts (the CLI
reads torchrun's environment) and hands it here. The loop itself only sees a DistributedContext.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from semshare.training.loop import DistributedContext


def start_distributed(rank: int, world_size: int, local_rank: int) -> DistributedContext:
    """Join the process group (one process per device); a world of one needs none."""
    if world_size <= 1:
        return DistributedContext()
    context = DistributedContext(rank, world_size, local_rank)
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return context


def stop_distributed(context: DistributedContext) -> None:
    if context.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()
