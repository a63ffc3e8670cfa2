"""Fused attention in exported graphs: a post-export rewrite of every unfused attention,

    [Mul(q, scale)] -> MatMul(., Transpose(k, [0, 1, 3, 2])) -> [Add(., bias)] -> Softmax(-1) -> MatMul(., v),

into one fused ONNX Runtime operator, with q: [B, H, N, Dk], k: [B, H, M, Dk], v: [B, H, M, Dv]
(Dv may differ from Dk: Reuse Attention's one shared map meets its value heads side by side,
[B, 1, M, Hv * Dv], so the same rewrite fuses `mha` and `reuse` layers alike), and UniForm's
channel-major windows (`_find_channel_major`) into the same operators with one head.

The exporters give this pattern for the "dense" backend `export.onnx` exports with; ONNX Runtime's
own graph optimisations (ORT_ENABLE_ALL) and its transformer optimizer fuse only BERT-shaped
subgraphs (LayerNorm, mask and projections included), so without this rewrite every layer stays
MatMul / Softmax / MatMul. A rewrite after export works the same for both torch.onnx exporters and
for models whose attention this project does not own (timm's ViT exports, which decompose SDPA into
the same pattern); the decomposed graph stays the fallback, and the parity check of `export_onnx`
judges the fused one against eager PyTorch like any other export.

Fused operators (both have CPU kernels in ONNX Runtime 1.32, checked in tests/export):
Both take a bias only as [N, M] in its last two dims (a bias broadcast over query rows or keys, e.g.
a key padding mask [B, 1, 1, M], leaves that layer decomposed).
- "mha": com.microsoft `MultiHeadAttention` (query/key/value [B, S, H * D], `attention_bias`
  [1|B, 1|H, N, M], `scale`; key/value head sizes may differ only in this 3-D form, so q, k and v
  pass through Transpose + Reshape, which ORT's transpose optimiser mostly cancels against the
  projections' own layout changes).
- "attention": the ONNX `Attention` operator (opset 23: 4-D q/k/v taken as they are, `attn_mask`
  broadcast, `scale`); the model's default-domain opset is raised to 23 (every operator these
  exports use keeps its meaning from opset 18 to 23: later versions add types only).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FUSED_OPS", "count_fused", "fuse_attention"]

FUSED_OPS = ("mha", "attention")
MS_DOMAIN = "com.microsoft"
_OP_NAME = {"mha": ("MultiHeadAttention", MS_DOMAIN), "attention": ("Attention", "")}


@dataclass
class _Match:
    q: str
    k: str
    v: str
    bias: str | None
    scale: float
    out: str
    heads: int
    dv: int
    nodes: list  # the nodes the fused one replaces
    channel_major: bool = False  # UniForm's form: q [B, N, D] (already token-major), k [B, D, M], v [B, C, M] -> [B, C, N]


def _scalar(name: str, consts: dict) -> float | None:
    value = consts.get(name)
    return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None


def _constants(graph) -> dict:
    from onnx import numpy_helper

    out = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            out[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return out


def _shapes(model) -> dict[str, list]:
    """Static dims of every tensor (None where unknown). ONNX Runtime's symbolic shape inference
    follows Shape -> Concat -> Reshape chains (a dynamic-batch export computes its head reshapes
    that way), which onnx's own inference leaves unknown; onnx's is the fallback."""
    import onnx

    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except Exception:  # noqa: BLE001 - any failure of the optional inference: use onnx's
        inferred = None
    if inferred is None:
        inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return shapes


def _attr(node, name: str, default=None):
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _bias_fits(bias: list | None, q: list, k: list) -> bool:
    """Both fused kernels take a bias whose last two dims are exactly [N, M] (no broadcast over
    query rows or keys) and whose leading dims are 1 or [B, H]: [N, M], [1|H, N, M], [1|B, 1|H, N, M]."""
    if not bias or None in bias[-2:] or bias[-2:] != [q[2], k[2]] or len(bias) > 4:
        return False
    lead = ([1] * (4 - len(bias)) + bias)[:2]
    return lead[0] in (1, q[0]) and lead[1] in (1, q[1])


def _index(graph):
    """The lookups both pattern finders walk the graph with: each value's producing node, each
    value's consuming nodes, the graph's constants, and whether a value has exactly one use (one
    consumer and not a graph output), i.e. can be folded into a fused node."""
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in graph.output}

    def only_use(name: str) -> bool:
        return len(consumers.get(name, [])) == 1 and name not in outputs

    return producer, consumers, _constants(graph), only_use


def _find(graph, shapes: dict) -> list[_Match]:
    producer, consumers, consts, only_use = _index(graph)

    matches = []
    for sm in graph.node:
        if sm.op_type != "Softmax" or _attr(sm, "axis", -1) not in (-1, 3):
            continue
        uses = consumers.get(sm.output[0], [])
        if len(uses) != 1 or uses[0].op_type != "MatMul" or uses[0].input[0] != sm.output[0] or not only_use(sm.output[0]):
            continue
        mm2 = uses[0]
        nodes, bias = [sm, mm2], None
        src = producer.get(sm.input[0])
        if src is not None and src.op_type == "Add" and only_use(src.output[0]):
            for a, b in (src.input, src.input[::-1]):
                if a in producer and producer[a].op_type == "MatMul":
                    nodes.append(src)
                    bias, src = b, producer[a]
                    break
        if src is None or src.op_type != "MatMul" or not only_use(src.output[0]):
            continue
        mm1 = src
        nodes.append(mm1)
        # a scalar factor on either side (PyTorch's SDPA decomposition puts sqrt(scale) on both)
        q, scale = mm1.input[0], 1.0
        kt_name = mm1.input[1]
        factors = []
        for side in ("q", "k"):
            name = q if side == "q" else kt_name
            mul = producer.get(name)
            if mul is None or mul.op_type != "Mul" or not only_use(mul.output[0]):
                continue
            for a, b in (mul.input, mul.input[::-1]):
                if _scalar(b, consts) is not None:
                    factors.append(_scalar(b, consts))
                    nodes.append(mul)
                    if side == "q":
                        q = a
                    else:
                        kt_name = a
                    break
        for f in factors:
            scale *= f
        kt = producer.get(kt_name)
        if kt is None or kt.op_type != "Transpose" or list(_attr(kt, "perm", [])) != [0, 1, 3, 2] or not only_use(kt.output[0]):
            continue
        nodes.append(kt)
        k, v = kt.input[0], mm2.input[1]
        qs, ks, vs = shapes.get(q), shapes.get(k), shapes.get(v)
        if not (qs and ks and vs and len(qs) == len(ks) == len(vs) == 4):
            continue
        if None in (qs[1], qs[3], ks[1], ks[3], vs[1], vs[3]) or qs[1] != ks[1] or ks[1] != vs[1]:
            continue  # heads and widths must be static (batch and tokens may be dynamic)
        if bias is not None and not _bias_fits(shapes.get(bias), qs, ks):
            continue
        matches.append(_Match(q, k, v, bias, scale, mm2.output[0], qs[1], vs[3], nodes))
    return matches


def _find_channel_major(graph, shapes: dict) -> list[_Match]:
    """UniForm's exported windows, one map for all channels (layers/reuse_mixer.py `_attend_nchw`):
    MatMul(Transpose(q, [0, 2, 1]), k) -> [Mul(scale)] -> [Add(bias)] -> Softmax ->
    Transpose([0, 2, 1]) -> MatMul(v, .), with q, k: [B, D, N], v: [B, C, N], out [B, C, N]."""
    producer, consumers, consts, only_use = _index(graph)

    def single(name: str, op: str):
        uses = consumers.get(name, [])
        return uses[0] if only_use(name) and uses[0].op_type == op else None

    matches = []
    for sm in graph.node:
        if sm.op_type != "Softmax" or _attr(sm, "axis", -1) not in (-1, 2):
            continue
        tp = single(sm.output[0], "Transpose")
        if tp is None or list(_attr(tp, "perm", [])) != [0, 2, 1]:
            continue
        mm2 = single(tp.output[0], "MatMul")
        if mm2 is None or mm2.input[1] != tp.output[0]:
            continue
        nodes, bias, scale = [sm, tp, mm2], None, 1.0
        src = producer.get(sm.input[0])
        if src is not None and src.op_type == "Add" and only_use(src.output[0]):
            a, b = src.input
            if b in producer and producer[b].op_type in ("MatMul", "Mul") and a not in producer:
                a, b = b, a
            nodes.append(src)
            bias, src = b, producer.get(a)
        if src is not None and src.op_type == "Mul" and only_use(src.output[0]):
            a, b = src.input if _scalar(src.input[1], consts) is not None else src.input[::-1]
            if _scalar(b, consts) is None:
                continue
            nodes.append(src)
            scale, src = _scalar(b, consts), producer.get(a)
        if src is None or src.op_type != "MatMul" or not only_use(src.output[0]):
            continue
        nodes.append(src)
        q_tok, k, v = src.input[0], src.input[1], mm2.input[0]
        qs, ks, vs = shapes.get(q_tok), shapes.get(k), shapes.get(v)
        if not (qs and ks and vs and len(qs) == len(ks) == len(vs) == 3) or None in (qs[2], ks[1], vs[1]):
            continue
        if bias is not None and not _bias_fits(shapes.get(bias), [qs[0], 1, qs[1]], [ks[0], 1, ks[2]]):
            continue
        matches.append(_Match(q_tok, k, v, bias, scale, mm2.output[0], 1, vs[1], nodes, channel_major=True))
    return matches


def _channel_major_nodes(m: _Match, i: int, op: str, shapes: dict) -> tuple[list, list]:
    """One-head fused attention on token-major q and transposed k, v; the output back to [B, C, N]."""
    import numpy as np
    from onnx import helper, numpy_helper

    p = f"fused_attention_{i}"
    nodes = [helper.make_node("Transpose", [m.k], [f"{p}/k_bsd"], perm=[0, 2, 1]),
             helper.make_node("Transpose", [m.v], [f"{p}/v_bsd"], perm=[0, 2, 1])]
    inits, inputs = [], [m.q, f"{p}/k_bsd", f"{p}/v_bsd"]
    bias = m.bias
    if bias is not None and len(shapes[bias]) < 4:
        rank = len(shapes[bias])
        inits.append(numpy_helper.from_array(np.arange(4 - rank, dtype=np.int64), f"{p}/lead_axes"))
        nodes.append(helper.make_node("Unsqueeze", [bias, f"{p}/lead_axes"], [f"{p}/bias4d"]))
        bias = f"{p}/bias4d"
    if op == "mha":
        inputs += ["", "", bias] if bias is not None else []
        nodes.append(helper.make_node("MultiHeadAttention", inputs, [f"{p}/out_bsd"], domain=MS_DOMAIN, name=p,
                                      num_heads=1, scale=m.scale))
    else:
        inputs += [bias] if bias is not None else []
        nodes.append(helper.make_node("Attention", inputs, [f"{p}/out_bsd"], name=p, scale=m.scale,
                                      q_num_heads=1, kv_num_heads=1))
    nodes.append(helper.make_node("Transpose", [f"{p}/out_bsd"], [m.out], perm=[0, 2, 1]))
    return nodes, inits


def _mha_nodes(m: _Match, i: int, shapes: dict) -> tuple[list, list]:
    """com.microsoft MultiHeadAttention on 3-D q/k/v and a 4-D bias; back to [B, H, N, Dv]."""
    import numpy as np
    from onnx import helper, numpy_helper

    p = f"fused_attention_{i}"
    nodes, inits = [], [
        numpy_helper.from_array(np.array([0, 0, -1], dtype=np.int64), f"{p}/bsd"),
        numpy_helper.from_array(np.array([0, 0, m.heads, m.dv], dtype=np.int64), f"{p}/bshd"),
    ]
    flat = {}
    for role, name in (("q", m.q), ("k", m.k), ("v", m.v)):
        nodes.append(helper.make_node("Transpose", [name], [f"{p}/{role}_bshd"], perm=[0, 2, 1, 3]))
        nodes.append(helper.make_node("Reshape", [f"{p}/{role}_bshd", f"{p}/bsd"], [f"{p}/{role}_bsd"]))
        flat[role] = f"{p}/{role}_bsd"
    inputs = [flat["q"], flat["k"], flat["v"]]
    if m.bias is not None:
        rank = len(shapes[m.bias])
        bias = m.bias
        if rank < 4:
            inits.append(numpy_helper.from_array(np.arange(4 - rank, dtype=np.int64), f"{p}/lead_axes"))
            nodes.append(helper.make_node("Unsqueeze", [m.bias, f"{p}/lead_axes"], [f"{p}/bias4d"]))
            bias = f"{p}/bias4d"
        inputs += ["", "", bias]
    nodes.append(helper.make_node("MultiHeadAttention", inputs, [f"{p}/out_bsd"], domain=MS_DOMAIN, name=p,
                                  num_heads=m.heads, scale=m.scale))
    nodes.append(helper.make_node("Reshape", [f"{p}/out_bsd", f"{p}/bshd"], [f"{p}/out_bshd"]))
    nodes.append(helper.make_node("Transpose", [f"{p}/out_bshd"], [m.out], perm=[0, 2, 1, 3]))
    return nodes, inits


def _attention_nodes(m: _Match, i: int) -> tuple[list, list]:
    """ONNX Attention (opset 23) on the 4-D tensors as they are."""
    from onnx import helper

    inputs = [m.q, m.k, m.v] + ([m.bias] if m.bias is not None else [])
    return [helper.make_node("Attention", inputs, [m.out], name=f"fused_attention_{i}", scale=m.scale)], []


def fuse_attention(model, op: str = "mha"):
    """Rewrite every matching attention subgraph of `model` (an onnx.ModelProto, changed in place)
    into one `op` node (see FUSED_OPS); returns (model, number fused). Subgraphs whose map is used
    elsewhere, or whose heads and widths are not static, stay decomposed."""
    from onnx import helper

    if op not in FUSED_OPS:
        raise ValueError(f"fused attention op must be one of {FUSED_OPS}, got {op!r}")
    graph = model.graph
    shapes = _shapes(model)
    matches = _find(graph, shapes) + _find_channel_major(graph, shapes)
    if not matches:
        return model, 0
    gone = {id(n) for m in matches for n in m.nodes}
    new_nodes = {}
    for i, m in enumerate(matches):
        if m.channel_major:
            nodes, inits = _channel_major_nodes(m, i, op, shapes)
            last = m.nodes[2]
        else:
            nodes, inits = _mha_nodes(m, i, shapes) if op == "mha" else _attention_nodes(m, i)
            last = m.nodes[1]
        graph.initializer.extend(inits)
        new_nodes[id(last)] = nodes  # in place of the last node replaced: every input exists by then
    kept = []
    for n in graph.node:
        if id(n) in new_nodes:
            kept.extend(new_nodes[id(n)])
        elif id(n) not in gone:
            kept.append(n)
    del graph.node[:]
    graph.node.extend(kept)
    # names of removed tensors may linger in value_info with stale shapes; drop them
    live = {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    keep_vi = [vi for vi in graph.value_info if vi.name in live]
    del graph.value_info[:]
    graph.value_info.extend(keep_vi)
    if op == "mha":
        if not any(o.domain == MS_DOMAIN for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    else:
        for o in model.opset_import:
            if o.domain in ("", "ai.onnx") and o.version < 23:
                o.version = 23
        model.ir_version = max(model.ir_version, 11)
    return model, len(matches)


def count_fused(model) -> dict[str, int]:
    """{op_type: count} of the fused attention operators and of the Softmax nodes left in `model`."""
    counts = {"MultiHeadAttention": 0, "Attention": 0, "Softmax": 0}
    for n in model.graph.node:
        if n.op_type in counts:
            counts[n.op_type] += 1
    return counts
