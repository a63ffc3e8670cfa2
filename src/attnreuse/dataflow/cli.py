"""`attnreuse dataflow`: the FLAT cost model on the command line.

    attnreuse dataflow --hw flat-edge --model bert-base --seq 512,4096,65536 [--batch 64]
                       [--scope model|attention] [--buffer-kib K] [--plot FILE.png] [--json FILE]
    attnreuse dataflow --paper [--json FILE]       FLAT's platforms/models, averages beside the paper
    attnreuse dataflow --validate [--seq 512,2048] [--json FILE]   model vs measured ratios here
    attnreuse dataflow --published [--json FILE]   model vs FLAT's and FuseMax's published numbers
    --assume attnreuse|flat-paper|fusemax          which modelling assumptions (default: fusemax on a
                                                   PE-array accelerator, attnreuse on a CPU/GPU)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass

from attnreuse.dataflow.assumptions import SETTINGS, default_for

__all__ = ["DataflowConfig", "register", "run"]


def _seq_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seq must be comma-separated ints, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"--seq needs at least one length, e.g. 512,4096; got {text!r}")
    return values


@dataclass(frozen=True)
class DataflowConfig:
    """One `attnreuse dataflow` run (written beside its JSON results)."""

    hw: str = "flat-edge"
    model: str = "bert-base"
    seq_lens: tuple[int, ...] = (512, 4096, 65536)
    batch: int = 64
    scope: str = "model"
    buffer_bytes: int | None = None
    assume: str | None = None  # None: the hardware's default (assumptions.default_for)

    def __post_init__(self) -> None:
        if not self.seq_lens or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in self.seq_lens):
            raise ValueError(f"seq_lens (--seq) must be positive ints, got {self.seq_lens!r}")
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1:
            raise ValueError(f"batch must be a positive int, got {self.batch!r}")
        if self.scope not in ("model", "attention"):
            raise ValueError(f"scope must be 'model' or 'attention', got {self.scope!r}")
        if self.buffer_bytes is not None and self.buffer_bytes < 1:
            raise ValueError(f"buffer_bytes (--buffer-kib) must be positive, got {self.buffer_bytes!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "dataflow",
        help="FLAT accelerator cost model: time, traffic and energy of attention dataflows",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--hw", default=None, help="flat-edge (default), flat-cloud, jetson-orin or this-cpu")
    parser.add_argument("--model", default=None, help="bert-base (default), trxl, t5, xlm or a ViT-style timm name")
    parser.add_argument("--seq", type=_seq_list, default=None,
                        help="comma-separated sequence lengths (default: 512,4096,65536 for the FLAT "
                        "models, the token count of an image model)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 64)")
    parser.add_argument("--scope", choices=("model", "attention"), default=None,
                        help="whole model (projections and FFN included; default) or attention cores only")
    parser.add_argument("--assume", choices=tuple(SETTINGS), default=None,
                        help="modelling assumptions: fusemax (FuseMax's re-model of FLAT; the default on "
                        "flat-edge/flat-cloud), attnreuse (the default on a CPU/GPU preset) or flat-paper "
                        "(FLAT's own model); see docs/dataflow.md")
    parser.add_argument("--buffer-kib", type=int, default=None, help="override the on-chip buffer size")
    parser.add_argument("--plot", default=None, help="PNG: speed-up and off-chip bytes against N")
    parser.add_argument("--json", default=None, help="write config and one record per (dataflow, N)")
    parser.add_argument("--force", action="store_true", help="replace --json and --plot files that exist")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--paper", action="store_true", help="FLAT's four models on flat-edge/cloud vs the paper")
    mode.add_argument("--validate", action="store_true", help="predicted vs measured ratios on this CPU")
    mode.add_argument("--published", action="store_true",
                      help="predicted vs FLAT's and FuseMax's published numbers, each on its own configuration")
    parser.set_defaults(func=run)


def _run_model(args: argparse.Namespace) -> int:
    from attnreuse._io import atomic_write_json
    from attnreuse.dataflow.cost import compare
    from attnreuse.dataflow.hardware import get_hardware
    from attnreuse.dataflow.report import plot, table
    from attnreuse.dataflow.workload import MODELS, get_workload

    defaults = DataflowConfig()
    model, batch = args.model or defaults.model, defaults.batch if args.batch is None else args.batch
    workload = get_workload(model, batch=batch)
    # FLAT's language models default to a sweep; an image model to its own token count.
    default_seq = defaults.seq_lens if model in MODELS else (workload.seq_len,)
    cfg = DataflowConfig(
        hw=args.hw or defaults.hw,
        model=model,
        seq_lens=args.seq or default_seq,
        batch=batch,
        scope=args.scope or defaults.scope,
        buffer_bytes=None if args.buffer_kib is None else args.buffer_kib * 1024,
        assume=args.assume or defaults.assume,
    )
    hw = get_hardware(cfg.hw)
    if cfg.assume is None:
        cfg = dataclasses.replace(cfg, assume=_setting_name(default_for(hw)))
    if cfg.buffer_bytes is not None:
        hw = hw.with_buffer(cfg.buffer_bytes)
    results = []
    for n in cfg.seq_lens:
        w = workload.with_seq(n)
        scoped = w.attention() if cfg.scope == "attention" else w
        results.extend(compare(scoped, hw, assumptions=SETTINGS[cfg.assume]))
    print(f"{cfg.model} ({cfg.scope}, batch {cfg.batch}) on {hw.name}, assumptions {cfg.assume}")
    print(table(results))
    if args.plot:
        plot(results, args.plot, title=f"{cfg.model} ({cfg.scope}) on {hw.name}, batch {cfg.batch}")
    if args.json:
        atomic_write_json(
            args.json,
            {
                "config": cfg.to_dict(),
                "hardware": hw.to_dict(),
                "workload": workload.to_dict(),
                "records": [r.to_dict() for r in results],
            },
        )
    return 0


def _setting_name(a) -> str:
    return next(name for name, setting in SETTINGS.items() if setting == a)


# Flags that choose a configuration of the model sweep; --paper and --validate read a few of them,
# --published none (each published figure runs its own configuration).
_CONFIG_FLAGS = ("hw", "model", "seq", "batch", "scope", "buffer_kib", "plot", "assume")


def _refuse_unused(args: argparse.Namespace, mode: str, used: tuple[str, ...], why: str) -> None:
    """A ValueError naming the configuration flags given that `mode` does not read (a flag it would
    silently ignore), or nothing."""
    given = [f"--{f.replace('_', '-')}" for f in _CONFIG_FLAGS if f not in used and getattr(args, f) is not None]
    if given:
        raise ValueError(f"{mode} {why}; drop {', '.join(given)}")


def _run_paper(args: argparse.Namespace) -> int:
    from attnreuse._io import atomic_write_json
    from attnreuse.dataflow.report import PAPER_SEQ_LENS, paper_comparison, scarce_buffer_comparison

    _refuse_unused(args, "--paper", ("seq", "batch", "assume"),
                   "runs FLAT's four models on flat-edge and flat-cloud and reads only --seq, --batch and --assume")
    seq_lens = args.seq or PAPER_SEQ_LENS
    batch = DataflowConfig.batch if args.batch is None else args.batch
    assume = args.assume or DataflowConfig.assume
    records = paper_comparison(batch=batch, seq_lens=seq_lens, assumptions=assume and SETTINGS[assume])
    print(f"FLAT vs per-operator baseline, batch {batch}, N = {','.join(map(str, seq_lens))} (means), "
          f"assumptions {assume or 'fusemax (the default on these PE arrays)'}")
    print(f"{'hardware':11s} {'scope':9s} {'model':9s} {'speedup':>8s} {'paper':>6s} {'energy saved':>12s} {'paper':>6s}")
    for r in records:
        print(
            f"{r['hardware']:11s} {r['scope']:9s} {r['model']:9s} {r['speedup_mean']:7.2f}x "
            f"{r['paper_speedup']:5.2f}x {100 * r['energy_saving_mean']:11.0f}% {100 * r['paper_energy_saving']:5.0f}%"
        )
    scarce = scarce_buffer_comparison(batch=batch, seq_lens=seq_lens, assumptions=assume and SETTINGS[assume])
    print(f"scarce buffers ({'/'.join(map(str, scarce['buffers_kib']))} KiB), whole model, mean: "
          f"{scarce['speedup_mean']:.2f}x (paper {scarce['paper_speedup']:.2f}x; "
          + ", ".join(f"{h} {r['speedup_mean']:.2f}x" for h, r in scarce["by_hardware"].items()) + ")")
    if args.json:
        atomic_write_json(
            args.json,
            {"batch": batch, "seq_lens": list(seq_lens), "assume": assume, "records": records, "scarce_buffer": scarce},
        )
    return 0


def _run_validate(args: argparse.Namespace) -> int:
    from attnreuse._io import atomic_write_json
    from attnreuse.dataflow.validate import ValidateConfig, validate

    _refuse_unused(args, "--validate", ("seq",), "measures its own cases on this CPU and reads only --seq")
    cfg = ValidateConfig(seq_lens=args.seq) if args.seq else ValidateConfig()
    records = validate(cfg)
    print(records[0]["hardware"]["sources"][0])
    print(f"{'case':26s} {'N':>6s} {'measured':>9s} {'model':>7s} {'diff':>6s}")
    for r in records:
        print(
            f"{r['case']:26s} {r['seq_len']:6d} {r['measured_ratio']:8.2f}x {r['predicted_ratio']:6.2f}x "
            f"{100 * r['rel_diff']:+5.0f}%"
        )
    if args.json:
        atomic_write_json(args.json, {"config": cfg.to_dict(), "records": records})
    return 0


def _fmt(x: float | None) -> str:
    return "never" if x is None else f"{x:.4g}"


def _diff(x: float | None) -> str:
    return "   n/a" if x is None else f"{100 * x:+5.0f}%"


def _run_published(args: argparse.Namespace) -> int:
    from attnreuse._io import atomic_write_json
    from attnreuse.dataflow.published import TOLERANCE, compare_published

    _refuse_unused(args, "--published", (), "runs each published figure's own configuration")
    records = compare_published()
    print(f"predicted vs published (ok: within {TOLERANCE:.0%} under the matching setting; N 0: over all lengths)")
    print(f"{'preset':6s} {'model':5s} {'N':>8s} {'quantity':21s} {'setting':10s} {'predicted':>10s} "
          f"{'published':>10s} {'diff':>6s} ok  {'default':>10s} {'diff':>6s}  gap closed by")
    for r in records:
        closed = r["default_gap_closed_by"] if r["within_tolerance"] else r["gap_closed_by"]
        print(f"{r['preset']:6s} {r['model']:5s} {r['seq_len']:8d} {r['quantity']:21s} {r['setting']:10s} "
              f"{_fmt(r['predicted']):>10s} {_fmt(r['published']):>10s} {_diff(r['rel_diff'])} "
              f"{'ok' if r['within_tolerance'] else '--'}  {_fmt(r['default_predicted']):>10s} "
              f"{_diff(r['default_rel_diff'])}  {', '.join(closed)}")
    ok = sum(r["within_tolerance"] for r in records)
    print(f"{ok} of {len(records)} within {TOLERANCE:.0%}; each record's source is in --json")
    if args.json:
        settings = {name: a.to_dict() for name, a in SETTINGS.items()}
        atomic_write_json(args.json, {"tolerance": TOLERANCE, "settings": settings, "records": records})
    return 0


def run(args: argparse.Namespace) -> int:
    from attnreuse._io import new_output_file

    for flag, path in (("--json", args.json), ("--plot", args.plot)):
        if path is not None and os.path.isdir(path):  # found before the sweep, not as the temp file's rename
            raise ValueError(f"{flag} {path} is a directory; give a file name")
    if args.plot is not None and not args.plot.lower().endswith(".png"):  # it was written as PNG whatever its name
        raise ValueError(f"--plot {args.plot}: the plot is a PNG image; end the name in .png")
    if args.json is not None and args.plot is not None and os.path.abspath(args.json) == os.path.abspath(args.plot):
        raise ValueError(f"--json and --plot both name {args.json}; give each output its own file")
    for flag, path in (("--json", args.json), ("--plot", args.plot)):
        new_output_file(flag, path, force=args.force)  # an earlier result is kept unless --force
    if args.published:
        return _run_published(args)
    if args.paper:
        return _run_paper(args)
    if args.validate:
        return _run_validate(args)
    return _run_model(args)
