"""The import-linter contract in pyproject.toml ([tool.importlinter]) holds for the package, and
breaks on a tool-to-tool import or an import that climbs the layers, also inside a function.

Each case lints a temporary copy of src/attnreuse with the project's own contract, so what this
shows is what `lint-imports` in .ci/run enforces."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def _lint(tmp_path: Path, bad: tuple[str, str] | None = None) -> subprocess.CompletedProcess:
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "attnreuse", src / "attnreuse", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    if bad is not None:
        module, target = bad
        path = src / Path(*module.split(".")).with_suffix(".py")
        path.write_text(path.read_text() + f"\n\ndef _bad():\n    import {target}  # noqa: F401\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(src)}
    return subprocess.run(
        [sys.executable, "-c", LINT, "--config", str(tmp_path / "pyproject.toml"), "--no-cache"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )


def test_the_package_keeps_its_layers(tmp_path):
    result = _lint(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def test_the_dataflow_contract_forbids_every_other_attnreuse_module():
    """A new top-level module must be added to the contract's forbidden_modules (or to this list)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: import-linter's own dependency
        import tomli as tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["type"] == "forbidden"]
    assert contract["source_modules"] == ["attnreuse.dataflow"]
    allowed = {"dataflow", "_io"}  # _io: plain Python (atomic writes), used to write the reports
    tops = {p.stem for p in (ROOT / "src" / "attnreuse").iterdir() if not p.name.startswith("__") and
            (p.suffix == ".py" or (p / "__init__.py").is_file())}
    forbidden = {m.removeprefix("attnreuse.") for m in contract["forbidden_modules"] if m.startswith("attnreuse.")}
    assert forbidden == tops - allowed
    assert {"torch", "timm"} <= set(contract["forbidden_modules"])


@pytest.mark.parametrize(
    "module, target, broken",
    [
        ("attnreuse.bench.weights", "attnreuse.export.pipeline", "tools side by side"),  # tool -> tool
        ("attnreuse.models.uniform", "attnreuse.train.loop", "one-way layers"),  # core -> tool
        ("attnreuse.measure", "attnreuse.bench.report", "one-way layers"),  # floor -> tool
        ("attnreuse.dataflow.cost", "torch", "dataflow needs no torch"),  # the cost model -> torch
        ("attnreuse.dataflow.workload", "attnreuse.models", "dataflow needs no torch"),  # -> the rest
    ],
)
def test_a_bad_import_inside_a_function_breaks_the_contract(tmp_path, module, target, broken):
    result = _lint(tmp_path, (module, target))
    assert result.returncode == 1, result.stdout + result.stderr
    out = " ".join(result.stdout.split())  # import-linter wraps long lines
    assert f"{broken}" in out and "BROKEN" in out, out
    assert f"{module} -> {target}" in out, out
