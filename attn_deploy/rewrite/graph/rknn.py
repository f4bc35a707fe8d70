"""Graphs in the form rknn-toolkit2 2.3.2 builds (RKNN).

The toolkit turns a ReduceMean over both spatial axes of a 4-D tensor into a global average pool, which keeps those
axes; when the mean dropped them (``x.mean((2, 3))``, ``keepdims=0``), the next op receives a rank-4 tensor where
the graph holds rank 2, and the build stops in the toolkit's own onnxruntime check ("Invalid rank for input").
Measured on one-node graphs: ReduceMax and ReduceSum over (2, 3), and ReduceMean over one axis, build without
keepdims; ReduceMean over (2, 3) builds with it. ``mean-keep-dims`` keeps the axes and reshapes them away.
"""

from ...lint import spatial_means
from .graph import Graph, Edit
from .registry import Site, graph_pass

SPATIAL = [2, 3]


def _sites(graph: Graph) -> list[Site]:
    """The spatial means the rknn lint names (``lint.spatial_means``)."""
    return [Site(n.name, refused="" if graph.static_shape(n.output[0]) else "its output's shape is not static")
            for n in spatial_means(graph.nodes, graph.constants, graph.shapes)]


@graph_pass("mean-keep-dims", "ReduceMean over (2, 3) without keepdims → with keepdims, then a Reshape",
            "ReduceMean over both spatial axes of a 4-D tensor without keepdims (x.mean((2, 3))), which "
            "rknn-toolkit2 builds as a global pool keeping them", targets=("rknn",), find=_sites)
def mean_keep_dims(graph: Graph, site: Site) -> None:
    node = graph.node(site.node)
    edit = Edit(graph, node)
    edit.finish(edit.reshape(edit.reduce("ReduceMean", node.input[0], SPATIAL), graph.static_shape(node.output[0])))
