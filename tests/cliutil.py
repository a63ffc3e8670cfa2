"""The check every user-mistake test makes: the command exits with `rc`, and stderr is one line,
no traceback, holding each of `needles`."""

from attnreuse import cli


def fails(capsys, argv, *needles, rc=2) -> str:
    assert cli.main(argv) == rc
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err
