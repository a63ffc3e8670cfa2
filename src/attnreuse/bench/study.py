"""`attnreuse bench study`: seed 001's latency study reproduced on a long-sequence speech encoder.

Shim, Choi, Sung (2023), "Exploring Attention Map Reuse for Efficient Transformer Neural Networks":
groups of layers share one attention map; the study measures the latency gain on CPU/GPU, compares
it with other self-attention compressions, and breaks it down as sequences get long. Here: Whisper's
encoder (random weights at the real tiny / base / small widths and depths: no pretrained speech
weights install offline) at several lengths N (frames after the conv stem; Whisper's 30 s window is
1500), every plan against transformers' own SDPA encoder.

Plans: "sdpa" (the stock encoder, PyTorch's fused kernel: the baseline), "mha" (attnreuse's exact
multi-head plan), "shareG" (groups of G layers: mha then G-1 layers applying its map, e.g. share2 =
mha,share,mha,share,...), or any one kind for every layer ("reuse", "reuse:2", "taylor", ...; the
compression the paper compares with is ViTALiTy's linear Taylor attention). sdpa and mha always run:
the baseline, and the breakdown the predictions start from.

Positions: Whisper's encoder takes exactly 2 x max_source_positions mel frames. Each length N gets
a copy of one encoder whose position table is the first N rows of the full one; Whisper's table is
sinusoidal (`sinusoids(P, C)`; its first N rows are `sinusoids(N, C)`), so every length sees the
positions a real Whisper encoder gives its first N frames. A preset asked for more than 1500
frames gets the same sinusoids extended to the longest length (no Whisper checkpoint has them; the
record says so in `positions` / `positions_extended`); a config file needs `--positions`. The conv
stem and positions stay in the forward (so in "rest"), rather than feeding the layers hidden
states, so the latency is the encoder's, end to end.

Execution: every attnreuse plan runs under the ops backend `--backend` (default "dense"): a layer
whose map a later one applies must materialise it, and under "dense" the mha plan runs the same
two steps (scores+softmax, then A.V) as the layers of a sharing plan that compute a map, so the mha
breakdown predicts what sharing removes. mha vs sdpa is then the price of not fusing.

Measurements per length: (1) end-to-end latency, uninstrumented, every plan timed in interleaved
rounds (`measure.measure_interleaved`), speed-ups paired round by round; short lengths get more
forwards (x ceil(1000 / N), at most x4); (2) the breakdown: the same forward with timing marks
(`measure.PartTimer`, `layers.parts`): every interval between two marks goes to the innermost open
part, so every part, "rest" included, is measured, not derived by subtraction: Q/K projections,
scores+softmax, A.V, one-step cores (fused SDPA, linear Taylor, the FLAT tiles), V and output
projections, the FFN, and the rest as stem (convs, positions), norms, residual (a layer's own
time: its adds), attention glue (head reshapes of the attnreuse cores) and other (the encoder's
own ops). In the sdpa encoder "core" is the attention module's own time (the fused kernel and its
reshapes). Each instrumented forward is timed next to an uninstrumented one (hooks attached only
for it), so `instrumentation_overhead` is their paired ratio; `breakdown_coverage` is the median
over those pairs of the measured parts' sum over the uninstrumented forward's time (the check;
pairing keeps the machine's drift between phases out of it), `breakdown_coverage_rounds` the sum
of the parts' medians over the end-to-end median of (1). On CUDA (`--device cuda`)
marks are CUDA events with one synchronisation per forward, and every timed call synchronises.
(3) peak memory (`measure.measure_peak_bytes`; CUDA: `torch.cuda.max_memory_allocated`). Amdahl:
a plan's predicted speed-up over mha is
T_mha / (T_mha - removed), removed = the mha plan's measured parts each layer's kind does not
compute (`Kind.removed_parts`); "of predicted" = measured / predicted speed-up over mha.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from attnreuse import _cli_args
from attnreuse._cli_args import add_config_args, arg
from attnreuse.bench import study_wav2vec2 as w2v

__all__ = ["BASELINE", "PARTS", "PRESETS", "StudyConfig", "plan_layers", "register", "run_study"]

BASELINE, REFERENCE = "sdpa", "mha"
WHISPER_POSITIONS = 1500
# Whisper's encoder sizes (d_model, layers, heads, FFN) as in the released tiny/base/small configs.
PRESETS = {
    "whisper-tiny": dict(d_model=384, encoder_layers=4, encoder_attention_heads=6, encoder_ffn_dim=1536),
    "whisper-base": dict(d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048),
    "whisper-small": dict(d_model=768, encoder_layers=12, encoder_attention_heads=12, encoder_ffn_dim=3072),
}
# The breakdown, in stacking order; "core" is a step run as one kernel (fused SDPA, Taylor, Phi).
PARTS = ("qk_proj", "scores_softmax", "av", "core", "v_proj", "out_proj", "ffn", "rest")
# "rest", measured piece by piece (see the module docstring).
REST_PARTS = ("stem", "norms", "residual", "attention_glue", "other")
CONFORMER_PART = "conv_module"  # one more rest piece, in a Conformer only: its convolution module
ATTENTION_PARTS = ("qk_proj", "scores_softmax", "av", "core", "v_proj", "out_proj")
_PROJECTIONS = ("qk_proj", "v_proj", "out_proj")
_STEPS = ("scores_softmax", "av", "core")
BACKENDS = ("dense", "auto", "tiled", "native")
DTYPES = ("float32", "bfloat16")
# `--quick`: 1 round of 2 repeats, 1 breakdown forward (a smoke test; flags given override these)
QUICK = {"rounds": 1, "repeats": 2, "warmup": 1, "breakdown_repeats": 1}


@dataclass(frozen=True)
class StudyConfig:
    """One study; each field is also a flag of `attnreuse bench study`."""

    model: str = field(default="whisper-base", metadata={"help": f"{', '.join([*PRESETS, *w2v.PRESETS])}, or the config.json of a whisper, {', '.join(w2v.MODEL_TYPES)} model (random weights)"})
    lengths: tuple[int, ...] = arg((250, 500, 1000, 1500), "frames after the conv stem, comma-separated")
    plans: tuple[str, ...] = arg(("sdpa", "mha", "share2", "share3", "reuse", "taylor"),
                                 "sdpa, mha, shareG (groups of G), or one kind for every layer (reuse, reuse:2, taylor)")
    positions: int = field(default=0, metadata={"help": "position table size, 0: the model's own (Whisper: 1500); more extends Whisper's sinusoids"})
    batch: int = field(default=1, metadata={"help": "utterances per forward"})
    threads: int = field(default=2, metadata={"help": "intra-op threads"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda (cuda:N): CUDA events and synchronisation for timing"})
    backend: str = field(default="dense", metadata={"help": "ops backend of the attnreuse plans: dense, auto, tiled or "
                                                    "native (the native CPU kernel for every layer, float32)"})
    dtype: str = field(default="float32", metadata={"help": "float32 or bfloat16: the weights and inputs of every plan, "
                                                    "the stock sdpa encoder's too; records say whether this CPU runs "
                                                    "bf16 on native units or emulates it"})
    rounds: int = field(default=3, metadata={"help": "interleaved timing rounds over the plans"})
    repeats: int = field(default=6, metadata={"help": "timed forwards per plan and length (all rounds)"})
    warmup: int = field(default=1, metadata={"help": "untimed forwards per plan before the first round"})
    breakdown_repeats: int = field(default=3, metadata={"help": "instrumented forwards per plan (median of each part)"})
    check_length: int = field(default=1500, metadata={"help": "length of the Amdahl check (the longest if not run)"})
    seed: int = field(default=0, metadata={"help": "seed of the random weights and input"})
    output: str = field(default="runs/bench-study", metadata={"help": "directory for records, plots and report.md"})
    command: str | None = field(default=None, metadata={"cli": False})

    def __post_init__(self) -> None:
        for name in ("lengths", "plans"):
            if not isinstance(getattr(self, name), tuple) or not getattr(self, name):
                raise ValueError(f"--{name} must be a non-empty comma-separated list, got {getattr(self, name)!r}")
        if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in self.lengths):
            raise ValueError(f"--lengths must be positive ints (frames after the conv stem), got {self.lengths!r}")
        # a length given twice would be timed twice, as duplicate rows of every table
        object.__setattr__(self, "lengths", tuple(dict.fromkeys(self.lengths)))
        for name in ("batch", "threads", "rounds", "repeats", "breakdown_repeats", "check_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive int, got {value!r}")
        for name in ("positions", "warmup", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"--{name} must be an int >= 0, got {value!r}")
        if self.device != "cpu" and not (self.device == "cuda" or (self.device.startswith("cuda:") and self.device[5:].isdigit())):
            raise ValueError(f"--device must be cpu, cuda or cuda:N, got {self.device!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.backend == "native" and (self.dtype != "float32" or self.device != "cpu"):
            raise ValueError(f"--backend native runs float32 on the CPU only, got --dtype {self.dtype} --device "
                             f"{self.device}; use --backend auto or dense")
        if Path(self.output).is_file():
            raise ValueError(f"--output must be a directory, got the file {self.output!r}")

    def repeats_at(self, n: int) -> tuple[int, int]:
        """(timed forwards, breakdown forwards) at length n: x ceil(1000 / n), at most x4, so short
        lengths, whose forwards are quick and noisy, get more."""
        scale = max(1, min(4, -(-1000 // n)))
        return self.repeats * scale, self.breakdown_repeats * scale

    def plan_names(self) -> list[str]:
        """The plans run: sdpa and mha first (added when not listed), then the others in order."""
        return list(dict.fromkeys([BASELINE, REFERENCE, *self.plans]))


def whisper_config(config: StudyConfig):
    """The WhisperConfig of `config.model` with `config.positions` (when > 0) positions."""
    from transformers import WhisperConfig

    if config.model in PRESETS:
        wc = WhisperConfig(**PRESETS[config.model], num_mel_bins=80, max_source_positions=WHISPER_POSITIONS)
    else:
        path = Path(config.model)
        path = path / "config.json" if path.is_dir() else path
        if not path.is_file():
            raise ValueError(f"--model must be one of {', '.join([*PRESETS, *w2v.PRESETS])} or the config.json of a "
                             f"whisper, {', '.join(w2v.MODEL_TYPES)} model, got {config.model!r}")
        try:
            wc = WhisperConfig.from_json_file(str(path))
        except (ValueError, OSError, TypeError) as err:
            raise ValueError(f"--model {config.model}: not a readable Whisper config ({str(err).splitlines()[0]})") from None
        if getattr(wc, "model_type", None) != "whisper":
            why = f" ({w2v.NOT_STUDIED[wc.model_type]})" if wc.model_type in w2v.NOT_STUDIED else ""
            raise ValueError(f"--model {config.model}: model_type {wc.model_type!r} is not one the study runs{why}; "
                             f"it runs whisper, {', '.join(w2v.MODEL_TYPES)}")
    for name in ("dropout", "attention_dropout", "activation_dropout"):
        setattr(wc, name, 0.0)
    if config.positions:
        wc.max_source_positions = config.positions
    elif config.model in PRESETS and max(config.lengths) > WHISPER_POSITIONS:
        wc.max_source_positions = max(config.lengths)  # sinusoids extended (module docstring)
    wc._attn_implementation = BASELINE
    return wc


def plan_layers(name: str, depth: int, num_heads: int) -> list[str] | None:
    """A study plan name -> one kind per layer (None for the stock sdpa encoder), validated."""
    from attnreuse.plan import parse_plan

    if name == BASELINE:
        return None
    group = name[5:] if name.startswith("share") and name[5:].isdigit() else None
    if group is not None:
        if int(group) < 2:
            raise ValueError(f"--plans {name!r}: a sharing group needs G >= 2 layers (share2, share3, ...)")
        if int(group) > depth:  # it would run share{depth}'s plan under another name
            raise ValueError(f"--plans {name!r}: a group of {group} layers in the {depth}-layer encoder; give G from 2 to {depth}")
        layers = [("mha" if i % int(group) == 0 else "share") for i in range(depth)]
    else:
        layers = [name] * depth
    try:
        return [str(s) for s in parse_plan(layers, depth, num_heads, owner=f"the {depth}-layer encoder")]
    except (ValueError, TypeError) as err:
        raise ValueError(f"--plans {name!r}: {err}") from None


def _validate(config: StudyConfig, wc) -> dict[str, list[str] | None]:
    limit = getattr(wc, "max_source_positions", None)  # None: convolutional positions (wav2vec2), no limit
    too_long = [n for n in config.lengths if limit is not None and n > limit]
    if too_long:
        raise ValueError(f"--lengths {too_long} exceed the model's {limit} positions; pass --positions {max(too_long)} "
                         "to extend its sinusoidal table (a real Whisper pads every input to 1500 frames, 30 s)")
    return {name: plan_layers(name, wc.num_hidden_layers, wc.num_attention_heads) for name in config.plan_names()}


def _encoder_at(full, n: int):
    """A copy of `full` (a WhisperEncoder) that takes 2n mel frames: its first n positions."""
    from torch import nn

    enc = copy.deepcopy(full)
    enc.config.max_source_positions = n
    table = nn.Embedding(n, full.config.d_model)
    table.weight.data.copy_(full.embed_positions.weight.data[:n])
    table.requires_grad_(False)
    enc.embed_positions = table
    return enc.eval()


def _call(model, x, backend: str):
    import torch

    from attnreuse.ops import use_backend

    def call():
        with torch.inference_mode(), use_backend(backend):
            return model(**x)

    return call


def _watch(timer, model) -> None:
    """Marks on the stem, every layer, its norms, attention module, projections and FFN, and the
    final norm (stock or converted)."""
    if w2v.handles(model):
        w2v.watch(timer, model)
        return
    for attr in ("conv1", "conv2", "embed_positions"):
        timer.watch(getattr(model, attr), "stem")
    timer.watch(model.layer_norm, "norm")
    for i, layer in enumerate(model.layers):
        timer.watch(layer, "layer", i)
        for attr in ("self_attn_layer_norm", "final_layer_norm"):
            timer.watch(getattr(layer, attr), "norm", i)
        watch_attention(timer, layer.self_attn, i)
        for attr in ("fc1", "activation_fn", "fc2"):
            timer.watch(getattr(layer, attr), "ffn", i)


def watch_attention(timer, attn, i: int) -> None:
    """Marks on layer i's attention module and its projections, stock (q/k/v/out_proj) or converted."""
    from attnreuse.hf.modules import PlanAttention

    timer.watch(attn, "attention", i)
    if isinstance(attn, PlanAttention):
        names = (("query", "qk_proj"), ("key", "qk_proj"), ("value", "v_proj"))
        owner = attn.core
        if attn.out_proj is not None:
            timer.watch(attn.out_proj, "out_proj", i)
    else:  # stock: Whisper, wav2vec2, HuBERT (q_proj ...) or Wav2Vec2-Conformer (linear_q ...)
        names = (("q_proj", "qk_proj"), ("k_proj", "qk_proj"), ("v_proj", "v_proj"), ("out_proj", "out_proj"),
                 ("linear_q", "qk_proj"), ("linear_k", "qk_proj"), ("linear_v", "v_proj"), ("linear_out", "out_proj"))
        owner = attn
    for attr, part in names:
        if hasattr(owner, attr):  # a skip layer's Phi has none of them
            timer.watch(getattr(owner, attr), part, i)


def _layer_parts(totals: dict, depth: int) -> tuple[list[dict[str, float]], dict[str, float]]:
    """(per layer: ms of each part and rest piece, the encoder's own pieces) from exclusive times.
    The attention module's own time is the fused kernel where no step was marked (stock SDPA),
    else glue (head reshapes)."""
    def ms(key):
        return 1e3 * totals.get(key, 0.0)

    layers = []
    for i in range(depth):
        layer = {p: ms((p, i)) for p in (*_PROJECTIONS, *_STEPS, "ffn")}
        own = ms(("attention", i))
        fused = not any(layer[p] for p in _STEPS)
        layer["core"] += own if fused else 0.0
        layer.update(norms=ms(("norm", i)), residual=ms(("layer", i)), attention_glue=0.0 if fused else own,
                     stem=0.0, other=0.0)
        if (CONFORMER_PART, i) in totals:
            layer[CONFORMER_PART] = ms((CONFORMER_PART, i))
        layers.append(layer)
    encoder = dict(stem=ms(("stem", None)), norms=ms(("norm", None)), other=ms(("rest", None)))
    return layers, encoder


def _sync(device: str) -> None:
    if device != "cpu":
        import torch

        torch.cuda.synchronize(device)


def measure_breakdown(model, x, backend: str, repeats: int, device: str = "cpu") -> dict:
    """`repeats` instrumented forwards, each timed next to an uninstrumented one (hooks attached for
    the instrumented one only). Returns the per-layer and encoder part ms (medians over forwards),
    the median instrumented and uninstrumented wall ms, and their median paired ratio."""
    from attnreuse.layers.parts import recording
    from attnreuse.measure import PartTimer

    timer = PartTimer(device)
    call = _call(model, x, backend)
    depth = len(model.encoder.layers if w2v.handles(model) else model.layers)
    runs, instrumented, plain, spans = [], [], [], []
    # Timed by hand, not with torch.utils.benchmark.Timer: each plain forward is paired with the
    # instrumented one right after it, and Timer times one statement at a time.
    call()  # untimed: the previous plan's peak-memory measurement released the pooled maps (ops.release_map_workspace)
    _sync(device)
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        call()
        _sync(device)
        plain.append(1e3 * (time.perf_counter() - t0))
        timer.reset()
        _watch(timer, model)
        try:
            with recording(timer):
                t0 = time.perf_counter()
                timer.start()
                call()
                timer.stop()
                _sync(device)
                instrumented.append(1e3 * (time.perf_counter() - t0))
        finally:
            timer.remove()
        totals = dict(timer.totals_s)
        spans.append(1e3 * sum(totals.values()))  # every interval of the span went to one part
        runs.append(_layer_parts(totals, depth))
    layers = [{p: statistics.median(r[0][i][p] for r in runs) for p in runs[0][0][i]} for i in range(depth)]
    encoder = {p: statistics.median(r[1][p] for r in runs) for p in runs[0][1]}
    return dict(layers=layers, encoder=encoder, instrumented_ms=statistics.median(instrumented),
                plain_ms=statistics.median(plain),
                overhead=statistics.median(a / b for a, b in zip(instrumented, plain)),
                coverage_paired=statistics.median(a / b for a, b in zip(spans, plain)))


def _summarise(layers: list[dict[str, float]], encoder: dict[str, float]) -> dict[str, float]:
    """ms per part of PARTS and per rest piece ("rest_" + piece), summed over layers."""
    parts = {p: sum(layer.get(p, 0.0) for layer in layers) for p in PARTS if p != "rest"}
    pieces = REST_PARTS + (CONFORMER_PART,) * any(CONFORMER_PART in layer for layer in layers)
    rest = {f"rest_{p}": encoder.get(p, 0.0) + sum(layer.get(p, 0.0) for layer in layers) for p in pieces}
    return {**parts, "rest": sum(rest.values()), **rest}


def predicted_removed_ms(layers_of_mha: list[dict[str, float]], plan: list[str], num_heads: int) -> float:
    """ms of the mha plan's measured parts that `plan`'s layers do not compute (`Kind.removed_parts`)."""
    from attnreuse.plan import get_kind, parse_plan

    specs = parse_plan(plan, len(plan), num_heads)
    return sum(
        share * layer.get(part, 0.0)
        for spec, layer in zip(specs, layers_of_mha)
        for part, share in get_kind(spec.kind).removed_parts(spec, num_heads).items()
    )


def _length_records(n: int, full, plans: dict, config: StudyConfig, progress) -> list[dict]:
    import torch

    from attnreuse.hf import convert
    from attnreuse.measure import measure_interleaved, measure_peak_bytes, paired_ratio

    if w2v.handles(full):  # the waveform of n frames; the same model at every length
        base, x = full, w2v.inputs_at(full, n, config.batch, config.seed)
    else:
        base = _encoder_at(full, n)
        g = torch.Generator().manual_seed(config.seed)
        x = {"input_features": torch.randn(config.batch, base.config.num_mel_bins, 2 * n, generator=g)}
    dtype = getattr(torch, config.dtype)
    x = {k: v.to(config.device, dtype) if v.is_floating_point() else v.to(config.device) for k, v in x.items()}
    models = {name: base if layers is None else convert(base, layers) for name, layers in plans.items()}
    for model in models.values():  # converted on the CPU, then moved and cast
        model.to(config.device, dtype)
    calls = {name: _call(m, x, config.backend) for name, m in models.items()}
    medians: dict = {}
    repeats, breakdown_repeats = config.repeats_at(n)
    stats = measure_interleaved(calls, rounds=config.rounds, warmup=config.warmup, repeats=repeats,
                                round_medians_ms=medians, device=config.device)
    failed = {k: v for k, v in stats.items() if isinstance(v, Exception)}
    if failed:
        name, err = next(iter(failed.items()))
        raise RuntimeError(f"plan {name} failed at {n} frames: {err}") from err
    records = []
    positions = getattr(full.config, "max_source_positions", None)
    stem = w2v.STEM if w2v.handles(full) else "two convs on the mel frames + position table"
    for name, model in models.items():
        bd = measure_breakdown(model, x, config.backend, breakdown_repeats, config.device)
        parts = _summarise(bd["layers"], bd["encoder"])
        total_ms = sum(parts[p] for p in PARTS)
        st = stats[name]
        vs_sdpa = paired_ratio(medians[BASELINE], medians[name])
        rec = dict(
            model=config.model, plan=name, plan_layers=plans[name], frames=n, batch=config.batch,
            threads=config.threads, device=str(config.device),
            backend=BASELINE if plans[name] is None else config.backend,
            weights="random (real widths and depths)", positions=positions,
            positions_extended=positions is not None and positions > WHISPER_POSITIONS,
            input_shape=list(next(iter(x.values())).shape), stem=stem,
            repeats=repeats, breakdown_repeats=breakdown_repeats, latency_ms_median=st.latency_ms_median,
            latency_ms_p90=st.latency_ms_p90, latency_ms_round_medians=medians[name], rounds=config.rounds,
            speedup_vs_sdpa=vs_sdpa[0], speedup_vs_sdpa_range=[vs_sdpa[1], vs_sdpa[2]],
            speedup_vs_mha=paired_ratio(medians[REFERENCE], medians[name])[0],
            breakdown_total_ms=total_ms, breakdown_coverage=bd["coverage_paired"],
            breakdown_coverage_rounds=total_ms / st.latency_ms_median,
            instrumented_ms=bd["instrumented_ms"], instrumented_plain_ms=bd["plain_ms"],
            instrumentation_overhead=bd["overhead"],
            attention_share=sum(parts[p] for p in ATTENTION_PARTS) / total_ms,
            peak_bytes=measure_peak_bytes(calls[name], device=config.device),
            **{f"ms_{p}": v for p, v in parts.items()}, layers=bd["layers"],
        )  # fmt: skip
        records.append(rec)
    mha = next(r for r in records if r["plan"] == REFERENCE)
    t_mha, t_sdpa = mha["latency_ms_median"], records[0]["latency_ms_median"]
    for rec in records:
        if rec["plan_layers"] is None:
            continue
        removed = predicted_removed_ms(mha["layers"], rec["plan_layers"], full.config.num_attention_heads)
        rec.update(predicted_removed_ms=removed, predicted_speedup_vs_mha=t_mha / (t_mha - removed),
                   predicted_speedup_vs_sdpa=t_sdpa / (t_mha - removed))
        rec["of_predicted"] = rec["speedup_vs_mha"] / rec["predicted_speedup_vs_mha"]
    for rec in records:
        if progress is not None:
            progress(rec)
    return records


def _dtype_fields(config: StudyConfig) -> dict:
    """The record's dtype, and on the CPU whether this CPU runs it on native units
    (`cpu_units.dtype_support`): a bf16 study on a CPU without bf16 units times emulation."""
    if config.device != "cpu":
        return {"dtype": config.dtype}
    from attnreuse.cpu_units import dtype_support

    support = dtype_support(config.dtype)
    return {"dtype": config.dtype, "dtype_execution": support["execution"], "dtype_units": support["units"]}


def run_study(config: StudyConfig, *, progress=None) -> list[dict]:
    """Measure every plan at every length; write records, plots and report.md to `config.output`."""
    import torch
    import transformers
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from attnreuse._io import atomic_write_json
    from attnreuse.bench.study_report import write_report
    from attnreuse.measure import machine_record, set_threads, write_records

    if config.device != "cpu" and not torch.cuda.is_available():
        raise ValueError(f"--device {config.device}: CUDA is not available to this torch {torch.__version__} "
                         "(torch.cuda.is_available() is False); run on a GPU machine or use --device cpu")
    wc = w2v.speech_config(config.model, config.positions)
    wc = whisper_config(config) if wc is None else wc
    plans = _validate(config, wc)
    if torch.device(config.device).index is not None:
        torch.cuda.set_device(torch.device(config.device))  # CUDA events record on the current device
    set_threads(config.threads)
    torch.manual_seed(config.seed)
    full = w2v.build(wc) if w2v.handles(wc) else WhisperEncoder(wc).eval()
    machine = machine_record(threads=config.threads, command=config.command, bench="study",
                             transformers=transformers.__version__, config=dataclasses.asdict(config),
                             **_dtype_fields(config))
    records = []
    for n in sorted(config.lengths):
        records += [{**r, **machine} for r in _length_records(n, full, plans, config, progress)]
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    write_records(out / "records.json", records)
    write_records(out / "records.csv", [{k: v for k, v in r.items() if k != "layers"} for r in records])
    atomic_write_json(out / "config.json", dataclasses.asdict(config))
    write_report(records, config, out)
    return records


def reproduce_command(config: StudyConfig) -> str:
    """The `attnreuse bench study ...` command line that repeats this configuration (its settings
    away from the defaults; the recorded `command` itself has no flag)."""
    return _cli_args.command_line(("attnreuse", "bench", "study"), config)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study",
        help="seed 001's study: map reuse on Whisper's encoder, latency broken down by part and by N",
        description="Every plan (sdpa baseline, mha, map sharing in groups, reuse, Taylor) at several "
        "sequence lengths: end-to-end latency, its breakdown into Q/K projections, scores+softmax, A.V, "
        "V/output projections, FFN and the rest, peak memory, the Amdahl check; report.md with plots.",
    )
    add_config_args(p, StudyConfig)
    _cli_args.add_quick_flag(p, QUICK, "a smoke test")
    p.add_argument("--force", action="store_true", help="replace a study already in --output")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> StudyConfig:
    """The run `args` describe: defaults < --config FILE < --quick < flags."""
    return _cli_args.config_from_args(StudyConfig, args, **_cli_args.quick_preset(args, QUICK))


def run(args: argparse.Namespace) -> int:
    from attnreuse._rundir import claim_output

    config = config_from_args(args)
    config = dataclasses.replace(config, command=reproduce_command(config))
    from attnreuse.bench.study_report import format_table

    # a study already in --output (its config.json) is kept unless --force; one writer at a time
    shown = []  # the table's header comes with its first row: none above an error line

    def progress(record: dict) -> None:
        print(format_table([record], header=not shown), flush=True)
        shown.append(record)

    with claim_output(config.output, force=args.force):
        run_study(config, progress=progress)
    print(f"\nwrote {config.output}/report.md, records.json, records.csv, breakdown.png, speedup.png")
    return 0
