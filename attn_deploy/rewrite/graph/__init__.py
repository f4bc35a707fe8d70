"""Graph passes: ONNX-level rules, the generic fallback for code no module rule knows.

They run on the exported graph after the module rules, each registered in ``PASSES``
(``registry``) with the targets that need it, and each verified in onnxruntime against the
graph as exported (``engine``). One file per pass family: ``broadcast`` (Expand before a
broadcasting op, constants repeated along the batch axis), ``norms`` (fused normalisations as
primitives), ``rank`` (tensors above rank 4, constant-index Gather), ``attention`` (attention in the form a
runtime fuses), ``softmax`` (Softmax over an inner axis by reductions, for onnxruntime), ``pnnx`` (reductions
in the form pnnx reads, for ncnn), ``rknn`` (spatial means in the form rknn-toolkit2 builds).
"""

from . import broadcast, norms, rank, attention, softmax, pnnx, rknn  # noqa: F401  (registered, and run, in this order)
from .engine import GraphRewritten, apply, apply_file
from .registry import PASSES, GraphPass, Site, graph_pass, passes_for

__all__ = ["PASSES", "GraphPass", "GraphRewritten", "Site", "apply", "apply_file", "graph_pass", "passes_for"]
