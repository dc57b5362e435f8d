"""Reading an exported FastFlow graph: node names, the backbone (everything upstream of the
per-scale LayerNorms that open the flows), which nodes to quantize, which were quantized."""

from __future__ import annotations

from collections.abc import Sequence

from .images import CalibError

SCOPES = ("backbone", "all")


def _ensure_node_names(model) -> None:
    """Give every node a unique name (nodes_to_quantize addresses nodes by name)."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        node.name = name
        seen.add(name)


def backbone_boundary(model) -> list[str]:
    """The tensors entering the LayerNormalization nodes (the backbone's feature maps)."""
    inits = {t.name for t in model.graph.initializer}
    return [n.input[0] for n in model.graph.node if n.op_type == "LayerNormalization" and n.input[0] not in inits]


def backbone_nodes(model) -> list:
    """The backbone's nodes in graph order: every ancestor of the tensors the LayerNorms read."""
    boundary = backbone_boundary(model)
    if not boundary:
        raise CalibError("the graph has no LayerNormalization node, so its backbone cannot be told from its flow head")
    producer = {out: n for n in model.graph.node for out in n.output}
    keep: set[int] = set()
    stack = list(boundary)
    while stack:
        n = producer.get(stack.pop())
        if n is None or id(n) in keep:
            continue
        keep.add(id(n))
        stack.extend(n.input)
    return [n for n in model.graph.node if id(n) in keep]


def backbone_submodel(model):
    """The backbone alone: ``model``'s input -> the tensors the LayerNorms read (as outputs).

    Works on FP32 and Q/DQ graphs alike (in a Q/DQ graph the LayerNorms may read
    DequantizeLinear outputs, which ``onnx.utils.Extractor`` cannot type)."""
    from onnx import helper

    nodes = backbone_nodes(model)
    used = {i for n in nodes for i in n.input}
    graph = helper.make_graph(
        nodes,
        model.graph.name + "_backbone",
        list(model.graph.input),
        [helper.make_empty_tensor_value_info(t) for t in backbone_boundary(model)],
        [t for t in model.graph.initializer if t.name in used],
    )
    sub = helper.make_model(graph, opset_imports=list(model.opset_import))
    sub.ir_version = model.ir_version
    return sub


def input_stage_convs(model) -> set[str]:
    """Names of the input stage's convolutions: a luma model computes its luminance and
    normalization as one 1x1 convolution on the three colour channels (fftrain.model
    ``normalize_input``) before any other convolution. It stays float in every file: it is
    not the backbone, and rounding its weights would change which colours count as grey."""
    inits = {t.name: tuple(t.dims) for t in model.graph.initializer}
    producer = {out: n for n in model.graph.node for out in n.output}

    def has_conv_ancestor(node) -> bool:
        seen, stack = set(), list(node.input[:1])
        while stack:
            n = producer.get(stack.pop())
            if n is None or id(n) in seen:
                continue
            if n.op_type == "Conv":
                return True
            seen.add(id(n))
            stack.extend(n.input)
        return False

    return {n.name for n in model.graph.node
            if n.op_type == "Conv" and len(n.input) > 1 and inits.get(n.input[1], ())[1:] == (3, 1, 1)
            and not has_conv_ancestor(n)}


def find_quantizable_nodes(model, op_types: Sequence[str] = ("Conv",), scope: str = "backbone") -> list[str]:
    """Names of the nodes to quantize, in graph order.

    scope="backbone": nodes of ``op_types`` upstream of the LayerNormalization nodes (all
    ancestors of the tensors the norms read). scope="all": every node of ``op_types``. Never
    the input stage's convolution (:func:`input_stage_convs`).
    Raises CalibError when the graph has no LayerNormalization (not an ffrt FastFlow graph)
    or nothing matches.
    """
    if scope not in SCOPES:
        raise CalibError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    nodes = list(model.graph.node)
    if scope == "all":
        chosen = {n.name for n in nodes if n.op_type in op_types}
    else:
        try:
            chosen = {n.name for n in backbone_nodes(model) if n.op_type in op_types}
        except CalibError as e:
            raise CalibError(f"{e}; use scope 'all' (--scope all) to quantize every matching node") from e
    chosen -= input_stage_convs(model)
    if not chosen:
        raise CalibError(f"no {'/'.join(op_types)} nodes found in scope {scope!r}; nothing to quantize")
    return [n.name for n in nodes if n.name in chosen]


def quantized_node_names(model, op_types: Sequence[str] = ("Conv",)) -> list[str]:
    """Nodes of ``op_types`` in a Q/DQ graph whose weight (input 1) or data input comes from DequantizeLinear."""
    producer = {out: n for n in model.graph.node for out in n.output}
    out = []
    for n in model.graph.node:
        if n.op_type in op_types and any(
            (p := producer.get(i)) is not None and p.op_type == "DequantizeLinear" for i in n.input[:2]
        ):
            out.append(n.name)
    return out
