"""SimAM: a parameter-free attention module.

Yang, Zhang, Li, Xie. "SimAM: A Simple, Parameter-Free Attention Module for Convolutional Neural
Networks." ICML 2021. Published form: spatial sum of squares divided by ``n`` (overflows in fp16 on
large maps; the rewrite engine turns it into a mean).
"""

import torch
from torch import nn


class SimAM(nn.Module):
    """Weights every activation by the sigmoid of its inverse energy against its channel's mean."""

    def __init__(self, channels: int | None = None, e_lambda: float = 1e-4):
        super().__init__()
        self.activaton = nn.Sigmoid()  # the published attribute name, kept so fork checkpoints fit
        self.e_lambda = e_lambda

    @classmethod
    def config_from(cls, module: nn.Module) -> dict:
        return {"e_lambda": module.e_lambda}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.size()
        n = w * h - 1
        x_minus_mu_square = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
        y = x_minus_mu_square / (4 * (x_minus_mu_square.sum(dim=[2, 3], keepdim=True) / n + self.e_lambda)) + 0.5
        return x * self.activaton(y)
