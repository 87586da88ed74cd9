"""Process groups under ``torchrun`` and the few collectives the engine and methods need.

Single-process runs need nothing: every helper degrades to the identity. Under
``torchrun`` (env ``WORLD_SIZE`` > 1) :func:`setup` joins the default process group:
NCCL on CUDA (one GPU per local rank), gloo on CPU. Multi-node works the same way
(``torchrun --nnodes N --rdzv-endpoint HOST:PORT ...``).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from rsgeo.train.launch import DistInfo, env_info  # noqa: F401 - re-exported


def setup(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun; pick this rank's CUDA device."""
    info = env_info()
    if info.world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return info


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over ranks (a copy; ``x`` itself is unchanged)."""
    if not is_distributed():
        return x
    y = x.detach().clone()
    dist.all_reduce(y)
    return y / dist.get_world_size()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_ok(ok: bool, group=None) -> bool:
    """Whether ``ok`` holds on every rank (a MIN all-reduce of CPU ints over ``group``, a
    gloo group; it is a barrier too). Without a process group: ``ok``."""
    if not is_distributed():
        return ok
    flag = torch.tensor([int(bool(ok))], dtype=torch.int32)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=group)
    return bool(flag.item())


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward hands each rank the gradient of its own part.

    Every rank's loss may use every rank's rows; the backward sums the incoming gradients
    over ranks (all_reduce) and keeps this rank's slice, so the local part receives the
    contributions of all ranks' losses. With DDP's gradient averaging this equals the
    gradient of one process holding the whole global batch.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ws, r = dist.get_world_size(), dist.get_rank()
        parts = [torch.empty_like(x) for _ in range(ws)]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.n = r, x.shape[0]
        return torch.cat(parts, 0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(x from all ranks concatenated [W*B, ...], offset of this rank's rows)``.

    Every rank must call it with the same ``B``. Without a process group: ``(x, 0)``.
    """
    if not is_distributed():
        return x, 0
    return _GatherWithGrad.apply(x), dist.get_rank() * x.shape[0]
