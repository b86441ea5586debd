"""Symbolic tracing with timm's list of untraceable layers, and shape propagation."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.passes.fake_tensor_prop import FakeTensorProp
from torch.fx.passes.shape_prop import ShapeProp

from harden.errors import HardenError
from harden.runtime.modes import eval_mode


def _notrace() -> tuple[set[type[nn.Module]], set]:
    try:
        from timm.layers import _fx as timm_fx
    except ImportError:  # pragma: no cover - timm is a dependency, but keep tracing usable without it
        return set(), set()
    return set(timm_fx.get_notrace_modules()), set(timm_fx.get_notrace_functions())


class HardenTracer(fx.Tracer):
    """An fx tracer that keeps timm's untraceable layers (and any ``extra_leaves``) as leaf calls."""

    def __init__(self, extra_leaves: Sequence[type[nn.Module]] = (), leaf_paths: Sequence[str] = ()) -> None:
        leaves, functions = _notrace()
        super().__init__(autowrap_functions=tuple(functions))
        self._leaf_types = tuple(leaves | set(extra_leaves))
        self._leaf_paths = set(leaf_paths)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self._leaf_paths:
            return True
        if self._leaf_types and isinstance(m, self._leaf_types):
            return True
        return super().is_leaf_module(m, module_qualified_name)


@contextlib.contextmanager
def preserve_state(module: nn.Module) -> Iterator[None]:
    """Restore every submodule's plain attributes and buffers afterwards.

    Tracing (proxies) and fake-tensor runs (fake tensors) would otherwise leave their stand-ins in
    modules whose ``forward`` stores a tensor on ``self``.
    """
    saved = [(m, dict(m.__dict__), dict(m._buffers)) for m in module.modules()]
    try:
        yield
    finally:
        for m, attrs, buffers in saved:
            for key in [k for k in m.__dict__ if k not in attrs]:
                del m.__dict__[key]
            for key, value in attrs.items():
                if key not in ("_buffers", "_parameters", "_modules") and m.__dict__.get(key) is not value:
                    m.__dict__[key] = value
            m._buffers.clear()
            m._buffers.update(buffers)


def trace(module: nn.Module, *, leaf_paths: Sequence[str] = (), shallow: bool = False) -> fx.GraphModule:
    """Trace ``module`` into a GraphModule sharing its submodules.

    ``shallow=True`` keeps every direct child as a leaf (used to rewrite one module's own forward).
    """
    if shallow:
        leaf_paths = [*leaf_paths, *(name for name, _ in module.named_children())]
    tracer = HardenTracer(leaf_paths=leaf_paths)
    try:
        with preserve_state(module):
            graph = tracer.trace(module)
    except Exception as exc:
        raise HardenError(
            f"torch.fx cannot trace {type(module).__name__} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); harden needs a traceable forward"
        ) from exc
    return fx.GraphModule(tracer.root, graph, type(module).__name__)


@dataclass
class TracedNet:
    """A traced network with shapes recorded on every node (``node.meta['tensor_meta']``)."""

    gm: fx.GraphModule
    input_shape: tuple[int, ...]

    def modules(self) -> dict[str, nn.Module]:
        return dict(self.gm.named_modules())


def trace_with_shapes(net: nn.Module, input_size: Sequence[int]) -> TracedNet:
    """Trace ``net`` and run shape propagation on a zero batch of one image of ``input_size`` (C, H, W)."""
    gm = trace(net)
    dev = next((p.device for p in net.parameters()), torch.device("cpu"))
    x = torch.zeros(1, *input_size, device=dev)
    with eval_mode(net), torch.no_grad(), preserve_state(net):
        try:
            if prefer_fake(tuple(input_size), net):
                try:  # fake tensors: shapes without computing anything
                    mode = FakeTensorMode(allow_non_fake_inputs=True)
                    FakeTensorProp(gm, mode).propagate(mode.from_tensor(x))
                except Exception:  # an op without a fake kernel: compute for real
                    ShapeProp(gm).propagate(x)
            else:
                ShapeProp(gm).propagate(x)
        except Exception as exc:
            raise HardenError(
                f"shape propagation failed at input size {tuple(input_size)}: "
                f"{str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"
            ) from exc
    return TracedNet(gm, tuple(x.shape))


FAKE_ABOVE_PIXELS = 320 * 320
FAKE_ABOVE_PARAMETERS = 60_000_000


def prefer_fake(input_size: Sequence[int], module: nn.Module | None = None) -> bool:
    """Whether a shape-only run should use fake tensors rather than compute on zeros.

    Fake tensors cost a fixed time per operation (about 1 ms, batch norm more), real compute grows
    with pixels and weights: on CPU a real ResNet-50 or DenseNet-121 forward at 224x224 is several
    times faster than a fake one, a VGG-16 (138M parameters) or any network at 448x448 slower.
    Fake above ``FAKE_ABOVE_PIXELS`` input pixels or ``FAKE_ABOVE_PARAMETERS`` parameters.
    """
    if int(input_size[-1]) * int(input_size[-2]) > FAKE_ABOVE_PIXELS:
        return True
    return module is not None and sum(p.numel() for p in module.parameters()) > FAKE_ABOVE_PARAMETERS


@contextlib.contextmanager
def shape_run(input_size: Sequence[int], module: nn.Module | None = None) -> Iterator[None]:
    """:func:`fake_mode` for large inputs or networks (see :func:`prefer_fake`), plain execution otherwise."""
    if prefer_fake(input_size, module):
        with fake_mode():
            yield
    else:
        yield


@contextlib.contextmanager
def fake_mode() -> Iterator[FakeTensorMode]:
    """Run code on fake tensors (shapes only, no compute); real parameters are accepted as inputs."""
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        yield mode


def shape_of(node: fx.Node | object) -> tuple[int, ...] | None:
    """The output shape recorded by shape propagation, or None for non-tensor values."""
    if not isinstance(node, fx.Node):
        return None
    meta = node.meta.get("tensor_meta", node.meta.get("val"))
    shape = getattr(meta, "shape", None)
    return tuple(shape) if shape is not None else None


def node_module_path(node: fx.Node) -> str | None:
    """The qualified name of the innermost module whose forward created ``node`` ('' for the root)."""
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return ""
    path = list(stack.keys())[-1]
    return path if isinstance(path, str) else str(path)


_GLOBAL_POOL_MODULES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_GLOBAL_POOL_FUNCTIONS = {
    torch.nn.functional.adaptive_avg_pool2d,
    torch.nn.functional.adaptive_max_pool2d,
    torch.mean,
    torch.amax,
}


def _is_global_pool(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(str(node.target)), _GLOBAL_POOL_MODULES)
    if node.op == "call_function":
        return node.target in _GLOBAL_POOL_FUNCTIONS
    if node.op == "call_method":
        return node.target in ("mean", "amax")
    return False


def feature_map_size(traced: TracedNet) -> tuple[int, int] | None:
    """Spatial size (H, W) of the feature map that global pooling reduces, or of the last 4-D map."""
    modules = traced.modules()
    pooled = None
    last_map = None
    for node in traced.gm.graph.nodes:
        out = shape_of(node)
        if _is_global_pool(node, modules) and node.args:
            src = shape_of(node.args[0])
            if src is not None and len(src) == 4 and out is not None and (
                len(out) == 2 or (len(out) == 4 and out[2] * out[3] == 1)
            ):
                pooled = (src[2], src[3])
                continue
        if out is not None and len(out) == 4 and not _is_global_pool(node, modules):
            last_map = (out[2], out[3])
    return pooled or last_map
