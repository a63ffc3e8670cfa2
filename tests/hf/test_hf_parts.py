"""The hf building blocks: plan registry, token-sequence cores against the float64 reference,
fidelity metrics, the built-in corpus and its split."""

from __future__ import annotations

import pytest
import torch

from attnreuse.layers.token_attention import MapSelfAttention, SequencePhi, SharedMapSelfAttention, TaylorSelfAttention
from attnreuse.ops import reference
from attnreuse.plan import Kind, LayerSpec, format_plan, get_kind, kind_names, map_sources, parse_plan, register_kind


def _heads(t, h):
    B, N, _ = t.shape
    return t.view(B, N, h, -1).transpose(1, 2)


def _merge(t):
    B, H, N, d = t.shape
    return t.transpose(1, 2).reshape(B, N, H * d)


def test_map_self_attention_matches_the_reference_with_shared_maps_and_padding():
    torch.manual_seed(0)
    core = MapSelfAttention(24, 6, qk_heads=2).double()
    x = torch.randn(3, 9, 24, dtype=torch.float64)
    bias = torch.zeros(3, 1, 1, 9, dtype=torch.float64)
    bias[1, ..., 6:] = torch.finfo(torch.float64).min
    q, k, v = _heads(core.query(x), 2), _heads(core.key(x), 2), _heads(core.value(x), 6)
    want = _merge(reference.softmax_attention(q, k, v, scale=core.scale, bias=bias))
    out, attn = core(x, bias, return_map=True)
    torch.testing.assert_close(core(x, bias), want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-10)
    assert attn.shape == (3, 2, 9, 9) and float(attn[1, :, :, 6:].detach().abs().max()) == 0.0
    shared = SharedMapSelfAttention(24, 6).double()
    torch.testing.assert_close(shared(x, attn), _merge(reference.apply_map(attn, _heads(shared.value(x), 6))))


def test_masked_taylor_equals_the_reference_on_each_unpadded_sequence():
    torch.manual_seed(1)
    core = TaylorSelfAttention(16, 4).double()
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[0, 4:] = False
    out = core(x, mask)
    for b, n in ((0, 4), (1, 7)):
        xb = x[b : b + 1, :n]
        q, k, v = (_heads(getattr(core, p)(xb), 4) for p in ("query", "key", "value"))
        want = _merge(reference.taylor_attention(q, k, v, scale=core.scale, center="tokens"))
        torch.testing.assert_close(out[b, :n], want[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(core(x[1:]), out[1:], rtol=1e-10, atol=1e-10)  # unmasked path: ops


def test_sequence_phi_ignores_padding_and_keeps_the_shape():
    torch.manual_seed(2)
    phi = SequencePhi(8).double()
    x = torch.randn(1, 5, 8, dtype=torch.float64)
    padded = torch.cat([x, torch.randn(1, 3, 8, dtype=torch.float64)], dim=1)
    mask = torch.tensor([[True] * 5 + [False] * 3])
    torch.testing.assert_close(phi(padded, mask)[:, :5], phi(x), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        SequencePhi(8, kernel_size=4)


def test_plan_grammar_and_registry():
    specs = parse_plan("mha, reuse:2 ,share,skip", 4, num_heads=4)
    assert specs == (LayerSpec("mha"), LayerSpec("reuse", 2), LayerSpec("share"), LayerSpec("skip"))
    assert map_sources(specs) == (None, None, 1, None)
    assert format_plan(parse_plan("mha,mha,share,mha", 4, 4)) == "mha x2, share, mha"
    assert parse_plan(["reuse"] * 2, 2, 4) == (LayerSpec("reuse"), LayerSpec("reuse"))
    assert set(kind_names()) >= {"mha", "reuse", "share", "skip", "taylor"}
    with pytest.raises(ValueError, match="a kind needs a new, non-empty name"):
        register_kind(get_kind("mha"))
    with pytest.raises(TypeError, match="plan must be a str or a sequence"):
        parse_plan(3, 2, 4)


def test_a_new_kind_is_one_registered_object():
    """A kind defined outside the package: registered, parsed, converted and run without any host change."""
    import attnreuse.hf as arhf
    from attnreuse.plan import registry

    from hfutil import tiny_model

    class Halve(Kind):
        name = "test-halve"
        help = "half of the previous layer's output (a test kind)"
        needs_previous = True

        def retrofit(self, spec, src):
            return torch.nn.Identity()

        def run(self, core, x, key_bias, key_mask, attn_map, previous, emit_map):
            return core(previous) * 0.5, None

    register_kind(Halve())
    try:
        model = arhf.convert(tiny_model("bert"), "mha,test-halve,mha,mha")
        with torch.no_grad():
            out = model(input_ids=torch.tensor([[5, 6, 7, 8]])).last_hidden_state
        assert out.shape == (1, 4, 32)
    finally:
        registry._KINDS.pop("test-halve")


def test_topk_overlap_and_fidelity_metrics():
    from attnreuse.hf.fidelity import compare, topk_overlap

    torch.manual_seed(3)
    e = torch.randn(40, 8)
    assert topk_overlap(e, e, 10) == 1.0
    assert topk_overlap(e, e * 3.0, 10) == 1.0  # cosine neighbours do not see scale
    assert topk_overlap(e, torch.randn(40, 8), 10) < 0.6
    f = compare(e, None, e + 0.01 * torch.randn(40, 8), None)
    assert 0.99 < f["cosine"] <= 1.0 and f["texts"] == 40 and f["label_agreement"] is None
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert compare(e[:12], logits.repeat(6, 1), e[:12], logits.flip(1).repeat(6, 1))["label_agreement"] == 0.0
    with pytest.raises(ValueError, match="more than 10 texts"):
        topk_overlap(e[:10], e[:10])


def test_embed_returns_texts_in_their_order(tmp_path):
    from attnreuse.hf.fidelity import embed

    from hfutil import sentences, tiny_model, tiny_tokenizer

    model, tok = tiny_model("bert"), tiny_tokenizer(tmp_path)
    texts = sentences(7, seed=5)
    e, _ = embed(model, tok, texts, batch_size=3)
    for i in (0, 3, 6):
        alone, _ = embed(model, tok, [texts[i]])
        torch.testing.assert_close(e[i], alone[0], rtol=0, atol=1e-5)


def test_builtin_corpus_and_split(tmp_path):
    from attnreuse.hf.text import load_texts, split, stdlib_docstrings

    texts = stdlib_docstrings(limit=300)
    assert len(texts) == 300 and len(set(texts)) == 300
    texts.append("a caller's own change")  # the parse is kept for the process; each call gets its own list
    assert stdlib_docstrings(limit=300) == texts[:300] and len(stdlib_docstrings(limit=300)) == 300
    texts = texts[:300]
    assert all(len(t.split()) >= 8 for t in texts)
    train, held = split(texts)
    assert set(train).isdisjoint(held) and len(train) + len(held) == 300 and 10 < len(held) < 60
    assert split(texts[::-1])[1] == held[::-1]  # membership does not depend on order
    (tmp_path / "t.txt").write_text("one text\n\n  two text  \n")
    assert load_texts(str(tmp_path / "t.txt")) == ["one text", "two text"]
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ValueError, match="not UTF-8 text"):
        load_texts(str(tmp_path / "bin.txt"))


def test_corpus_walk_finds_what_ast_walk_finds_in_its_order():
    """The corpus skips expression subtrees; the defs and classes it reaches, and their order, are
    `ast.walk`'s, wherever a def can sit (under if / try / except / with / match / async)."""
    import ast
    import inspect
    import textwrap

    from attnreuse.hf import text

    source = textwrap.dedent('''
        """module doc"""
        if x:
            def a(): "a"
        else:
            class B:
                "B"
                async def c(self): "c"
        try:
            def d(): "d"
        except E:
            def e(): "e"
        finally:
            with f as g:
                def h(): return (lambda: "not a doc")
        match v:
            case 1:
                def i(): "i"
        f = [k for k in range(3)]
    ''')
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    for tree in (ast.parse(source), ast.parse(inspect.getsource(ast))):
        want = [ast.get_docstring(n) for n in ast.walk(tree) if isinstance(n, kinds)]
        assert [ast.get_docstring(n) for n in text._statements(tree) if isinstance(n, kinds)] == want
    assert [d for d in want if d] and len(want) > 50


def test_layer_fitting_moves_only_the_new_parts_and_lowers_their_error(tmp_path):
    import attnreuse.hf as arhf
    from attnreuse.hf.fit import fit_layers

    from hfutil import sentences, tiny_model, tiny_tokenizer

    original, tok = tiny_model("bert"), tiny_tokenizer(tmp_path)
    converted = arhf.convert(original, "mha,skip,mha,reuse")
    before = {k: v.clone() for k, v in converted.state_dict().items()}
    losses = fit_layers(converted, original, tok, sentences(64), steps=30, batch_size=8, lr=3e-3)
    assert len(losses) == 30 and losses[-1] < 0.7 * losses[0]
    changed = {k for k, v in converted.state_dict().items() if not torch.equal(before[k], v)}
    assert changed and all(".1.attention.self.core." in k or ".3.attention.self.core." in k for k in changed)
    assert all(p.requires_grad for p in converted.parameters())  # flags restored
    with pytest.raises(ValueError, match="--fit-steps must be an int >= 0"):
        fit_layers(converted, original, tok, sentences(8), steps=-1)


def test_export_encoder_leaves_the_model_in_eval_mode(tmp_path):
    """torch.onnx.export restores the mode of what it exports; the wrapper must not bring the model
    back to training mode (BERT's dropout on after an export)."""
    pytest.importorskip("onnxruntime")
    import torch

    from hfutil import tiny_model

    from attnreuse.hf.export import export_encoder

    model = tiny_model("bert", hidden_dropout_prob=0.5)
    ids, mask = torch.randint(5, 30, (2, 7)), torch.ones(2, 7, dtype=torch.long)
    export_encoder(model, tmp_path / "m.onnx", {"input_ids": ids, "attention_mask": mask})
    assert not any(m.training for m in model.modules())


def test_converted_layers_take_the_mode_of_the_model():
    """A converted eval-mode model stays in eval mode throughout (a new core in training mode would
    run its attention dropout at inference); a training-mode model stays in training mode."""
    from hfutil import tiny_model

    from attnreuse import hf as arhf

    model = tiny_model("bert")
    assert not any(m.training for m in arhf.convert(model, "kvpool:2").modules())
    assert all(m.training for m in arhf.convert(model.train(), "mha,share,mha,share").modules())
