"""The FLAT cost model: off-chip traffic, on-chip footprint, cycles, time and energy per dataflow.

Paper: FLAT (Kao et al., ASPLOS 2023): fuse Logit (Q K^T), softmax and Attend (A V) so that the
N x N scores stay on chip, tiled at batch, head or row (a block of query rows with their full score
rows) granularity.

Assumptions, all stated here and in docs/dataflow.md:
- A dataflow is a sequence of phases (operators). Inside a phase, compute and off-chip transfers
  overlap fully on an accelerator (double-buffered tiles): phase cycles = max(compute, memory); on
  a CPU (`hw.overlap_memory` False) they add. Phases run one after another. The vector (softmax)
  unit overlaps the MAC array when `hw.vector_overlaps_mac`, else their cycles add. Where the PE
  array's shape is given, a matmul keeps the fraction of it busy that its output tile fills
  (output-stationary, either orientation, partial passes padded); otherwise full utilisation.
- A FLAT dataflow keeps per-operator execution where no fused tile fits or fusion is slower.
- CPU only: an unfused intermediate of at least `hw.fresh_alloc_min_bytes` is charged its
  first-touch cost (page faults + zeroing) as memory time.
- Matmuls are output-stationary: an output tile [Tr, Tc] stays on chip while the reduction streams
  through in double-buffered chunks of STREAM elements; A is re-read once per column tile and B once
  per row tile; the tile is searched to minimise traffic within the buffer.
- Double-buffered I/O tiles count twice in the footprint; the score tile once.
- The six choices on which published FLAT models disagree (softmax unit, what a fused tile does
  when K/V and the score rows do not fit and what a spilled score costs, double-buffering, PE
  utilisation, the baseline's scores)
  are `Assumptions` (assumptions.py); `evaluate` takes one, the default is `assumptions.default_for(hw)`.
- On-chip bytes (energy only): every off-chip byte is staged through the buffer once, every matmul
  reads its operands from the buffer once per PE-array pass (2 / sqrt(array) elements a MAC) and
  writes its output once, and the softmax reads and writes each score once.
- Energy = MACs and vector ops x mac_j + on-chip bytes x onchip_byte_j + off-chip bytes x
  offchip_byte_j; no static power.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from attnreuse.dataflow.assumptions import Assumptions, default_for
from attnreuse.dataflow.hardware import Hardware
from attnreuse.dataflow.workload import Workload

__all__ = ["DATAFLOWS", "Phase", "Result", "SOFTMAX_OPS_PER_ELEMENT", "compare", "evaluate"]

# Element-wise operations charged per softmax element (row max, subtract + exp, row sum,
# normalise); `_calibrate` converts a measured softmax rate to ops with the same factor.
SOFTMAX_OPS_PER_ELEMENT = 4

DATAFLOWS = ("baseline", "flat-batch", "flat-head", "flat-row", "flat", "flat-reuse", "taylor")
STREAM = 64  # reduction chunk (elements) streamed through a matmul, double-buffered


@dataclass(frozen=True)
class Phase:
    """One operator (or fused group) of a dataflow, counted in elements/MACs for all `count` copies."""

    name: str
    macs: float
    mac_cycles: float
    vector_ops: float
    offchip_elems: float
    onchip_elems: float
    peak_elems: float
    tile: str = ""
    fresh_elems: float = 0.0  # output elements written into one freshly allocated host tensor
    spilled: float = 0.0  # fraction of a fused tile's scores sent off chip ("spill-scores")


@dataclass(frozen=True)
class Result:
    """Costs of one dataflow on one workload and machine (whole workload: all blocks, all batches).

    fits: every phase's footprint is within the buffer. fused: the attention core runs as one
    fused operator (False for the baseline and for a FLAT dataflow that kept per-operator execution).
    """

    dataflow: str
    hardware: str
    workload: str
    seq_len: int
    batch: int
    tile: str
    fits: bool
    macs: float
    offchip_bytes: float
    onchip_bytes: float
    onchip_peak_bytes: float
    compute_cycles: float
    memory_cycles: float
    cycles: float
    time_s: float
    energy_j: float
    bound: str
    fused: bool = True
    speedup_vs_baseline: float = 1.0
    energy_vs_baseline: float = 1.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _tiles(n: int) -> list[int]:
    """Candidate tile sizes: powers of two below n, and n itself."""
    out = [1 << i for i in range(max(1, n).bit_length()) if (1 << i) < n]
    return [*out, n]


def _array_reads(macs: float, hw: Hardware) -> float:
    """Operand elements read from the buffer: each PE-array pass reuses an element sqrt(array) times."""
    return 2.0 * macs / math.sqrt(hw.macs_per_cycle)


def _utilisation(out_rows: float, out_cols: float, hw: Hardware) -> float:
    """Fraction of the PE array an output-stationary [out_rows, out_cols] tile keeps busy (either
    orientation; partial passes padded). 1.0 when the array shape is not given (`pe_rows` 0)."""
    if not hw.pe_rows:
        return 1.0

    def fill(extent: float, pes: int) -> float:
        return extent / (math.ceil(extent / pes) * pes)

    return max(
        fill(out_rows, hw.pe_rows) * fill(out_cols, hw.pe_cols),
        fill(out_rows, hw.pe_cols) * fill(out_cols, hw.pe_rows),
    )


def _mac_cycles(macs: float, out_rows: float, out_cols: float, hw: Hardware) -> float:
    return macs / (hw.macs_per_cycle * _utilisation(out_rows, out_cols, hw))


def _gemm(name: str, rows: int, inner: int, cols: int, count: int, hw: Hardware) -> Phase:
    """`count` independent [rows, inner] x [inner, cols] matmuls, operands and result off chip.

    Output-stationary: traffic = A * ceil(cols / Tc) + B * ceil(rows / Tr) + C, with the tile
    [Tr, Tc] (plus 2 x STREAM x (Tr + Tc) reduction chunks) the cheapest that fits the buffer.
    """
    budget = hw.buffer_bytes / hw.elem_bytes
    chunk = min(STREAM, inner)
    best = None
    for tr in _tiles(rows):
        for tc in _tiles(cols):
            peak = tr * tc + 2 * chunk * (tr + tc)
            if peak > budget:
                continue
            traffic = rows * inner * math.ceil(cols / tc) + inner * cols * math.ceil(rows / tr) + rows * cols
            key = (traffic, -tr * tc)
            if best is None or key < best[0]:
                best = (key, tr, tc, peak)
    if best is None:
        raise ValueError(
            f"buffer_bytes={hw.buffer_bytes} of {hw.name} cannot hold even a 1 x 1 output tile of {name} "
            f"with its reduction chunks; it needs at least {(1 + 4 * chunk) * hw.elem_bytes} bytes"
        )
    (traffic, _), tr, tc, peak = best
    macs = count * rows * inner * cols
    return Phase(
        name=name,
        macs=macs,
        mac_cycles=_mac_cycles(macs, tr, tc, hw),
        vector_ops=0.0,
        offchip_elems=count * traffic,
        onchip_elems=count * traffic + _array_reads(macs, hw) + count * rows * cols,
        peak_elems=peak,
        tile=f"{tr}x{tc}",
    )


def _baseline_attention(w: Workload, hw: Hardware, keep_if_fits: bool = False) -> list[Phase]:
    """Logit, softmax and Attend as three operators, each over the whole batch: the scores
    [B, Hq, N, N] are written off chip, read and written by the softmax, and read by Attend.

    keep_if_fits: where one map's scores and operands fit the buffer, they stay on chip between
    the operators (only Q, K, V in and O out move off chip); the operators still run in turn.
    """
    bh, n, g = w.batch * w.q_heads, w.seq_len, w.map_sharing
    scores = bh * n * n
    if keep_if_fits and (n * n + 2 * n * (w.dk + g * w.dv)) * hw.elem_bytes <= hw.buffer_bytes:
        return _baseline_on_chip(w, hw)
    softmax = Phase(
        name="softmax",
        macs=0.0,
        mac_cycles=0.0,
        vector_ops=SOFTMAX_OPS_PER_ELEMENT * scores,
        offchip_elems=2.0 * scores,
        onchip_elems=4.0 * scores,
        peak_elems=2 * 2 * n,  # one score row in and one out, double-buffered
        tile="row",
        fresh_elems=scores,
    )
    logit = _gemm("logit", n, w.dk, n, bh, hw)
    return [
        dataclasses.replace(logit, fresh_elems=scores),
        softmax,
        _gemm("attend", n, n, g * w.dv, bh, hw),
    ]


def _baseline_on_chip(w: Workload, hw: Hardware) -> list[Phase]:
    """The three operators of one map in turn with its scores kept in the buffer."""
    bh, n, g, dk, dv = w.batch * w.q_heads, w.seq_len, w.map_sharing, w.dk, w.dv
    scores = bh * n * n
    peak = n * n + 2 * n * (dk + g * dv)
    logit = Phase("logit", scores * dk, _mac_cycles(scores * dk, n, n, hw), 0.0, bh * 2 * n * dk,
                  bh * 2 * n * dk + _array_reads(scores * dk, hw) + scores, peak, "scores on chip")
    softmax = Phase("softmax", 0.0, 0.0, SOFTMAX_OPS_PER_ELEMENT * scores, 0.0, 2.0 * scores, peak, "row")
    macs = scores * g * dv
    attend = Phase("attend", macs, _mac_cycles(macs, n, g * dv, hw), 0.0, bh * 2 * n * g * dv,
                   bh * 2 * n * g * dv + _array_reads(macs, hw) + bh * n * g * dv, peak, "scores on chip")
    return [logit, softmax, attend]


def _fused(
    w: Workload, hw: Hardware, granularity: str, rows: int, kv_resident: bool, io: int = 2, spill: int = 0
) -> Phase:
    """Logit + softmax + Attend fused over one tile; the scores never leave the buffer.

    granularity "batch": all Hq heads of one batch element per tile; "head": one map (with its
    Hv / Hq value heads); "row": `rows` query rows of one map with full score rows, K and V either
    resident for the whole head (read once) or streamed again for every row tile.
    io: copies of each I/O tile in the footprint (2 double-buffered, 1 not).
    spill: (row only; 0 = never) K and V stream and the part of the score tile the buffer cannot
    hold goes off chip, `spill` elements moved per spilled score (4 as unfused: written by Logit,
    read and written by the softmax, read by Attend; 2: written and read once), while the
    operators stay pipelined.
    """
    bh, n, g, dk, dv = w.batch * w.q_heads, w.seq_len, w.map_sharing, w.dk, w.dv
    q_o = n * (dk + g * dv)  # one map's Q in and O out
    k_v = n * (dk + g * dv)  # one map's K and V
    spilled = 0.0
    if granularity in ("batch", "head"):
        heads = w.q_heads if granularity == "batch" else 1
        peak = heads * (io * (q_o + k_v) + n * n)
        offchip = bh * (q_o + k_v)
        tile = granularity
    elif spill:
        fixed = io * (rows + STREAM) * (dk + g * dv) + io * rows * STREAM  # I/O, K/V and score chunks
        held = min(rows * n, max(0.0, hw.buffer_bytes / hw.elem_bytes - fixed))
        spilled = 1.0 - held / (rows * n)
        peak = fixed + held
        offchip = bh * (q_o + k_v * math.ceil(n / rows)) + spill * spilled * bh * n * n
        tile = f"row R={rows} kv=streamed" + (f" scores {100 * spilled:.3g}% spilled" if spilled else "")
    else:
        kv = k_v if kv_resident else io * STREAM * (dk + g * dv)
        peak = io * rows * (dk + g * dv) + rows * n + kv
        offchip = bh * (q_o + k_v * (1 if kv_resident else math.ceil(n / rows)))
        tile = f"row R={rows} kv={'resident' if kv_resident else 'streamed'}"
    scores = bh * n * n
    macs = scores * (dk + g * dv)
    tile_rows = n if granularity != "row" else rows
    return Phase(
        name="attention",
        macs=macs,
        mac_cycles=_mac_cycles(scores * dk, tile_rows, n, hw)
        + _mac_cycles(scores * g * dv, tile_rows, g * dv, hw),
        vector_ops=SOFTMAX_OPS_PER_ELEMENT * scores,
        offchip_elems=offchip,
        onchip_elems=offchip + _array_reads(macs, hw) + scores + bh * n * g * dv + 2.0 * scores,
        peak_elems=peak,
        tile=tile,
        spilled=spilled,
    )


def _flat_candidates(w: Workload, hw: Hardware, granularity: str, a: Assumptions) -> list[Phase]:
    io = 2 if a.double_buffer else 1
    if granularity != "row":
        return [_fused(w, hw, granularity, w.seq_len, True, io)]
    out = [_fused(w, hw, "row", r, res, io) for r in _tiles(w.seq_len) for res in (True, False)]
    if a.kv_spill == "spill-scores":
        out += [_fused(w, hw, "row", r, False, io, spill=a.spill_passes) for r in _tiles(w.seq_len)]
    return out


def _taylor_attention(w: Workload, hw: Hardware) -> list[Phase]:
    """ViTALiTy: per map, centre K, G = K^T V [Dk, G*Dv], k_sum, v_sum; then Z = (Q G + v_sum) /
    (Q k_sum + N), streamed over query rows. No N x N term; Q, K, V, O move off chip once."""
    bh, n, g, dk, dv = w.batch * w.q_heads, w.seq_len, w.map_sharing, w.dk, w.dv
    macs = bh * (n * dk * g * dv * 2 + n * dk)
    # K^T V has a [Dk, G*Dv] output; Q G and Q k_sum are [N, G*Dv + 1].
    mac_cycles = _mac_cycles(bh * n * dk * g * dv, dk, g * dv, hw) + _mac_cycles(
        bh * n * dk * (g * dv + 1), n, g * dv + 1, hw
    )
    vector = bh * (n * dk + n * g * dv * 2)  # centring, v_sum, divide
    offchip = bh * 2 * n * (dk + g * dv)
    return [
        Phase(
            name="taylor",
            macs=macs,
            mac_cycles=mac_cycles,
            vector_ops=vector,
            offchip_elems=offchip,
            onchip_elems=offchip + _array_reads(macs, hw) + bh * n * g * dv,
            peak_elems=dk * g * dv + dk + g * dv + 2 * 2 * STREAM * (dk + g * dv),
            tile="rows streamed",
        )
    ]


def _projections(w: Workload, hw: Hardware) -> tuple[list[Phase], list[Phase]]:
    """(QKV projection, [output projection, FFN in, FFN out]) of one block over batch x seq rows."""
    if w.attention_only:
        return [], []
    rows, c = w.batch * w.seq_len, w.embed_dim
    qkv = 2 * w.q_heads * w.dk + w.v_heads * w.dv
    return [_gemm("qkv", rows, c, qkv, 1, hw)], [
        _gemm("proj", rows, w.v_heads * w.dv, c, 1, hw),
        _gemm("fc1", rows, c, w.mlp_hidden, 1, hw),
        _gemm("fc2", rows, w.mlp_hidden, c, 1, hw),
    ]


def _phase_cycles(p: Phase, hw: Hardware) -> tuple[float, float, float]:
    """(compute, memory, total) cycles of one phase."""
    mac = p.mac_cycles
    vec = p.vector_ops / hw.vector_ops_per_cycle
    compute = max(mac, vec) if hw.vector_overlaps_mac else mac + vec
    memory = p.offchip_elems * hw.elem_bytes / hw.offchip_bytes_per_cycle
    fresh_bytes = p.fresh_elems * hw.elem_bytes
    if fresh_bytes >= hw.fresh_alloc_min_bytes:
        memory += fresh_bytes * hw.fresh_alloc_s_per_byte * hw.clock_hz
    return compute, memory, max(compute, memory) if hw.overlap_memory else compute + memory


def _result(dataflow: str, w: Workload, hw: Hardware, phases: list[Phase], tile: str, fits: bool) -> Result:
    compute = memory = cycles = 0.0
    for p in phases:
        c, m, t = _phase_cycles(p, hw)
        compute, memory, cycles = compute + c, memory + m, cycles + t
    d, eb = w.depth, hw.elem_bytes
    peak = max(p.peak_elems for p in phases) * eb
    fits = fits and peak <= hw.buffer_bytes
    macs = sum(p.macs for p in phases) * d
    vector = sum(p.vector_ops for p in phases) * d
    offchip = sum(p.offchip_elems for p in phases) * d * eb
    onchip = sum(p.onchip_elems for p in phases) * d * eb
    return Result(
        dataflow=dataflow,
        hardware=hw.name,
        workload=w.name,
        seq_len=w.seq_len,
        batch=w.batch,
        tile=tile,
        fits=fits,
        macs=macs,
        offchip_bytes=offchip,
        onchip_bytes=onchip,
        onchip_peak_bytes=peak,
        compute_cycles=compute * d,
        memory_cycles=memory * d,
        cycles=cycles * d,
        time_s=cycles * d / hw.clock_hz,
        energy_j=(macs + vector) * hw.mac_j + onchip * hw.onchip_byte_j + offchip * hw.offchip_byte_j,
        bound="memory" if memory > compute else "compute",
    )


def evaluate(w: Workload, hw: Hardware, dataflow: str, assumptions: Assumptions | None = None) -> Result:
    """Cost of `dataflow` (one of DATAFLOWS) on workload `w` and machine `hw`.

    "flat" is the best of flat-batch/head/row; "flat-reuse" is "flat" on `w.reuse()` (one map for
    every value head). A FLAT dataflow, like a scheduler would, keeps the per-operator execution
    where no fused tile fits the buffer or every fused tile is slower (`fused` False, the tile says
    why), so it is never slower than the baseline of its workload. `assumptions` selects the
    disputed modelling choices (assumptions.py; None: `default_for(hw)`); the result's `hardware`
    keeps `hw`'s name.
    """
    if not isinstance(w, Workload):
        raise TypeError(f"w must be a Workload, got {type(w).__name__}")
    if not isinstance(hw, Hardware):
        raise TypeError(f"hw must be a Hardware, got {type(hw).__name__}")
    if dataflow not in DATAFLOWS:
        raise ValueError(f"dataflow must be one of {DATAFLOWS}, got {dataflow!r}")
    if assumptions is None:
        assumptions = default_for(hw)
    if not isinstance(assumptions, Assumptions):
        raise TypeError(f"assumptions must be an Assumptions, got {type(assumptions).__name__}")
    if dataflow == "flat-reuse":
        result = evaluate(w.reuse(), hw, "flat", assumptions)
        return dataclasses.replace(result, dataflow=dataflow, workload=w.name)
    hw = assumptions.hardware(hw)
    before, after = _projections(w, hw)
    keep = assumptions.baseline_scores == "keep-if-fits"
    unfused = _result(dataflow, w, hw, before + _baseline_attention(w, hw, keep) + after, "per-operator", True)
    unfused = dataclasses.replace(unfused, fused=False)
    if dataflow == "baseline":
        return unfused
    if dataflow == "taylor":
        phases = _taylor_attention(w, hw)
        return _result(dataflow, w, hw, before + phases + after, phases[0].tile, True)
    granularities = ("batch", "head", "row") if dataflow == "flat" else (dataflow.removeprefix("flat-"),)
    budget = hw.buffer_bytes / hw.elem_bytes
    best = None
    for g in granularities:
        for cand in _flat_candidates(w, hw, g, assumptions):
            if cand.peak_elems > budget:
                continue
            res = _result(dataflow, w, hw, before + [cand] + after, cand.tile, True)
            # Ties (compute-bound tiles) go to the tile spilling fewer scores (FLAT's aim: keep
            # them on chip), then to the larger tile: fewer, longer array passes.
            key = (res.cycles, cand.spilled, res.energy_j, -cand.peak_elems)
            if best is None or key < best[0]:
                best = (key, res)
    if best is None:
        return dataclasses.replace(unfused, tile="per-operator: no fused tile fits")
    if unfused.cycles < best[1].cycles:
        why = f"per-operator: fused {best[1].tile} is {best[1].cycles / unfused.cycles:.2g}x slower"
        return dataclasses.replace(unfused, tile=why)
    return best[1]


def compare(
    w: Workload, hw: Hardware, dataflows: tuple[str, ...] = DATAFLOWS, assumptions: Assumptions | None = None
) -> list[Result]:
    """Every dataflow on `w`, with speed-up and energy ratio against the baseline."""
    base = evaluate(w, hw, "baseline", assumptions)
    out = []
    for name in dataflows:
        r = base if name == "baseline" else evaluate(w, hw, name, assumptions)
        out.append(
            dataclasses.replace(
                r, speedup_vs_baseline=base.time_s / r.time_s, energy_vs_baseline=r.energy_j / base.energy_j
            )
        )
    return out
