"""The FLAT accelerator cost model: analytic, pure Python (no torch at import).

Hardware presets (`hardware`), workloads (`workload`), dataflows and their costs (`cost`), and a
check against this CPU (`validate`, which imports torch when it runs). Three modules touch torch,
inside their functions only: `validate` and `_calibrate` measure this CPU, `from_model` reads a
built timm model; the import-linter contract "dataflow needs no torch" (pyproject.toml) keeps
every other import inside `dataflow` (and `attnreuse._io`, which is plain Python).
"""

from attnreuse.dataflow.cost import DATAFLOWS, Result, compare, evaluate
from attnreuse.dataflow.hardware import HARDWARE, Hardware, calibrate_cpu, get_hardware
from attnreuse.dataflow.from_model import from_timm
from attnreuse.dataflow.workload import MODELS, Workload, attention_layer, get_workload

__all__ = [
    "DATAFLOWS",
    "HARDWARE",
    "MODELS",
    "Hardware",
    "Result",
    "Workload",
    "attention_layer",
    "calibrate_cpu",
    "compare",
    "evaluate",
    "from_timm",
    "get_hardware",
    "get_workload",
]
