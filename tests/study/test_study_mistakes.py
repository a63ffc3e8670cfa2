"""User mistakes around `attnreuse study`'s output directory and a run of it that fails: one line
on stderr, a non-zero exit (found by running two studies on one directory)."""

from __future__ import annotations

from cliutil import has_one_writer, run

QUICK = ["study", "--quick", "--rows", "vit-mha", "--seeds", "0", "--retrofits", "share", "--jobs", "1"]


def test_a_study_directory_has_one_writer(capsys, tmp_path):
    """A second study on the same directory removed and redid the first one's runs under it and
    ended in a RuntimeError traceback when their train commands met."""
    has_one_writer(capsys, QUICK, tmp_path)


def test_a_failed_run_is_its_error_line_not_a_traceback(capsys, tmp_path, monkeypatch):
    from attnreuse.study import run as study_run

    def failing_train(argv, stdout, stderr):
        stdout.write("attnreuse train: error: the disk is full\n")
        return 2

    monkeypatch.setattr(study_run.subprocess, "call", failing_train)
    out = tmp_path / "study"
    log = out / "train" / "vit-mha-s0" / "log.txt"
    code, _, err = run(capsys, *QUICK, "--output", str(out))
    assert code == 1 and "Traceback" not in err, err
    # the study's progress lines, then the failure in one line
    assert err.strip().splitlines()[-1] == ("attnreuse study: error: vit-mha seed 0 failed (exit 2): attnreuse train: "
                                            f"error: the disk is full (its log: {log})"), err


def test_a_failed_study_leaves_the_last_reports_config(capsys, tmp_path, monkeypatch):
    """study_config.json was rewritten as a study started, so one that failed left the new
    configuration beside the previous study's report.md."""
    import json

    from attnreuse.study import run as study_run

    out = tmp_path / "study"
    out.mkdir()
    (out / "report.md").write_text("the earlier report\n")
    (out / "study_config.json").write_text('{"seeds": [1]}')
    monkeypatch.setattr(study_run.subprocess, "call", lambda argv, stdout, stderr: 2)
    assert run(capsys, *QUICK, "--output", str(out))[0] == 1
    assert json.loads((out / "study_config.json").read_text()) == {"seeds": [1]}
