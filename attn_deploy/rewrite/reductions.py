"""fp16 safety: a sum that feeds a division becomes a mean times a constant factor.

SimAM (Yang et al., ICML 2021) divides the spatial sum of squared deviations by ``n = h*w - 1``;
on a large map that sum overflows fp16 (max 65504) long before the quotient does. ``mean * (N/n)``
over the same N elements is the same number, exact in fp32, and stays in range.
"""

import math

import torch

from .registry import op_rule


def _sum_dims(args: tuple, kwargs: dict) -> tuple[tuple[int, ...], bool] | None:
    x = args[0]
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    keepdim = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
    if kwargs.get("dtype") is not None or not isinstance(x, torch.Tensor):
        return None
    dims = range(x.dim()) if dim is None else (dim,) if isinstance(dim, int) else dim
    return tuple(int(d) % x.dim() for d in dims), bool(keepdim)


def _constant(value) -> float | None:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value)
    return None


def _record_sum(func, args: tuple, kwargs: dict, memo: dict):
    result, reduced = func(*args, **kwargs), _sum_dims(args, kwargs)
    if reduced is not None:
        memo[id(result)] = (result, args[0], *reduced)
    return result, False


def _divide(func, args: tuple, kwargs: dict, memo: dict):
    summed = memo.get(id(args[0]))
    divisor = _constant(args[1] if len(args) > 1 else kwargs.get("other"))
    if summed is None or summed[0] is not args[0] or divisor is None or kwargs.get("rounding_mode"):
        return func(*args, **kwargs), False
    _, x, dims, keepdim = summed
    count = math.prod(int(x.shape[d]) for d in dims)
    return x.mean(dims, keepdim=keepdim) * (count / divisor), True


@op_rule("sum-as-mean", "a sum feeding a division by a constant → a mean times a constant (no fp16 overflow)",
         ops=("sum",), also=("div",))
def sum_as_mean(func, args: tuple, kwargs: dict, memo: dict):
    handle = _record_sum if func.__name__ == "sum" else _divide
    return handle(func, args, kwargs, memo)
