"""Multi-GPU training with DistributedDataParallel, started by torchrun.

    torchrun --nproc_per_node=N train.py diffusion --preset cifar10

torchrun sets RANK / LOCAL_RANK / WORLD_SIZE; `init()` joins the process group (NCCL on GPUs, gloo
on the CPU) and picks this rank's device. Every rank draws its own batches (per-rank seeds),
gradients are averaged across ranks, and only rank 0 logs, samples and writes checkpoints. Without
torchrun everything here is a no-op, so single-process code paths stay unchanged.

Two ways to average gradients, the same arithmetic (sum over ranks / world size):
  wrap(model)                  DDP, for the diffusion UNet: one forward and one backward per step,
                               and the all-reduce overlaps with the backward pass.
  average_gradients(params)    an explicit all-reduce after backward(), for the GANs: a GAN step has
                               two phases (D, then G through a frozen D) and an R1 double backward,
                               which DDP's reducer does not follow; StyleGAN2-ADA synchronises its
                               gradients the same way.
"""
from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def init(device: torch.device) -> torch.device:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); return this rank's
    device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DDP around `model` in a distributed run, else the model itself."""
    if not dist.is_initialized():
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def average_gradients(params) -> None:
    """Replace every gradient in `params` by its mean over the ranks (one flat all-reduce)."""
    if not dist.is_initialized():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.flatten() for g in grads])     # (total numel,): one all-reduce for all
    dist.all_reduce(flat)
    flat /= world_size()
    for g, mean in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(mean.view_as(g))


def broadcast_module(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (a common start, as DDP does when it
    wraps)."""
    if dist.is_initialized():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


def check_in_sync(module: torch.nn.Module, name: str) -> None:
    """Stop if this rank's weights differ from rank 0's: ranks that apply the same averaged
    gradients to the same start must hold bitwise the same model, so any difference is a
    synchronisation bug."""
    if not dist.is_initialized():
        return
    for key, tensor in module.state_dict().items():
        reference = tensor.clone()
        dist.broadcast(reference, src=0)
        if not torch.equal(reference, tensor):
            raise RuntimeError(f"rank {rank()}: {name}.{key} differs from rank 0's; gradients were "
                               "not synchronised")


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group; every torchrun entry point ends here, after success or an error."""
    if dist.is_initialized():
        dist.destroy_process_group()


def exit_rank() -> None:
    """End a torchrun rank that finished its work without the interpreter's teardown.

    Even after `shutdown`, C++ destructors that run at exit can abort a rank ('terminate called
    without an active exception'; about 1 run in 8 of the two-rank GAN test), so a finished run
    would exit with SIGABRT. os._exit skips them. Outside torchrun this returns."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
