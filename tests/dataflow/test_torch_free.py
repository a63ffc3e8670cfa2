"""The cost model runs where torch cannot be imported: `attnreuse.dataflow` and its cost modules are
imported with `sys.modules["torch"] = None` under a bare `attnreuse` package (its __init__, which
loads torch to register the models with timm, is not run), and one comparison is computed."""

import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

SCRIPT = f"""
import sys, types
sys.modules["torch"] = None  # `import torch` now raises ImportError
package = types.ModuleType("attnreuse")
package.__path__ = [{str(SRC / "attnreuse")!r}]
sys.modules["attnreuse"] = package
import attnreuse.dataflow as df
import attnreuse.dataflow.cli, attnreuse.dataflow.published, attnreuse.dataflow.report  # noqa: E401
results = df.compare(df.get_workload("bert-base", batch=2), df.get_hardware("flat-edge"))
assert [r.dataflow for r in results] == list(df.DATAFLOWS), results
assert all(r.time_s > 0 for r in results)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "timm", "numpy") and sys.modules[m] is not None)
assert not loaded, loaded
try:
    import torch  # noqa: F401
except ImportError:
    print("ok", len(results))
"""


def test_the_cost_model_runs_without_torch():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == ["ok", str(len(__import__("attnreuse.dataflow").dataflow.DATAFLOWS))]
