"""Adaptive pooling at the export shape, of a batch (N, C, H, W) or of one unbatched (C, H, W): plain pooling where the output size divides the input,
nearest-neighbour resizing where it is a multiple of the input (pooling that upsamples: MLCA pools
1x1 up to 5x5), else an exact static equivalent (a constant pooling matrix for average, slices and
max for max).

PyTorch's adaptive bin i over n inputs and m outputs spans [floor(i*n/m), ceil((i+1)*n/m)); when m
is a multiple of n each bin holds the one input floor(i*n/m), which nearest resizing by m/n picks.
"""

import math

import torch
import torch.nn.functional as F

from .registry import op_rule


def _bins(n: int, m: int) -> list[tuple[int, int]]:
    return [(i * n // m, math.ceil((i + 1) * n / m)) for i in range(m)]


def _output_size(size, input_size: tuple[int, int]) -> tuple[int, int]:
    size = (size, size) if isinstance(size, int) else tuple(size)
    return tuple(int(s) if s is not None else n for s, n in zip(size, input_size))


def _averaging(n: int, m: int, like: torch.Tensor) -> torch.Tensor:
    matrix = torch.zeros(m, n, dtype=like.dtype, device=like.device)
    for i, (start, end) in enumerate(_bins(n, m)):
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def _average(x: torch.Tensor, size: tuple[int, int], out: tuple[int, int]) -> torch.Tensor:
    if size[0] % out[0] == 0 and size[1] % out[1] == 0:
        return F.avg_pool2d(x, (size[0] // out[0], size[1] // out[1]))
    return _averaging(size[0], out[0], x) @ x @ _averaging(size[1], out[1], x).T


def _max_along(x: torch.Tensor, dim: int, n: int, m: int) -> torch.Tensor:
    return torch.cat([x.narrow(dim, start, end - start).amax(dim, keepdim=True) for start, end in _bins(n, m)], dim)


def _maximum(x: torch.Tensor, size: tuple[int, int], out: tuple[int, int]) -> torch.Tensor:
    if size[0] % out[0] == 0 and size[1] % out[1] == 0:
        return F.max_pool2d(x, (size[0] // out[0], size[1] // out[1]))
    return _max_along(_max_along(x, 2, size[0], out[0]), 3, size[1], out[1])


def _repeated(size: tuple[int, int], out: tuple[int, int]) -> bool:
    """Whether each output bin holds exactly one input: an output a multiple of the input, larger on some axis."""
    return out != size and all(m % n == 0 for n, m in zip(size, out))


@op_rule("adaptive-pool",
         "adaptive pooling → avg/max pooling where the size divides the input, nearest resizing where it is a "
         "multiple of the input, else a constant pooling matrix (average) or slices and max",
         ops=("adaptive_avg_pool2d", "adaptive_max_pool2d"))
def static_adaptive_pool(func, args: tuple, kwargs: dict, memo: dict):
    x, size = args[0], args[1] if len(args) > 1 else kwargs["output_size"]
    if x.dim() not in (3, 4) or (args[2:] or [kwargs.get("return_indices", False)])[0]:
        return func(*args, **kwargs), False
    if x.dim() == 3:  # unbatched (C, H, W): pooled as a batch of one
        return _pooled(func, x[None], size)[0], True
    return _pooled(func, x, size), True


def _pooled(func, x: torch.Tensor, size) -> torch.Tensor:
    input_size = (int(x.shape[-2]), int(x.shape[-1]))
    out = _output_size(size, input_size)
    if _repeated(input_size, out):
        return F.interpolate(x, scale_factor=(out[0] / input_size[0], out[1] / input_size[1]), mode="nearest")
    pool = _average if func.__name__ == "adaptive_avg_pool2d" else _maximum
    return pool(x, input_size, out)
