"""`attnreuse bench ops`: the attention operators against PyTorch's fused SDPA on this machine.

A sweep over operators x sequence length N x batch x widths: warm-up, a fixed thread count, median
and p90 latency, peak extra memory of one call, effective GFLOP/s and its fraction of this
machine's measured matrix-multiply peak. The operators of one (batch, N) are timed in `--rounds`
interleaved rounds (`measure.measure_interleaved`) together with a square matrix multiply of
`matmul_size`, so each speed-up over SDPA and each fraction of the matmul peak is also a ratio of
blocks timed side by side, paired round by round (median and range over rounds): a slow spell of
the machine moves both sides of such a ratio, not one cell of the table. Widths (C = 256 channels, 8 value heads of 32):
  vit      multi-head ops: 8 query/key heads of 32; Reuse Attention: 1 query/key head of 32
  uniform  Reuse Attention as UniForm: 1 query/key head of C/4 = 64, values all 256 channels
The baseline is `torch.nn.functional.scaled_dot_product_attention` with a map per head, in the same
dtype (`--dtype bfloat16` times every operator and SDPA on bf16 tensors). Every record says whether
this CPU has native units for the dtype (`dtype_execution`: "native" or "emulated",
`attnreuse.cpu_units`); the table's last line says it too, so an emulated bf16 figure is never
mistaken for what bf16 units would do.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from attnreuse import _cli_args
from attnreuse._cli_args import add_config_args, arg

__all__ = ["OPS", "QUICK", "SHAPES", "OpsBenchConfig", "dtype_label", "format_table", "group_speedup", "plot",
           "register", "run_bench", "sharing_lines", "sharing_rows"]

# op -> which widths of a shape it runs on ("mha": one map per head, "reuse": one shared map)
OPS = {
    "sdpa_mha": "mha",  # baseline: PyTorch's fused kernel, a map per head
    "dense_mha": "mha",  # the whole [B, H, N, N] map materialised (the unfused baseline)
    "flat_mha": "mha",  # attnreuse's FLAT row-tiled kernel with a map per head
    "reuse": "reuse",  # Reuse Attention: one map for all value heads, FLAT tiles
    "sdpa_reuse": "reuse",  # Reuse Attention through PyTorch's fused kernel: the value heads as one wide head
    "taylor": "mha",  # ViTALiTy linear Taylor attention
    "linear_elu": "mha",  # Katharopoulos et al. elu + 1 linear attention
    "linear_relu": "mha",  # EfficientViT ReLU linear attention
    # map sharing across layers, one layer at a time: a group's first layer and each later one
    "map_mha": "mha",  # exact attention that also writes its map [B, H, N, N], in FLAT tiles
    "native_mha": "mha",  # the same, by the native kernel (float32; `auto`'s writer on the CPU)
    "apply_mha": "mha",  # A.V with a map given (ops.apply_map): a later layer of the group
}
# shape -> widths (qk_heads, v_heads, qk_dim, v_dim) per kind
SHAPES = {
    "vit": {"mha": (8, 8, 32, 32), "reuse": (1, 8, 32, 32)},
    "uniform": {"mha": (8, 8, 32, 32), "reuse": (1, 8, 64, 32)},
    "whisper": {"mha": (8, 8, 64, 64), "reuse": (1, 8, 64, 64)},  # whisper-base's encoder: 8 heads of 64
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
BASELINE = "sdpa_mha"


@dataclass(frozen=True)
class OpsBenchConfig:
    """One sweep; each field with a flag is also one of `attnreuse bench ops`. Cases with batch *
    tokens > max_batch_tokens are skipped (their time would dominate the run), and so are
    materialised maps larger than max_dense_bytes."""

    ops: tuple[str, ...] = arg(("sdpa_mha", "dense_mha", "flat_mha", "reuse", "taylor", "linear_elu"),
                               "operators", nargs="+", choices=tuple(sorted(OPS)))
    shapes: tuple[str, ...] = arg(("vit", "uniform"), "widths", nargs="+", choices=tuple(sorted(SHAPES)))
    tokens: tuple[int, ...] = arg((196, 1024, 4096, 16384), "sequence lengths N", nargs="+")
    batch: tuple[int, ...] = arg((1, 32), "batch sizes", nargs="+")
    threads: int = arg(2, "intra-op threads")
    dtype: str = arg("float32", "dtype of every operator and of SDPA; records say whether this CPU runs it on "
                     "native units or emulates it", choices=tuple(sorted(DTYPES)))
    warmup: int = arg(1, "untimed calls per case", cli=False)
    repeats: int = arg(5, "timed samples at least (`measure.measure_latency`: a sample of a fast op is a "
                      "block of calls), spread over the rounds")
    rounds: int = arg(3, "interleaved rounds per (batch, N): the operators and the matmul peak timed in turn, "
                      "ratios paired round by round")
    min_time_s: float = arg(0.5, "keep timing a case until this much time has passed", cli=False)
    max_batch_tokens: int = arg(32 * 1024, "skip cases with more batch x tokens", cli=False)
    max_dense_bytes: int = arg(4 << 30, "skip dense_mha cases whose maps need more bytes", cli=False)
    matmul_size: int = arg(2048, "side of the square matmul that measures this machine's peak", cli=False)
    json: str | None = arg(None, "write one record per case as JSON", metavar="FILE")
    csv: str | None = arg(None, "write the records as CSV", metavar="FILE")
    plot: str | None = arg(None, "plot latency and memory against N", metavar="FILE.png")

    def __post_init__(self) -> None:
        for name, allowed in (("ops", OPS), ("shapes", SHAPES)):
            values = getattr(self, name)
            bad = [x for x in values if x not in allowed]
            if not values or bad:
                raise ValueError(f"{name} must be a non-empty list from {sorted(allowed)}, got {list(values)}")
        for name in ("tokens", "batch"):
            values = getattr(self, name)
            if not values or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in values):
                raise ValueError(f"{name} must be a non-empty list of positive ints, got {list(values)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        for name in ("threads", "repeats", "rounds", "max_batch_tokens", "max_dense_bytes", "matmul_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"warmup must be an int >= 0, got {self.warmup!r}")
        if not 0 <= self.min_time_s < math.inf:
            raise ValueError(f"min_time_s must be a finite number >= 0, got {self.min_time_s!r}")
        for name in ("json", "csv", "plot"):
            if getattr(self, name) is not None and Path(getattr(self, name)).is_dir():
                raise ValueError(f"--{name} must be a file path, got the directory {getattr(self, name)!r}")
        _cli_args.distinct_outputs(self, ("json", "csv", "plot"))
        if self.plot is not None:
            # checked here, not by savefig after the whole sweep (by then --json/--csv were written)
            from matplotlib.backend_bases import FigureCanvasBase

            kind = Path(self.plot).suffix.lstrip(".").lower() or "png"
            formats = FigureCanvasBase.get_supported_filetypes()
            if kind not in formats:
                raise ValueError(f"--plot {self.plot}: matplotlib cannot write .{kind} files; "
                                 f"end the name in one of {', '.join('.' + f for f in sorted(formats))}")


QUICK = {"tokens": (64, 196), "batch": (1, 4), "warmup": 1, "repeats": 2, "rounds": 1, "min_time_s": 0.0,
         "matmul_size": 256}


@dataclass(frozen=True)
class _Case:
    op: str
    batch: int
    tokens: int
    widths: tuple[int, int, int, int]

    def record(self) -> dict[str, Any]:
        hq, hv, dk, dv = self.widths
        return {"op": self.op, "batch": self.batch, "tokens": self.tokens, "qk_heads": hq, "v_heads": hv,
                "qk_dim": dk, "v_dim": dv}


def _cases(config: OpsBenchConfig) -> Iterator[_Case]:
    seen = set()
    for batch in config.batch:
        for tokens in config.tokens:
            for shape in config.shapes:
                for op in config.ops:
                    case = _Case(op, batch, tokens, SHAPES[shape][OPS[op]])
                    if case not in seen:
                        seen.add(case)
                        yield case


def _flops(case: _Case) -> int:
    """Multiply-add work (2 flops each) of the op's matrix products, the way each op computes."""
    hq, hv, dk, dv = case.widths
    B, N = case.batch, case.tokens
    if case.op in ("taylor", "linear_elu", "linear_relu"):
        # K^T V and Q (K^T V) per query/key head over its r = hv // hq value heads, plus Q k_sum
        return 2 * B * hq * N * dk * ((hv // hq) * dv * 2 + 1)
    if case.op == "apply_mha":
        return 2 * B * N * N * hv * dv
    return 2 * B * N * N * (hq * dk + hv * dv)


_BUDGET_NOTE = "skipped: batch x tokens"
_MAP_OPS = ("dense_mha", "map_mha", "native_mha", "apply_mha")  # the ops holding whole [B, H, N, N] maps
_WRITERS = ("map_mha", "dense_mha", "native_mha")  # of those, the ones that compute a layer's attention and write its map


def _skip_reason(case: _Case, config: OpsBenchConfig, itemsize: int) -> str | None:
    from attnreuse import ops

    if case.op == "native_mha" and config.dtype != "float32":
        return "skipped: the native kernel runs float32 only"
    if case.op == "native_mha" and not ops.native_available():
        return f"skipped: {ops.native_reason()}"
    if case.batch * case.tokens > config.max_batch_tokens:
        return f"{_BUDGET_NOTE} > max_batch_tokens={config.max_batch_tokens}"
    if case.op in _MAP_OPS:
        # dense_mha: the scores and the map (float32 at least); the sharing ops: the map itself
        copies, size = (2, max(4, itemsize)) if case.op == "dense_mha" else (1, itemsize)
        map_bytes = copies * case.batch * case.widths[0] * case.tokens**2 * size
        if map_bytes > config.max_dense_bytes:
            return f"skipped: {case.op}'s maps need {map_bytes / 2**30:.1f} GiB > max_dense_bytes"
    return None


def _callable(case: _Case, dtype: torch.dtype) -> Callable[[], torch.Tensor]:
    import torch.nn.functional as F

    from attnreuse import ops

    hq, hv, dk, dv = case.widths
    B, N = case.batch, case.tokens
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(B, hq, N, dk, generator=gen).to(dtype)
    k = torch.randn(B, hq, N, dk, generator=gen).to(dtype)
    v = torch.randn(B, hv, N, dv, generator=gen).to(dtype)

    def with_backend(name: str, return_map: bool = False) -> Callable[[], torch.Tensor]:
        def call() -> torch.Tensor:
            with ops.use_backend(name):
                return ops.softmax_attention(q, k, v, return_map=return_map)

        return call

    if case.op == "apply_mha":  # the map of these q, k, made once, outside the pooled workspace
        attn = ops.reference.attention_map(q, k)

    def sdpa_reuse() -> torch.Tensor:
        # [B, hv, N, dv] -> [B, hq, N, (hv // hq) * dv]: the value heads sharing a map side by side,
        # one wide head for SDPA (Dv != Dk), and its output back to [B, hv, N, dv]
        r = hv // hq
        vg = v.reshape(B, hq, r, N, dv).transpose(2, 3).reshape(B, hq, N, r * dv)
        out = F.scaled_dot_product_attention(q, k, vg)
        return out.reshape(B, hq, N, r, dv).transpose(2, 3).reshape(B, hv, N, dv)

    return {
        "sdpa_mha": lambda: F.scaled_dot_product_attention(q, k, v),
        "sdpa_reuse": sdpa_reuse,
        "dense_mha": with_backend("dense"),
        "flat_mha": with_backend("tiled"),
        "reuse": with_backend("auto"),
        "map_mha": with_backend("tiled", return_map=True),
        "native_mha": with_backend("native", return_map=True),
        "apply_mha": lambda: ops.apply_map(attn, v),
        "taylor": lambda: ops.taylor_attention(q, k, v),
        "linear_elu": lambda: ops.linear_attention(q, k, v, feature_map="elu"),
        "linear_relu": lambda: ops.linear_attention(q, k, v, feature_map="relu"),
    }[case.op]


def _groups(config: OpsBenchConfig) -> Iterator[list[_Case]]:
    """The cases of `config` in sweep order, one list per (batch, tokens): the cases timed together."""
    group: list[_Case] = []
    for case in _cases(config):
        if group and (group[0].batch, group[0].tokens) != (case.batch, case.tokens):
            yield group
            group = []
        group.append(case)
    if group:
        yield group


_PEAK = "matmul peak"  # the key of the matmul in each group's interleaved calls


def _time_group(cases: list[_Case], config: OpsBenchConfig, dtype: torch.dtype) -> dict[_Case, dict[str, Any]]:
    """Time the runnable `cases` of one (batch, N) in interleaved rounds beside the matmul peak:
    {case: timing fields of its record}. An operator that raises stops the sweep, as it would
    outside the rounds."""
    from attnreuse.measure import matmul_call, measure_interleaved, measure_peak_bytes, paired_ratio

    calls: dict[Any, Callable[[], Any]] = {case: _callable(case, dtype) for case in cases}
    calls[_PEAK] = matmul_call(config.matmul_size, dtype)
    medians: dict[Any, list[float]] = {}
    with torch.inference_mode():
        stats = measure_interleaved(calls, rounds=config.rounds, warmup=config.warmup, repeats=config.repeats,
                                    min_time_s=config.min_time_s, round_medians_ms=medians)
    for result in stats.values():
        if isinstance(result, Exception):
            raise result
    peak_flops = 2.0 * config.matmul_size**3
    base = next((c for c in cases if c.op == BASELINE), None)
    fields = {}
    for case in cases:
        ms, flops = stats[case].latency_ms_median, _flops(case)
        gflops = flops / ms / 1e6
        # per round: (this op's GFLOP/s) / (the matmul's GFLOP/s) = flops * t_matmul / (peak flops * t_op)
        frac, frac_lo, frac_hi = paired_ratio([flops * t for t in medians[_PEAK]],
                                              [peak_flops * t for t in medians[case]])
        with torch.inference_mode():
            peak_bytes = measure_peak_bytes(calls[case])
        fields[case] = dict(
            latency_ms_median=round(ms, 4), latency_ms_p90=round(stats[case].latency_ms_p90, 4),
            repeats=stats[case].repeats, rounds=config.rounds,
            latency_ms_round_medians=[round(t, 6) for t in medians[case]],  # to the ns: a fast op's rounds are us
            peak_bytes=peak_bytes, gflops_per_s=round(gflops, 3),
            fraction_of_matmul_peak_paired=round(frac, 4),
            fraction_of_matmul_peak_paired_range=[round(frac_lo, 4), round(frac_hi, 4)],
        )  # fmt: skip
        if base is not None:
            speedup, low, high = paired_ratio(medians[base], medians[case])
            fields[case].update(speedup_vs_sdpa_mha_paired=round(speedup, 3),
                                speedup_vs_sdpa_mha_paired_range=[round(low, 3), round(high, 3)])
    return fields


def run_bench(config: OpsBenchConfig, progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Measure every case of `config` (inference, no autograd); one record per case, skipped
    cases included with a `note`. Each record carries the `machine` it was measured on and the
    `config` of the sweep (`OpsBenchConfig` as a dict).

    Two ratios per record: `speedup_vs_sdpa_mha` and `fraction_of_matmul_peak` compare pooled
    medians (the peak: the best sample of a matmul timed once before the sweep), and their
    `_paired` forms take the median over rounds of the ratio of blocks timed side by side (ranges
    in `_paired_range`)."""
    from attnreuse.cpu_units import dtype_support
    from attnreuse.measure import machine_record, matmul_peak_gflops, set_threads

    dtype = DTYPES[config.dtype]
    support = dtype_support(config.dtype)
    previous = torch.get_num_threads()
    threads = set_threads(config.threads)
    try:
        peak_gflops = matmul_peak_gflops(threads, dtype, size=config.matmul_size)
        machine = machine_record(threads=threads, dtype=config.dtype, dtype_execution=support["execution"],
                                 dtype_units=support["units"], matmul_peak_gflops=round(peak_gflops, 2))
        settings = dataclasses.asdict(config)
        itemsize = torch.finfo(dtype).bits // 8
        records = []
        for group in _groups(config):
            skipped = {case: reason for case in group if (reason := _skip_reason(case, config, itemsize)) is not None}
            runnable = [case for case in group if case not in skipped]
            timed = _time_group(runnable, config, dtype) if runnable else {}
            base_ms = next((timed[c]["latency_ms_median"] for c in runnable if c.op == BASELINE), None)
            for case in group:
                record = {**case.record(), "dtype": config.dtype, "dtype_execution": support["execution"],
                          "threads": threads}
                if case in timed:
                    record.update(timed[case], note="")
                    gflops = record["gflops_per_s"]
                    record["fraction_of_matmul_peak"] = round(gflops / peak_gflops, 4)
                    ms = record["latency_ms_median"]
                    record["speedup_vs_sdpa_mha"] = round(base_ms / ms, 3) if base_ms else None
                else:
                    record.update(latency_ms_median=None, latency_ms_p90=None, repeats=0, peak_bytes=None,
                                  gflops_per_s=None, fraction_of_matmul_peak=None, speedup_vs_sdpa_mha=None,
                                  note=skipped[case])
                record["machine"] = machine
                record["config"] = settings
                records.append(record)
                if progress is not None:
                    progress(_row(record))
        return records
    finally:
        torch.set_num_threads(previous)


_COLUMNS = ("op", "widths", "batch", "tokens", "median_ms", "p90_ms", "peak_MiB", "GFLOP/s", "%peak", "%peak_p",
            "vs_sdpa", "vs_sdpa_p")
_WIDTHS = (11, 12, 5, 6, 10, 10, 9, 8, 5, 7, 7, 9)


def _row(record: dict[str, Any]) -> str:
    def num(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    widths = f"{record['qk_heads']}x{record['qk_dim']}/{record['v_heads']}x{record['v_dim']}"
    peak = record["peak_bytes"]
    frac, frac_p = record["fraction_of_matmul_peak"], record.get("fraction_of_matmul_peak_paired")
    cells = (
        record["op"], widths, str(record["batch"]), str(record["tokens"]),
        num(record["latency_ms_median"], ".3f"), num(record["latency_ms_p90"], ".3f"),
        num(None if peak is None else peak / 2**20, ".1f"), num(record["gflops_per_s"], ".1f"),
        num(None if frac is None else 100 * frac, ".0f"), num(None if frac_p is None else 100 * frac_p, ".0f"),
        num(record.get("speedup_vs_sdpa_mha"), ".2f"), num(record.get("speedup_vs_sdpa_mha_paired"), ".2f"),
    )
    line = "  ".join(f"{c:>{w}}" for c, w in zip(cells, _WIDTHS))
    return f"{line}  {record['note']}".rstrip()


def format_table(records: list[dict[str, Any]]) -> str:
    """A fixed-width table, one row per record (widths are qk_heads x qk_dim / v_heads x v_dim)."""
    header = "  ".join(f"{c:>{w}}" for c, w in zip(_COLUMNS, _WIDTHS))
    lines = [header, "-" * len(header)]
    budget_skips = set()
    for r in records:
        if not r["note"].startswith(_BUDGET_NOTE):
            lines.append(_row(r))
        elif (r["batch"], r["tokens"]) not in budget_skips:
            budget_skips.add((r["batch"], r["tokens"]))
            lines.append(f"{'(all ops)':>11}  {'':>12}  {r['batch']:>5}  {r['tokens']:>6}  {r['note']}")
    lines += sharing_lines(records)
    if records:
        rounds = (records[0].get("config") or {}).get("rounds", 1)
        lines.append(
            f"%peak, vs_sdpa: pooled medians (peak: the best matmul sample before the sweep); %peak_p, vs_sdpa_p: "
            f"median over {rounds} interleaved round(s) of ratios paired round by round"
        )
        m = records[0]["machine"]
        lines.append(
            f"{m['cpu']}, {m['threads']} threads, {dtype_label(m)}, torch {m['torch']}, "
            f"matmul peak {m['matmul_peak_gflops']} GFLOP/s"
        )
    return "\n".join(lines)


def group_speedup(sdpa_ms: list[float], map_ms: list[float], apply_ms: list[float], group: int) -> float:
    """What map sharing can gain on attention alone: a group of `group` layers (one writes the map,
    the others apply it) against as many SDPA layers, G t_sdpa / (t_map + (G - 1) t_apply), per
    round of times taken side by side; the median over rounds."""
    ratios = [group * s / (m + (group - 1) * a) for s, m, a in zip(sdpa_ms, map_ms, apply_ms, strict=True)]
    return statistics.median(ratios)


def sharing_rows(records: list[dict[str, Any]], groups: tuple[int, ...] = (2, 3)) -> list[dict[str, Any]]:
    """Map sharing, one layer at a time: for each (batch, N, widths) and map writer where sdpa_mha,
    apply_mha and a writer were all timed in the same rounds, the writer's and apply_mha's paired
    speed-ups over sdpa_mha and the attention speed-up of a sharing group over as many SDPA layers
    for each group size (`group_speedup`, key `group_G`). Writers: map_mha (FLAT tiles that write the
    map: the `tiled` backend's, and `auto`'s under a gradient), dense_mha (the whole map in place,
    then A.V: the `dense` backend's, and `auto`'s without a gradient in bfloat16 or without a
    compiler) and native_mha (the native kernel: `auto`'s in float32 without a gradient).
    Projections and FFN are not in it, so a whole model gains less."""
    cells: dict[tuple, dict[str, dict[str, Any]]] = {}
    for r in records:
        if r["op"] in ("sdpa_mha", "apply_mha", *_WRITERS) and r.get("latency_ms_round_medians"):
            key = (r["batch"], r["tokens"], r["qk_heads"], r["qk_dim"])
            cells.setdefault(key, {})[r["op"]] = r
    rows = []
    for (batch, tokens, heads, dim), ops in cells.items():
        if "sdpa_mha" not in ops or "apply_mha" not in ops:
            continue
        ms = {op: r["latency_ms_round_medians"] for op, r in ops.items()}
        for writer in (w for w in _WRITERS if w in ops):
            row = {"batch": batch, "tokens": tokens, "widths": f"{heads}x{dim}", "writer": writer,
                   "writer_vs_sdpa": ops[writer].get("speedup_vs_sdpa_mha_paired"),
                   "apply_vs_sdpa": ops["apply_mha"].get("speedup_vs_sdpa_mha_paired")}
            for g in groups:
                row[f"group_{g}"] = round(group_speedup(ms["sdpa_mha"], ms[writer], ms["apply_mha"], g), 3)
            rows.append(row)
    return rows


def sharing_lines(records: list[dict[str, Any]]) -> list[str]:
    """`sharing_rows` as text lines, for the table's footer."""
    lines = []
    for r in sharing_rows(records):
        gains = ", ".join(f"{k.removeprefix('group_')} layers {v:.2f}x" for k, v in r.items() if k.startswith("group_"))
        lines.append(f"map sharing, attention alone ({r['widths']}, batch {r['batch']}, N={r['tokens']}), "
                     f"{r['writer']} + apply_mha per group vs sdpa_mha per layer: {gains}")
    return lines


def dtype_label(machine: dict[str, Any]) -> str:
    """"float32", "bfloat16 (native: amx_bf16)" or "bfloat16 (EMULATED: this CPU has no bf16 units)"."""
    execution, units = machine.get("dtype_execution"), machine.get("dtype_units") or []
    if execution is None or (execution == "native" and not units):
        return machine["dtype"]
    if execution == "native":
        return f"{machine['dtype']} (native: {', '.join(units)})"
    if execution == "emulated":
        return f"{machine['dtype']} (EMULATED: this CPU has no {machine['dtype']} units)"
    return f"{machine['dtype']} ({execution} units)"


def plot(records: list[dict[str, Any]], path: str | Path) -> Path:
    """Latency and peak memory against N, one line per op, widths and batch (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from attnreuse._io import atomic_path

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 4.5))
    series: dict[tuple[str, int], list[tuple[int, float, float]]] = {}
    for r in records:
        if r["latency_ms_median"] is None:
            continue
        op = f"{r['op']} {r['qk_heads']}x{r['qk_dim']}/{r['v_heads']}x{r['v_dim']}"
        series.setdefault((op, r["batch"]), []).append((r["tokens"], r["latency_ms_median"], r["peak_bytes"] / 2**20))
    # one colour per operator and widths, one line style per batch size
    colours = {op: f"C{i % 10}" for i, op in enumerate(dict.fromkeys(op for op, _ in series))}
    styles = {b: s for b, s in zip(sorted({b for _, b in series}), ("-", "--", ":", "-."))}
    for (op, batch), points in series.items():
        points.sort()
        n, ms, mib = zip(*points)
        style = {"color": colours[op], "linestyle": styles.get(batch, "-"), "marker": "o", "label": f"{op} b{batch}"}
        ax_t.plot(n, ms, **style)
        ax_m.plot(n, [max(m, 1e-3) for m in mib], **style)
    for ax, ylabel in ((ax_t, "median latency (ms)"), (ax_m, "peak extra memory (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("tokens N")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    if records:
        m = records[0]["machine"]
        fig.suptitle(f"attention operators: {m['cpu']}, {m['threads']} threads, {dtype_label(m)}")
    if series:  # every case skipped: empty axes, no legend to draw
        ax_m.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format=target.suffix.lstrip(".") or "png", dpi=120)
    plt.close(fig)
    return target


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ops", help="attention operators vs fused SDPA: latency, memory, GFLOP/s")
    add_config_args(p, OpsBenchConfig)
    _cli_args.add_quick_flag(p, QUICK, "a handful of small cases (tests, demo)")
    p.add_argument("--force", action="store_true", help="replace --json, --csv, --plot and FILE.config.json if they exist")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> OpsBenchConfig:
    """The sweep `args` describe: defaults < --config FILE < --quick < flags."""
    return _cli_args.config_from_args(OpsBenchConfig, args, **_cli_args.quick_preset(args, QUICK))


def config_json_path(results: str | Path) -> Path:
    """Where the sweep's config is written beside its first output (--json, else --csv, else
    --plot): r.json -> r.config.json."""
    return Path(results).with_suffix(".config.json")


def run(args: argparse.Namespace) -> int:
    from attnreuse._io import atomic_write_json, new_output_file
    from attnreuse.measure import write_records

    config = config_from_args(args)
    first = config.json or config.csv or config.plot  # the config JSON is written beside it
    for flag, path in (("--json", config.json), ("--csv", config.csv), ("--plot", config.plot)):
        beside = (config_json_path(path),) if path is not None and path == first else ()
        new_output_file(flag, path, force=args.force, beside=beside)  # before the sweep
    records = run_bench(config, progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_table(records))
    outputs = [Path(p) for p in (config.json, config.csv) if p is not None]
    for path in outputs:
        write_records(path, records)
    if config.plot is not None:
        plot(records, config.plot)
        outputs.append(Path(config.plot))
    if first is not None:
        atomic_write_json(config_json_path(first), dataclasses.asdict(config))
        print("wrote " + ", ".join(str(p) for p in outputs + [config_json_path(first)]))
    return 0
