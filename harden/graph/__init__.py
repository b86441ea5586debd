"""Graph analysis with torch.fx: tracing, shape propagation and the structural facts transforms need.

Analysis only: nothing here edits a model. Transforms (``plugins/``) read these results and edit
modules in place, so the edited model keeps its own ``forward`` code and its train/eval behaviour.
"""

from harden.graph.activation_families import FAMILY_NAMES, ActivationFamily, get_family
from harden.graph.activation_inputs import ActivationInputs, find_activation_inputs
from harden.graph.activations import ActivationSites, find_activation_sites
from harden.graph.downsampling import DownsamplingOp, DownsamplingPoint, find_downsampling_points, find_stem
from harden.graph.stages import Head, Stage, find_head, find_stages, last_stage, node_levels
from harden.graph.tracing import (
    TracedNet,
    feature_map_size,
    node_module_path,
    shape_of,
    trace,
    trace_with_shapes,
)

__all__ = [
    "FAMILY_NAMES",
    "ActivationFamily",
    "ActivationInputs",
    "ActivationSites",
    "DownsamplingOp",
    "DownsamplingPoint",
    "Head",
    "Stage",
    "TracedNet",
    "feature_map_size",
    "find_activation_inputs",
    "find_activation_sites",
    "find_downsampling_points",
    "find_head",
    "find_stages",
    "find_stem",
    "get_family",
    "last_stage",
    "node_levels",
    "node_module_path",
    "shape_of",
    "trace",
    "trace_with_shapes",
]
