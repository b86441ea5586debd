"""Graph analysis with torch.fx: tracing, shape propagation and the structural facts transforms need.

Analysis only: nothing here edits a model. Transforms (``plugins/``) read these results and edit
modules in place, so the edited model keeps its own ``forward`` code and its train/eval behaviour.
"""

from harden.graph.downsampling import DownsamplingOp, DownsamplingPoint, find_downsampling_points, find_stem
from harden.graph.tracing import (
    TracedNet,
    feature_map_size,
    node_module_path,
    shape_of,
    trace,
    trace_with_shapes,
)

__all__ = [
    "DownsamplingOp",
    "DownsamplingPoint",
    "TracedNet",
    "feature_map_size",
    "find_downsampling_points",
    "find_stem",
    "node_module_path",
    "shape_of",
    "trace",
    "trace_with_shapes",
]
