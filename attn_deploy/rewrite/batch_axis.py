"""Reshapes that keep the batch axis: ``-1`` for the batch and constants for every other size.

In a dynamic-batch export, ``x.view(x.shape[0], c, -1)`` or ``x.flatten(2)`` traces as Shape,
Gather and Concat feeding the Reshape, which static compilers and NPUs reject. When a reshape keeps
the leading (batch) size, the same reshape with ``-1`` there and the other sizes taken at the
export shape needs no shape arithmetic at all. Static exports fold such arithmetic anyway.
"""

import torch

from .registry import op_rule


@op_rule("batch-reshape", "view/reshape/flatten with sizes read from x.shape → -1 for the batch, constants elsewhere",
         ops=("view", "reshape", "flatten"), dynamic_only=True)
def batch_reshape(func, args: tuple, kwargs: dict, memo: dict):
    x, out = args[0], func(*args, **kwargs)
    keeps_batch = isinstance(x, torch.Tensor) and x.dim() > 0 and out.dim() > 0 and out.shape[0] == x.shape[0]
    if not keeps_batch or out.dim() == 1 or x.dtype != out.dtype:
        return out, False
    return x.reshape(-1, *(int(n) for n in out.shape[1:])), True
