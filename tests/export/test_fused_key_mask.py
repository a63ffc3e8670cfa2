"""Fused attention under a key padding mask (`onnx_fuse`): a bias with one row for all queries,
[B, 1, 1, M] with finfo.min at padded keys as `transformers` encoders build it, is expanded to N
rows for the fused kernels; the fused graph must match the decomposed one in ONNX Runtime on padded
inputs, fully padded sequences included, at any batch size and length; and the NaN guard of a
boolean mask (PyTorch's SDPA export) kept after the fused node, at opsets 17 and 18."""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from attnreuse.onnx_fuse import FUSED_OPS, count_fused, fuse_attention

H, D = 2, 4
LOWEST = np.finfo(np.float32).min


def _two_layers():
    """Two attentions reading one mask [b, 1, 1, m]: layer a with k [b, H, m, D] and k^T by
    Transpose(0, 1, 3, 2); layer b with k [b, m, H, D] and k^T by one Transpose(0, 2, 3, 1) (a
    Hugging Face encoder's TorchScript export), and its map also read by a Shape node."""
    f = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("q", f, ["b", H, "n", D]),
              helper.make_tensor_value_info("k", f, ["b", H, "n", D]),
              helper.make_tensor_value_info("k_bmhd", f, ["b", "n", H, D]),
              helper.make_tensor_value_info("v", f, ["b", H, "n", D]),
              helper.make_tensor_value_info("mask", f, ["b", 1, 1, "n"])]
    nodes = [helper.make_node("Constant", [], ["c"], value=helper.make_tensor("cv", f, [], [0.5]))]
    for layer, k, perm in (("a", "k", [0, 1, 3, 2]), ("b", "k_bmhd", [0, 2, 3, 1])):
        nodes += [helper.make_node("Mul", ["q", "c"], [f"{layer}/qs"]),
                  helper.make_node("Transpose", [k], [f"{layer}/kt"], perm=perm),
                  helper.make_node("MatMul", [f"{layer}/qs", f"{layer}/kt"], [f"{layer}/s"]),
                  helper.make_node("Add", [f"{layer}/s", "mask"], [f"{layer}/sb"]),
                  helper.make_node("Softmax", [f"{layer}/sb"], [f"{layer}/p"], axis=-1),
                  helper.make_node("MatMul", [f"{layer}/p", "v"], [f"{layer}/out"])]
    nodes.append(helper.make_node("Shape", ["b/p"], ["map_shape"]))
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("a/out", "b/out")]
    outputs.append(helper.make_tensor_value_info("map_shape", TensorProto.INT64, None))
    graph = helper.make_graph(nodes, "key_mask", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _feed(batch: int, n: int, seed: int) -> dict:
    """Random q, k, v and a padding mask: sequence i keeps n - i keys; the last sequence none."""
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((batch, H, n, D)).astype(np.float32) for _ in range(3))
    mask = np.zeros((batch, 1, 1, n), np.float32)
    for i in range(batch):
        mask[i, ..., n - i:] = LOWEST
    mask[-1] = LOWEST  # a fully padded sequence
    return {"q": q, "k": k, "k_bmhd": np.ascontiguousarray(k.transpose(0, 2, 1, 3)), "v": v, "mask": mask}


def _session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("op", FUSED_OPS)
def test_key_padding_mask_fuses_and_matches_the_decomposed_graph(op):
    plain = _two_layers()
    fused, count = fuse_attention(_two_layers(), op)
    counts = count_fused(fused)
    assert count == 2 and counts["Softmax"] == 0
    assert counts["MultiHeadAttention" if op == "mha" else "Attention"] == 2
    assert sum(n.op_type == "Expand" for n in fused.graph.node) == 1  # both layers read one expanded mask
    want_session, got_session = _session(plain), _session(fused)
    for batch, n, seed in ((3, 5, 0), (5, 9, 1)):  # a second batch size and length: shapes stay dynamic
        feed = _feed(batch, n, seed)
        want = want_session.run(None, feed)
        got = got_session.run(None, feed)
        np.testing.assert_array_equal(got[2], [batch, H, n, n])  # the map's shape, rebuilt from q and k
        for w, g in zip(want[:2], got[:2]):
            # a fully padded sequence: every score rounds to finfo.min, so the decomposed softmax
            # spreads evenly over the keys (the mean of v); the fused graph must do the same
            np.testing.assert_allclose(w[-1], np.broadcast_to(feed["v"][-1].mean(1, keepdims=True), w[-1].shape),
                                       atol=1e-6, rtol=0)
            np.testing.assert_allclose(g, w, atol=1e-5, rtol=0)


def test_onnx_attention_kernel_zeroes_a_row_of_lowest_floats():
    """Why the "attention" rewrite raises its bias above finfo.min: ONNX Runtime's Attention CPU
    kernel gives 0 for a row whose bias is all finfo.min, not the even spread of softmax. Should a
    later onnxruntime drop that, this test says the raise can go."""
    f = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info(n, f, None) for n in ("q", "k", "v", "b")]
    graph = helper.make_graph([helper.make_node("Attention", ["q", "k", "v", "b"], ["o"], scale=1.0)], "attention",
                              inputs, [helper.make_tensor_value_info("o", f, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    model.ir_version = 11
    rng = np.random.default_rng(0)
    q, k = (rng.standard_normal((1, 1, 2, 4)).astype(np.float32) for _ in range(2))
    v = np.arange(8, dtype=np.float32).reshape(1, 1, 2, 4)
    bias = np.full((1, 1, 2, 2), LOWEST, np.float32)
    out = _session(model).run(None, {"q": q, "k": k, "v": v, "b": bias})[0]
    np.testing.assert_array_equal(out, 0)
    bias[:] = np.nextafter(LOWEST, np.float32(0))
    out = _session(model).run(None, {"q": q, "k": k, "v": v, "b": bias})[0]
    np.testing.assert_allclose(out, np.broadcast_to(v.mean(2, keepdims=True), out.shape), atol=1e-6)


def _guarded(opset: int):
    """One attention under a boolean key mask as PyTorch's TorchScript exporter writes SDPA with one:
    Add(scores, Where(mask, 0, -inf)) -> Softmax -> Where(IsNaN(map), 0, map) -> MatMul(., v)."""
    f = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("q", f, ["b", H, "n", D]),
              helper.make_tensor_value_info("k", f, ["b", H, "n", D]),
              helper.make_tensor_value_info("v", f, ["b", H, "n", D]),
              helper.make_tensor_value_info("keep", TensorProto.BOOL, ["b", 1, "n", "n"])]
    const = {name: helper.make_tensor(name + "v", f, [], [value]) for name, value in
             (("zero", 0.0), ("ninf", -np.inf), ("nan_zero", 0.0), ("c", 0.5))}
    nodes = [helper.make_node("Constant", [], [name], value=t) for name, t in const.items()]
    nodes += [helper.make_node("Mul", ["q", "c"], ["qs"]),
              helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
              helper.make_node("MatMul", ["qs", "kt"], ["s"]),
              helper.make_node("Where", ["keep", "zero", "ninf"], ["bias"]),
              helper.make_node("Add", ["s", "bias"], ["sb"]),
              helper.make_node("Softmax", ["sb"], ["p"], axis=-1),
              helper.make_node("IsNaN", ["p"], ["p_nan"]),
              helper.make_node("Where", ["p_nan", "nan_zero", "p"], ["p_safe"]),
              helper.make_node("MatMul", ["p_safe", "v"], ["out"])]
    graph = helper.make_graph(nodes, "guarded", inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("op", FUSED_OPS)
@pytest.mark.parametrize("opset", [17, 18])  # ReduceMax's axes: an attribute before 18, an input from 18
def test_nan_guard_fuses_and_zeroes_rows_with_every_key_masked(op, opset):
    fused, count = fuse_attention(_guarded(opset), op)
    assert count == 1 and count_fused(fused)["Softmax"] == 0
    assert not any(n.op_type == "IsNaN" for n in fused.graph.node)
    rng = np.random.default_rng(opset)
    batch, n = 3, 6
    q, k, v = (rng.standard_normal((batch, H, n, D)).astype(np.float32) for _ in range(3))
    keep = rng.random((batch, 1, n, n)) < 0.6
    keep[0, 0, 2] = False  # one query row with every key masked
    keep[-1] = False  # a sequence with every row masked
    keep[1] = True  # and one with none
    feed = {"q": q, "k": k, "v": v, "keep": keep}
    want = _session(_guarded(opset)).run(None, feed)[0]
    got = _session(fused).run(None, feed)[0]
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got[0, :, 2], 0)
    np.testing.assert_array_equal(got[-1], 0)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def _position_biased(order: str = "div-then-add"):
    """Two layers as MPNet's export writes them: MatMul(q, k^T) -> Div(sqrt(d)) -> Add(position bias
    [1, H, n, n]) -> Add(mask [b, 1, 1, n]) -> Softmax -> MatMul(., v), both layers reading the same
    position bias and mask. order="add-then-div": the bias added before the division (so the
    division scales the bias too), which the rewrite must leave decomposed."""
    f = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("q", f, ["b", H, "n", D]),
              helper.make_tensor_value_info("k", f, ["b", H, "n", D]),
              helper.make_tensor_value_info("v", f, ["b", H, "n", D]),
              helper.make_tensor_value_info("pos", f, [1, H, "n", "n"]),
              helper.make_tensor_value_info("mask", f, ["b", 1, 1, "n"])]
    nodes = [helper.make_node("Constant", [], ["c"], value=helper.make_tensor("cv", f, [], [2.0]))]
    for layer in ("a", "b"):
        s = f"{layer}/s"
        nodes += [helper.make_node("Transpose", ["k"], [f"{layer}/kt"], perm=[0, 1, 3, 2]),
                  helper.make_node("MatMul", ["q", f"{layer}/kt"], [s])]
        if order == "div-then-add":
            nodes += [helper.make_node("Div", [s, "c"], [f"{layer}/sd"]),
                      helper.make_node("Add", [f"{layer}/sd", "pos"], [f"{layer}/sp"])]
        else:
            nodes += [helper.make_node("Add", [s, "pos"], [f"{layer}/spos"]),
                      helper.make_node("Div", [f"{layer}/spos", "c"], [f"{layer}/sp"])]
        nodes += [helper.make_node("Add", ["mask", f"{layer}/sp"], [f"{layer}/sb"]),  # the scores second: either side is matched
                  helper.make_node("Softmax", [f"{layer}/sb"], [f"{layer}/p"], axis=-1),
                  helper.make_node("MatMul", [f"{layer}/p", "v"], [f"{layer}/out"])]
    outputs = [helper.make_tensor_value_info(n, f, None) for n in ("a/out", "b/out")]
    return helper.make_model(helper.make_graph(nodes, "position_biased", inputs, outputs),
                             opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("op", FUSED_OPS)
def test_scores_divided_then_biased_twice_fuse_with_one_summed_bias(op):
    fused, count = fuse_attention(_position_biased(), op)
    assert count == 2 and count_fused(fused)["Softmax"] == 0
    sums = [n for n in fused.graph.node if n.op_type == "Add" and n.output[0].startswith("fused_attention_bias_sum:")]
    assert len(sums) == 1  # position bias + mask made once, read by both layers
    rng = np.random.default_rng(2)
    batch, n = 3, 7
    feed = _feed(batch, n, seed=2)
    feed = {"q": feed["q"], "k": feed["k"], "v": feed["v"], "mask": feed["mask"],
            "pos": rng.standard_normal((1, H, n, n)).astype(np.float32)}
    want = _session(_position_biased()).run(None, feed)
    got = _session(fused).run(None, feed)
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=0)


def test_a_bias_under_the_scale_stays_decomposed():
    """(s + bias) / c scales the bias, which no fused kernel does: left decomposed."""
    assert fuse_attention(_position_biased("add-then-div"), "mha")[1] == 0
    assert fuse_attention(_position_biased("div-then-add"), "mha")[1] == 2
