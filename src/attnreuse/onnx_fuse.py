"""Fused attention in exported graphs: a post-export rewrite of every unfused attention,

    [Mul(q, scale)] -> MatMul(., Transpose(k, [0, 1, 3, 2])) -> [Mul or Div by a scalar] -> [Add(., bias)]...
        -> Softmax(-1) -> MatMul(., v),

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

Also matched: k^T made in one Transpose(k, [0, 2, 3, 1]) from the head split k [B, M, H, Dk] (the
TorchScript export of a `transformers` encoder), and a map whose Shape is read besides A.V (a
traced Reuse Attention layer reshapes its value heads by it; `_map_shape_nodes` rebuilds that
shape from q and k).

Biases: several added one after another (MPNet: position bias, then padding mask) are summed into
one, by an Add made once for every layer that reads the same ones (`_scores`, `_bias_sum`). The
bias (or sum) is of rank 2 to 4, its last dims [N, M] or [1, M] and its leading dims 1 or [B, H]
(dynamic dims compared by their inferred symbol). Both CPU kernels (ONNX Runtime 1.32) refuse a
bias with one row for all queries, which is what a key padding mask is ([B, 1, 1, M]
or [B, H, 1, M], finfo.min at padded keys, as every `transformers` encoder with an attention_mask
builds it), so such a bias passes through Expand to [B|1, H|1, N, M], N read from q's run-time shape,
one Expand shared by every layer that reads the same mask. A bias broadcast over keys ([., N, 1])
leaves the layer decomposed. Fully padded sequences (every key masked): the decomposed softmax
spreads evenly over the keys (every score rounds to finfo.min) and MultiHeadAttention does the
same, but ONNX `Attention` outputs 0 for a row of finfo.min, so for that op the bias is first
raised to at least the next float up (`_bias_4d`); then both match the decomposed graph there too
(tests/export/test_fused_key_mask.py). A map that another layer reuses (a `share` layer) has two
users and stays decomposed.

A stock `transformers` encoder on SDPA under a boolean mask exports (TorchScript exporter) as
Add(scores, Where(mask, 0, -inf)) -> Softmax -> Where(IsNaN(map), 0, map) -> MatMul: a row with
every key masked is NaN after the softmax, and the guard makes it 0, as PyTorch's SDPA does. That
guard is matched too; after the fused node the same rows are zeroed by selection, read from the
bias (`_guard_nodes`), so stock and converted encoders fuse alike and `ort-fused` compares fused
graphs on both sides.

Fused operators (both have CPU kernels in ONNX Runtime 1.32, checked in tests/export):
- "mha": com.microsoft `MultiHeadAttention` (query/key/value [B, S, H * D], `attention_bias`
  [1|B, 1|H, N, M], `scale`; key/value head sizes may differ only in this 3-D form, so q, k and v
  pass through Transpose + Reshape, which ORT's transpose optimiser mostly cancels against the
  projections' own layout changes).
- "attention": the ONNX `Attention` operator (opset 23: 4-D q/k/v taken as they are, `attn_mask`
  broadcast, `scale`). A model below opset 23 is first converted to it by onnx's version converter
  (`_at_opset`), which rewrites the operators whose form changed on the way: Split's sizes and the
  Reduce operators' axes became inputs at 18, so a graph with a GLU (a Conformer's convolution
  module) or a LayerNorm written out as ReduceMean would not load with its opset number merely raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

__all__ = ["FUSED_OPS", "RUNTIME_OP", "count_fused", "fuse_attention", "fuse_file"]

FUSED_OPS = ("mha", "attention")
# The operator the "ort-fused" runtimes (`attnreuse bench models`, `attnreuse hf eval`) rewrite into.
RUNTIME_OP = "mha"
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
    expand_rows: bool = False  # the bias has one row for all queries (a key padding mask): expand it to N rows
    q_rows: int | str | None = None  # N as `_shapes` gives it (static, a symbol, or unknown)
    k_bmhd: bool = False  # k is [B, M, H, Dk] (heads split, not yet moved before tokens), not [B, H, M, Dk]
    shape_readers: list = field(default_factory=list)  # Shape nodes reading the map (`_map_shape_nodes` replaces them)
    nan_guard: bool = False  # the map passed Where(IsNaN(map), 0, map): rows whose every key is masked output 0

    @property
    def q_rows_axis(self) -> int:
        """q's query axis: [B, H, N, Dk], or [B, N, D] in the channel-major form."""
        return 1 if self.channel_major else 2

    @property
    def anchor(self):
        """The last node replaced (the one producing `out`); the fused nodes go in its place."""
        return self.nodes[2] if self.channel_major else self.nodes[1]


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
    """Dims of every tensor: an int where static, the symbol (a str) where inference named a
    dynamic dim, None where unknown. Two dims with the same symbol are equal at run time, which is
    how a dynamic-length bias is matched to q's and k's lengths. ONNX Runtime's symbolic shape
    inference follows Shape -> Concat -> Reshape chains (a dynamic-batch export computes its head
    reshapes that way), which onnx's own inference leaves unknown; onnx's is the fallback."""
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
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims]
    return shapes


def _static(*dims) -> bool:
    return all(isinstance(d, int) for d in dims)


def _same(a, b) -> bool:
    """Equal at run time: the same static size or the same inferred symbol."""
    return a is not None and a == b


def _attr(node, name: str, default=None):
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _bias_fits(bias: list | None, q: list, k: list) -> bool:
    """Whether a bias of shape `bias` can feed a fused kernel, for q [B, H, N, .] and k [B, H, M, .]:
    rank 2 to 4, last dim M, second-last N or 1 (a key padding mask broadcast over query rows,
    [B, 1, 1, M] or [B, H, 1, M], which `_bias_4d` expands to N rows) and leading dims 1
    or [B, H]. Dims are compared as `_shapes` gives them, so a dynamic N or M matches by symbol."""
    if not bias or not 2 <= len(bias) <= 4 or not _same(bias[-1], k[2]) or not (bias[-2] == 1 or _same(bias[-2], q[2])):
        return False
    lead = ([1] * (4 - len(bias)) + bias)[:2]
    return (lead[0] == 1 or _same(lead[0], q[0])) and (lead[1] == 1 or _same(lead[1], q[1]))


def _row_broadcast(bias: list, q: list) -> bool:
    """The bias has one row for all N query rows (and N is not known to be 1)."""
    return bias[-2] == 1 and q[2] != 1


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


def _nan_guard(sm, uses: list, consumers: dict, consts: dict, only_use) -> tuple | None:
    """(IsNaN, Where) when the map's uses are exactly Where(IsNaN(map), 0, map), the guard PyTorch's
    TorchScript exporter writes after an SDPA under a boolean mask (-inf at masked keys, so a row with
    every key masked is NaN, which the guard makes 0); else None."""
    if len(uses) != 2:
        return None
    isnan = next((u for u in uses if u.op_type == "IsNaN"), None)
    where = next((u for u in uses if u.op_type == "Where"), None)
    if isnan is None or where is None or not only_use(isnan.output[0]):
        return None
    cond, zero, kept = where.input
    if cond != isnan.output[0] or kept != sm.output[0] or _scalar(zero, consts) != 0.0:
        return None
    return isnan, where


def _scores(name: str, producer: dict, consts: dict, only_use, biases: int = 0) -> tuple | None:
    """The scores feeding a softmax, read back from its input `name`:
    MatMul -> [Mul or Div by a scalar]... -> [Add(., bias)]... (MPNet's export divides the scores by
    sqrt(d) and adds its position bias and then the padding mask). Returns (the MatMul, the scalar
    factor, the biases in order, the nodes), or None. Each node must have this chain as its only
    use. At an Add whose both inputs could be scores, the first is taken: the other is then a bias
    like any other, its nodes kept, so either reading computes the same."""
    node = producer.get(name)
    if node is None or not only_use(name) or biases > 3:
        return None
    if node.op_type == "MatMul":
        return node, 1.0, [], [node]
    if node.op_type in ("Mul", "Div"):
        sides = (node.input,) if node.op_type == "Div" else (node.input, node.input[::-1])
        for a, b in sides:
            factor = _scalar(b, consts)
            if factor is None or factor == 0.0:
                continue
            inner = _scores(a, producer, consts, only_use, biases)
            if inner is None or inner[2]:  # a factor on a bias is not a scale of the scores alone
                return None
            mm, scale, _, nodes = inner
            return mm, scale * (1.0 / factor if node.op_type == "Div" else factor), [], [*nodes, node]
        return None
    if node.op_type == "Add":
        for a, b in (node.input, node.input[::-1]):
            inner = _scores(a, producer, consts, only_use, biases + 1)
            if inner is not None:
                mm, scale, parts, nodes = inner
                return mm, scale, [*parts, b], [*nodes, node]
    return None


def _broadcast(a: list, b: list) -> list | None:
    """The broadcast shape of two dims lists as `_shapes` gives them; None where not decidable."""
    a, b = [1] * (len(b) - len(a)) + a, [1] * (len(a) - len(b)) + b
    out = []
    for x, y in zip(a, b):
        if x == 1 or _same(x, y):
            out.append(y)
        elif y == 1:
            out.append(x)
        else:
            return None
    return out


def _bias_sum(parts: list, shapes: dict) -> str | None:
    """One bias from the biases added to the scores: the one, or for several the name of their sum
    (made by `fuse_attention`, `_SUM` + the parts), its shape entered in `shapes`; None for none, or
    when a part's shape is unknown (then `_bias_fits` refuses it)."""
    if len(parts) <= 1:
        return parts[0] if parts else None
    name, shape = _SUM + "+".join(parts), shapes.get(parts[0])
    for part in parts[1:]:
        shape = _broadcast(shape, shapes[part]) if shape is not None and shapes.get(part) is not None else None
    if shape is not None:
        shapes[name] = shape
    return name


_SUM = "fused_attention_bias_sum:"  # the prefix of a summed bias's name (`_bias_sum`)


def _find(graph, shapes: dict) -> list[_Match]:
    producer, consumers, consts, only_use = _index(graph)
    outputs = {o.name for o in graph.output}

    matches = []
    for sm in graph.node:
        if sm.op_type != "Softmax" or _attr(sm, "axis", -1) not in (-1, 3):
            continue
        # besides A.V, the map may only be read for its shape (a Reuse Attention layer's traced graph
        # reshapes its value heads to the map's [B, 1, N, .]); those reads are rebuilt from q and k
        readers = [u for u in consumers.get(sm.output[0], []) if u.op_type == "Shape"]
        uses = [u for u in consumers.get(sm.output[0], []) if u.op_type != "Shape"]
        guard = _nan_guard(sm, uses, consumers, consts, only_use)
        if sm.output[0] in outputs or (guard is None and len(uses) != 1):
            continue
        mapped = guard[1].output[0] if guard else sm.output[0]  # the map A.V reads
        av = consumers.get(mapped, []) if guard else uses
        if (guard and not only_use(mapped)) or len(av) != 1 or av[0].op_type != "MatMul" or av[0].input[0] != mapped:
            continue
        mm2 = av[0]
        nodes = [sm, mm2, *(guard or ())]
        chain = _scores(sm.input[0], producer, consts, only_use)
        if chain is None:
            continue
        mm1, scale, parts, chain_nodes = chain
        nodes += chain_nodes
        bias = _bias_sum(parts, shapes)
        # a scalar factor on either side (PyTorch's SDPA decomposition puts sqrt(scale) on both)
        q = mm1.input[0]
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
        # k^T from k [B, H, M, Dk], or in one step from the head split [B, M, H, Dk] (the TorchScript
        # exporter merges a Hugging Face encoder's two permutes of k into one)
        perm = list(_attr(kt, "perm", [])) if kt is not None and kt.op_type == "Transpose" else None
        if perm not in ([0, 1, 3, 2], [0, 2, 3, 1]) or not only_use(kt.output[0]):
            continue
        nodes.append(kt)
        k, v, k_bmhd = kt.input[0], mm2.input[1], perm == [0, 2, 3, 1]
        qs, ks, vs = shapes.get(q), shapes.get(k), shapes.get(v)
        if not (qs and ks and vs and len(qs) == len(ks) == len(vs) == 4):
            continue
        if k_bmhd:
            ks = [ks[0], ks[2], ks[1], ks[3]]
        if not _static(qs[1], qs[3], ks[1], ks[3], vs[1], vs[3]) or qs[1] != ks[1] or ks[1] != vs[1]:
            continue  # heads and widths must be static (batch and tokens may be dynamic)
        if bias is not None and not _bias_fits(shapes.get(bias), qs, ks):
            continue
        if guard is not None and bias is None:
            continue  # a guard without a mask is not what the exporter writes: left decomposed
        matches.append(_Match(q, k, v, bias, scale, mm2.output[0], qs[1], vs[3], nodes, q_rows=qs[2], k_bmhd=k_bmhd,
                              shape_readers=readers, nan_guard=guard is not None,
                              expand_rows=bias is not None and _row_broadcast(shapes[bias], qs)))
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
        if not (qs and ks and vs and len(qs) == len(ks) == len(vs) == 3) or not _static(qs[2], ks[1], vs[1]):
            continue
        q4, k4 = [qs[0], 1, qs[1]], [ks[0], 1, ks[2]]
        if bias is not None and not _bias_fits(shapes.get(bias), q4, k4):
            continue
        matches.append(_Match(q_tok, k, v, bias, scale, mm2.output[0], 1, vs[1], nodes, channel_major=True, q_rows=qs[1],
                              expand_rows=bias is not None and _row_broadcast(shapes[bias], q4)))
    return matches


def _bias_4d(m: _Match, p: str, op: str, shapes: dict, made: dict) -> tuple[str | None, list, list]:
    """The bias as the fused kernels take it, 4-D with N rows: (name, nodes, initializers).

    Both CPU kernels refuse a bias with one row for all queries (ONNX Runtime 1.32: MultiHeadAttention
    "attention_bias dimension 2 should be same as sequence_length", Attention "inconsistent
    q_sequence_length"), so a row-broadcast bias goes through Expand(bias, [1, 1, N, 1]) with N read
    from q's run-time shape (dynamic batch and length keep working).

    ONNX `Attention` (CPU, 1.32) outputs zeros for a query row whose every bias entry is the lowest
    float (a fully padded sequence under a `transformers` mask, finfo.min at padded keys), where the
    decomposed graph's softmax spreads evenly over the keys (every score rounds to finfo.min), so
    for that op the bias is first raised to at least the next float up, Max(bias, nextafter(min, 0)):
    the same value in every row that keeps a key (exp of either underflows to 0) and the decomposed
    graph's even spread in a fully padded one. MultiHeadAttention already spreads evenly.

    Nodes made for one bias (the raise, and the expansion per query length) are kept in `made` and
    shared by later matches: every layer of a padded text encoder reads the same mask."""
    import numpy as np
    from onnx import helper, numpy_helper

    if m.bias is None:
        return None, [], []
    shape, src, nodes, inits = shapes[m.bias], m.bias, [], []
    if op == "attention":
        if ("raised", m.bias) not in made:
            floor = np.nextafter(np.finfo(np.float32).min, np.float32(0), dtype=np.float32)
            inits.append(numpy_helper.from_array(np.array(floor, dtype=np.float32), f"{p}/floor_f32"))
            nodes += [helper.make_node("CastLike", [f"{p}/floor_f32", m.bias], [f"{p}/floor"]),
                      helper.make_node("Max", [m.bias, f"{p}/floor"], [f"{p}/bias_raised"])]
            made["raised", m.bias] = f"{p}/bias_raised"
        src = made["raised", m.bias]
    if m.expand_rows:
        key = ("rows", m.bias, m.q_rows) if m.q_rows is not None else None
        if key in made:
            return made[key], nodes, inits
        inits += [numpy_helper.from_array(np.ones(2, dtype=np.int64), f"{p}/ones2"),
                  numpy_helper.from_array(np.ones(1, dtype=np.int64), f"{p}/one"),
                  numpy_helper.from_array(np.array([m.q_rows_axis], dtype=np.int64), f"{p}/n_from"),
                  numpy_helper.from_array(np.array([m.q_rows_axis + 1], dtype=np.int64), f"{p}/n_to")]
        nodes += [helper.make_node("Shape", [m.q], [f"{p}/q_shape"]),
                  helper.make_node("Slice", [f"{p}/q_shape", f"{p}/n_from", f"{p}/n_to"], [f"{p}/n"]),
                  helper.make_node("Concat", [f"{p}/ones2", f"{p}/n", f"{p}/one"], [f"{p}/rows"], axis=0),
                  helper.make_node("Expand", [src, f"{p}/rows"], [f"{p}/bias_rows"])]
        if key is not None:
            made[key] = f"{p}/bias_rows"
        return f"{p}/bias_rows", nodes, inits
    if len(shape) == 4:
        return src, nodes, inits
    inits.append(numpy_helper.from_array(np.arange(4 - len(shape), dtype=np.int64), f"{p}/lead_axes"))
    nodes.append(helper.make_node("Unsqueeze", [src, f"{p}/lead_axes"], [f"{p}/bias4d"]))
    return f"{p}/bias4d", nodes, inits


def _sum_nodes(name: str, p: str) -> list:
    """Add nodes making the summed bias `name` (`_bias_sum`) from its parts."""
    from onnx import helper

    parts = name.removeprefix(_SUM).split("+")
    nodes, acc = [], parts[0]
    for i, part in enumerate(parts[1:], 1):
        out = name if i == len(parts) - 1 else f"{p}/bias_sum_{i}"
        nodes.append(helper.make_node("Add", [acc, part], [out]))
        acc = out
    return nodes


def _map_shape_nodes(m: _Match, p: str, reader) -> tuple[list, list]:
    """A Shape node that read the map [B, H, N, M], rebuilt from q [B, H, N, Dk] and k's M (the map
    is gone once fused); `reader`'s start and end attributes (opset 15+) become a Slice."""
    import numpy as np
    from onnx import helper, numpy_helper

    r = f"{p}/{reader.output[0]}"
    m_axis = 1 if m.k_bmhd else 2
    start, end = _attr(reader, "start", 0), _attr(reader, "end", np.iinfo(np.int64).max)
    consts = {"zero": 0, "three": 3, "m_from": m_axis, "m_to": m_axis + 1, "start": start, "end": end}
    inits = [numpy_helper.from_array(np.array([v], dtype=np.int64), f"{r}/{k}") for k, v in consts.items()]
    nodes = [helper.make_node("Shape", [m.q], [f"{r}/q_shape"]),
             helper.make_node("Slice", [f"{r}/q_shape", f"{r}/zero", f"{r}/three"], [f"{r}/bhn"]),
             helper.make_node("Shape", [m.k], [f"{r}/k_shape"]),
             helper.make_node("Slice", [f"{r}/k_shape", f"{r}/m_from", f"{r}/m_to"], [f"{r}/m"]),
             helper.make_node("Concat", [f"{r}/bhn", f"{r}/m"], [f"{r}/map_shape"], axis=0),
             helper.make_node("Slice", [f"{r}/map_shape", f"{r}/start", f"{r}/end"], [reader.output[0]])]
    return nodes, inits


def _guard_nodes(m: _Match, p: str, unguarded: str, made: dict, axes_as_input: bool) -> tuple[list, list]:
    """The NaN guard after a fused layer: Where(every key of the row masked, 0, out) -> m.out.

    The decomposed graph's guard zeroes the rows whose softmax is NaN, i.e. whose bias is -inf at
    every key; the fused kernels give NaN there (MultiHeadAttention) or, with the raised bias of
    `_bias_4d`, the mean of v (Attention). Which rows those are is read from the bias itself,
    ReduceMax over keys == -inf, once per bias (every layer of an encoder reads the same mask), and
    the output rows are selected, not multiplied (0 * NaN is NaN). `axes_as_input`: ReduceMax takes
    its axes as an input from opset 18 on, as an attribute before."""
    import numpy as np
    from onnx import helper, numpy_helper

    nodes, inits = [], []
    key = ("masked_rows", m.bias)
    if key not in made:
        if axes_as_input:
            inits.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), f"{p}/key_axis"))
            reduce = helper.make_node("ReduceMax", [m.bias, f"{p}/key_axis"], [f"{p}/row_max"], keepdims=1)
        else:
            reduce = helper.make_node("ReduceMax", [m.bias], [f"{p}/row_max"], axes=[-1], keepdims=1)
        nodes += [reduce, helper.make_node("IsInf", [f"{p}/row_max"], [f"{p}/masked_rows"], detect_positive=0)]
        made[key] = f"{p}/masked_rows"
    inits.append(numpy_helper.from_array(np.array(0.0, dtype=np.float32), f"{p}/zero_f32"))
    nodes += [helper.make_node("CastLike", [f"{p}/zero_f32", unguarded], [f"{p}/zero"]),
              helper.make_node("Where", [made[key], f"{p}/zero", unguarded], [m.out])]
    return nodes, inits


def _channel_major_nodes(m: _Match, p: str, op: str, bias: str | None) -> list:
    """One-head fused attention on token-major q and transposed k, v; the output back to [B, C, N]."""
    from onnx import helper

    nodes = [helper.make_node("Transpose", [m.k], [f"{p}/k_bsd"], perm=[0, 2, 1]),
             helper.make_node("Transpose", [m.v], [f"{p}/v_bsd"], perm=[0, 2, 1])]
    inputs = [m.q, f"{p}/k_bsd", f"{p}/v_bsd"]
    if op == "mha":
        inputs += ["", "", bias] if bias is not None else []
        nodes.append(helper.make_node("MultiHeadAttention", inputs, [f"{p}/out_bsd"], domain=MS_DOMAIN, name=p,
                                      num_heads=1, scale=m.scale))
    else:
        inputs += [bias] if bias is not None else []
        nodes.append(helper.make_node("Attention", inputs, [f"{p}/out_bsd"], name=p, scale=m.scale,
                                      q_num_heads=1, kv_num_heads=1))
    nodes.append(helper.make_node("Transpose", [f"{p}/out_bsd"], [m.out], perm=[0, 2, 1]))
    return nodes


def _mha_nodes(m: _Match, p: str, bias: str | None) -> tuple[list, list]:
    """com.microsoft MultiHeadAttention on 3-D q/k/v and a 4-D bias; back to [B, H, N, Dv]."""
    import numpy as np
    from onnx import helper, numpy_helper

    nodes, inits = [], [
        numpy_helper.from_array(np.array([0, 0, -1], dtype=np.int64), f"{p}/bsd"),
        numpy_helper.from_array(np.array([0, 0, m.heads, m.dv], dtype=np.int64), f"{p}/bshd"),
    ]
    flat = {}
    for role, name in (("q", m.q), ("k", m.k), ("v", m.v)):
        if role == "k" and m.k_bmhd:
            bshd = name  # already tokens before heads
        else:
            bshd = f"{p}/{role}_bshd"
            nodes.append(helper.make_node("Transpose", [name], [bshd], perm=[0, 2, 1, 3]))
        nodes.append(helper.make_node("Reshape", [bshd, f"{p}/bsd"], [f"{p}/{role}_bsd"]))
        flat[role] = f"{p}/{role}_bsd"
    inputs = [flat["q"], flat["k"], flat["v"]] + (["", "", bias] if bias is not None else [])
    nodes.append(helper.make_node("MultiHeadAttention", inputs, [f"{p}/out_bsd"], domain=MS_DOMAIN, name=p,
                                  num_heads=m.heads, scale=m.scale))
    nodes.append(helper.make_node("Reshape", [f"{p}/out_bsd", f"{p}/bshd"], [f"{p}/out_bshd"]))
    nodes.append(helper.make_node("Transpose", [f"{p}/out_bshd"], [m.out], perm=[0, 2, 1, 3]))
    return nodes, inits


def _attention_nodes(m: _Match, p: str, bias: str | None) -> list:
    """ONNX Attention (opset 23) on the 4-D tensors as they are."""
    from onnx import helper

    nodes, k = [], m.k
    if m.k_bmhd:
        k = f"{p}/k_bhsd"
        nodes.append(helper.make_node("Transpose", [m.k], [k], perm=[0, 2, 1, 3]))
    inputs = [m.q, k, m.v] + ([bias] if bias is not None else [])
    return [*nodes, helper.make_node("Attention", inputs, [m.out], name=p, scale=m.scale)]


def fuse_attention(model, op: str = "mha"):
    """Rewrite every matching attention subgraph of `model` (an onnx.ModelProto, changed in place)
    into one `op` node (see FUSED_OPS); returns (model, number fused). Subgraphs whose map is used
    elsewhere, or whose heads and widths are not static, stay decomposed."""
    from onnx import helper

    if op not in FUSED_OPS:
        raise ValueError(f"fused attention op must be one of {FUSED_OPS}, got {op!r}")
    given, model = model, (_at_opset(model, 23) if op == "attention" else model)
    graph = model.graph
    shapes = _shapes(model)
    matches = _find(graph, shapes) + _find_channel_major(graph, shapes)
    if not matches:
        return given, 0
    # in graph order, so bias nodes shared with later matches (`_bias_4d`) come before their first use
    position = {id(n): i for i, n in enumerate(graph.node)}
    matches.sort(key=lambda m: position[id(m.anchor)])
    gone = {id(n) for m in matches for n in m.nodes}
    new_nodes, made = {}, {}
    opset = _opset(model)
    for i, m in enumerate(matches):
        p = f"fused_attention_{i}"
        guarded = m
        if m.nan_guard:  # the fused node writes an unguarded output, `_guard_nodes` the one the graph reads
            m = replace(m, out=f"{p}/unguarded")
        bias, nodes, inits = _bias_4d(m, p, op, shapes, made)
        if m.bias is not None and m.bias.startswith(_SUM) and ("sum", m.bias) not in made:
            nodes = _sum_nodes(m.bias, p) + nodes  # the first layer to read it makes it, before its other uses
            made["sum", m.bias] = True
        if m.channel_major:
            nodes += _channel_major_nodes(m, p, op, bias)
        elif op == "mha":
            more, more_inits = _mha_nodes(m, p, bias)
            nodes, inits = nodes + more, inits + more_inits
        else:
            nodes += _attention_nodes(m, p, bias)
        if m.nan_guard:
            more, more_inits = _guard_nodes(guarded, p, m.out, made, axes_as_input=opset >= 18)
            nodes, inits = nodes + more, inits + more_inits
        graph.initializer.extend(inits)
        new_nodes[id(m.anchor)] = nodes  # in place of the last node replaced: every input exists by then
        for j, reader in enumerate(m.shape_readers):  # in place of each reader: its users may come before `anchor`
            nodes, inits = _map_shape_nodes(m, f"{p}/shape_{j}", reader)
            graph.initializer.extend(inits)
            new_nodes[id(reader)] = nodes
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
        model.ir_version = max(model.ir_version, 11)
    if model is not given:
        given.CopyFrom(model)
    return given, len(matches)


def _opset(model) -> int:
    """The model's default-domain opset version."""
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _at_opset(model, version: int):
    """`model` (unchanged) converted to default-domain opset `version` when it is below it, else
    `model` itself. onnx's converter rewrites each operator whose inputs or attributes changed
    between the versions (Split, the Reduce family, Pad, ...); operators of other domains
    (com.microsoft) are kept as they are."""
    if _opset(model) >= version:
        return model
    from onnx import version_converter

    try:
        return version_converter.convert_version(model, version)
    except Exception as err:  # noqa: BLE001 - the converter's errors name no common type
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"the ONNX Attention operator needs opset {version}, and this graph (opset {_opset(model)}) "
                         f"could not be converted to it ({first}); fuse into 'mha' instead") from None


def count_fused(model) -> dict[str, int]:
    """{op_type: count} of the fused attention operators and of the Softmax nodes left in `model`."""
    counts = {"MultiHeadAttention": 0, "Attention": 0, "Softmax": 0}
    for n in model.graph.node:
        if n.op_type in counts:
            counts[n.op_type] += 1
    return counts


def fuse_file(path, op: str) -> int:
    """Rewrite the attention subgraphs of the ONNX file at `path` into `op` nodes, in place (the
    file is rewritten only when something fused); returns how many."""
    import onnx

    model, count = fuse_attention(onnx.load(str(path)), op)
    if count:
        onnx.save(model, str(path))
    return count
