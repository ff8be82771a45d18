"""Multi-process helpers for PyTorch DDP (torchrun); every one is a no-op without a process group.

Two collectives matter for self-supervised learning:

- ``gather_with_grad``: contrastive losses (SimCLR) want the embeddings of *all* processes as
  negatives, and the gradient of every term must flow back to the process that made the embedding.
- ``all_reduce_mean``: statistics that must be the same on every process (DINO's center).

All processes must pass tensors of the same shape (equal per-process batch sizes, as with a
``DistributedSampler`` and ``drop_last``).
"""

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True when a torch.distributed process group is initialized."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """Index of this process in the group (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes in the group (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sends each slice of the gradient home.

    Forward: every process gets the concatenation [x_0; x_1; ...; x_{W-1}].
    Backward: process p's loss L_p depends on every x_q, so the gradient of x_q is the sum over
    processes of dL_p / dx_q: all-reduce (sum) the incoming gradients and keep our own slice.
    Together with DDP's gradient averaging this gives the gradient of mean_p L_p, the full-batch loss.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        gathered = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(gathered, x.contiguous())
        return torch.cat(gathered, dim=0)  # [W * N, ...]

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)  # sum over processes of dL_p / d(gathered)
        return grad.chunk(world_size(), dim=0)[rank()]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate x [N, ...] from all processes along dim 0 -> [W * N, ...], differentiable.

    Gradients flow back to the local slice (rows rank * N ... (rank + 1) * N). Identity without DDP.
    """
    if not is_distributed() or world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def concat_all_gather(x: Tensor) -> Tensor:
    """Concatenate x [N, ...] from all processes along dim 0 -> [W * N, ...], without gradient.

    Used for targets (MoCo keys entering the queue). Returns x detached without DDP.
    """
    if not is_distributed() or world_size() == 1:
        return x.detach()
    gathered = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(gathered, x.detach().contiguous())
    return torch.cat(gathered, dim=0)


@torch.no_grad()
def all_reduce_mean(x: Tensor) -> Tensor:
    """Mean of x over all processes (a new tensor, same shape, no gradient). x detached without DDP."""
    if not is_distributed() or world_size() == 1:
        return x.detach()
    total = x.detach().clone()
    dist.all_reduce(total)
    return total / world_size()
