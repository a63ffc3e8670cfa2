"""`bench ops` and `bench models` keep an earlier result file unless `--force`, as `export`, `bench
study` and `hf eval` do, and find an output they cannot write before any timing."""

from __future__ import annotations

import pytest

from attnreuse import cli
from cliutil import fails

PICO = "vit_attnreuse_pico_patch4_32"
OPS = ["bench", "ops", "--quick", "--ops", "sdpa_mha", "--shapes", "vit", "--tokens", "16", "--batch", "1"]
MODELS = ["bench", "models", PICO, "--img-size", "32", "--runtimes", "eager", "--quick", "--no-baselines"]


@pytest.fixture
def no_timing(monkeypatch):
    """The sweeps replaced by a record of their calls (returning no records)."""
    ran = []
    monkeypatch.setattr("attnreuse.bench.ops.run_bench", lambda config, **k: ran.append(config) or [])
    monkeypatch.setattr("attnreuse.bench.models.run_models", lambda config, **k: ran.append(config) or [])
    return ran


@pytest.mark.parametrize("argv, flag, name", [
    (OPS, "--json", "r.json"), (OPS, "--csv", "r.csv"), (OPS, "--plot", "r.png"),
    (MODELS, "--json", "r.json"), (MODELS, "--csv", "r.csv"),
])
def test_an_existing_output_is_kept_unless_forced(capsys, tmp_path, no_timing, argv, flag, name):
    # bench ops/models --json r.json silently replaced the records of an earlier run
    out = tmp_path / name
    out.write_text("earlier")
    fails(capsys, [*argv, flag, str(out)], f"{flag} {out} exists; pass --force to replace it")
    assert no_timing == [] and out.read_text() == "earlier"
    assert cli.main([*argv, flag, str(out), "--force"]) == 0 and len(no_timing) == 1


@pytest.mark.parametrize("argv", [OPS, MODELS])
def test_the_config_written_beside_the_records_is_kept_too(capsys, tmp_path, no_timing, argv):
    (tmp_path / "r.config.json").write_text("{}")
    out = tmp_path / "r.json"
    fails(capsys, [*argv, "--json", str(out)], f"--json {out}: {tmp_path / 'r.config.json'} already exist", "--force")
    assert no_timing == [] and not out.exists()


@pytest.mark.parametrize("argv", [OPS, MODELS])
def test_an_output_under_a_file_is_named_before_the_timing(capsys, tmp_path, no_timing, argv):
    # the sweep ran, then the write failed with "[Errno 17] File exists: 'a'" (no flag named)
    (tmp_path / "a").write_text("a file")
    out = tmp_path / "a" / "r.json"
    fails(capsys, [*argv, "--json", str(out)], f"--json {out}: cannot create it", "is a file")
    assert no_timing == []


def test_a_forced_ops_run_replaces_its_files(capsys, tmp_path, no_timing):
    out = tmp_path / "r.json"
    assert cli.main([*OPS, "--json", str(out)]) == 0
    assert out.read_text().strip() == "[]" and (tmp_path / "r.config.json").is_file()
    fails(capsys, [*OPS, "--json", str(out)], "--force")
    out.write_text("earlier")
    assert cli.main([*OPS, "--json", str(out), "--force"]) == 0 and out.read_text().strip() == "[]"
