import dataclasses
import json

import pytest
import torch
from torch import nn

from attnreuse.cli import main
from attnreuse import runs as ckpt_io
from attnreuse.train.convert import ConvertConfig, _fold_qk, convert, parse_target_plan
from attnreuse.train.loop import train

PICO = {"img_size": 16, "patch_size": 4, "depth": 4, "embed_dim": 32, "num_heads": 2, "mlp_ratio": 2.0}


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    from attnreuse.train.config import TrainConfig

    out = tmp_path_factory.mktemp("source")
    train(TrainConfig(model="vit_attnreuse_pico_patch4_32", output=str(out), model_kwargs=PICO, epochs=2,
                      warmup_epochs=1, batch_size=32, limit_train_batches=3, progress=False))
    return out


def test_parse_target_plan():
    assert parse_target_plan("share:2", 4) == ["mha", "share", "mha", "share"]
    assert parse_target_plan("skip:1,3", 4) == ["mha", "skip", "mha", "skip"]
    assert parse_target_plan("skip", 4) == ["mha", "skip", "skip", "mha"]  # SkipAt: depth//4 .. 3*depth//4 - 1
    assert parse_target_plan('["mha", "reuse", "share", "taylor"]', 4) == ["mha", "reuse", "share", "taylor"]
    with pytest.raises(ValueError, match=r"skipped layers must lie in 1..3, got \[0\]"):
        parse_target_plan("skip:0", 4)
    with pytest.raises(ValueError, match="share:G with a group size G >= 2"):
        parse_target_plan("share", 4)


def test_fold_qk_reproduces_the_member_query_on_the_group_layer():
    C = 8
    ln_m, ln_s = nn.LayerNorm(C), nn.LayerNorm(C)
    for ln in (ln_m, ln_s):
        nn.init.normal_(ln.weight, 1.0, 0.3)
        nn.init.normal_(ln.bias, 0.0, 0.3)
    qkv_m, qkv_s = nn.Linear(C, 3 * C), nn.Linear(C, 3 * C)
    src = {"blocks.1.attn.qkv.weight": qkv_m.weight.detach(), "blocks.1.attn.qkv.bias": qkv_m.bias.detach(),
           "blocks.1.norm1.weight": ln_m.weight.detach(), "blocks.1.norm1.bias": ln_m.bias.detach()}
    sd = {"blocks.0.attn.qkv.weight": qkv_s.weight.detach().clone(), "blocks.0.attn.qkv.bias": qkv_s.bias.detach().clone(),
          "blocks.0.norm1.weight": ln_s.weight.detach(), "blocks.0.norm1.bias": ln_s.bias.detach()}
    _fold_qk(sd, src, member=1, layer=0, C=C)
    x = torch.randn(5, C)
    with torch.no_grad():
        want = qkv_m(ln_m(x))[:, : 2 * C]
        got = nn.functional.linear(ln_s(x), sd["blocks.0.attn.qkv.weight"], sd["blocks.0.attn.qkv.bias"])[:, : 2 * C]
        v_kept = nn.functional.linear(ln_s(x), sd["blocks.0.attn.qkv.weight"], sd["blocks.0.attn.qkv.bias"])[:, 2 * C :]
        torch.testing.assert_close(v_kept, qkv_s(ln_s(x))[:, 2 * C :])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_regression_fits_and_never_makes_a_layer_worse():
    from attnreuse.train.convert import _regress

    x = torch.randn(64, 5, 8)
    want = nn.Linear(8, 8)(x).detach()
    layer = nn.Linear(8, 8)
    cfg = ConvertConfig(checkpoint="c", plan="mha", output="o", fit_steps=200, fit_lr=1e-2)
    fit = _regress(layer, list(layer.parameters()), [x], want, lambda m, t: m(t), cfg)
    assert fit["relative_mse"] < 0.05 * fit["relative_mse_before"]
    exact = layer.weight.detach().clone()
    fit = _regress(layer, list(layer.parameters()), [x], layer(x).detach(), lambda m, t: m(t),
                   dataclasses.replace(cfg, fit_lr=1.0, fit_steps=5))
    assert fit["relative_mse"] == fit["relative_mse_before"] and torch.equal(layer.weight, exact)


@pytest.mark.parametrize("plan", ["share:2", "skip:2,3", "reuse", "taylor"])
def test_convert_carries_weights_and_saves_a_trainable_run(source_run, tmp_path, plan):
    out = tmp_path / "conv"
    report = convert(ConvertConfig(checkpoint=str(source_run), plan=plan, output=str(out), calib_batches=1,
                                   batch_size=32, fit_steps=20))
    src = ckpt_io.load_weights(source_run)
    model, spec = ckpt_io.load_model_dir(out)
    assert spec["name"] == "vit_attnreuse_pico_patch4_32" and spec["kwargs"]["attn_plan"] == report["plan"]
    got = model.state_dict()
    for key in ("patch_embed.proj.weight", "blocks.1.mlp.fc1.weight", "head.weight", "blocks.3.norm2.bias"):
        torch.testing.assert_close(got[key], src[key], msg=key)
    assert 0.0 <= report["converted_val_top1"] <= 100.0
    if plan == "skip:2,3":
        fits = [i for i in report["initialised"] if i["kind"] == "skip"]
        assert [f["layer"] for f in fits] == [2, 3]
        assert all(f["relative_mse"] < min(1.0, f["relative_mse_before"]) for f in fits)
    if plan == "share:2":
        fits = [i for i in report["initialised"] if i["kind"] == "share V/proj"]
        assert [f["layer"] for f in fits] == [1, 3]
        assert all(f["relative_mse"] <= f["relative_mse_before"] for f in fits), fits
        refit = fits[0]["relative_mse"] < fits[0]["relative_mse_before"]
        assert torch.equal(got["blocks.1.attn.v.weight"], src["blocks.1.attn.qkv.weight"][64:]) != refit
    if plan == "reuse":
        heads = [i["maps_from_heads"] for i in report["initialised"]]
        assert len(heads) == 4 and all(len(h) == 1 for h in heads)
        h = heads[0][0]
        torch.testing.assert_close(got["blocks.0.attn.qk.weight"][:16], src["blocks.0.attn.qkv.weight"][16 * h : 16 * h + 16])
    if plan == "taylor":
        torch.testing.assert_close(got["blocks.0.attn.qkv.weight"], src["blocks.0.attn.qkv.weight"])
        assert report["new_keys"] == []


def test_convert_cli_then_distillation_fine_tune(source_run, tmp_path, capsys):
    conv = tmp_path / "conv"
    assert main(["convert", "--checkpoint", str(source_run), "--plan", "share:2", "--calib-batches", "1",
                 "--batch-size", "16", "--output", str(conv)]) == 0
    assert "carried over" in capsys.readouterr().out
    assert json.loads((conv / "convert.json").read_text())["plan"] == ["mha", "share", "mha", "share"]
    assert main(["train", "--init", str(conv), "--teacher", str(source_run), "--epochs", "2", "--warmup-epochs", "1",
                 "--batch-size", "16", "--limit-train-batches", "1", "--no-progress", "--output", str(tmp_path / "ft")]) == 0
    assert json.loads((tmp_path / "ft" / "model.json").read_text())["kwargs"]["attn_plan"][1] == "share"
    assert main(["convert", "--checkpoint", str(source_run), "--plan", "bogus", "--output", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "is neither a kind that can fill every layer" in err and "kvpool[:R]" in err


MIXED = ["mha", "reuse", "taylor", "share"]


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    from attnreuse.train.config import TrainConfig

    out = tmp_path_factory.mktemp("mixed")
    train(TrainConfig(model="vit_attnreuse_pico_patch4_32", output=str(out), model_kwargs={**PICO, "attn_plan": MIXED},
                      epochs=2, warmup_epochs=1, batch_size=32, limit_train_batches=3, progress=False))
    return out


def test_convert_from_a_mixed_source(mixed_run, tmp_path):
    """reuse (V only) -> share, its own qk dropped; taylor (Q/K/V) -> reuse; share (V only) -> skip;
    layer 0's map is not taken from layer 1, which kept no Q/K."""
    plan = ["mha", "share", "reuse", "skip"]
    out = tmp_path / "conv"
    report = convert(ConvertConfig(checkpoint=str(mixed_run), plan=json.dumps(plan), output=str(out), calib_batches=1,
                                   batch_size=32, fit_steps=20))
    src = ckpt_io.load_weights(mixed_run)
    model, spec = ckpt_io.load_model_dir(out)
    assert spec["kwargs"]["attn_plan"] == plan == report["plan"]
    got = model.state_dict()
    assert {"blocks.1.attn.qk.weight", "blocks.1.attn.qk.bias"} <= set(report["dropped"])
    assert [i["map_from_layer"] for i in report["initialised"] if i["kind"] == "share group"] == [0]
    torch.testing.assert_close(got["blocks.0.attn.qkv.weight"], src["blocks.0.attn.qkv.weight"])
    (h,) = [i["maps_from_heads"] for i in report["initialised"] if i["kind"] == "reuse"][0]
    torch.testing.assert_close(got["blocks.2.attn.qk.weight"][:16], src["blocks.2.attn.qkv.weight"][16 * h : 16 * h + 16])
    torch.testing.assert_close(got["blocks.2.attn.v.weight"], src["blocks.2.attn.qkv.weight"][64:])
    assert [i["layer"] for i in report["initialised"] if i["kind"] == "skip"] == [3]
    assert "blocks.3.attn.v.weight" not in got and "blocks.3.phi.fc1.weight" in got
    assert 0.0 <= report["converted_val_top1"] <= 100.0


def test_a_layer_that_dropped_qk_cannot_become_one_that_needs_them(mixed_run, tmp_path, capsys):
    plan = json.dumps(["mha", "reuse", "taylor", "mha"])
    with pytest.raises(ValueError, match="layer 3 cannot become 'mha': its source kind 'share' keeps V only of the "
                                         "attention weights, 'mha' needs Q, K and V"):
        convert(ConvertConfig(checkpoint=str(mixed_run), plan=plan, output=str(tmp_path / "x")))
    assert main(["convert", "--checkpoint", str(mixed_run), "--plan", json.dumps(["mha", "mha", "taylor", "share"]),
                 "--output", str(tmp_path / "y")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[-1]] and "layer 1 cannot become 'mha': its source kind 'reuse' keeps V only" in err[-1]


def test_check_sources_compares_what_kinds_keep_with_what_they_need():
    from attnreuse.plan import LayerSpec as S
    from attnreuse.train.convert import check_sources

    check_sources([S("taylor"), S("taylor"), S("share")], [S("mha"), S("reuse", 2), S("skip")], num_heads=4)
    check_sources([S("reuse", 4)], [S("reuse")], num_heads=4)  # reuse:H keeps a fused qkv
    check_sources([S("reuse"), S("share")], [S("reuse"), S("share")], num_heads=4)  # layers kept as they are
    with pytest.raises(ValueError, match="layer 0 cannot become 'reuse'.*'skip' keeps none of them"):
        check_sources([S("skip")], [S("reuse")], num_heads=4)
    with pytest.raises(ValueError, match="layer 0 cannot become 'share'.*'skip' keeps none"):
        check_sources([S("skip")], [S("share")], num_heads=4)
