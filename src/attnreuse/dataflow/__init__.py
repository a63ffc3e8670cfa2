"""The FLAT accelerator cost model: analytic, pure Python (no torch at import).

Hardware presets (`hardware`), workloads (`workload`), dataflows and their costs (`cost`), and a
check against this CPU (`validate`, which imports torch when it runs).
"""

from attnreuse.dataflow.cost import DATAFLOWS, Result, compare, evaluate
from attnreuse.dataflow.hardware import HARDWARE, Hardware, calibrate_cpu, get_hardware
from attnreuse.dataflow.workload import MODELS, Workload, attention_layer, from_timm, get_workload

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
