"""Resizes whose size comes from ``x.shape`` get constant scales (integer factors) or sizes.

Traced, ``F.interpolate(y, size=x.shape[-2:])`` exports as Shape, Gather and Concat feeding Resize; with the sizes
known at the export shape, Resize takes constant scales, which need no Shape even with a symbolic batch. ONNX holds
the scales in float32: 5 / 3 is 1.66666663 there, and 3 x 1.66666663 in float64 floors to 4, not 5 (onnxruntime
then refuses the file). Where no float32 scale reproduces the size exactly, a constant size is used (a
dynamic-batch graph then keeps a Shape for the batch and channel sizes).
"""

import inspect

import numpy as np
import torch.nn.functional as F

from .registry import op_rule

_SIGNATURE = inspect.signature(F.interpolate)


@op_rule("static-resize", "F.interpolate with a size read from x.shape → constant scales (or sizes)",
         ops=("interpolate",))
def static_interpolate(func, args: tuple, kwargs: dict, memo: dict):
    call = _SIGNATURE.bind(*args, **kwargs).arguments
    x, size = call.pop("input"), call.pop("size", None)
    if size is None:
        return func(*args, **kwargs), False
    spatial = [int(n) for n in x.shape[2:]]
    size = [int(s) for s in size] if isinstance(size, (list, tuple)) else [int(size)] * len(spatial)
    call.pop("scale_factor", None)
    call.pop("recompute_scale_factor", None)
    scales = [s / n for s, n in zip(size, spatial)]
    if all(_reproduces(n, f, s) for s, n, f in zip(size, spatial, scales)):
        return func(x, scale_factor=scales, recompute_scale_factor=False, **call), True
    return func(x, size=size, **call), True


def _reproduces(n: int, scale: float, size: int) -> bool:
    """Whether ``scale`` gives ``size`` from ``n`` in PyTorch (float64) and from the ONNX file's float32 scale,
    multiplied in float32 or in float64 (onnxruntime's shape inference)."""
    stored = np.float32(scale)
    return all(int(np.floor(product)) == size for product in (n * scale, np.float32(n) * stored, n * float(stored)))
