"""The modelling choices on which published FLAT numbers disagree, each a named option.

FLAT's own simulator (Kao et al., ASPLOS 2023), FuseMax's Timeloop re-model of FLAT (Nayak et al.,
MICRO 2024; artifact FPSG-UIUC/micro24-fusemax-artifact) and this library's default differ in six
places. `Assumptions` names each so that one workload can be costed under any of the three
settings (`SETTINGS`) or a mix. What each setting's values rest on is in docs/dataflow.md.

softmax: where the softmax's element-wise work runs.
    "array": a vector unit as wide as the PE array, beside it (pes x pes ops a cycle).
    "1d":    a 1D array of one row of PEs (pes lanes; FuseMax's FLAT: `StableSoftmax(PE_dim=...)`
             in src/accel/flat.py), 4 passes an element (max, subtract + exp, sum, divide).
    "free":  not charged (FuseMax's replay of FLAT's own model evaluates Logit and Attend only:
             `Flat.eval_components(validation=True)` returns before the softmax).
kv_spill: what a fused tile does when one map's K, V and full score rows do not fit together.
    "stream-kv":    K and V are re-read for every row tile; the score rows must fit, or the
                    workload keeps per-operator execution.
    "spill-scores": a fused row tile may also send the part of its scores the buffer cannot
                    hold off chip (written by Logit, read and written by the softmax, read by
                    Attend, as unfused) while the three operators still run as one pipelined
                    operator: FLAT's own mappings as FuseMax replays them (`proportion_spilled`,
                    `QK_loc` in flat_validation.csv; off chip from 8K tokens on the edge).
spill_passes: off-chip accesses per spilled score element under "spill-scores": 4 (as unfused:
    written by Logit, read and written by the softmax, read by Attend; FuseMax's re-model, whose
    cloud traffic at 256K is 4.1 score passes) or 2 (written and read once, the softmax's own
    traffic not charged: FLAT's own model, whose cloud traffic at 256K is 2.1 passes).
double_buffer: double-buffered I/O tiles count twice in the footprint (True) or once (False).
pe_utilisation: "output-tile" (a matmul keeps busy only the PEs its output tile fills: FLAT's
    replayed latencies on the 256 x 256 cloud array are 2.5x their ideal for 64-wide heads, which
    is Logit at full and Attend at a quarter) or "full" (every MAC at the array's peak rate: the
    `ideal_latency` column of the replay).
baseline_scores: the per-operator baseline's scores: "spill" (always off chip between operators:
    FuseMax's unfused baseline) or "keep-if-fits" (a map's N x N scores stay on chip between the
    operators when they fit the buffer: the best a searched per-operator schedule can do).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from attnreuse.dataflow.hardware import Hardware

__all__ = ["CHOICES", "DEFAULT", "SETTINGS", "Assumptions", "default_for", "get_setting"]

CHOICES = {
    "softmax": ("array", "1d", "free"),
    "kv_spill": ("stream-kv", "spill-scores"),
    "spill_passes": (4, 2),
    "double_buffer": (True, False),
    "pe_utilisation": ("output-tile", "full"),
    "baseline_scores": ("spill", "keep-if-fits"),
}


@dataclass(frozen=True)
class Assumptions:
    """One setting of the disputed modelling choices (see the module docstring)."""

    softmax: str = "array"
    kv_spill: str = "stream-kv"
    spill_passes: int = 4
    double_buffer: bool = True
    pe_utilisation: str = "output-tile"
    baseline_scores: str = "spill"

    def __post_init__(self) -> None:
        for field, allowed in CHOICES.items():
            value = getattr(self, field)
            if value not in allowed or type(value) is not type(allowed[0]):
                raise ValueError(f"{field} must be one of {allowed}, got {value!r}")

    def hardware(self, hw: Hardware) -> Hardware:
        """`hw` with the softmax unit and PE utilisation these assumptions describe."""
        changes: dict = {}
        if self.softmax == "1d":
            if not hw.pe_rows:
                raise ValueError(f"softmax='1d' needs a PE array shape; {hw.name} has pe_rows=0")
            changes["vector_ops_per_cycle"] = float(hw.pe_cols)
        elif self.softmax == "free":
            changes["vector_ops_per_cycle"] = float("inf")
        if self.pe_utilisation == "full":
            changes.update(pe_rows=0, pe_cols=0)
        return dataclasses.replace(hw, **changes) if changes else hw

    def differences(self, other: Assumptions) -> list[str]:
        """Names of the fields where `other` differs from this setting."""
        return [f for f in CHOICES if getattr(self, f) != getattr(other, f)]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


DEFAULT = Assumptions()
SETTINGS = {
    "attnreuse": DEFAULT,
    "flat-paper": Assumptions(softmax="free", kv_spill="spill-scores", spill_passes=2, double_buffer=False),
    "fusemax": Assumptions(softmax="1d", kv_spill="spill-scores", double_buffer=True),
}


def get_setting(name: str) -> Assumptions:
    if name not in SETTINGS:
        raise ValueError(f"unknown assumption setting {name!r}; choose one of: {', '.join(SETTINGS)}")
    return SETTINGS[name]


def default_for(hw: Hardware) -> Assumptions:
    """The setting a cost on `hw` uses unless told otherwise.

    An accelerator with a PE array (FLAT's edge and cloud presets) gets "fusemax": FuseMax's
    re-model is the one published, independent model of FLAT on that hardware, and under it this
    model lands within 16% of all 72 of FuseMax's cloud points and within 12% of FLAT's abstract
    (`attnreuse dataflow --paper`); "attnreuse" misses them by -69% to +109%. A machine without a
    PE array shape (a CPU, a GPU preset) has no 1-D softmax unit to model, so it gets "attnreuse",
    whose softmax runs on the machine's vector units. docs/dataflow.md has the comparison.
    """
    return SETTINGS["fusemax"] if hw.pe_rows else DEFAULT
