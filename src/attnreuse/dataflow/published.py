"""The cost model against published FLAT numbers it was not fitted to (`attnreuse dataflow --published`).

Data (package data under `data/`, each row with its source: repository path and commit):
- fusemax_platforms.csv, fusemax_models.csv: FuseMax's FLAT edge/cloud accelerators and the four
  models (batch 64; TrXL 16 x 64 heads and T5 8 x 64 heads, unlike the `MODELS` presets).
- fusemax_attention.csv: FuseMax's Timeloop model of FLAT and of unfused attention on the cloud
  accelerator, one attention layer, 1K-1M tokens (their Figure 8 data).
- flat_replay.csv: FLAT's own chosen mapping for every (preset, model, length), 512-1M tokens, with
  the latency FuseMax records for it (softmax not evaluated: `Flat.eval_components(validation=True)`).

Every published point is predicted under its matching assumption setting (`SETTINGS`: "fusemax"
for fusemax_attention.csv, "flat-paper" for flat_replay.csv) and under this library's default.
Where a prediction misses by more than `TOLERANCE`, each single assumption is switched in turn (the
default's to the matching value; the matching setting's to every other allowed value) and the
switches that close the gap are named. Nothing here is fitted to these points.
"""

from __future__ import annotations

import csv
import functools
import math
from dataclasses import dataclass
from importlib import resources

from attnreuse.dataflow.assumptions import CHOICES, SETTINGS, Assumptions, default_for
from attnreuse.dataflow.cost import Result, evaluate
from attnreuse.dataflow.hardware import HOROWITZ, MAC_J_FP16, OFFCHIP_BYTE_J, ONCHIP_BYTE_J, Hardware
from attnreuse.dataflow.workload import Workload

__all__ = [
    "QUANTITIES", "TOLERANCE", "Point", "compare_published", "markdown_tables", "platform", "points", "predict", "workload",
]

TOLERANCE = 0.25
QUANTITIES = ("flat_latency_s", "baseline_latency_s", "speedup", "score_spill_from_seq")


@functools.cache
def _rows(name: str) -> tuple[dict, ...]:
    with resources.files("attnreuse.dataflow").joinpath("data", name).open(newline="") as fh:
        return tuple(csv.DictReader(fh))


def _row(name: str, column: str, value: str) -> dict:
    """The row of data file `name` whose `column` is `value`; another value is a ValueError listing them."""
    rows = {r[column]: r for r in _rows(name)}
    if value not in rows:
        raise ValueError(f"unknown published {column} {value!r}; choose one of: {', '.join(rows)}")
    return rows[value]


@functools.cache
def platform(name: str) -> Hardware:
    """FuseMax's FLAT accelerator `name` ("edge" or "cloud") as a Hardware, cited from the data."""
    r = _row("fusemax_platforms.csv", "platform", name)
    pes = int(r["pe_dim"])
    return Hardware(
        name=f"fusemax-{name}",
        macs_per_cycle=pes * pes,
        clock_hz=float(r["clock_hz"]),
        buffer_bytes=int(r["buffer_bytes"]),
        offchip_bytes_per_s=float(r["offchip_bytes_per_s"]),
        vector_ops_per_cycle=pes * pes,
        vector_overlaps_mac=True,
        elem_bytes=int(r["elem_bytes"]),
        mac_j=MAC_J_FP16,
        onchip_byte_j=ONCHIP_BYTE_J,
        offchip_byte_j=OFFCHIP_BYTE_J,
        pe_rows=pes,
        pe_cols=pes,
        sources=(r["source"], "softmax unit and PE utilisation: set by Assumptions", HOROWITZ),
    )


@functools.cache
def workload(model: str, seq_len: int) -> Workload:
    """One attention layer (the attention core only) of FuseMax's `model` at `seq_len` tokens."""
    r = _row("fusemax_models.csv", "model", model)
    heads = int(r["heads"])
    return Workload(
        name=model, batch=int(r["batch"]), seq_len=seq_len, depth=1, v_heads=heads, q_heads=heads,
        dk=int(r["dk"]), dv=int(r["dv"]), embed_dim=int(r["embed_dim"]), mlp_hidden=int(r["mlp_hidden"]),
        attention_only=True, source=r["source"],
    )


@dataclass(frozen=True)
class Point:
    """One published number: `quantity` of FLAT (or its baseline) on `preset`/`model` at `seq_len`
    (0 for a quantity over all lengths), to be predicted under SETTINGS[`setting`]."""

    preset: str
    model: str
    seq_len: int
    quantity: str
    published: float
    setting: str
    source: str


def _spill_from(rows: list[tuple[int, bool]]) -> float:
    """Smallest length from which every longer length spills its scores (inf if the last does not)."""
    first = math.inf
    for n, spills in sorted(rows, reverse=True):
        if not spills:
            break
        first = n
    return first


def points() -> list[Point]:
    """Every published point, in file order."""
    out = []
    latency: dict[tuple, dict] = {}
    for r in _rows("fusemax_attention.csv"):
        key = (r["platform"], r["model"], int(r["seq_len"]))
        latency.setdefault(key, {})[r["dataflow"]] = (float(r["latency_s"]), r["source"])
    for (preset, model, n), by in latency.items():
        for dataflow in ("flat", "baseline"):
            value, source = by[dataflow]
            out.append(Point(preset, model, n, f"{dataflow}_latency_s", value, "fusemax", source))
        ratio = by["baseline"][0] / by["flat"][0]
        out.append(Point(preset, model, n, "speedup", ratio, "fusemax", "ratio of the two rows above"))
    spills: dict[tuple, list] = {}
    for r in _rows("flat_replay.csv"):
        n = int(r["seq_len"])
        out.append(Point(r["platform"], r["model"], n, "flat_latency_s", float(r["latency_s"]), "flat-paper", r["source"]))
        spills.setdefault((r["platform"], r["model"], r["source"]), []).append((n, r["score_loc"] == "offchip"))
    for (preset, model, source), rows in spills.items():
        out.append(Point(preset, model, 0, "score_spill_from_seq", _spill_from(rows), "flat-paper",
                         f"{source} (QK_loc off chip at every length from here)"))
    return out


@functools.cache
def _evaluate(preset: str, model: str, n: int, dataflow: str, a: Assumptions) -> Result:
    return evaluate(workload(model, n), platform(preset), dataflow, a)


def _spills(r: Result) -> bool:
    """The chosen execution keeps more than half of the score tile off chip (FLAT's `QK_loc`)."""
    if not r.fused:
        return True
    pct = r.tile.partition(" scores ")[2].removesuffix("% spilled")
    return bool(pct) and float(pct) > 50


def _lengths(preset: str, model: str) -> list[int]:
    return sorted({int(r["seq_len"]) for r in _rows("flat_replay.csv") if (r["platform"], r["model"]) == (preset, model)})


def predict(p: Point, a: Assumptions) -> float:
    """The model's value of `p.quantity` under assumptions `a`."""
    if p.quantity == "flat_latency_s":
        return _evaluate(p.preset, p.model, p.seq_len, "flat", a).time_s
    if p.quantity == "baseline_latency_s":
        return _evaluate(p.preset, p.model, p.seq_len, "baseline", a).time_s
    if p.quantity == "speedup":
        base, flat = (_evaluate(p.preset, p.model, p.seq_len, d, a).time_s for d in ("baseline", "flat"))
        return base / flat
    if p.quantity == "score_spill_from_seq":
        rows = [(n, _spills(_evaluate(p.preset, p.model, n, "flat", a))) for n in _lengths(p.preset, p.model)]
        return _spill_from(rows)
    raise ValueError(f"quantity must be one of {QUANTITIES}, got {p.quantity!r}")


def _rel(predicted: float, published: float) -> float | None:
    if math.isinf(predicted) or math.isinf(published):
        return 0.0 if predicted == published else None
    return predicted / published - 1


def _ok(rel: float | None, tolerance: float) -> bool:
    return rel is not None and abs(rel) <= tolerance


def _finite(x: float) -> float | None:
    return None if math.isinf(x) else x


def _closing(p: Point, a: Assumptions, switches: list[tuple[str, object]], tolerance: float) -> list[str]:
    """The single switches `field=value` of `a` that bring `p` within `tolerance`."""
    out = []
    for field, value in switches:
        switched = Assumptions(**{**a.to_dict(), field: value})
        if _ok(_rel(predict(p, switched), p.published), tolerance):
            out.append(f"{field}={value}")
    return out


def compare_published(*, tolerance: float = TOLERANCE, default: Assumptions | None = None) -> list[dict]:
    """One record per published point: predicted under the matching setting and under `default`
    (None: the platform's `default_for`), the relative differences, and for each that misses by
    more than `tolerance` the single assumption switches that close the gap (`gap_closed_by`,
    `default_gap_closed_by`)."""
    records = []
    for p in points():
        matching = SETTINGS[p.setting]
        default_p = default_for(platform(p.preset)) if default is None else default
        predicted, base = predict(p, matching), predict(p, default_p)
        rel, rel_default = _rel(predicted, p.published), _rel(base, p.published)
        closing, default_closing = [], []
        if not _ok(rel, tolerance):
            others = [(f, v) for f, values in CHOICES.items() for v in values if v != getattr(matching, f)]
            closing = _closing(p, matching, others, tolerance)
        if not _ok(rel_default, tolerance):
            to_matching = [(f, getattr(matching, f)) for f in default_p.differences(matching)]
            default_closing = _closing(p, default_p, to_matching, tolerance)
        records.append(
            {
                "preset": p.preset,
                "model": p.model,
                "seq_len": p.seq_len,
                "quantity": p.quantity,
                "setting": p.setting,
                "assumptions": matching.to_dict(),
                "predicted": _finite(predicted),
                "published": _finite(p.published),
                "rel_diff": rel,
                "within_tolerance": _ok(rel, tolerance),
                "default_predicted": _finite(base),
                "default_rel_diff": rel_default,
                "gap_closed_by": closing,
                "default_gap_closed_by": default_closing,
                "tile": _evaluate(p.preset, p.model, p.seq_len, "flat", matching).tile if p.seq_len else "",
                "source": p.source,
            }
        )
    return records


_CAPTIONS = (
    ("cloud", "flat_latency_s", "fusemax", "FuseMax Fig. 8 data, cloud: FLAT latency (s)"),
    ("cloud", "baseline_latency_s", "fusemax", "FuseMax Fig. 8 data, cloud: unfused latency (s)"),
    ("cloud", "speedup", "fusemax", "FuseMax Fig. 8 data, cloud: FLAT speed-up over unfused"),
    ("edge", "flat_latency_s", "flat-paper", "FLAT's own mappings (FuseMax replay), edge: FLAT latency (s)"),
    ("cloud", "flat_latency_s", "flat-paper", "FLAT's own mappings (FuseMax replay), cloud: FLAT latency (s)"),
)


def _tokens(n: float) -> str:
    if math.isinf(n):
        return "never"
    n = int(n)
    return f"{n >> 20}M" if n >= 1 << 20 and not n % (1 << 20) else f"{n >> 10}K" if n >= 1024 and not n % 1024 else str(n)


def _pct(rel: float | None) -> str:
    return "n/a" if rel is None else f"{100 * rel:+.0f}%"


def markdown_tables(records: list[dict]) -> str:
    """docs/dataflow.md's 'Predicted vs published' tables from `compare_published`'s records: one
    table per published series (rows N, columns model: predicted / published (difference) [the
    default setting's difference]), then the score-spill lengths."""
    models = list(dict.fromkeys(r["model"] for r in records))
    out = []
    for preset, quantity, setting, caption in _CAPTIONS:
        rows = [r for r in records if (r["preset"], r["quantity"], r["setting"]) == (preset, quantity, setting)]
        cell = {(r["seq_len"], r["model"]): r for r in rows}
        out += [f"{caption}, setting `{setting}`; predicted / published (difference); default setting's "
                "difference in brackets:", "", "| N | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
        for n in sorted({r["seq_len"] for r in rows}):
            cells = []
            for m in models:
                r = cell.get((n, m))
                cells.append("-" if r is None else f"{_fmt(r['predicted'])} / {_fmt(r['published'])} "
                             f"({_pct(r['rel_diff'])}) [{_pct(r['default_rel_diff'])}]")
            out.append(f"| {_tokens(n)} | " + " | ".join(cells) + " |")
        out.append("")
    spills = [r for r in records if r["quantity"] == "score_spill_from_seq"]
    out += ["Length from which FLAT's chosen tile keeps its scores off chip, setting `flat-paper`:", "",
            "| preset | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for preset in sorted(dict.fromkeys(r["preset"] for r in spills), key=lambda p: p != "edge"):
        cells = []
        for m in models:
            r = next(x for x in spills if (x["preset"], x["model"]) == (preset, m))
            p, q = (math.inf if r[k] is None else r[k] for k in ("predicted", "published"))
            cells.append(f"{_tokens(p)} / {_tokens(q)}" + ("" if r["within_tolerance"] else " (miss)"))
        out.append(f"| {preset} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def _fmt(x: float | None) -> str:
    return "never" if x is None else f"{x:.3g}"
