"""The part of a model after its target layer, as a callable (torch.fx), for methods that perturb the layer.

Ablation-CAM zeroes one channel of the target layer per forward. Everything before the layer is
the same for every ablation, so only the *tail* has to run: :func:`split_at_layer` traces the model
with ``torch.fx`` and cuts it into a ``prefix`` (images -> the layer's output and every earlier
value the tail still reads, e.g. a residual branch that bypasses the layer) and a ``tail`` (those
values -> logits). Models that do not trace, call the layer more than once, or hand the tail a
value without a batch dimension get ``None``, and callers fall back to full forwards.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from torch import Tensor, fx, nn

from benchmark import passes

__all__ = ["LayerSplit", "split_at_layer"]

log = logging.getLogger(__name__)


@dataclass
class LayerSplit:
    """``prefix(images) -> (activation, *live_ins)`` and ``tail(activation, *live_ins) -> logits``."""

    prefix: fx.GraphModule
    tail: fx.GraphModule
    num_live_ins: int

    def run_prefix(self, images: Tensor) -> Optional[Tuple[Tensor, List[Tensor]]]:
        """The layer's output and the live-in values for ``images``; ``None`` when a live-in is neither a
        ``(B, ...)`` tensor nor a flag (``None`` / bool, e.g. timm attention's ``attn_mask``, ``is_causal``):
        the tail could not run on a subset of the batch."""
        passes.count("partial", len(images))
        activation, *live_ins = self.prefix(images)
        if not all((isinstance(v, Tensor) and v.ndim >= 1 and len(v) == len(images)) or v is None
                   or isinstance(v, bool) for v in live_ins):
            return None
        return activation, live_ins

    def run_tail(self, activation: Tensor, live_ins: Sequence[Tensor]) -> Tensor:
        passes.count("partial", len(activation))
        return self.tail(activation, *live_ins)


def split_at_layer(model: nn.Module, layer: str) -> Optional[LayerSplit]:
    """Split ``model`` at the output of submodule ``layer`` (see the module docstring), or ``None``.

    Examples:
        >>> import torch
        >>> from torchvision.models import resnet18
        >>> model = resnet18(num_classes=10).eval()
        >>> split = split_at_layer(model, "layer4.0.conv1")  # layer4.0's shortcut bypasses conv1
        >>> x = torch.randn(2, 3, 64, 64)
        >>> activation, live_ins = split.run_prefix(x)
        >>> split.num_live_ins, torch.allclose(split.run_tail(activation, live_ins), model(x), atol=1e-5)
        (1, True)
    """
    class _Tracer(fx.Tracer):  # the target layer stays one call even when it is a container (e.g. layer4)
        def is_leaf_module(self, module: nn.Module, name: str) -> bool:
            return name == layer or super().is_leaf_module(module, name)

    try:
        graph = _Tracer().trace(model)
    except Exception as err:  # noqa: BLE001 -- any tracing failure means "no split": callers fall back
        log.debug("no fx split of %s at %r: %s", type(model).__name__, layer, err)
        return None
    nodes = list(graph.nodes)
    calls = [n for n in nodes if n.op == "call_module" and n.target == layer]
    if len(calls) != 1:
        return None
    cut = nodes.index(calls[0])
    before, after = nodes[:cut], [n for n in nodes[cut + 1:] if n.op != "output"]
    output = next(n for n in nodes if n.op == "output")
    early = set(before)
    live_ins = list(dict.fromkeys(a for n in after + [output] for a in n.all_input_nodes
                                  if a in early and a.op != "get_attr"))

    prefix = fx.Graph()
    env = {}
    for node in before + [calls[0]]:
        env[node] = prefix.node_copy(node, lambda a: env[a])
    prefix.output((env[calls[0]], *[env[a] for a in live_ins]))

    tail = fx.Graph()
    env = {calls[0]: tail.placeholder("activation")}
    env.update({a: tail.placeholder(f"live_in_{i}") for i, a in enumerate(live_ins)})
    for node in after:
        for a in node.all_input_nodes:
            if a.op == "get_attr" and a not in env:
                env[a] = tail.get_attr(a.target)
        env[node] = tail.node_copy(node, lambda a: env[a])
    tail.output(fx.map_arg(output.args[0], lambda a: env[a]))
    head = fx.GraphModule(model, prefix)
    head.graph.eliminate_dead_code()  # whatever only the logits used
    head.recompile()
    return LayerSplit(head, fx.GraphModule(model, tail), len(live_ins))
