"""Adam over the rows of one per-image parameter tensor, touching only the rows of the current batch.

A persistent ``torch.optim.Adam`` over every image's camera would keep moving the cameras of images that are not in
the batch (their moments are non-zero, so a zero gradient still yields a step). Here the moments and the step count
live per row, and :meth:`SparseRowAdam.step` reads and writes only the given rows: an image's camera changes only
when that image is seen, and its bias correction counts only its own updates.
"""

from __future__ import annotations

import torch
from torch import Tensor


class SparseRowAdam:
    """Adam on ``param`` [N, ...] row by row. ``step(rows [n] long, grad [n, ...])`` updates ``param[rows]`` only."""

    def __init__(self, param: Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.param, self.lr, self.betas, self.eps = param, lr, betas, eps
        self.exp_avg = torch.zeros_like(param, requires_grad=False)
        self.exp_avg_sq = torch.zeros_like(param, requires_grad=False)
        self.steps = torch.zeros(param.shape[0], dtype=torch.int64, device=param.device)

    @torch.no_grad()
    def step(self, rows: Tensor, grad: Tensor) -> None:
        beta1, beta2 = self.betas
        t = self.steps[rows] + 1
        self.steps[rows] = t
        m = self.exp_avg[rows].mul_(beta1).add_(grad, alpha=1 - beta1)
        v = self.exp_avg_sq[rows].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        self.exp_avg[rows] = m
        self.exp_avg_sq[rows] = v
        shape = (-1,) + (1,) * (grad.ndim - 1)
        t = t.to(grad.dtype).view(shape)
        correction1 = 1 - beta1 ** t
        correction2 = 1 - beta2 ** t
        update = self.lr * (m / correction1) / ((v / correction2).sqrt() + self.eps)
        self.param[rows] = self.param[rows] - update

    def state_tensors(self, prefix: str) -> dict[str, Tensor]:
        return {f"{prefix}.exp_avg": self.exp_avg, f"{prefix}.exp_avg_sq": self.exp_avg_sq,
                f"{prefix}.steps": self.steps}

    def load_state_tensors(self, prefix: str, tensors: dict[str, Tensor]) -> None:
        self.exp_avg.copy_(tensors[f"{prefix}.exp_avg"])
        self.exp_avg_sq.copy_(tensors[f"{prefix}.exp_avg_sq"])
        self.steps.copy_(tensors[f"{prefix}.steps"])

    def owned_tensors(self) -> list[Tensor]:
        """The per-row state tensors (synchronised across ranks together with the parameter)."""
        return [self.exp_avg, self.exp_avg_sq, self.steps]
