"""`attnreuse bench models`: whole-model latency, throughput, parameters, MACs and peak memory,
in several runtimes side by side, with each model's speed-up over its family's baseline.

Models run with random weights whose BatchNorms are randomised (`bench.weights`: a fresh model
that zero-initialises its residual branches' gains has near-zero logits, which would make the ONNX
parity check vacuous). Records (one per model x resolution x runtime) carry the machine tags of
`attnreuse.measure`, the settings, and either measurements or an `error` (a model that fails in
one runtime does not stop the run). Each model's baseline and family label come from the module
that defines it (`attnreuse.models.peers`). Beside each measured speed-up is the ideal one, the
ratio of MAC counts. A name `MODEL:mixer=pointwise|none` runs a mixer probe
(`attnreuse.models.probes`) against the model's baseline: the ceiling a faster token mixer could
reach. A model timed beside its `:mixer=pointwise` probe also gets its share of that no-attention
ceiling, `share_of_ceiling` = T_probe / T_model (its speed-up over the baseline divided by the
probe's: the baseline cancels), pooled and paired over rounds.

Timing: every (model, resolution, runtime) is prepared first, then timed in `rounds` interleaved
rounds (each round times every one of them once, for 1/rounds of the repeats and minimum time,
each model right beside its baseline, the order reversed every other round); the statistics pool
all rounds. A machine whose speed drifts during the run (a shared VM, turbo, heat) then slows a
model and its baseline alike, instead of whichever was timed later. The speed-up is reported two
ways: the ratio of the pooled medians, and the median over rounds of the ratio of the two blocks
timed side by side (`speedup_vs_baseline_paired`, with its range): on a machine with slow spells
of a few seconds (as this project's 2-core VM has), the paired figure and its range show how much
of a difference is the models' and how much the machine's.

Dtypes (`--dtype`): float32; bfloat16 (bf16 weights and inputs, in the torch runtimes only: ONNX
Runtime 1.32's CPU provider has no bf16 MatMul/Add/Softmax kernels; each record also gives the bf16
logits' distance from float32, relative to the logit scale); int8 (the `ort-int8` runtime: the ONNX
export quantised by `export.quantize`). Every model of a run, baselines and peers included, runs in
the same dtype, and every record says whether this CPU has native units for it (`dtype_execution`,
`attnreuse.cpu_units`); the table marks emulated runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from attnreuse import _cli_args
from attnreuse._cli_args import add_config_args, arg

__all__ = [
    "ModelBenchConfig",
    "CEILING_SUFFIX",
    "add_relative_columns",
    "ceiling_lines",
    "baseline_of",
    "config_path",
    "default_models",
    "family_of",
    "format_table",
    "register",
    "reproduce_command",
    "run_models",
]

# `--quick`: a smoke test (flags given override these)
QUICK = {"warmup": 1, "repeats": 3, "min_time_s": 0.0, "rounds": 1}
# The probe whose speed-up is the no-attention ceiling (`attnreuse.models.probes`, "pointwise").
CEILING_SUFFIX = ":mixer=pointwise"
WEIGHTS = "random init, BatchNorm gains and statistics randomised (bench.weights)"
# dtype -> the runtimes that run it by default (float32 may also select "ort-fused")
DTYPE_RUNTIMES = {
    "float32": ("eager", "compile", "ort", "ort-int8"),
    "bfloat16": ("eager", "compile"),
    "int8": ("ort-int8",),
}
_WHY_NOT = {
    "bfloat16": "ONNX Runtime's CPU provider has no bf16 MatMul/Add/Softmax kernels",
    "int8": "int8 runs only as ONNX Runtime's quantised graph (export.quantize)",
}


def record_dtype(dtype: str, runtime: str) -> str:
    """The dtype a runtime's record is measured in: `ort-int8` is int8 whatever the run's dtype."""
    return "int8" if runtime == "ort-int8" else dtype


def baseline_of(name: str) -> str | None:
    """The model `name` is compared with (`attnreuse.models.peers`), or None (it is a baseline or a
    peer). A mixer probe (`MODEL:mixer=none`, `attnreuse.models.probes`) is compared with its
    model's baseline."""
    from attnreuse.models.peers import baseline_of as model_baseline
    from attnreuse.models.probes import split_probe

    return model_baseline(split_probe(name)[0])


def family_of(name: str) -> str:
    """The family label of `name` (`attnreuse.models.peers`); a mixer probe's is its model's + "_probe"."""
    from attnreuse.models.peers import family_of as model_family
    from attnreuse.models.probes import split_probe

    model, probe = split_probe(name)
    return model_family(model) + ("_probe" if probe is not None else "")


def default_models() -> list[str]:
    """Every registered attnreuse model, then the timm peers (`attnreuse.models.peers`)."""
    from attnreuse.models.peers import default_models as models

    return models()


@dataclass(frozen=True)
class ModelBenchConfig:
    """One run; each field with a flag is also one of `attnreuse bench models`."""

    models: tuple[str, ...] = arg((), "model names (none: every attnreuse model and the timm peers, "
                                  "`default_models()`); MODEL:mixer=pointwise or :mixer=none for a mixer probe "
                                  "(attnreuse.models.probes)", positional=True, nargs="*", metavar="NAME")
    batch: int = arg(1, "images per call")
    img_sizes: tuple[int, ...] = arg((224,), "input resolutions, e.g. 224,384", flags=("--img-size",))
    threads: int = arg(2, "intra-op threads (torch and ONNX Runtime)")
    runtimes: tuple[str, ...] = arg((), "comma-separated subset of eager,compile,ort,ort-int8,ort-fused (none: the "
                                    "dtype's: eager,compile,ort,ort-int8 for float32, eager,compile for bfloat16, "
                                    "ort-int8 for int8)")
    dtype: str = arg("float32", "float32; bfloat16 (bf16 weights and inputs: eager, compile); int8 (ort-int8). "
                     "Every model and baseline runs in it; records say if this CPU emulates it",
                     choices=tuple(sorted(DTYPE_RUNTIMES)))
    exporter: str = arg("torchscript", "ONNX exporter of the ort runtimes: torchscript (the graph `attnreuse export` "
                        "writes by default) or dynamo (torch.export-based; bench models' choice before 2026-12-02)",
                        choices=("dynamo", "torchscript"))  # deploy.EXPORTERS (checked against it below)
    int8_mode: str = arg("static", "ort-int8 quantisation: static (calibrated on digits train images) or dynamic",
                         choices=("static", "dynamic"))
    warmup: int = arg(5, "untimed calls per runtime before the first round")
    repeats: int = arg(20, "timed samples per runtime at least, all rounds (`measure.measure_latency`: "
                       "one call each for calls over ~10 ms)")
    min_time_s: float = arg(1.0, "seconds of timed calls per runtime (all rounds)", flags=("--min-time",))
    rounds: int = arg(6, "interleaved timing rounds over all models and runtimes")
    baselines: bool = arg(True, "also run each model's baseline when it is not listed")
    checkpoint: str | None = arg(None, "weights of the one model named: a state dict file or an `attnreuse "
                                 "train`/`convert` run directory, loaded strictly (baselines keep random "
                                 "weights); --img-size must be the one it was trained at", metavar="PATH")
    eval_data: str | None = arg(None, "with --dtype bfloat16: 'digits' (test split) or an ImageFolder; the bf16 "
                                "fidelity columns (logit distance from float32, top-1 agreement, each dtype's "
                                "top-1) are measured over it instead of over the timed batch", metavar="DATA")
    eval_images: int | None = arg(None, "images of --eval-data (None: all)")
    json: str | None = arg(None, "write the records as JSON", metavar="FILE")
    csv: str | None = arg(None, "write the records as CSV", metavar="FILE")
    command: str | None = arg(None, "the command line that reproduces the run (recorded)", cli=False)

    def __post_init__(self) -> None:
        from attnreuse.bench.runtimes import RUNTIMES
        from attnreuse.deploy import EXPORTERS
        from attnreuse.quantize import QUANT_MODES

        for name in ("models", "img_sizes", "runtimes"):
            if not isinstance(getattr(self, name), tuple):
                raise TypeError(f"{name} must be a tuple, got {type(getattr(self, name)).__name__}")
        if not self.runtimes and self.dtype in DTYPE_RUNTIMES:
            object.__setattr__(self, "runtimes", DTYPE_RUNTIMES[self.dtype])
        for name in ("img_sizes", "runtimes"):  # a repeat would be prepared and timed twice, as two records
            object.__setattr__(self, name, tuple(dict.fromkeys(getattr(self, name))))
        for name in ("batch", "threads", "warmup", "repeats", "rounds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "warmup" else 1):
                raise ValueError(f"{name} must be a {'non-negative' if name == 'warmup' else 'positive'} int, got {value!r}")
        bad_sizes = [s for s in self.img_sizes if isinstance(s, bool) or not isinstance(s, int) or s < 16]
        if bad_sizes or not self.img_sizes:
            raise ValueError(f"img_sizes must be ints >= 16, got {self.img_sizes!r}")
        unknown = [r for r in self.runtimes if r not in RUNTIMES]
        if unknown or not self.runtimes:
            raise ValueError(f"runtimes must be a non-empty selection of {RUNTIMES}, got {self.runtimes!r}")
        if self.dtype not in DTYPE_RUNTIMES:
            raise ValueError(f"dtype must be one of {sorted(DTYPE_RUNTIMES)}, got {self.dtype!r}")
        allowed = RUNTIMES if self.dtype == "float32" else DTYPE_RUNTIMES[self.dtype]
        wrong = [r for r in self.runtimes if r not in allowed]
        if wrong:
            raise ValueError(
                f"dtype {self.dtype} cannot run in runtimes {wrong} ({_WHY_NOT.get(self.dtype, 'the runtime is int8')}); "
                f"choose from --runtimes {','.join(DTYPE_RUNTIMES[self.dtype])}"
            )
        if self.exporter not in EXPORTERS:
            raise ValueError(f"exporter must be one of {EXPORTERS}, got {self.exporter!r}")
        if self.int8_mode not in QUANT_MODES:
            raise ValueError(f"int8_mode must be one of {QUANT_MODES}, got {self.int8_mode!r}")
        # not `< 0` alone: NaN passes it and Timer's blocked_autorange then never stops (inf neither)
        if isinstance(self.min_time_s, bool) or not isinstance(self.min_time_s, (int, float)) or not 0 <= self.min_time_s < math.inf:
            raise ValueError(f"--min-time must be a finite number of seconds >= 0, got {self.min_time_s!r}")
        from attnreuse.models.probes import split_probe

        for name in self.models:
            split_probe(name)  # a malformed probe name fails here, before any model is built
        if self.checkpoint is not None and (len(self.models) != 1 or split_probe(self.models[0])[1] is not None):
            raise ValueError(f"--checkpoint holds the weights of one model: name exactly one (no :mixer= probe), "
                             f"got {list(self.models) or 'none (every model)'}")
        if self.eval_data is not None and self.dtype != "bfloat16":
            raise ValueError(f"--eval-data measures bf16 fidelity: it needs --dtype bfloat16, got --dtype {self.dtype} "
                             "(int8 fidelity: attnreuse export --int8 --eval-data)")
        if self.eval_images is not None and (
            isinstance(self.eval_images, bool) or not isinstance(self.eval_images, int) or self.eval_images < 1
        ):
            raise ValueError(f"eval_images must be a positive int or None, got {self.eval_images!r}")
        if self.eval_data is not None and self.eval_data != "digits" and not Path(self.eval_data).is_dir():
            raise ValueError(f"--eval-data must be 'digits' or an ImageFolder directory, got {self.eval_data!r}")
        for name in ("json", "csv"):
            if getattr(self, name) is not None and Path(getattr(self, name)).is_dir():
                raise ValueError(f"{name} must be a file path, got the directory {getattr(self, name)!r}")
        _cli_args.distinct_outputs(self, ("json", "csv"))

    def model_list(self) -> list[str]:
        """The models to run, in order, each baseline added after the last model that needs it."""
        names = list(self.models) or default_models()
        if self.baselines:
            for name in list(names):
                base = baseline_of(name)
                if base is not None and base not in names:
                    names.append(base)
        return list(dict.fromkeys(names))


def _error(err: BaseException) -> str:
    """`Type: first line of the message` (at most 400 characters of it)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:400] if lines else ''}"


def _prepare_model(name: str, img_size: int, config: ModelBenchConfig, work: Path) -> list[tuple[dict, object]]:
    """(record, no-argument call or None when it failed) for each runtime of one model."""
    import torch

    from attnreuse.bench.flops import count_macs, count_params
    from attnreuse.models.probes import apply_mixer_probe, split_probe
    from attnreuse.bench.runtimes import prepare_runtime
    from attnreuse.measure import measure_peak_bytes
    from attnreuse.bench.weights import randomize_batchnorms
    from attnreuse.data import digits_images, load_images
    from attnreuse.deploy import create_export_model, deploy_model, input_spec

    checkpoint = config.checkpoint if config.checkpoint is not None and name == config.models[0] else None
    base = dict(
        model=name, family=family_of(name), baseline=baseline_of(name), img_size=img_size,
        batch=config.batch, threads=config.threads, dtype=config.dtype,
        weights=WEIGHTS if checkpoint is None else f"checkpoint {checkpoint}",
    )  # fmt: skip
    try:
        model_name, probe = split_probe(name)
        model = create_export_model(model_name, img_size=img_size, checkpoint=checkpoint)
        if probe is not None:
            model = apply_mixer_probe(model, probe)
        if checkpoint is None:
            randomize_batchnorms(model)  # every residual branch live: the ORT parity check means something
        chans, height, width = input_spec(model, img_size)
        norm = dict(mean=model.pretrained_cfg.get("mean", (0.5,) * 3), std=model.pretrained_cfg.get("std", (0.5,) * 3))
        x, _ = digits_images("test", img_size=height, limit=config.batch, in_chans=chans, **norm)
        x = x.repeat((config.batch + len(x) - 1) // len(x), 1, 1, 1)[: config.batch]
        calib = digits_images("train", img_size=height, limit=16 * config.batch, in_chans=chans, **norm)[0]
        base.update(params=count_params(model), macs=count_macs(model, x[:1]))
        deployed = deploy_model(model)
        if config.dtype == "bfloat16":
            held_out = None
            if config.eval_data is not None:
                held_out = load_images(config.eval_data, "test", img_size=height, in_chans=chans,
                                       limit=config.eval_images, **norm)  # fmt: skip
            base.update(_to_bfloat16(deployed, x, held_out, batch=config.batch))
            x = x.to(torch.bfloat16)
        with torch.inference_mode():
            peak_bytes = measure_peak_bytes(lambda: deployed(x))
    except Exception as err:  # noqa: BLE001 - any failure becomes the model's error record
        return [({**base, "runtime": r, "error": _error(err)}, None) for r in config.runtimes]
    prepared = []
    mdir = work / f"{name}_{img_size}"
    mdir.mkdir(parents=True, exist_ok=True)
    for runtime in config.runtimes:
        rec = {**base, "runtime": runtime, "error": None, "peak_bytes": peak_bytes if runtime == "eager" else None,
               **_dtype_columns(record_dtype(config.dtype, runtime))}
        call = None
        try:
            call, info = prepare_runtime(
                runtime, deployed, x, threads=config.threads, work_dir=mdir, calib_images=calib,
                int8_mode=config.int8_mode, exporter=config.exporter,
            )  # fmt: skip
            rec.update(info)
        except Exception as err:  # noqa: BLE001 - recorded, the run goes on
            rec["error"] = _error(err)
        prepared.append((rec, call))
    return prepared


def _to_bfloat16(model, x, held_out=None, *, batch: int = 1) -> dict:
    """Cast the deployed eval `model` to bf16 in place; returns how far its logits move from float32:
    max |bf16 - fp32| over max |fp32| (`bf16_logit_rel_diff`) and the share of images whose top-1
    class stays (`bf16_top1_agreement`), on `x` (the timed float32 batch) or, when given, on
    `held_out` = (images [N, C, H, W] float32, labels [N]) in chunks of `batch`, which adds each
    dtype's top-1 accuracy (`fp32_top1`, `bf16_top1`) and `bf16_eval_images`."""
    import torch

    images, labels = (x, None) if held_out is None else held_out
    chunks = images.split(max(1, batch))
    with torch.inference_mode():
        ref = torch.cat([model(c).float() for c in chunks])
        model.to(torch.bfloat16)
        out = torch.cat([model(c.to(torch.bfloat16)).float() for c in chunks])
    scale = ref.abs().max().clamp_min(1e-12)
    record = {"bf16_logit_rel_diff": float((out - ref).abs().max() / scale),
              "bf16_top1_agreement": float((out.argmax(-1) == ref.argmax(-1)).float().mean())}
    if held_out is not None:
        record.update(bf16_eval_images=len(images), fp32_top1=float((ref.argmax(-1) == labels).float().mean()),
                      bf16_top1=float((out.argmax(-1) == labels).float().mean()))
    return record


def _dtype_columns(dtype: str) -> dict:
    from attnreuse.cpu_units import dtype_support

    support = dtype_support(dtype)
    return {"dtype": dtype, "dtype_execution": support["execution"], "dtype_units": support["units"]}


def _timing_order(prepared: list[tuple[dict, object]]) -> list[int]:
    """Indices of `prepared` in the order they are timed: per resolution and runtime, each
    baseline followed by the models compared with it, so every round times a model right beside
    its baseline (`measure_interleaved` reverses odd rounds, so neither always goes second)."""

    def key(i: int) -> tuple:
        rec = prepared[i][0]
        return rec["img_size"], rec["runtime"], rec.get("baseline") or rec["model"], rec.get("baseline") is not None

    return sorted(range(len(prepared)), key=key)


def _time_rounds(prepared: list[tuple[dict, object]], config: ModelBenchConfig) -> None:
    """Time every prepared call in `config.rounds` interleaved rounds; fill in the statistics and
    each round's median (`latency_ms_round_medians`, for speed-ups paired round by round)."""
    from attnreuse.measure import measure_interleaved

    calls = {i: prepared[i][1] for i in _timing_order(prepared) if prepared[i][1] is not None and prepared[i][0]["error"] is None}
    medians: dict[int, list[float]] = {}
    results = measure_interleaved(calls, rounds=config.rounds, warmup=config.warmup, repeats=config.repeats,
                                  min_time_s=config.min_time_s, round_medians_ms=medians)
    for i, stats in results.items():
        rec = prepared[i][0]
        if isinstance(stats, Exception):
            rec["error"] = _error(stats)
            continue
        rec.update(dataclasses.asdict(stats), rounds=config.rounds, latency_ms_round_medians=medians[i])
        rec["throughput_img_per_s"] = 1e3 * config.batch / stats.latency_ms_median


def add_relative_columns(records: list[dict]) -> list[dict]:
    """Add, where both sides were measured: `latency_vs_eager` (this runtime / eager, same model),
    and against the baseline in the same runtime `speedup_vs_baseline` (baseline latency / this),
    `ideal_speedup_vs_baseline` (baseline MACs / these MACs) and `fraction_of_ideal`; with
    per-round medians on both sides, `speedup_vs_baseline_paired` (the median over rounds of the
    ratio of the two blocks timed side by side in that round) and its [min, max] over rounds; and
    beside a `:mixer=pointwise` probe, `share_of_ceiling` (T_probe / T_model) and its paired form."""
    ok = {
        (r["model"], r["img_size"], r["batch"], r["runtime"]): r
        for r in records
        if r.get("error") is None and r.get("latency_ms_median")
    }
    for r in records:
        if r.get("error") is not None:
            continue
        eager = ok.get((r["model"], r["img_size"], r["batch"], "eager"))
        if eager is not None and r["runtime"] != "eager":
            r["latency_vs_eager"] = r["latency_ms_median"] / eager["latency_ms_median"]
        base = ok.get((r["baseline"], r["img_size"], r["batch"], r["runtime"])) if r.get("baseline") else None
        if base is not None:
            r["speedup_vs_baseline"] = base["latency_ms_median"] / r["latency_ms_median"]
            r["ideal_speedup_vs_baseline"] = base["macs"] / r["macs"]
            r["fraction_of_ideal"] = r["speedup_vs_baseline"] / r["ideal_speedup_vs_baseline"]
            _add_paired(r, "speedup_vs_baseline_paired", base)
        probe = ok.get((f"{r['model']}{CEILING_SUFFIX}", r["img_size"], r["batch"], r["runtime"]))
        if probe is not None:
            # speed-up over the baseline / the probe's = T_probe / T_model: the baseline cancels
            r["share_of_ceiling"] = probe["latency_ms_median"] / r["latency_ms_median"]
            _add_paired(r, "share_of_ceiling_paired", probe)
    return records


def _add_paired(r: dict, key: str, other: dict) -> None:
    """r[key] (and key_range): T_other / T_r paired round by round, where both have per-round medians."""
    from attnreuse.measure import paired_ratio

    rounds_o, rounds_r = other.get("latency_ms_round_medians"), r.get("latency_ms_round_medians")
    if rounds_o and rounds_r and len(rounds_o) == len(rounds_r):
        ratio, low, high = paired_ratio(rounds_o, rounds_r)
        r.update({key: ratio, f"{key}_range": [low, high]})


def ceiling_lines(records: list[dict]) -> list[str]:
    """One line per model timed beside its no-attention probe (`MODEL:mixer=pointwise`): its share
    of the ceiling, pooled and paired over rounds (`add_relative_columns`)."""
    lines = []
    for r in records:
        if r.get("share_of_ceiling") is None:
            continue
        paired = r.get("share_of_ceiling_paired")
        pair = "" if paired is None else (
            f", paired over rounds {paired:.2f} ({r['share_of_ceiling_paired_range'][0]:.2f}-"
            f"{r['share_of_ceiling_paired_range'][1]:.2f})")
        lines.append(f"{r['model']} {r['img_size']} {r['runtime']}: {r['share_of_ceiling']:.2f} of the no-attention "
                     f"ceiling{pair}")
    if lines:
        lines.insert(0, f"share of the no-attention ceiling (T of MODEL{CEILING_SUFFIX} / T of MODEL, timed in the same rounds):")
    return lines


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _dtype_cell(record: dict) -> str:
    """"float32", "bfloat16", or "bfloat16 EMUL" where this CPU has no units for it."""
    dtype = record.get("dtype", "float32")
    return f"{dtype} EMUL" if record.get("dtype_execution") == "emulated" else dtype


def format_table(records: list[dict]) -> str:
    """A fixed-width table of the records, one line each (errors shortened); a dtype this CPU has
    no matrix units for is marked EMUL (emulated), and a footnote says so."""
    head = (
        f"{'model':<34} {'img':>4} {'runtime':<9} {'dtype':<14} {'median ms':>10} {'p90 ms':>9} {'img/s':>8} "
        f"{'params M':>8} {'GMACs':>6} {'peak MiB':>8} {'vs eager':>8} {'vs base':>8} {'paired':>6} {'ideal':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in records:
        left = f"{r['model']:<34} {r['img_size']:>4} {r['runtime']:<9} {_dtype_cell(r):<14}"
        if r.get("error"):
            lines.append(f"{left} error: {r['error'][:90]}")
            continue
        lines.append(
            f"{left} {r['latency_ms_median']:>10.2f} {r['latency_ms_p90']:>9.2f} "
            f"{r['throughput_img_per_s']:>8.1f} {r['params'] / 1e6:>8.2f} {r['macs'] / 1e9:>6.3f} "
            f"{_fmt(r.get('peak_bytes') and r['peak_bytes'] / 2**20, '8.1f'):>8} "
            f"{_fmt(r.get('latency_vs_eager'), '8.2f'):>8} {_fmt(r.get('speedup_vs_baseline'), '8.2f'):>8} "
            f"{_fmt(r.get('speedup_vs_baseline_paired'), '6.2f'):>6} {_fmt(r.get('ideal_speedup_vs_baseline'), '6.2f'):>6}"
        )
    lines += ceiling_lines(records)
    lines += fidelity_lines(records)
    emulated = sorted({r["dtype"] for r in records if r.get("dtype_execution") == "emulated"})
    if emulated:
        lines.append(f"EMUL: this CPU has no matrix units for {', '.join(emulated)}; those figures are emulation's, "
                     "not what such units would do (attnreuse.cpu_units)")
    return "\n".join(lines)


def fidelity_lines(records: list[dict]) -> list[str]:
    """One line per bf16 model and resolution measured over --eval-data: how far bf16 moved it."""
    seen, lines = set(), []
    for r in records:
        key = (r["model"], r["img_size"])
        if r.get("bf16_eval_images") is None or key in seen:
            continue
        seen.add(key)
        lines.append(
            f"bf16 fidelity, {r['model']} at {r['img_size']}: logits within {r['bf16_logit_rel_diff']:.2e} of float32 "
            f"(of the largest logit), top-1 agreement {100 * r['bf16_top1_agreement']:.1f}% over "
            f"{r['bf16_eval_images']} held-out images (top-1 {100 * r['fp32_top1']:.1f}% float32, "
            f"{100 * r['bf16_top1']:.1f}% bf16)"
        )
    return lines


def config_path(results: str | Path) -> Path:
    """Where the config of a run is written beside its results: r.json -> r.config.json."""
    return Path(results).with_suffix(".config.json")


def run_models(config: ModelBenchConfig, *, progress=None) -> list[dict]:
    """Benchmark every model at every resolution in every runtime; write JSON/CSV if asked.

    `progress(record)` is called after each record (the CLI prints a line).
    """
    import warnings

    from attnreuse._io import atomic_write_json
    from attnreuse.measure import machine_record, set_threads, write_records

    import torch

    set_threads(config.threads)
    machine = machine_record(threads=config.threads, command=config.command, bench="models",
                             config=dataclasses.asdict(config))
    records = []
    # Every compiled model stays alive until all rounds are timed: allow dynamo one cache entry
    # per model (models of one class share their forward's code object).
    limit = torch._dynamo.config.cache_size_limit
    torch._dynamo.config.cache_size_limit = max(limit, 8 * len(config.model_list()) * len(config.img_sizes))
    try:
        with tempfile.TemporaryDirectory(prefix="attnreuse-bench-") as work, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # exporter and compiler chatter; errors are recorded
            prepared = []
            for img_size in config.img_sizes:
                for name in config.model_list():
                    prepared += _prepare_model(name, img_size, config, Path(work))
            _time_rounds(prepared, config)
    finally:
        torch._dynamo.reset()
        torch._dynamo.config.cache_size_limit = limit
    for rec, _ in prepared:
        rec.update(machine)
        records.append(rec)
        if progress is not None:
            progress(rec)
    add_relative_columns(records)
    for path in (config.json, config.csv):
        if path is not None:
            write_records(path, records)
            atomic_write_json(config_path(path), dataclasses.asdict(config))
    return records


def reproduce_command(config: ModelBenchConfig) -> str:
    """The `attnreuse bench models ...` command line that repeats this configuration (its settings
    away from the defaults; the recorded `command` itself has no flag)."""
    return _cli_args.command_line(("attnreuse", "bench", "models"), config)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="whole-model latency/params/MACs/memory in eager, torch.compile and ONNX Runtime",
        description="Benchmark models (default: every attnreuse model and the timm peers, random init) "
        "in several runtimes, with each model's speed-up over its family baseline beside the ideal "
        "one from MAC counts.",
    )
    add_config_args(p, ModelBenchConfig)
    _cli_args.add_quick_flag(p, QUICK, "a smoke test")
    p.add_argument("--force", action="store_true", help="replace --json, --csv and their FILE.config.json if they exist")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> ModelBenchConfig:
    """The run `args` describe: defaults < --config FILE < --quick < flags."""
    return _cli_args.config_from_args(ModelBenchConfig, args, **_cli_args.quick_preset(args, QUICK))


def _check_checkpoint(config: ModelBenchConfig) -> None:
    """Before any model is built: the checkpoint exists, and a run directory's training size is
    among --img-size (a ViT's position table is as large as its grid: another size cannot load)."""
    import timm

    from attnreuse.runs import read_model_spec

    path = Path(config.checkpoint)
    if not path.exists():
        raise ValueError(f"--checkpoint {config.checkpoint!r} does not exist (a state dict file or a run directory)")
    spec = read_model_spec(path) if path.is_dir() else None
    trained = None
    if spec is not None:  # the size it was built with, else its name's default
        cfg = timm.models.get_pretrained_cfg(spec["name"])
        trained = spec["kwargs"].get("img_size") or (cfg.input_size[-1] if cfg is not None else None)
    if trained is not None and trained not in config.img_sizes:
        raise ValueError(f"--checkpoint {config.checkpoint!r} was trained at img_size {trained}; "
                         f"pass --img-size {trained} (got {','.join(map(str, config.img_sizes))})")


def run(args: argparse.Namespace) -> int:
    from attnreuse._io import new_output_file
    from attnreuse.models.probes import split_probe
    from attnreuse.models import check_model_name

    config = config_from_args(args)
    for name in config.models:
        check_model_name(split_probe(name)[0])
    if config.checkpoint is not None:
        _check_checkpoint(config)
    for flag, path in (("--json", config.json), ("--csv", config.csv)):  # before any model is timed
        new_output_file(flag, path, force=args.force, beside=(config_path(path),) if path else ())
    config = dataclasses.replace(config, command=reproduce_command(config))
    print(format_table([])[: format_table([]).index("\n")], flush=True)
    records = run_models(config, progress=lambda r: print(format_table([r]).splitlines()[2], flush=True))
    print()
    print(format_table(records))
    failed = sorted({r["model"] for r in records if r.get("error")})
    if failed:
        print(f"attnreuse bench models: error: {len(failed)} model(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
