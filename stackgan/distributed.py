"""One training path for CPU, one GPU and `torchrun` (N processes, N GPUs or gloo on CPU).

Gradients are averaged across ranks right after each backward, which is what DDP computes.
DDP's module wrapper is not used because the reference runs each discriminator three times
(real, wrong, fake) before one backward, with per-call BatchNorm statistics; DDP's reducer
expects one forward per backward. BatchNorm statistics are per rank by default, like the
reference's DataParallel chunks; `train.sync_bn` switches to SyncBatchNorm on CUDA (recorded in
results/DEVIATIONS.md).
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from stackgan.devices import resolve_device


@dataclass(frozen=True)
class Context:
    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self):
        return self.rank == 0


def setup(device_pref="auto"):
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    use_cuda = resolve_device(device_pref).type == "cuda"
    if use_cuda:  # one GPU per process: torchrun's LOCAL_RANK picks it
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Context(rank=rank, world=world, device=device)


def teardown():
    if dist.is_initialized():
        dist.destroy_process_group()


def make_grad_sync(ctx):
    if ctx.world == 1:
        return None

    def sync(module):
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        for g in grads:
            dist.all_reduce(g)
            g.div_(ctx.world)

    return sync


def broadcast_module(module):
    if dist.is_initialized():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, 0)


def barrier():
    if dist.is_initialized():
        dist.barrier()
