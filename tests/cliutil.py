"""The command-line helpers the tests share: `fails`, the check every user-mistake test makes (the
command exits with `rc`, and stderr is one line, no traceback, holding each of `needles`), and
`run`, one command's (exit code, stdout, stderr); `has_one_writer`, the check of a command's
--output directory."""

from attnreuse import cli


def fails(capsys, argv, *needles, rc=2) -> str:
    assert cli.main(argv) == rc
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def run(capsys, *argv) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `attnreuse *argv`; what was printed before it is dropped."""
    capsys.readouterr()
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def has_one_writer(capsys, argv, tmp_path) -> None:
    """`attnreuse *argv --output DIR` is refused while another command holds DIR (and leaves only the
    lock file there), and refused with a named --output when DIR is an existing file."""
    from attnreuse._rundir import claim_output

    out = tmp_path / "held"
    with claim_output(out, resume=True):
        fails(capsys, [*argv, "--output", str(out)], f"--output {out} is in use by another attnreuse command")
    assert sorted(p.name for p in out.iterdir()) == [".lock"]
    (tmp_path / "file").write_text("x")
    fails(capsys, [*argv, "--output", str(tmp_path / "file")], f"--output {tmp_path / 'file'} is an existing file")
