"""The static rewrite engine: export-unfriendly attention code becomes static, verified equivalents.

One file per rule family registers its rules in ``RULES`` (``registry``); ``rewrite`` applies
them to a model at its export shape and returns the rewritten copy with a ``RewriteReport``.
"""

from . import (  # noqa: F401
    batch_axis, cga, criss_cross, einsum, infinity, linear, mha, pooling, reductions, resize, shifts)
from .engine import LayerRewrite, RewriteReport, Rewritten, rewrite
from .registry import RULES, LayerCall, ModuleRule, OpRule, Rule
from .shifts import TrueShifts
from .verify import TOLERANCE

__all__ = ["RULES", "TOLERANCE", "LayerCall", "LayerRewrite", "ModuleRule", "OpRule", "RewriteReport", "Rewritten",
           "Rule", "TrueShifts", "rewrite"]
