"""`attnreuse hf export --fused-attention` on a tiny BERT: attention fused under the padding mask,
checked against eager PyTorch and the decomposed export on padded text of another batch size and
length, a fully padded sequence included; a bad op name is one line."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from hfutil import sentences

from cliutil import run as _run

from attnreuse.onnx_fuse import count_fused


@pytest.mark.parametrize("op, name", [("mha", "MultiHeadAttention"), ("attention", "Attention")])
def test_hf_export_fuses_attention_under_the_padding_mask(tmp_path, capsys, model_dir, op, name):
    """mha and reuse layers fuse; the mha layer whose map the share layer applies keeps its map
    (used twice), and the share layer has no softmax of its own: 2 fused, 1 Softmax left."""
    from attnreuse.hf.convert import load
    from attnreuse.hf.export import ort_encoder_session
    from attnreuse.hf.source import load_preprocessor

    conv = tmp_path / "conv"
    code, _, err = _run(capsys, "hf", "convert", "--model", str(model_dir), "--plan", "mha,reuse,mha,share",
                        "--no-eval", "--output", str(conv))
    assert code == 0, err
    fused_path, plain_path = tmp_path / "fused.onnx", tmp_path / "plain.onnx"
    code, out, err = _run(capsys, "hf", "export", str(conv), "--output", str(fused_path), "--fused-attention", op)
    assert code == 0, err
    assert f"2 attention subgraph(s) fused into {op}" in out and len(out.strip().splitlines()) == 1
    counts = count_fused(onnx.load(str(fused_path)))
    assert counts[name] == 2 and counts["Softmax"] == 1
    code, out, _ = _run(capsys, "hf", "export", str(conv), "--output", str(plain_path))
    assert code == 0 and "fused" not in out

    model = load(conv)
    batch = load_preprocessor(conv, model.config)(sentences(5, seed=7), padding=True, return_tensors="pt")
    batch["attention_mask"][-1] = 0  # a fully padded sequence
    feed = {k: batch[k].numpy() for k in ("input_ids", "attention_mask")}
    got = ort_encoder_session(fused_path, threads=1).run(None, feed)[0]
    plain = ort_encoder_session(plain_path, threads=1).run(None, feed)[0]
    assert got.shape[0] == 5 and got.shape[1] != 64
    np.testing.assert_allclose(got, plain, atol=1e-5, rtol=0)  # every position, the fully padded sequence too
    with torch.no_grad():
        want = model(**batch).last_hidden_state.numpy()
    real = batch["attention_mask"].bool().numpy()
    np.testing.assert_allclose(got[real], want[real], atol=1e-5, rtol=0)


@pytest.mark.parametrize("op, name", [("mha", "MultiHeadAttention"), ("attention", "Attention")])
def test_stock_sdpa_export_fuses_behind_its_nan_guard(tmp_path, model_dir, op, name):
    """The stock encoder's SDPA under a boolean mask exports as Softmax -> Where(IsNaN, 0, .) -> A.V
    (-inf at masked keys; a row with every key masked becomes 0): every layer fuses, the guard kept
    as a row selection after the fused node, and the fused graph matches the decomposed one on
    padded text, a fully padded sequence included (0 where eager PyTorch gives 0). This is the graph
    `hf eval --runtimes ort-fused` times as its baseline."""
    from attnreuse.hf.export import export_encoder, ort_encoder_session
    from attnreuse.hf.source import load_preprocessor, load_source

    model, _ = load_source(model_dir)
    tok = load_preprocessor(model_dir, model.config)
    batch = tok(sentences(4, seed=3), padding=True, return_tensors="pt")
    fused_path, plain_path = tmp_path / "fused.onnx", tmp_path / "plain.onnx"
    assert export_encoder(model, plain_path, batch, threads=1).fused_attention_nodes == 0
    plain_graph = onnx.load(str(plain_path)).graph
    layers = model.config.num_hidden_layers
    assert sum(n.op_type == "IsNaN" for n in plain_graph.node) == layers  # the guard this rewrite must keep
    assert export_encoder(model, fused_path, batch, threads=1, fused_attention=op).fused_attention_nodes == layers
    fused_graph = onnx.load(str(fused_path))
    counts = count_fused(fused_graph)
    assert counts[name] == layers and counts["Softmax"] == 0
    assert not any(n.op_type == "IsNaN" for n in fused_graph.graph.node)

    batch = tok(sentences(5, seed=4), padding=True, return_tensors="pt")  # another batch size and length
    batch["attention_mask"][-1] = 0  # every key masked: the guard's rows
    feed = {k: batch[k].numpy() for k in ("input_ids", "attention_mask")}
    got = ort_encoder_session(fused_path, threads=1).run(None, feed)[0]
    plain = ort_encoder_session(plain_path, threads=1).run(None, feed)[0]
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, plain, atol=1e-5, rtol=0)
    with torch.no_grad():
        want = model(**batch).last_hidden_state.numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_hf_export_names_an_unknown_fused_op(tmp_path, capsys, model_dir):
    out = tmp_path / "m.onnx"
    code, _, err = _run(capsys, "hf", "export", str(model_dir), "--output", str(out), "--fused-attention", "flash")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--fused-attention must be one of mha, attention, got 'flash'" in err and not out.exists()


def test_hf_eval_times_the_fused_export(tmp_path, capsys, model_dir, text_file):
    """`hf eval --runtimes ort,ort-fused`: both exports timed side by side, the fused one's record
    counting its fused subgraphs (every layer of the stock encoder and of the mha plan); an unknown
    runtime is one line before any work."""
    import json

    conv = tmp_path / "conv"
    assert _run(capsys, "hf", "convert", "--model", str(model_dir), "--plan", "mha", "--no-eval", "--output", str(conv))[0] == 0
    code, out, err = _run(capsys, "hf", "eval", "--teacher", str(model_dir), str(conv), "--text", str(text_file),
                          "--tokens", "16", "--runtimes", "ort,ort-fused", "--rounds", "1", "--repeats", "2",
                          "--threads", "1", "--json", str(tmp_path / "e.json"))
    assert code == 0, err
    speed = json.loads((tmp_path / "e.json").read_text())["speed"]
    assert {(s["model"], s["runtime"]) for s in speed} == {(m, r) for m in ("original (sdpa)", str(conv)) for r in ("ort", "ort-fused")}
    layers = json.loads((conv / "config.json").read_text())["num_hidden_layers"]
    assert {s["model"]: s["fused_attention_nodes"] for s in speed if s["runtime"] == "ort-fused"} == {"original (sdpa)": layers, str(conv): layers}
    assert all("fused_attention_nodes" not in s for s in speed if s["runtime"] == "ort")
    code, _, err = _run(capsys, "hf", "eval", "--teacher", str(model_dir), str(conv), "--runtimes", "ort,flash")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--runtimes must be" in err and "'ort,flash'" in err


@pytest.mark.parametrize("kind, plan, op", [("modernbert", "reuse", "mha"), ("wav2vec2-conformer", "mha,reuse,reuse,mha", "attention"),
                                            ("wav2vec2-conformer", None, "mha"), ("mpnet", None, "mha"),
                                            ("mpnet", "reuse:2", "attention")])
def test_position_encoded_families_fuse_every_layer(tmp_path, kind, plan, op):
    """Rotary positions (`RotaryLinear`) keep q's and k's dims known to shape inference, so every
    layer of a converted ModernBERT (its local layers under a band mask) and Wav2Vec2-Conformer
    fuses; the Conformer into ONNX `Attention` (its GLU's Split converted to opset 23). MPNet adds a
    per-head position bias: its stock export (scores / sqrt(d) + position bias + mask) and a
    `reuse:2` plan (each map takes its heads' mean bias) fuse too. Checked against eager PyTorch and
    the decomposed export on padded inputs of another batch size and length: the stock Conformer's
    rotary embedding caches its last length, which the export must not freeze into the graph (plan
    None: the stock model)."""
    from hfutil import family_model, family_text_batch, tiny_model

    from attnreuse.hf.convert import convert
    from attnreuse.hf.export import export_encoder, ort_encoder_session

    def batch_of(n: int, length: int, seed: int) -> dict:
        if kind != "wav2vec2-conformer":
            return dict(family_text_batch(tmp_path, n, seed=seed))
        torch.manual_seed(seed)
        mask = torch.ones(n, length, dtype=torch.long)
        mask[1, length // 2:] = 0
        return {"input_values": torch.randn(n, length), "attention_mask": mask}

    model = tiny_model(kind) if kind == "wav2vec2-conformer" else family_model(kind)
    model = model if plan is None else convert(model, plan)
    layers = model.config.num_hidden_layers
    fused_path, plain_path = tmp_path / "fused.onnx", tmp_path / "plain.onnx"
    assert export_encoder(model, plain_path, batch_of(3, 400, 0), threads=1).fused_attention_nodes == 0
    result = export_encoder(model, fused_path, batch_of(3, 400, 0), threads=1, fused_attention=op)
    assert result.fused_attention_nodes == layers
    counts = count_fused(onnx.load(str(fused_path)))
    assert counts["MultiHeadAttention" if op == "mha" else "Attention"] == layers and counts["Softmax"] == 0

    batch = batch_of(5, 560, 1)
    feed = {k: v.numpy() for k, v in batch.items()}
    got = ort_encoder_session(fused_path, threads=1).run(None, feed)[0]
    plain = ort_encoder_session(plain_path, threads=1).run(None, feed)[0]
    with torch.no_grad():
        want = model(**batch).last_hidden_state.numpy()
    assert got.shape == want.shape and got.shape[0] == 5
    np.testing.assert_allclose(got, plain, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got, want, atol=2e-5 * np.abs(want).max(), rtol=0)
