"""``torch.einsum`` → permutes, reshapes and one matmul (or a sum and a permute for one operand).

Einsum exports as the ONNX Einsum op, which TensorRT supports only in part and most NPUs not at
all. Equations with an ellipsis, a repeated index within one operand, or more than two operands
are left as they are.
"""

import math

import torch

from .registry import op_rule


def _parse(equation: str, count: int) -> tuple[list[str], str] | None:
    if "." in equation or "->" not in equation:
        return None
    inputs, output = equation.replace(" ", "").split("->")
    inputs = inputs.split(",")
    if len(inputs) != count or count > 2 or any(len(set(s)) != len(s) for s in [*inputs, output]):
        return None
    return inputs, output


def _sum_out(x: torch.Tensor, subs: str, keep: str) -> tuple[torch.Tensor, str]:
    drop = [i for i, s in enumerate(subs) if s not in keep]
    return (x.sum(drop) if drop else x), "".join(s for s in subs if s in keep)


def _to(x: torch.Tensor, subs: str, order: str) -> torch.Tensor:
    return x.permute([subs.index(s) for s in order])


def _shape(sizes: dict[str, int], groups: list[str], symbolic_first: bool) -> list[int]:
    shape = [math.prod(sizes[s] for s in group) for group in groups]
    return [-1, *shape[1:]] if symbolic_first else shape


def _matmul(a, b, sa: str, sb: str, out: str) -> torch.Tensor:
    a, sa = _sum_out(a, sa, sb + out)
    b, sb = _sum_out(b, sb, sa + out)
    batch = [s for s in out if s in sa and s in sb]
    left, right = [s for s in out if s in sa and s not in sb], [s for s in out if s in sb and s not in sa]
    contract = [s for s in sa if s in sb and s not in out]
    sizes = {**{s: int(n) for s, n in zip(sa, a.shape)}, **{s: int(n) for s, n in zip(sb, b.shape)}}
    first = bool(batch)  # the leading batch index stays symbolic; every other size is a constant
    a = _to(a, sa, "".join(batch + left + contract)).reshape(_shape(sizes, [*batch, left, contract], first))
    b = _to(b, sb, "".join(batch + contract + right)).reshape(_shape(sizes, [*batch, contract, right], first))
    c = (a @ b).reshape(_shape(sizes, [*batch, *left, *right], first))
    return _to(c, "".join(batch + left + right), out)


@op_rule("einsum", "torch.einsum → permutes, reshapes and matmul", ops=("einsum",))
def static_einsum(func, args: tuple, kwargs: dict, memo: dict):
    equation, operands = args[0], args[1:]
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    parsed = _parse(equation, len(operands))
    if parsed is None or kwargs:
        return func(*args, **kwargs), False
    (subs, *rest), out = parsed
    if not rest:
        x, subs = _sum_out(operands[0], subs, out)
        return _to(x, subs, out), True
    return _matmul(operands[0], operands[1], subs, rest[0], out), True
