"""User mistakes around `attnreuse demo`'s output directory and --update-readme: one line on
stderr naming the argument, exit 2, before any stage runs."""

from __future__ import annotations

from cliutil import fails, has_one_writer

QUICK = ["demo", "--quick", "--no-progress", "--stages", "ops"]


def test_a_demo_directory_has_one_writer(capsys, tmp_path):
    """Two demos on one directory ran their stages over each other; an --output that is a file was
    '[Errno 17] File exists'."""
    has_one_writer(capsys, QUICK, tmp_path)


def test_update_readme_is_checked_before_the_run(capsys, tmp_path):
    """A README path that did not exist was '[Errno 2] No such file or directory' after every stage had run."""
    out = tmp_path / "demo"
    fails(capsys, [*QUICK, "--output", str(out), "--update-readme", str(tmp_path / "nope.md")],
          f"--update-readme {tmp_path / 'nope.md'}: no such file")
    plain = tmp_path / "plain.md"
    plain.write_text("# no measured block\n")
    fails(capsys, [*QUICK, "--output", str(out), "--update-readme", str(plain)],
          f"--update-readme: {plain} has no '<!-- measured:begin RECORDS.json -->'")
    assert not out.exists()


def test_a_minilm_plan_that_does_not_fit_is_refused_before_the_run(capsys, tmp_path, monkeypatch):
    """It failed the MiniLM stage after the stage had analysed the maps (minutes on the real model)."""
    import json

    import attnreuse.hf.source

    model = tmp_path / "minilm"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"num_hidden_layers": 6, "num_attention_heads": 12}))
    monkeypatch.setattr(attnreuse.hf.source, "minilm_path", lambda: model)
    out = tmp_path / "demo"
    argv = ["demo", "--quick", "--no-progress", "--stages", "minilm", "--output", str(out)]
    fails(capsys, [*argv, "--minilm-plan", "mha,mha"], "--minilm-plan 'mha,mha': plan has 2 entries but all-MiniLM-L6-v2 has 6 layers")
    fails(capsys, [*argv, "--minilm-plan", "mha,flash,mha,mha,mha,mha"], "--minilm-plan", "'flash' is not a known kind")
    assert not out.exists()
