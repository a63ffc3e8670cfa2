"""The command-line helpers the tests share: `fails`, the check every user-mistake test makes (the
command exits with `rc`, and stderr is one line, no traceback, holding each of `needles`), and
`run`, one command's (exit code, stdout, stderr)."""

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
