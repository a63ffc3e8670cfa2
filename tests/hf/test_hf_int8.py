"""`attnreuse hf export --int8` and `hf eval --runtimes ort-int8` on a tiny BERT: the dynamic int8
graph is written only when its pooled output stays near PyTorch's, it is what the file holds, and
eval times it beside the original's int8 export and reports what it keeps on held-out text."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from hfutil import sentences

from cliutil import run as _run



@pytest.fixture
def converted(tmp_path, capsys, model_dir):
    conv = tmp_path / "conv"
    code, _, err = _run(capsys, "hf", "convert", "--model", str(model_dir), "--plan", "mha,reuse,mha,share",
                        "--no-eval", "--output", str(conv))
    assert code == 0, err
    return conv


def test_int8_export_is_quantised_and_stays_near_pytorch(tmp_path, capsys, converted):
    from attnreuse.hf.convert import load
    from attnreuse.hf.export import ort_encoder_session, pooled_cosine
    from attnreuse.hf.source import load_preprocessor

    plain, q = tmp_path / "plain.onnx", tmp_path / "int8.onnx"
    assert _run(capsys, "hf", "export", str(converted), "--output", str(plain))[0] == 0
    code, out, err = _run(capsys, "hf", "export", str(converted), "--output", str(q), "--int8")
    assert code == 0, err
    assert "dynamic int8; pooled-output cosine to PyTorch >=" in out and len(out.strip().splitlines()) == 1
    ops = {n.op_type for n in onnx.load(str(q)).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} & ops or "DynamicQuantizeMatMul" in ops, ops
    assert q.stat().st_size < 0.75 * plain.stat().st_size  # int8 weights (a tiny graph: its structure is much of the file)

    model = load(converted)
    batch = load_preprocessor(converted, model.config)(sentences(6, seed=3), padding=True, return_tensors="pt")
    feed = {k: batch[k].numpy() for k in ("input_ids", "attention_mask")}
    got = torch.from_numpy(ort_encoder_session(q, threads=1).run(None, feed)[0])
    plain_out = torch.from_numpy(ort_encoder_session(plain, threads=1).run(None, feed)[0])
    with torch.no_grad():
        want = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    real = batch["attention_mask"].bool()
    cos = pooled_cosine(got, want, real)
    assert cos.min() >= 0.98, cos  # other texts, other lengths than the export's check
    assert (got - want)[real].abs().max() > 10 * (plain_out - want)[real].abs().max()  # it is not the float32 graph


@pytest.mark.parametrize("op, name", [("mha", "MultiHeadAttention"), ("attention", "Attention")])
def test_int8_export_with_fused_attention(tmp_path, capsys, converted, op, name):
    """--int8 with --fused-attention: ONNX Runtime's quantiser fails on a fused graph (types lost after
    MultiHeadAttention; ONNX Attention taken for its own), so the decomposed graph is quantised and
    the int8 graph fused: the file holds int8 MatMuls and the fused ops (2 of mha,reuse,mha,share),
    keeps the cosine gate on other text, and nothing else is left beside it."""
    from attnreuse.hf.convert import load
    from attnreuse.hf.export import ort_encoder_session, pooled_cosine
    from attnreuse.hf.source import load_preprocessor
    from attnreuse.onnx_fuse import count_fused

    q = tmp_path / "out" / "int8.onnx"
    q.parent.mkdir()
    code, out, err = _run(capsys, "hf", "export", str(converted), "--output", str(q), "--int8", "--fused-attention", op)
    assert code == 0, err
    assert "dynamic int8" in out and f"2 attention subgraph(s) fused into {op}" in out
    graph = onnx.load(str(q))
    counts = count_fused(graph)
    assert counts[name] == 2 and counts["Softmax"] == 1
    ops = {n.op_type for n in graph.graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} & ops or "DynamicQuantizeMatMul" in ops, ops
    assert sorted(p.name for p in q.parent.iterdir()) == ["int8.onnx"]

    model = load(converted)
    batch = load_preprocessor(converted, model.config)(sentences(6, seed=5), padding=True, return_tensors="pt")
    got = torch.from_numpy(ort_encoder_session(q, threads=1).run(None, {k: batch[k].numpy() for k in
                                                                          ("input_ids", "attention_mask")})[0])
    with torch.no_grad():
        want = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    assert pooled_cosine(got, want, batch["attention_mask"].bool()).min() >= 0.98


def test_int8_export_below_min_cosine_writes_nothing(tmp_path, capsys, converted):
    q = tmp_path / "int8.onnx"
    code, out, err = _run(capsys, "hf", "export", str(converted), "--output", str(q), "--int8", "--min-cosine", "1")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "below --min-cosine 1; nothing written" in err and not q.exists()
    assert not list(tmp_path.glob("*.onnx*"))  # no temporary left beside it


@pytest.mark.parametrize("argv, needle", [
    (["--min-cosine", "0.9"], "--min-cosine gates the int8 graph; it needs --int8"),
    (["--int8", "--min-cosine", "1.5"], "--min-cosine must be a number in [-1, 1], got 1.5"),
    (["--int8", "--min-cosine", "nan"], "--min-cosine must be a number in [-1, 1], got nan"),
])  # fmt: skip
def test_min_cosine_mistakes_are_one_line(tmp_path, capsys, model_dir, argv, needle):
    out = tmp_path / "m.onnx"
    code, _, err = _run(capsys, "hf", "export", str(model_dir), "--output", str(out), *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert not out.exists()


def test_int8_export_keeps_its_float32_graph_when_asked(tmp_path, converted):
    """`float32_path`: the checked float32 graph (fused alike) the int8 one is made from, written only
    once the int8 graph passed its check; one export serves both of `hf eval`'s runtimes."""
    from attnreuse.hf.convert import load
    from attnreuse.hf.export import export_encoder, ort_encoder_session
    from attnreuse.hf.source import load_preprocessor

    model = load(converted)
    batch = dict(load_preprocessor(converted, model.config)(sentences(3), padding=True, return_tensors="pt"))
    q, f = tmp_path / "m.int8.onnx", tmp_path / "m.onnx"
    result = export_encoder(model, q, batch, threads=1, fused_attention="mha", int8=True, float32_path=f)
    ops = {n.op_type for n in onnx.load(str(f)).graph.node}
    assert "MultiHeadAttention" in ops and not ops & {"DynamicQuantizeLinear", "MatMulInteger"}
    assert "DynamicQuantizeLinear" in {n.op_type for n in onnx.load(str(q)).graph.node}
    assert result.float32.path == str(f) and result.float32.fused_attention_nodes == 2 == result.fused_attention_nodes
    assert result.float32.size_bytes == f.stat().st_size and not result.float32.int8
    with torch.no_grad():
        want = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    got = torch.from_numpy(ort_encoder_session(f, threads=1).run(None, {k: batch[k].numpy() for k in ("input_ids", "attention_mask")})[0])
    real = batch["attention_mask"].bool()
    assert torch.allclose(got[real], want[real], atol=1e-4 * float(want.abs().max()))
    for path in (q, f):
        path.unlink()
    with pytest.raises(ValueError, match="below --min-cosine 1"):
        export_encoder(model, q, batch, threads=1, int8=True, min_cosine=1.0, float32_path=f)
    assert not list(tmp_path.glob("*.onnx*"))  # neither graph, nor a temporary
    with pytest.raises(ValueError, match="float32_path keeps the float32 graph of an int8 export"):
        export_encoder(model, f, batch, threads=1, float32_path=tmp_path / "other.onnx")


def test_eval_times_int8_and_reports_its_fidelity(tmp_path, capsys, model_dir, converted, text_file, monkeypatch):
    from attnreuse.hf import export

    real, traced = export.export_encoder, []

    def counted(model, path, *args, **kwargs):
        traced.append((kwargs["fused_attention"], kwargs["int8"], kwargs["float32_path"] is not None))
        return real(model, path, *args, **kwargs)

    monkeypatch.setattr(export, "export_encoder", counted)
    code, out, err = _run(capsys, "hf", "eval", "--teacher", str(model_dir), str(converted), "--text", str(text_file),
                          "--tokens", "16", "--runtimes", "ort,ort-int8,ort-int8-fused", "--rounds", "1", "--repeats", "2",
                          "--threads", "1", "--json", str(tmp_path / "e.json"))
    assert code == 0, err
    # one trace per model and fused op: each int8 export keeps the float32 graph that is timed too
    # (ort; and the original's fused one, which the ort-int8-fused rounds time beside it)
    assert sorted(traced, key=str) == sorted([(None, True, True)] * 2 + [("mha", True, True), ("mha", True, False)], key=str)
    record = json.loads((tmp_path / "e.json").read_text())
    speed = record["speed"]
    kinds = (("ort", "float32"), ("ort-int8", "int8"), ("ort-int8-fused", "int8"))
    assert {(s["model"], s["runtime"], s["dtype"]) for s in speed} == {
        (m, r, d) for m in ("original (sdpa)", str(converted)) for r, d in kinds}
    for s in speed:  # int8 records: also paired against the original's float32 export, timed in their rounds
        assert ("speedup_vs_baseline_fp32" in s) == (s["runtime"] != "ort")
        if s["runtime"] != "ort":
            assert s["speedup_vs_baseline_fp32_min"] <= s["speedup_vs_baseline_fp32"] <= s["speedup_vs_baseline_fp32_max"]
    # the int8 graphs with attention fused: every layer of the stock encoder, 2 of mha,reuse,mha,share
    assert {s["model"]: s.get("fused_attention_nodes") for s in speed if s["runtime"] == "ort-int8-fused"} == {
        "original (sdpa)": 4, str(converted): 2}
    assert "vs the original in float32 (its ORT export for int8" in out
    fid = record["int8_fidelity"]
    assert set(fid) == {"original (sdpa)", str(converted)}
    eager = record["candidates"][str(converted)]["fidelity"]
    for f in fid.values():
        assert 0.9 < f["cosine"] < 1.0 and 0.0 <= f["topk_overlap"] <= 1.0 and f["texts"] == eager["texts"]
    assert f"{converted}, dynamic int8 in ONNX Runtime: cosine" in out
    # without ort-int8 there is no int8 fidelity
    code, _, err = _run(capsys, "hf", "eval", "--teacher", str(model_dir), str(converted), "--text", str(text_file),
                        "--no-speed", "--json", str(tmp_path / "f.json"))
    assert code == 0, err
    assert "int8_fidelity" not in json.loads((tmp_path / "f.json").read_text())


@pytest.mark.parametrize("kind", ["whisper", "wav2vec2"])
def test_speech_encoders_export_int8_checked_on_their_real_frames(tmp_path, capsys, whisper_dir, kind):
    from hfutil import tiny_model

    source = whisper_dir
    if kind == "wav2vec2":
        source = tmp_path / "tiny-wav2vec2"
        tiny_model("wav2vec2").save_pretrained(source)
    conv, q = tmp_path / "conv", tmp_path / "int8.onnx"
    assert _run(capsys, "hf", "convert", "--model", str(source), "--plan", "reuse", "--no-eval", "--output", str(conv))[0] == 0
    # the tiny random wav2vec2 keeps a pooled cosine of ~0.97 in int8, under the default gate of 0.98
    gate = ["--min-cosine", "0.9"] if kind == "wav2vec2" else []
    code, out, err = _run(capsys, "hf", "export", str(conv), "--output", str(q), "--int8", *gate)
    assert code == 0, err
    assert "dynamic int8" in out and q.is_file()
    assert "MatMulInteger" in {n.op_type for n in onnx.load(str(q)).graph.node} or "DynamicQuantizeMatMul" in out
    # eval: the int8 graphs' fidelity on the held-out clips, pooled over each clip's real frames
    code, out, err = _run(capsys, "hf", "eval", "--teacher", str(source), str(conv), "--no-speed",
                          "--runtimes", "ort-int8", "--json", str(tmp_path / "e.json"))
    assert code == 0, err
    record = json.loads((tmp_path / "e.json").read_text())
    eager = record["candidates"][str(conv)]["fidelity"]
    for f in record["int8_fidelity"].values():
        assert 0.5 < f["cosine"] < 1.0 and f["texts"] == eager["texts"]


@pytest.mark.parametrize("kind", ["bert", "wav2vec2"])
def test_ort_encoder_embeds_as_the_model_does(tmp_path, capsys, model_dir, kind):
    """The adapter int8 fidelity runs through: the float32 export, called as the model, embeds the
    held-out data (padded batches, real tokens or frames pooled) as the PyTorch model does."""
    from hfutil import tiny_model

    from attnreuse.hf.convert import load
    from attnreuse.hf.export import OrtEncoder, export_encoder
    from attnreuse.hf.fidelity import batches, embed, fidelity
    from attnreuse.hf.source import load_data, load_preprocessor

    source = model_dir
    if kind == "wav2vec2":
        source = tmp_path / "tiny-wav2vec2"
        tiny_model("wav2vec2").save_pretrained(source)
    conv = tmp_path / "conv"
    assert _run(capsys, "hf", "convert", "--model", str(source), "--plan", "reuse", "--no-eval", "--output", str(conv))[0] == 0
    model = load(conv).eval()
    prep = load_preprocessor(conv, model.config)
    held = load_data(model.config, "stdlib")[1][:24]
    path = tmp_path / "m.onnx"
    export_encoder(model, path, next(batches(prep, held[:8], 8, 64)), threads=1)
    ref = embed(model, prep, held)
    got = embed(OrtEncoder(path, model, threads=1), prep, held)[0]
    torch.testing.assert_close(got, ref[0], atol=1e-4, rtol=1e-4)
    assert fidelity(OrtEncoder(path, model, threads=1), ref, prep, held)["cosine"] > 0.9999


def test_eval_times_bf16_beside_float32_and_reports_its_fidelity(tmp_path, capsys, model_dir, converted, text_file):
    """eager-bf16: every model in bf16, each paired against the original and against the original
    in float32 timed in the same rounds; its fidelity on the held-out texts (also without timing)."""
    from attnreuse import cpu_units

    code, out, err = _run(capsys, "hf", "eval", "--teacher", str(model_dir), str(converted), "--text", str(text_file),
                          "--tokens", "16", "--runtimes", "eager,eager-bf16", "--rounds", "1", "--repeats", "2",
                          "--threads", "1", "--json", str(tmp_path / "e.json"))
    assert code == 0, err
    record = json.loads((tmp_path / "e.json").read_text())
    speed = {(s["model"], s["runtime"]): s for s in record["speed"]}
    assert set(speed) == {(m, r) for m in ("original (sdpa)", str(converted)) for r in ("eager", "eager-bf16")}
    execution = cpu_units.dtype_support("bfloat16")["execution"]
    for (model, runtime), s in speed.items():
        assert s["dtype"] == ("bfloat16" if runtime == "eager-bf16" else "float32")
        assert ("speedup_vs_baseline_fp32" in s) == (runtime == "eager-bf16")
        assert s.get("dtype_execution") == (execution if runtime == "eager-bf16" else None)
    fid, eager = record["bf16_fidelity"], record["candidates"][str(converted)]["fidelity"]
    assert set(fid) == {"original (sdpa)", str(converted)} and record["bf16_execution"] == execution
    assert 0.99 < fid["original (sdpa)"]["cosine"] < 1.0  # bf16 moves the original a little, not far
    assert abs(fid[str(converted)]["cosine"] - eager["cosine"]) < 0.01 and fid[str(converted)]["texts"] == eager["texts"]
    assert f"{converted}, bf16 in PyTorch ({execution}): cosine" in out
    # fidelity only
    code, out, err = _run(capsys, "hf", "eval", "--teacher", str(model_dir), str(converted), "--text", str(text_file),
                          "--no-speed", "--runtimes", "eager-bf16", "--json", str(tmp_path / "f.json"))
    assert code == 0, err
    assert set(json.loads((tmp_path / "f.json").read_text())["bf16_fidelity"]) == {"original (sdpa)", str(converted)}
