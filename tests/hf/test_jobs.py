"""The `attnreuse hf` command line on a tiny saved BERT: every job, exact resume, and bad input."""

from __future__ import annotations

import json

import pytest
import torch

from cliutil import run as _run



def test_convert_distill_eval_export(tmp_path, capsys, model_dir, text_file):
    conv = tmp_path / "conv"
    code, out, _ = _run(capsys, "hf", "convert", "--model", str(model_dir), "--plan", "mha,share,mha,share",
                        "--text", str(text_file), "--output", str(conv))
    assert code == 0 and "zero-shot cosine" in out
    assert json.loads((conv / "config.json").read_text())["attnreuse_plan"] == ["mha", "share", "mha", "share"]
    run = tmp_path / "run"
    code, out, err = _run(capsys, "hf", "distill", "--teacher", str(model_dir), "--init", str(conv), "--text", str(text_file),
                          "--output", str(run), "--steps", "6", "--batch-size", "8", "--warmup-steps", "1",
                          "--checkpoint-every", "3")
    assert code == 0, out
    assert "distil" not in err  # the bar is drawn on a terminal only, not into a redirected log
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["fidelity"]["cosine"] > 0.5
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 6
    code, out, _ = _run(capsys, "hf", "eval", "--teacher", str(model_dir), str(conv), str(run), "--text", str(text_file),
                        "--tokens", "16", "--rounds", "2", "--repeats", "4", "--threads", "1", "--json", str(tmp_path / "e.json"))
    assert code == 0 and "of ideal" in out
    record = json.loads((tmp_path / "e.json").read_text())
    assert {s["model"] for s in record["speed"]} == {"original (sdpa)", str(conv), str(run)}
    assert all(s["mac_ideal"] > 1.0 for s in record["speed"] if s["model"] != "original (sdpa)")
    code, out, _ = _run(capsys, "hf", "export", str(run), "--output", str(tmp_path / "m.onnx"))
    assert code == 0 and (tmp_path / "m.onnx").is_file()


def test_distillation_resumes_exactly(tmp_path, capsys, model_dir, text_file):
    conv = tmp_path / "conv"
    assert _run(capsys, "hf", "convert", "--model", str(model_dir), "--plan", "reuse", "--no-eval", "--output", str(conv))[0] == 0
    common = ["hf", "distill", "--teacher", str(model_dir), "--init", str(conv), "--text", str(text_file),
              "--batch-size", "8", "--warmup-steps", "1", "--checkpoint-every", "2", "--no-progress", "--steps", "6"]
    assert _run(capsys, *common, "--output", str(tmp_path / "full"))[0] == 0
    # the same run interrupted after logging steps 5 and 6, before the step-6 checkpoint, then
    # resumed with the same flags: it continues from step 4
    from attnreuse.hf import distill

    save = distill._save_checkpoint

    def stop_before_six(run_dir, step, *args):
        if step == 6:
            raise KeyboardInterrupt
        save(run_dir, step, *args)

    part = tmp_path / "part"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(distill, "_save_checkpoint", stop_before_six)
        assert _run(capsys, *common, "--output", str(part))[0] == 130
    assert json.loads((part / "checkpoint.json").read_text())["step"] == 4
    assert len((part / "metrics.jsonl").read_text().splitlines()) == 6
    assert _run(capsys, *common, "--output", str(part), "--resume")[0] == 0
    # the record reads as the uninterrupted run's: steps 5 and 6 logged once (they were logged
    # twice), and the fidelity before distillation kept (the resumed summary had None)
    full_steps = [json.loads(line) for line in (tmp_path / "full/metrics.jsonl").read_text().splitlines()]
    part_steps = [json.loads(line) for line in (part / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in part_steps] == [m["step"] for m in full_steps] == [1, 2, 3, 4, 5, 6]
    for m, n in zip(full_steps, part_steps):
        assert m["loss"] == pytest.approx(n["loss"], rel=1e-5)
    full_summary, part_summary = (json.loads((d / "summary.json").read_text()) for d in (tmp_path / "full", part))
    assert part_summary["fidelity_before"] == full_summary["fidelity_before"] is not None
    from safetensors.torch import load_file

    a, b = load_file(str(tmp_path / "full/model/model.safetensors")), load_file(str(part / "model/model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_analyze_writes_heatmaps_and_a_plan(tmp_path, capsys, model_dir, text_file):
    out = tmp_path / "an"
    code, text, _ = _run(capsys, "hf", "analyze", "--model", str(model_dir), "--text", str(text_file), "--texts", "12",
                         "--tokens", "32", "--budget", "0.8", "--min-score", "0", "--output", str(out))
    assert code == 0 and "suggested plan" in text
    record = json.loads((out / "analysis.json").read_text())
    red = record["redundancy"]
    assert len(red["head_to_mean"]) == 4 and len(red["head_to_mean"][0]) == 4
    assert all(abs(red["layer_map_cosine"][i][i] - 1) < 1e-6 for i in range(4))
    s = record["suggestion"]
    assert s["plan"][0] == "mha" and s["macs"] <= 0.8 * s["mha_macs"]
    assert {p.name for p in out.glob("*.png")} == {"head_to_mean.png", "layer_map_cosine.png", "output_cka.png",
                                                   "frontier.png"}
    # the trade-off: all-mha first (loss 0), then fewer MACs for more loss; the suggestion is on it
    front = [(f["macs_fraction"], f["predicted_loss"]) for f in s["frontier"]]
    assert front[0] == (1.0, 0.0) and all(a[0] > b[0] and a[1] < b[1] for a, b in zip(front, front[1:]))
    assert (s["macs"] / s["mha_macs"], s["predicted_loss"]) in front


@pytest.mark.parametrize(
    "argv, message",
    [
        (["convert", "--model", "{tmp}/nowhere", "--plan", "mha"], "model directory {tmp}/nowhere does not exist"),
        (["convert", "--model", "{tmp}", "--plan", "mha"], "is not a transformers model directory: no config.json"),
        (["convert", "--model", "{model}", "--plan", "mha,share"], "plan has 2 entries but the bert model has 4 layers"),
        (["convert", "--model", "{model}", "--plan", "mha", "--text", "{tmp}/empty.txt"], "no non-blank lines"),
        (["convert", "--model", "{model}", "--plan", "mha", "--text", "{tmp}/missing.txt"], "--text {tmp}/missing.txt: no such file"),
        (["distill", "--teacher", "{model}", "--init", "{model}", "--steps", "0"], "--steps must be a positive int"),
        (["distill", "--teacher", "{model}", "--init", "{model}", "--lr", "inf"], "--lr must be a finite number"),
        (["distill", "--teacher", "{model}", "--init", "{model}"], "holds no attnreuse plan"),
        (["distill", "--teacher", "{model}", "--init", "{model}"], "make one with `attnreuse hf convert --model {model} --plan"),
        (["distill", "--teacher", "{model}", "--init", "{model}", "--hidden-weight", "0", "--embedding-weight", "0"],
         "--relation-weight are all 0: the loss would be 0"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, model_dir, argv, message):
    (tmp_path / "empty.txt").write_text("\n  \n")
    fill = dict(tmp=tmp_path, model=model_dir)
    out = tmp_path / "out"
    code, _, err = _run(capsys, "hf", *[a.format(**fill) for a in argv], "--output", str(out))
    assert code == 2
    assert message.format(**fill) in err and len(err.strip().splitlines()) == 1
    assert not out.exists() or not any(p.name != ".lock" for p in out.iterdir())


def test_unsupported_architecture_is_named(tmp_path, capsys):
    import transformers

    d = tmp_path / "gpt2"
    transformers.GPT2Model(transformers.GPT2Config(n_layer=1, n_embd=32, n_head=4, vocab_size=50)).save_pretrained(d)
    code, _, err = _run(capsys, "hf", "convert", "--model", str(d), "--plan", "mha", "--output", str(tmp_path / "o"))
    assert code == 2 and "model_type 'gpt2' is not supported; supported: bert" in err


def test_outputs_are_not_overwritten_without_force(tmp_path, capsys, model_dir, text_file):
    conv = tmp_path / "conv"
    args = ["hf", "convert", "--model", str(model_dir), "--plan", "reuse", "--no-eval", "--output", str(conv)]
    assert _run(capsys, *args)[0] == 0
    before = (conv / "model.safetensors").read_bytes()
    code, _, err = _run(capsys, *args[:-4], "taylor", "--no-eval", "--output", str(conv))
    assert code == 2 and "pass --force" in err
    assert (conv / "model.safetensors").read_bytes() == before
    assert _run(capsys, *args[:-4], "taylor", "--no-eval", "--output", str(conv), "--force")[0] == 0
    assert json.loads((conv / "config.json").read_text())["attnreuse_plan"] == ["taylor"] * 4
    code, _, err = _run(capsys, "hf", "convert", "--model", str(model_dir), "--plan", "mha", "--output", str(text_file))
    assert code == 2 and "is an existing file" in err


def test_a_distill_run_directory_has_one_writer(tmp_path, capsys, model_dir, text_file):
    from attnreuse._rundir import claim_output

    conv = tmp_path / "conv"
    assert _run(capsys, "hf", "convert", "--model", str(model_dir), "--plan", "reuse", "--no-eval", "--output", str(conv))[0] == 0
    with claim_output(tmp_path / "run"):  # another command holds the directory
        code, _, err = _run(capsys, "hf", "distill", "--teacher", str(model_dir), "--init", str(conv), "--text",
                            str(text_file), "--steps", "2", "--no-progress", "--output", str(tmp_path / "run"))
    assert code == 2 and "is in use by another attnreuse command" in err
    assert [p.name for p in (tmp_path / "run").iterdir()] == [".lock"]


def test_analyze_searches_the_kinds_asked_for(tmp_path, capsys, model_dir, text_file):
    """--kinds adds SkipAt's skip (scored by output CKA with the previous layer) to the search;
    a kind no similarity scores is refused before any work."""
    for kinds, budget in (("share,reuse,taylor,kvpool", "0.67"), ("share,reuse,skip", "0.67"), ("skip", "0.9")):
        out = tmp_path / kinds
        code, _, err = _run(capsys, "hf", "analyze", "--model", str(model_dir), "--text", str(text_file), "--texts",
                            "12", "--tokens", "32", "--budget", budget, "--min-score", "0", "--kinds", kinds,
                            "--output", str(out))
        assert code == 0, err
        s = json.loads((out / "analysis.json").read_text())["suggestion"]
        assert set(s["layer_macs"]) == {"mha", *kinds.split(",")} and set(s["plan"]) <= set(s["layer_macs"])
    # skip alone: SkipAt's Phi costs more than share at this width, so only skip can meet 0.9
    assert s["plan"][0] == "mha" and "skip" in s["plan"] and s["over_budget"] is None
    for kinds in ("share,kvpool:4", "share,share", "mha"):
        code, _, err = _run(capsys, "hf", "analyze", "--model", str(model_dir), "--kinds", kinds, "--output",
                            str(tmp_path / "bad"))
        assert code == 2 and "--kinds must name each of share, reuse, skip, taylor, kvpool at most once" in err, err
        assert not (tmp_path / "bad").exists()
