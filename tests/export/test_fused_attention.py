"""Fused attention in exported graphs (`onnx_fuse`): ONNX Runtime's CPU kernels for the fused
operators against numpy, and exported attnreuse models rewritten into them against eager PyTorch,
with the fused operators counted in the graph."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from attnreuse.data import digits_images
from attnreuse.onnx_fuse import FUSED_OPS, count_fused, fuse_attention
from attnreuse.deploy import create_export_model, export_onnx, ort_session, run_ort

PICO = "vit_attnreuse_pico_patch4_32"
DEPTH = 6  # attention layers of the pico ViT


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _unfused_graph(B, H, N, M, dk, dv, bias_shape, scale):
    """Mul(q, scale) -> MatMul(., Transpose(k)) -> Add(bias) -> Softmax -> MatMul(., v), as exported."""
    names = {"q": (B, H, N, dk), "k": (B, H, M, dk), "v": (B, H, M, dv)}
    if bias_shape is not None:
        names["bias"] = bias_shape
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in names.items()]
    nodes = [
        helper.make_node("Constant", [], ["c"], value=helper.make_tensor("cv", TensorProto.FLOAT, [], [scale])),
        helper.make_node("Mul", ["q", "c"], ["qs"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["qs", "kt"], ["s"]),
    ]
    if bias_shape is not None:
        nodes.append(helper.make_node("Add", ["s", "bias"], ["sb"]))
    nodes += [helper.make_node("Softmax", ["sb" if bias_shape is not None else "s"], ["p"], axis=-1),
              helper.make_node("MatMul", ["p", "v"], ["out"])]
    graph = helper.make_graph(nodes, "attention", inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), names


@pytest.mark.parametrize("op", FUSED_OPS)
@pytest.mark.parametrize(
    "B, H, N, M, dk, dv, bias_shape",
    [(2, 3, 7, 7, 8, 8, None), (1, 1, 9, 9, 8, 32, (9, 9)), (2, 2, 5, 6, 4, 4, (2, 1, 5, 6)), (1, 2, 4, 4, 4, 4, (2, 4, 4)),
     (2, 2, 5, 6, 4, 4, (2, 1, 1, 6)), (2, 2, 5, 6, 4, 4, (2, 2, 1, 6)), (1, 2, 5, 6, 4, 4, (1, 6))],
    ids=["mha", "reuse-wide-v-2d-bias", "batch-bias", "head-bias-3d", "key-mask", "key-mask-per-head", "key-row-2d"],
)
def test_ort_cpu_kernels_match_numpy(op, B, H, N, M, dk, dv, bias_shape):
    """What ONNX Runtime's CPU provider supports: both fused ops, Dv != Dk, broadcast biases (one
    row for all queries through the Expand the rewrite inserts)."""
    import onnxruntime as ort

    model, shapes = _unfused_graph(B, H, N, M, dk, dv, bias_shape, 0.3)
    fused, count = fuse_attention(model, op)
    assert count == 1 and count_fused(fused)["Softmax"] == 0
    rng = np.random.default_rng(0)
    feed = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    got = ort.InferenceSession(fused.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    scores = 0.3 * feed["q"] @ feed["k"].transpose(0, 1, 3, 2) + feed.get("bias", 0)
    np.testing.assert_allclose(got, _softmax(scores) @ feed["v"], atol=1e-5, rtol=0)


def test_a_map_used_elsewhere_or_a_key_broadcast_bias_stays_decomposed():
    model, _ = _unfused_graph(1, 2, 4, 4, 4, 4, None, 0.5)
    model.graph.output.append(helper.make_tensor_value_info("p", TensorProto.FLOAT, None))
    assert fuse_attention(model, "mha")[1] == 0
    # a bias with one column for all keys ([B, 1, N, 1]) is not rewritten (only rows are expanded)
    model, _ = _unfused_graph(2, 2, 5, 6, 4, 4, (2, 1, 5, 1), 0.5)
    assert fuse_attention(model, "attention")[1] == 0


def test_attention_op_converts_an_older_graph_to_opset_23():
    """ONNX `Attention` needs opset 23, and Split (a GLU's, in a Conformer's convolution module) and
    ReduceMean (a LayerNorm written out) changed form at 18: their sizes and axes became inputs. A
    graph at opset 17 with both is converted, not merely renumbered: the fused graph loads and
    matches; the given model is rewritten in place, and one with nothing to fuse is left alone."""
    import onnxruntime as ort

    model, shapes = _unfused_graph(2, 2, 5, 5, 4, 8, (2, 1, 1, 5), 0.5)
    graph = model.graph
    out = next(n for n in graph.node if n.output == ["out"])
    out.output[0] = "av"
    graph.node.extend([helper.make_node("Split", ["av"], ["a", "b"], axis=-1),  # [2, 2, 5, 4] each
                       helper.make_node("Sigmoid", ["b"], ["gate"]),
                       helper.make_node("Mul", ["a", "gate"], ["glu"]),
                       helper.make_node("ReduceMean", ["glu"], ["mean"], axes=[-1], keepdims=1),
                       helper.make_node("Sub", ["glu", "mean"], ["out"])])
    model.opset_import[0].version = 17
    plain = model.SerializeToString()
    fused, count = fuse_attention(model, "attention")
    assert fused is model and count == 1 and count_fused(model)["Attention"] == 1
    assert next(o.version for o in model.opset_import if o.domain == "") == 23
    rng = np.random.default_rng(1)
    feed = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    feed["bias"][1, ..., 3:] = np.finfo(np.float32).min
    run = {name: ort.InferenceSession(g, providers=["CPUExecutionProvider"]).run(None, feed)[0]
           for name, g in (("plain", plain), ("fused", model.SerializeToString()))}
    np.testing.assert_allclose(run["fused"], run["plain"], atol=1e-5, rtol=0)
    untouched, _ = _unfused_graph(1, 2, 4, 4, 4, 4, None, 0.5)
    untouched.graph.output.append(helper.make_tensor_value_info("p", TensorProto.FLOAT, None))  # map used elsewhere
    untouched.opset_import[0].version = 17
    before = untouched.SerializeToString()
    assert fuse_attention(untouched, "attention") == (untouched, 0) and untouched.SerializeToString() == before


@pytest.mark.parametrize(
    "op, plan, fused_layers, softmax_left",
    [("mha", "mha", DEPTH, 0), ("attention", "reuse", DEPTH, 0), ("mha", ["mha", "share"] * 3, 0, 3)],
    ids=["mha-mha", "attention-reuse", "mha-share"],
)
def test_export_with_fused_attention_matches_eager(tmp_path, op, plan, fused_layers, softmax_left):
    """mha and reuse fuse every layer; a map shared with the next layer is used twice, so it stays
    decomposed (and the sharing layer has no softmax of its own)."""
    model = create_export_model(PICO, num_classes=10, model_kwargs={"attn_plan": plan})
    x = digits_images("test", img_size=32, limit=2)[0]
    out = tmp_path / "fused.onnx"
    result = export_onnx(model, out, x, exporter="torchscript", threads=1, fused_attention=op)
    assert result.fused_attention == op and result.fused_attention_nodes == fused_layers
    counts = count_fused(onnx.load(str(out)))
    name = "MultiHeadAttention" if op == "mha" else "Attention"
    assert counts[name] == fused_layers and counts["Softmax"] == softmax_left
    with torch.no_grad():
        want = model(x)
    got = run_ort(ort_session(out, threads=1), x, batch=1)
    assert (got - want).abs().max().item() <= 1e-5


@pytest.mark.parametrize("plan", ["mha", "reuse"])
def test_dynamic_batch_export_fuses(tmp_path, plan):
    """Heads and widths found through the dynamic batch's Shape -> Concat -> Reshape chains; a
    dynamic-batch reuse plan's traced graph also reads the map's Shape, rebuilt from q and k."""
    model = create_export_model(PICO, num_classes=10, model_kwargs={"attn_plan": plan})
    x = digits_images("test", img_size=32, limit=3)[0]
    result = export_onnx(model, tmp_path / "dyn.onnx", x, exporter="torchscript", threads=1, dynamic_batch=True,
                         fused_attention="mha")  # checked at batch 1 and at batch 3
    assert result.fused_attention_nodes == DEPTH and result.max_abs_diff <= 1e-5


def test_scale_split_over_q_and_k_is_folded():
    """PyTorch's SDPA decomposition multiplies q and k^T by sqrt(scale) each."""
    import onnxruntime as ort

    model, shapes = _unfused_graph(1, 2, 5, 5, 4, 4, None, 1.0)
    graph = model.graph
    graph.node.insert(0, helper.make_node("Constant", [], ["c2"], value=helper.make_tensor("c2v", TensorProto.FLOAT, [], [0.5])))
    mm = next(n for n in graph.node if n.op_type == "MatMul")
    graph.node.insert(list(graph.node).index(mm), helper.make_node("Mul", ["kt", "c2"], ["kt2"]))
    mm.input[1] = "kt2"
    fused, count = fuse_attention(model, "mha")
    assert count == 1
    rng = np.random.default_rng(1)
    feed = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    got = ort.InferenceSession(fused.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    want = _softmax(0.5 * feed["q"] @ feed["k"].transpose(0, 1, 3, 2)) @ feed["v"]
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_unknown_fused_op_is_named(tmp_path):
    with pytest.raises(ValueError, match="fused_attention must be one of"):
        export_onnx(create_export_model(PICO), tmp_path / "x.onnx", torch.zeros(1, 3, 32, 32), fused_attention="flash")


def test_pipeline_config_names_the_static_int8_conflict():
    from attnreuse.export.pipeline import ExportConfig, export_command

    with pytest.raises(ValueError, match="drop --calib for dynamic int8, or drop --fused-attention"):
        ExportConfig(model=PICO, output="x.onnx", fused_attention="mha", int8=True, calib="digits")
    ExportConfig(model=PICO, output="x.onnx", fused_attention="mha", int8=True)  # dynamic int8 fuses
    assert "--fused-attention mha" in export_command(ExportConfig(model=PICO, output="x.onnx", fused_attention="mha"))


@pytest.mark.parametrize("op, name", [("mha", "MultiHeadAttention"), ("attention", "Attention")])
def test_export_int8_with_fused_attention(tmp_path, capsys, op, name):
    """`attnreuse export --int8 --fused-attention`: the export's decomposed graph is quantised and the int8 graph
    fused, every layer of the reuse plan; it keeps top-1 agreement with fp32 and nothing but the
    three outputs is left."""
    import json

    from cliutil import run

    out = tmp_path / "m.onnx"
    code, stdout, err = run(capsys, "export", PICO, "--model-kwargs", '{"attn_plan": "reuse"}', "--output", str(out),
                            "--int8", "--fused-attention", op, "--eval-images", "32", "--threads", "1")
    assert code == 0, err
    assert f"{DEPTH} attention(s) fused" in stdout.splitlines()[-2]
    q = tmp_path / "m.int8.onnx"
    graph = onnx.load(str(q))
    assert count_fused(graph)[name] == DEPTH and count_fused(graph)["Softmax"] == 0
    ops = {n.op_type for n in graph.graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} & ops or "DynamicQuantizeMatMul" in ops, ops
    record = json.loads((tmp_path / "m.export.json").read_text())["int8"]
    assert record["fused_attention_nodes"] == DEPTH and record["top1_agreement"] >= 0.9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.export.json", "m.int8.onnx", "m.onnx"]


def test_uniform_windows_fuse_with_their_bias(tmp_path):
    """UniForm's channel-major windows (one map for every channel, a relative-position bias)."""
    from attnreuse.bench.weights import randomize_batchnorms

    model = create_export_model("uniform_xs", img_size=64)
    randomize_batchnorms(model)  # every residual branch live: the parity check means something
    x = digits_images("test", img_size=64, limit=1)[0]
    result = export_onnx(model, tmp_path / "u.onnx", x, exporter="torchscript", threads=1, fused_attention="mha")
    assert result.fused_attention_nodes > 0 and count_fused(onnx.load(str(tmp_path / "u.onnx")))["Softmax"] == 0
    assert result.max_abs_diff <= 1e-4 and result.max_abs_output > 0.1


def test_plain_path_keeps_the_graph_before_fusing_from_one_export(tmp_path, monkeypatch, capsys):
    """export_onnx(plain_path=) writes the decomposed graph of the same export beside the fused one
    (both checked); `export --int8 --fused-attention` quantises it instead of exporting a twin."""
    import attnreuse.deploy as deploy

    traced = []
    real = deploy._export_graph
    monkeypatch.setattr(deploy, "_export_graph", lambda *a, **k: traced.append(1) or real(*a, **k))
    model = create_export_model(PICO, model_kwargs={"attn_plan": "reuse"})
    x = digits_images("test", img_size=32, limit=2)[0]
    result = export_onnx(model, tmp_path / "f.onnx", x, exporter="torchscript", threads=1, fused_attention="mha",
                         plain_path=tmp_path / "p.onnx")
    assert traced == [1] and result.fused_attention_nodes == DEPTH
    assert count_fused(onnx.load(str(tmp_path / "p.onnx")))["Softmax"] == DEPTH  # decomposed
    assert count_fused(onnx.load(str(tmp_path / "f.onnx")))["Softmax"] == 0
    with pytest.raises(ValueError, match="plain_path keeps the graph before its attention is fused"):
        export_onnx(model, tmp_path / "g.onnx", x, threads=1, plain_path=tmp_path / "q.onnx")
    with pytest.raises(ValueError, match="nothing written"):  # a failed check writes neither graph
        export_onnx(model, tmp_path / "h.onnx", x, exporter="torchscript", threads=1, fused_attention="mha",
                    plain_path=tmp_path / "r.onnx", atol=1e-12)
    assert not (tmp_path / "h.onnx").exists() and not (tmp_path / "r.onnx").exists()
    from cliutil import run

    traced.clear()
    code, _, err = run(capsys, "export", PICO, "--model-kwargs", '{"attn_plan": "reuse"}', "--output",
                       str(tmp_path / "m.onnx"), "--int8", "--fused-attention", "mha", "--eval-images", "8",
                       "--threads", "1", "--exporter", "torchscript")
    assert code == 0, err
    assert traced == [1]  # one export for the float32 and the int8 graphs
