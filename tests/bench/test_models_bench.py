"""`attnreuse bench models`: records, baselines, error entries, CLI."""

import json

import pytest
import torch

from attnreuse.bench import models as bm
from attnreuse.cli import main

PICO = "vit_attnreuse_pico_patch4_32"


@pytest.mark.parametrize(
    "name, baseline",
    [
        ("uniform_xs", "efficientvit_m0"),
        ("uniform_s", "efficientvit_m1"),
        ("uniform_m", "efficientvit_m3"),
        ("uniform_l", "efficientvit_m5"),
        ("vit_skipat_small_patch16_224", "vit_attnreuse_small_patch16_224"),
        ("vit_mapshare_small_patch16_224", "vit_attnreuse_small_patch16_224"),
        ("vit_reuse_tiny_patch16_224", "vit_attnreuse_tiny_patch16_224"),
        ("deit_taylor_small_patch16_224", "vit_attnreuse_small_patch16_224"),
        ("vit_attnreuse_small_patch16_224", None),
        ("efficientvit_m0", None),
    ],
)
def test_family_baselines(name, baseline):
    assert bm.baseline_of(name) == baseline


def test_default_set_holds_attnreuse_models_and_peers_and_baselines_are_added():
    names = bm.default_models()
    for must in ("vit_skipat_small_patch16_224", "efficientvit_m0", "efficientvit_b0", "mobilevit_xxs", "fastvit_t8"):
        assert must in names
    cfg = bm.ModelBenchConfig(models=("vit_skipat_tiny_patch16_224",))
    assert cfg.model_list() == ["vit_skipat_tiny_patch16_224", "vit_attnreuse_tiny_patch16_224"]
    assert bm.ModelBenchConfig(models=("vit_reuse_tiny_patch16_224",), baselines=False).model_list() == [
        "vit_reuse_tiny_patch16_224"
    ]


def test_quick_run_records_every_runtime_and_errors_do_not_stop_it(tmp_path, monkeypatch):
    from attnreuse.bench import runtimes

    real = runtimes.prepare_runtime

    def flaky(runtime, *args, **kwargs):
        if runtime == "ort-int8":
            raise RuntimeError("int8 broke")
        return real(runtime, *args, **kwargs)

    monkeypatch.setattr(runtimes, "prepare_runtime", flaky)
    cfg = bm.ModelBenchConfig(
        models=(PICO, "no_such_model_xyz"), img_sizes=(32,), threads=1, runtimes=("eager", "ort", "ort-int8"),
        warmup=0, repeats=2, min_time_s=0.0, json=str(tmp_path / "r.json"), csv=str(tmp_path / "r.csv"),
    )  # fmt: skip
    records = bm.run_models(cfg)
    assert [(r["model"], r["runtime"]) for r in records] == [
        (m, r) for m in (PICO, "no_such_model_xyz") for r in ("eager", "ort", "ort-int8")
    ]
    eager, ort, int8 = records[:3]
    assert eager["error"] is None and ort["error"] is None
    assert int8["error"] == "RuntimeError: int8 broke"
    assert eager["params"] > 1e6 and eager["macs"] > 1e7 and eager["peak_bytes"] > 0
    assert ort["onnx_max_abs_diff"] <= 1e-4 and ort["peak_bytes"] is None and ort["onnx_max_abs_logit"] > 0
    assert ort["onnx_exporter"] == "torchscript"  # the graph `attnreuse export` writes
    assert 0 < eager["latency_ms_median"] <= eager["latency_ms_p90"]
    assert ort["throughput_img_per_s"] == pytest.approx(1e3 / ort["latency_ms_median"])
    assert ort["latency_vs_eager"] == pytest.approx(ort["latency_ms_median"] / eager["latency_ms_median"])
    assert all("unknown model" in r["error"] for r in records[3:])
    assert eager["threads"] == 1 and eager["torch"] and "cpu" in eager
    assert json.loads((tmp_path / "r.json").read_text())[0]["model"] == PICO
    assert (tmp_path / "r.csv").read_text().startswith("model,")
    saved = json.loads(bm.config_path(tmp_path / "r.json").read_text())
    assert saved["models"] == [PICO, "no_such_model_xyz"] and saved["threads"] == 1
    table = bm.format_table(records)
    assert "error: RuntimeError: int8 broke" in table and PICO in table


def test_relative_columns_use_the_same_runtime_and_resolution():
    rows = [
        dict(model="uniform_s", baseline="efficientvit_m1", img_size=224, batch=1, runtime="eager",
             latency_ms_median=4.0, macs=100, error=None),
        dict(model="uniform_s", baseline="efficientvit_m1", img_size=224, batch=1, runtime="ort",
             latency_ms_median=2.0, macs=100, error=None),
        dict(model="efficientvit_m1", baseline=None, img_size=224, batch=1, runtime="ort",
             latency_ms_median=3.0, macs=150, error=None),
        dict(model="efficientvit_m1", baseline=None, img_size=224, batch=1, runtime="eager", error="boom"),
    ]  # fmt: skip
    bm.add_relative_columns(rows)
    assert rows[1]["latency_vs_eager"] == 0.5
    assert rows[1]["speedup_vs_baseline"] == 1.5 and rows[1]["ideal_speedup_vs_baseline"] == 1.5
    assert rows[1]["fraction_of_ideal"] == 1.0
    assert "speedup_vs_baseline" not in rows[0]  # the baseline's eager run failed


def test_paired_speed_up_comes_from_side_by_side_rounds():
    rows = [
        dict(model="uniform_s", baseline="efficientvit_m1", img_size=224, batch=1, runtime="eager",
             latency_ms_median=4.0, macs=100, error=None, latency_ms_round_medians=[4.0, 8.0, 4.0]),
        dict(model="efficientvit_m1", baseline=None, img_size=224, batch=1, runtime="eager",
             latency_ms_median=5.0, macs=150, error=None, latency_ms_round_medians=[6.0, 12.0, 5.0]),
    ]  # fmt: skip
    bm.add_relative_columns(rows)
    assert rows[0]["speedup_vs_baseline"] == 1.25  # pooled medians: 5 / 4
    assert rows[0]["speedup_vs_baseline_paired"] == 1.5  # per round: 1.5, 1.5, 1.25
    assert rows[0]["speedup_vs_baseline_paired_range"] == [1.25, 1.5]
    assert "speedup_vs_baseline_paired" not in rows[1]


def test_timing_order_puts_each_model_beside_its_baseline():
    recs = [
        dict(model=m, baseline=bm.baseline_of(m), img_size=224, runtime=rt)
        for m in ("uniform_xs", "uniform_s", "efficientvit_m0", "efficientvit_m1") for rt in ("eager", "ort")
    ]  # fmt: skip
    order = [(recs[i]["model"], recs[i]["runtime"]) for i in bm._timing_order([(r, None) for r in recs])]
    assert order == [("efficientvit_m0", "eager"), ("uniform_xs", "eager"), ("efficientvit_m1", "eager"),
                     ("uniform_s", "eager"), ("efficientvit_m0", "ort"), ("uniform_xs", "ort"),
                     ("efficientvit_m1", "ort"), ("uniform_s", "ort")]  # fmt: skip


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(runtimes=("eager", "tensorrt")), "runtimes must be a non-empty selection"),
        (dict(img_sizes=(8,)), "img_sizes must be ints >= 16"),
        (dict(batch=0), "batch must be a positive int"),
        (dict(int8_mode="int4"), "int8_mode must be one of"),
        (dict(models=["uniform_s"]), "models must be a tuple"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        bm.ModelBenchConfig(**kwargs)


def test_cli_quick(tmp_path, capsys):
    out = tmp_path / "m.json"
    rc = main(["bench", "models", PICO, "--img-size", "32", "--threads", "1", "--runtimes", "eager",
               "--quick", "--json", str(out)])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert PICO in printed and "median ms" in printed
    rec = json.loads(out.read_text())[0]
    # the settings away from the defaults (`_cli_args.config_argv`): --batch 1 is the default
    assert rec["command"].startswith(f"attnreuse bench models {PICO} --img-size 32 --threads 1 --runtimes eager")
    assert rec["config"] == json.loads(bm.config_path(out).read_text())
    assert rec["config"]["repeats"] == bm.QUICK["repeats"] and rec["config"]["runtimes"] == ["eager"]


def test_folded_model_exports_in_the_ort_runtime():
    # UniForm folds in place and cannot fold twice: the ORT runtime must export the folded model as is
    cfg = bm.ModelBenchConfig(models=("uniform_xs",), img_sizes=(64,), threads=1, runtimes=("ort",),
                              warmup=0, repeats=1, min_time_s=0.0, baselines=False)  # fmt: skip
    (rec,) = bm.run_models(cfg)
    assert rec["error"] is None and rec["onnx_max_abs_diff"] <= 1e-4
    # BatchNorms randomised: logits far from zero, so the parity figure means something
    assert rec["onnx_max_abs_logit"] > 0.1 and rec["weights"] == bm.WEIGHTS


def test_bfloat16_run_casts_the_model_and_says_how_it_ran():
    from attnreuse import cpu_units

    cfg = bm.ModelBenchConfig(models=(PICO,), img_sizes=(32,), threads=1, runtimes=("eager",), dtype="bfloat16",
                              warmup=0, repeats=1, min_time_s=0.0, rounds=1, baselines=False)  # fmt: skip
    (rec,) = bm.run_models(cfg)
    assert rec["error"] is None and rec["dtype"] == "bfloat16"
    assert rec["dtype_execution"] == cpu_units.dtype_support("bfloat16")["execution"]
    assert 0 < rec["bf16_logit_rel_diff"] < 5e-2 and 0 <= rec["bf16_top1_agreement"] <= 1
    table = bm.format_table([rec])
    assert ("EMUL" in table) == (rec["dtype_execution"] == "emulated")
    assert "--dtype bfloat16" in bm.reproduce_command(cfg)


def test_bfloat16_fidelity_of_a_checkpoint_over_held_out_images(pico_run):
    """--checkpoint loads the run's weights (BatchNorms and all left as trained) and --eval-data
    measures the bf16 columns over its test images, with each dtype's top-1 against the labels."""
    from attnreuse.data import load_images
    from attnreuse.deploy import create_export_model

    cfg = bm.ModelBenchConfig(models=(PICO,), img_sizes=(32,), threads=1, runtimes=("eager",), dtype="bfloat16",
                              checkpoint=str(pico_run), eval_data="digits", eval_images=24, batch=5,
                              warmup=0, repeats=1, min_time_s=0.0, rounds=1, baselines=False)  # fmt: skip
    (rec,) = bm.run_models(cfg)
    assert rec["error"] is None and rec["weights"] == f"checkpoint {pico_run}"
    assert rec["bf16_eval_images"] == 24
    model = create_export_model(PICO, checkpoint=str(pico_run)).eval()
    x, y = load_images("digits", "test", img_size=32, limit=24)
    with torch.inference_mode():
        ref = model(x)
        out = model.to(torch.bfloat16)(x.to(torch.bfloat16)).float()
    assert rec["fp32_top1"] == pytest.approx((ref.argmax(-1) == y).float().mean().item())
    assert rec["bf16_top1"] == pytest.approx((out.argmax(-1) == y).float().mean().item())
    assert rec["bf16_top1_agreement"] == pytest.approx((out.argmax(-1) == ref.argmax(-1)).float().mean().item())
    assert rec["bf16_logit_rel_diff"] == pytest.approx(((out - ref).abs().max() / ref.abs().max()).item(), rel=0.05)
    assert "--checkpoint" in bm.reproduce_command(cfg) and "--eval-data digits" in bm.reproduce_command(cfg)
    assert f"bf16 fidelity, {PICO} at 32: logits within" in bm.format_table([rec, rec])
    assert bm.format_table([rec, rec]).count("bf16 fidelity") == 1  # one line per model, whatever the runtimes


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--checkpoint", "{run}", "--img-size", "224"], "was trained at img_size 32; pass --img-size 32"),
        (["--checkpoint", "{run}/missing", "--img-size", "32"], "does not exist"),
        (["uniform_xs", "--checkpoint", "{run}"], "name exactly one"),
        (["--eval-data", "digits"], "needs --dtype bfloat16"),
        (["--eval-data", "{run}/missing", "--dtype", "bfloat16"], "must be 'digits' or an ImageFolder"),
        (["--eval-images", "0", "--dtype", "bfloat16"], "--eval-images must be a positive int"),
    ],
)
def test_checkpoint_and_eval_data_mistakes_are_one_line(capsys, pico_run, argv, message):
    argv = [a.replace("{run}", str(pico_run)) for a in argv]
    assert main(["bench", "models", PICO, *argv]) != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "dtype, runtimes, message",
    [("bfloat16", ("eager", "ort"), "no bf16 MatMul"), ("int8", ("eager",), "ort-int8"), ("float16", ("eager",), "dtype must be")],
)
def test_dtype_and_runtime_must_fit(dtype, runtimes, message):
    with pytest.raises(ValueError, match=message):
        bm.ModelBenchConfig(runtimes=runtimes, dtype=dtype)


def test_int8_records_are_int8_whatever_the_run_dtype():
    assert bm.record_dtype("float32", "ort-int8") == "int8" and bm.record_dtype("float32", "ort") == "float32"


def test_ort_fused_runtime_times_the_fused_export(tmp_path, monkeypatch):
    from attnreuse.bench.runtimes import prepare_runtime
    from attnreuse.deploy import create_export_model

    model = create_export_model(PICO, num_classes=10)
    call, info = prepare_runtime("ort-fused", model, torch.randn(1, 3, 32, 32), threads=1, work_dir=tmp_path,
                                 calib_images=None)  # fmt: skip
    assert info["fused_attention"] == "mha" and info["fused_attention_nodes"] == 6 and info["onnx_max_abs_diff"] <= 1e-4
    assert info["onnx_exporter"] == "torchscript"
    assert call()[0].shape == (1, 10)


def test_exporter_flag_reaches_every_ort_export(monkeypatch):
    """`--exporter dynamo` (torch.export's graph, bench models' choice before 2026-12-02) is what
    each ONNX runtime exports with, and the command that reproduces the run says so."""
    import argparse

    from attnreuse import deploy

    seen = []

    def spy(*args, **kwargs):
        seen.append(kwargs["exporter"])
        raise RuntimeError("export stopped by the test")

    monkeypatch.setattr(deploy, "export_onnx", spy)
    parser = argparse.ArgumentParser()
    bm.register(parser.add_subparsers())
    cfg = bm.config_from_args(parser.parse_args([
        "models", PICO, "--img-size", "32", "--exporter", "dynamo", "--runtimes", "ort,ort-fused", "--threads", "1",
        "--warmup", "0", "--repeats", "1", "--min-time", "0", "--no-baselines"]))  # fmt: skip
    records = bm.run_models(cfg)
    assert seen == ["dynamo", "dynamo"] and all("export stopped" in r["error"] for r in records)
    assert "--exporter dynamo" in bm.reproduce_command(cfg)
    with pytest.raises(ValueError, match="exporter"):
        bm.ModelBenchConfig(exporter="onnxscript")


def test_probe_names_compare_with_their_models_baseline():
    assert bm.baseline_of("uniform_s:mixer=pointwise") == "efficientvit_m1"
    assert bm.family_of("uniform_s:mixer=pointwise") == "uniform_probe" and bm.family_of("uniform_s") == "uniform"
    cfg = bm.ModelBenchConfig(models=("uniform_s:mixer=none", "uniform_s"))
    assert cfg.model_list() == ["uniform_s:mixer=none", "uniform_s", "efficientvit_m1"]
    for name, message in (("uniform_l:mixer=fast", "must be one of"), ("efficientvit_m0:mixer=none", "apply to UniForm")):
        with pytest.raises(ValueError, match=message):  # before any model is built
            bm.ModelBenchConfig(models=(name,))


def test_probe_records_beside_the_model_and_kept_out_of_the_targets(tmp_path):
    from attnreuse.bench.report import build_report

    cfg = bm.ModelBenchConfig(models=("uniform_xs", "uniform_xs:mixer=pointwise", "uniform_xs:mixer=none"),
                              img_sizes=(64,), threads=1, runtimes=("eager",), warmup=0, repeats=2, min_time_s=0.0,
                              json=str(tmp_path / "r.json"))  # fmt: skip
    records = {r["model"]: r for r in bm.run_models(cfg)}
    full, point, none = (records[n] for n in cfg.models)
    assert all(r["error"] is None and r["speedup_vs_baseline"] > 0 for r in (full, point, none))
    assert point["family"] == none["family"] == "uniform_probe" and point["baseline"] == "efficientvit_m0"
    assert full["macs"] > point["macs"] > none["macs"] and full["params"] > point["params"] > none["params"]
    md = build_report([tmp_path / "r.json"], tmp_path / "report").read_text()
    assert "| uniform_xs:mixer=none | efficientvit_m0 | 64 | eager |" in md and "mixer probes" in md
    assert "uniform_xs vs efficientvit_m0 @64 eager >= 1.25x" in md
    assert "uniform_xs:mixer=none vs" not in md
    assert f"- model weights: {bm.WEIGHTS}" in md
    # the model's share of the no-attention ceiling: T_probe / T_model, the baseline cancelled
    assert full["share_of_ceiling"] == pytest.approx(point["latency_ms_median"] / full["latency_ms_median"])
    assert full["share_of_ceiling"] == pytest.approx(full["speedup_vs_baseline"] / point["speedup_vs_baseline"])
    rounds = [p / f for p, f in zip(point["latency_ms_round_medians"], full["latency_ms_round_medians"])]
    low, high = full["share_of_ceiling_paired_range"]
    assert (low, high) == (min(rounds), max(rounds)) and low <= full["share_of_ceiling_paired"] <= high
    assert "share_of_ceiling" not in point and "share_of_ceiling" not in none
    assert "## Share of the no-attention ceiling" in md and "| uniform_xs | 64 | eager |" in md
    assert "| uniform_xs @64 eager share of the no-attention ceiling >= 0.9 |" in md
    assert "uniform_xs 64 eager: " in bm.format_table(list(records.values()))


def test_the_ceiling_suffix_names_the_pointwise_probe():
    from attnreuse.models.probes import split_probe

    assert split_probe(f"uniform_xs{bm.CEILING_SUFFIX}") == ("uniform_xs", "pointwise")
