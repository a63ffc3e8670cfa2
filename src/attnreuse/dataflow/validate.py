"""Check the cost model against this CPU: predicted vs measured time ratios for
per-head vs shared-map attention and for dense vs row-tiled execution (`attnreuse.ops`).

The model sees the CPU as a `this-cpu` Hardware (calibrated just before the runs): "dense" is the
model's baseline (scores [B, Hq, N, N] materialised, spilled past the last-level cache when
larger), "tiled" is its FLAT dataflow (best tile). Only ratios are compared: absolute times depend
on kernel efficiencies the roofline does not model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from attnreuse.dataflow.cost import evaluate
from attnreuse.dataflow.hardware import Hardware
from attnreuse.dataflow.workload import attention_layer

__all__ = ["ValidateConfig", "predicted_ratios", "validate", "validation_table"]

TOLERANCE = 0.25
MODEL_DATAFLOW = {"dense": "baseline", "tiled": "flat"}


@dataclass(frozen=True)
class ValidateConfig:
    """Shapes q: [batch, Hq, N, head_dim], v: [batch, heads, N, head_dim], Hq in (heads, 1)."""

    seq_lens: tuple[int, ...] = (512, 2048)
    heads: int = 8
    head_dim: int = 32
    batch: int = 1
    threads: int = 1
    min_time_s: float = 0.1
    rounds: int = 5

    def __post_init__(self) -> None:
        if not self.seq_lens or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in self.seq_lens):
            raise ValueError(f"seq_lens must be positive ints, got {self.seq_lens!r}")
        for field in ("heads", "head_dim", "batch", "threads", "rounds"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{field} must be a positive int, got {value!r}")
        if not self.min_time_s > 0:
            raise ValueError(f"min_time_s must be positive, got {self.min_time_s!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _model_time_s(cfg: ValidateConfig, hw: Hardware, n: int, backend: str, shared: bool) -> float:
    w = attention_layer(
        batch=cfg.batch, heads=cfg.heads, seq_len=n, dk=cfg.head_dim, map_sharing=cfg.heads if shared else 1
    )
    return evaluate(w, hw, MODEL_DATAFLOW[backend]).time_s


def _cases(times: dict) -> list[tuple[str, float, float]]:
    """(case name, numerator key, denominator key) of the compared ratios."""
    return [
        ("per-head/shared (tiled)", times[("tiled", False)], times[("tiled", True)]),
        ("per-head/shared (dense)", times[("dense", False)], times[("dense", True)]),
        ("dense/tiled (per-head)", times[("dense", False)], times[("tiled", False)]),
        ("dense/tiled (shared)", times[("dense", True)], times[("tiled", True)]),
    ]


def predicted_ratios(cfg: ValidateConfig, hw: Hardware, n: int) -> dict[str, float]:
    """The model's ratios for sequence length `n` (no measurement)."""
    times = {(b, s): _model_time_s(cfg, hw, n, b, s) for b in MODEL_DATAFLOW for s in (False, True)}
    return {name: a / b for name, a, b in _cases(times)}


def _measure(cfg: ValidateConfig, n: int) -> dict[tuple[str, bool], float]:
    """Fastest seconds per (backend, shared) over `rounds` rounds that time the four variants in
    turn: on a shared machine the minimum is the most repeatable estimate of the unloaded time,
    and interleaving makes a change of load hit all variants alike."""
    import torch

    from attnreuse import ops
    from attnreuse.measure import measure_latency

    samples: dict[tuple[str, bool], list[float]] = {}
    v = torch.randn(cfg.batch, cfg.heads, n, cfg.head_dim)
    for _ in range(cfg.rounds):
        for backend in MODEL_DATAFLOW:
            for shared in (False, True):
                hq = 1 if shared else cfg.heads
                q = torch.randn(cfg.batch, hq, n, cfg.head_dim)
                k = torch.randn(cfg.batch, hq, n, cfg.head_dim)
                with torch.inference_mode(), ops.use_backend(backend):
                    stats = measure_latency(
                        lambda: ops.softmax_attention(q, k, v), warmup=1, repeats=3, min_time_s=cfg.min_time_s
                    )
                samples.setdefault((backend, shared), []).append(stats.latency_ms_min / 1e3)
    return {key: min(ts) for key, ts in samples.items()}


def validate(cfg: ValidateConfig, hw: Hardware | None = None) -> list[dict]:
    """Measure every (backend, Hq) on this CPU and set the ratios beside the model's.

    `hw` defaults to a fresh calibration with `cfg.threads` threads. Records: case, seq_len,
    measured_ratio, predicted_ratio, rel_diff (predicted / measured - 1), within_tolerance.
    """
    import torch

    from attnreuse.measure import machine_record, set_threads
    from attnreuse.dataflow.hardware import calibrate_cpu

    previous = torch.get_num_threads()
    set_threads(cfg.threads)
    try:
        hw = hw or calibrate_cpu(threads=cfg.threads)
        records = []
        for n in cfg.seq_lens:
            measured = _measure(cfg, n)
            predicted = predicted_ratios(cfg, hw, n)
            for name, a, b in _cases(measured):
                ratio = a / b
                rel = predicted[name] / ratio - 1
                records.append(
                    {
                        "case": name,
                        "seq_len": n,
                        "measured_ratio": ratio,
                        "predicted_ratio": predicted[name],
                        "rel_diff": rel,
                        "within_tolerance": abs(rel) <= TOLERANCE,
                        "measured_s": {f"{b}/{'shared' if s else 'per-head'}": t for (b, s), t in measured.items()},
                        "hardware": hw.to_dict(),
                        "machine": machine_record(threads=cfg.threads, dtype="float32"),
                    }
                )
    finally:
        torch.set_num_threads(previous)
    return records


def validation_table(records: list[dict]) -> list[str]:
    """`validate`'s records as markdown lines: case, N, measured and predicted ratios, their difference."""
    lines = ["| case | N | measured | model | difference |", "|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['case']} | {r['seq_len']} | {r['measured_ratio']:.2f}x | {r['predicted_ratio']:.2f}x | "
                     f"{100 * r['rel_diff']:+.0f}% |")
    return lines
