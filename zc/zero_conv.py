"""Zero convolution: the paper's Z(·; Θ_z), a convolution whose weight and bias start at zero.

A zero convolution outputs exactly 0 at initialisation, so adding its output to a pretrained
network changes nothing: y = F(x) + Z(h) = F(x). It still learns, because for y = w·h + b with
w = 0 the gradient dy/dw = h is not zero. What it does *not* do on the first step is pass
gradient back: dy/dh = w = 0, so everything upstream of it gets no gradient until w has moved
(chapter 2 works this through with autograd).
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["ZeroConv", "is_zero", "randomize_"]


class ZeroConv(nn.Conv2d):
    """`nn.Conv2d` (1x1 by default) whose parameters start at zero.

    `init="gaussian"` is the paper's ablation (Fig. 8b): the same layer initialised with
    N(0, 1/fan_in) weights and zero bias, which perturbs the locked model at step 0.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, init: str = "zero"):
        if init not in ("zero", "gaussian"):
            raise ValueError(f"ZeroConv init must be 'zero' or 'gaussian', got {init!r}")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.init = init
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if not hasattr(self, "init"):  # nn.Conv2d.__init__ calls this before self.init exists
            return
        if self.init == "zero":
            nn.init.zeros_(self.weight)
        else:
            fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
            nn.init.normal_(self.weight, std=1.0 / math.sqrt(fan_in))
        nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", init={self.init}"


def is_zero(module: nn.Module) -> bool:
    """True when every parameter of `module` is exactly zero."""
    return all(bool((p == 0).all()) for p in module.parameters())


@torch.no_grad()
def randomize_(module: nn.Module, std: float = 0.02, generator: torch.Generator | None = None) -> nn.Module:
    """Fill every parameter of `module` with N(0, std²) noise (tests use it so that zero convs
    cannot make two implementations agree trivially)."""
    for p in module.parameters():
        p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * std)
    return module
