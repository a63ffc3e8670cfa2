"""The measurement kit every tool uses: threads, latency percentiles, peak memory, machine tags,
MAC counts (PyTorch's FLOP counter) and representation similarity (linear CKA).

Habits from timm's `benchmark.py` and nanoGPT's `bench.py`: pin the thread count, warm up, time
with `torch.utils.benchmark.Timer`, report the median and p90 (not the mean), and tag every record
with the machine, library versions and settings so numbers from different runs can be compared.
Timer has no interleaving: `measure_interleaved` (rounds over several calls, their medians paired
round by round) is this module's own.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import io
import json
import math
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from attnreuse._io import atomic_write_json, atomic_write_text
from attnreuse.ops._workspace import release_map_workspace

__all__ = [
    "LatencyStats",
    "PartTimer",
    "latency_stats",
    "machine_record",
    "matmul_call",
    "matmul_peak_gflops",
    "measure_interleaved",
    "measure_latency",
    "measure_peak_bytes",
    "paired_ratio",
    "set_threads",
    "write_records",
]


def set_threads(n: int) -> int:
    """Use `n` intra-op threads (and `n` inter-op threads where torch still allows it).

    torch fixes the inter-op pool at its first parallel use; after that only the intra-op count
    can change, which is the one that matters for single-operator timings. Returns the intra-op
    thread count in force.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"threads must be a positive int, got {n!r}")
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:
        pass  # the inter-op pool already started; it cannot be resized
    return torch.get_num_threads()


@dataclass(frozen=True)
class LatencyStats:
    """Wall-clock latency of one call, warm-up excluded."""

    latency_ms_median: float
    latency_ms_p90: float
    latency_ms_min: float
    repeats: int


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def _device(device: str | torch.device | None) -> torch.device:
    return torch.device("cpu") if device is None else torch.device(device)


def _clock(device: torch.device) -> Callable[[], float]:
    """The clock `torch.utils.benchmark.Timer` reads: `time.perf_counter`, after waiting for the
    kernels queued on a CUDA `device`. (Timer's own default waits for any accelerator, also when
    the timed code runs on the CPU.)"""
    if device.type == "cuda":

        def clock() -> float:
            torch.cuda.synchronize(device)
            return time.perf_counter()

        return clock
    return time.perf_counter


def _timer_class() -> type:
    """`torch.utils.benchmark.Timer`, imported without its one stderr line on a CPU-only machine:
    it imports `torch.utils.cpp_extension`, which with a CUDA build of torch and no CUDA runtime logs
    "No CUDA runtime is found, using CUDA_HOME=..." (nothing a benchmark user can or should act on)."""
    import logging

    logger = logging.getLogger("torch.utils.cpp_extension")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils.benchmark import Timer
    finally:
        logger.setLevel(previous)
    return Timer


def measure_latency(
    fn: Callable[[], Any],
    *,
    warmup: int = 3,
    repeats: int = 10,
    min_time_s: float = 0.2,
    device: str | torch.device | None = None,
    samples_ms: list[float] | None = None,
) -> LatencyStats:
    """Time `fn()` with `torch.utils.benchmark.Timer` on the intra-op thread count in force:
    `warmup` untimed calls, then Timer's `blocked_autorange` until `min_time_s` seconds of timed
    calls have passed and at least `repeats` samples were taken.

    A sample is one of Timer's blocks: calls timed back to back, as many as make the clock's own
    cost negligible (one call per block for anything slower than ~10 ms; sizing the blocks runs a
    few more untimed calls), divided by their number. On a CUDA `device` the clock waits for the
    device's kernels. `samples_ms`, when given, receives every sample's milliseconds per call (to
    pool several rounds with `latency_stats`).
    """
    Timer = _timer_class()
    if warmup < 0 or repeats < 1 or not 0 <= min_time_s < math.inf:  # NaN or inf: blocked_autorange never stops
        raise ValueError(
            f"need warmup >= 0, repeats >= 1 and a finite min_time_s >= 0, got warmup={warmup}, repeats={repeats}, "
            f"min_time_s={min_time_s}"
        )
    dev = _device(device)
    for _ in range(warmup):
        fn()
    _sync(dev)
    timer = Timer("fn()", globals={"fn": fn}, timer=_clock(dev), num_threads=torch.get_num_threads())
    measured = timer.blocked_autorange(min_run_time=min_time_s)
    times_s = list(measured.times)
    while len(times_s) < repeats:  # min_time_s was too short for `repeats` samples: time the rest
        block_s = measured.mean * measured.number_per_run
        measured = timer.blocked_autorange(min_run_time=(repeats - len(times_s)) * block_s)
        times_s += measured.times
    if samples_ms is not None:
        samples_ms.extend(t * 1e3 for t in times_s)
    return latency_stats([t * 1e3 for t in times_s])


def measure_interleaved(
    calls: Mapping[Any, Callable[[], Any]],
    *,
    rounds: int,
    warmup: int,
    repeats: int,
    min_time_s: float = 0.0,
    round_medians_ms: dict[Any, list[float]] | None = None,
    device: str | torch.device | None = None,
) -> dict[Any, LatencyStats | Exception]:
    """Time every call of `calls` in `rounds` interleaved rounds and pool each one's samples.

    Each round times each call once, as a block: `warmup` untimed calls in the first round (at
    most one in later rounds), then 1/rounds of `repeats` and of `min_time_s`. Odd rounds go
    through the calls in reverse order, so neighbours in `calls` are timed next to each other
    (list a model beside its baseline) and neither is always the one timed after the other. A
    machine whose speed drifts then slows every call alike instead of whichever was timed later.
    `round_medians_ms`, when given, receives each call's median of every round (for ratios of
    neighbours paired round by round). A call that raises is dropped from later rounds; its
    exception stands in its result. On a CUDA `device` each timed call ends in a synchronisation.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    samples: dict[Any, list[float]] = {key: [] for key in calls}
    per_round_ms: dict[Any, list[float]] = {key: [] for key in calls}
    failed: dict[Any, Exception] = {}
    per_round = max(1, -(-repeats // rounds))
    order = list(calls)
    for r in range(rounds):
        for key in order if r % 2 == 0 else order[::-1]:
            if key in failed:
                continue
            block: list[float] = []
            try:
                measure_latency(calls[key], warmup=warmup if r == 0 else min(warmup, 1), repeats=per_round,
                                min_time_s=min_time_s / rounds, samples_ms=block, device=device)
            except Exception as err:  # noqa: BLE001 - handed back to the caller
                failed[key] = err
                continue
            samples[key] += block
            per_round_ms[key].append(statistics.median(block))
    if round_medians_ms is not None:
        round_medians_ms.update({key: per_round_ms[key] for key in calls if key not in failed})
    return {key: failed.get(key) or latency_stats(samples[key]) for key in calls}


class PartTimer:
    """Exclusive time of the named parts of a call, from timing marks, summed per (part, layer)
    until `reset()`.

    Every boundary (a watched module's entry and exit, a marked step's start and end) takes one
    timestamp, and the interval since the previous mark goes to the innermost part open during it;
    between `start()` and `stop()` time outside every part goes to `outside` ("rest"). Parts so
    never overlap (an attention module's own time excludes its projections), nothing is derived by
    subtraction, and the parts sum to the marked span. `watch(module, part, layer)` marks a
    module's forward with hooks; the timer is also the recorder `attnreuse.layers.parts.recording`
    takes, marking the steps a core runs inside a module (they go to the layer of the last watched
    module entered with a layer). CPU: `time.perf_counter` per mark (operators run synchronously).
    CUDA: one event per mark and no synchronisation inside the call; reading `totals_s`
    synchronises once. `torch.profiler` attributes operators, not roles (the scores and A.V are
    both matmuls to it) and records every operator; a mark costs about a microsecond plus the hook.
    """

    def __init__(self, device: str | torch.device | None = None, outside: str = "rest") -> None:
        self._device = _device(device)
        self._cuda = self._device.type == "cuda"
        self._outside = outside
        self._handles: list[Any] = []
        self._totals: dict[tuple[str, int | None], float] = defaultdict(float)
        self._stack: list[tuple[str, int | None]] = []
        self._last: Any = None
        self._pending: list[tuple[Any, Any, tuple[str, int | None]]] = []  # CUDA (start, end, key)
        self.layer: int | None = None

    def _stamp(self) -> Any:
        if self._cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def _boundary(self) -> None:
        """Close the interval since the last mark, giving it to the innermost open part."""
        stamp = self._stamp()
        if self._stack and self._last is not None:
            key = self._stack[-1]
            if self._cuda:
                self._pending.append((self._last, stamp, key))
            else:
                self._totals[key] += stamp - self._last
        self._last = stamp

    def _enter(self, key: tuple[str, int | None]) -> None:
        self._boundary()
        self._stack.append(key)

    def _exit(self) -> None:
        self._boundary()
        self._stack.pop()

    def start(self) -> None:
        """Open the span: from here to `stop()`, time outside every part is `outside`'s."""
        self._enter((self._outside, None))

    def stop(self) -> None:
        self._exit()

    def watch(self, module: torch.nn.Module, part: str, layer: int | None = None) -> None:
        def before(mod, args):
            if layer is not None:
                self.layer = layer
            self._enter((part, layer))

        def after(mod, args, out):
            self._exit()

        self._handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]

    @contextlib.contextmanager
    def __call__(self, part: str) -> Iterator[None]:
        self._enter((part, self.layer))
        try:
            yield
        finally:
            self._exit()

    @property
    def totals_s(self) -> dict[tuple[str, int | None], float]:
        """Seconds per (part, layer); on CUDA this waits for the marked work once."""
        if self._pending:
            torch.cuda.synchronize(self._device)
            for start, end, key in self._pending:
                self._totals[key] += start.elapsed_time(end) / 1e3
            self._pending.clear()
        return self._totals

    def reset(self) -> None:
        self._totals.clear()
        self._pending.clear()
        self._stack.clear()
        self._last = None
        self.layer = None

    def remove(self) -> None:
        """Detach every hook (the timer keeps its totals)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def part_ms(self) -> dict[str, float]:
        """Milliseconds per part, summed over layers."""
        out: dict[str, float] = defaultdict(float)
        for (part, _), seconds in self.totals_s.items():
            out[part] += seconds * 1e3
        return dict(out)


def paired_ratio(numerator_ms: list[float], denominator_ms: list[float]) -> tuple[float, float, float]:
    """(median, min, max) over rounds of numerator / denominator, two calls' per-round medians
    from one `measure_interleaved` run: each ratio compares blocks timed next to each other, so a
    slow spell of the machine that spans both cancels out of it."""
    if len(numerator_ms) != len(denominator_ms) or not numerator_ms:
        raise ValueError(
            f"paired_ratio needs two equally long non-empty lists of round medians, got "
            f"{len(numerator_ms)} and {len(denominator_ms)}"
        )
    ratios = [a / b for a, b in zip(numerator_ms, denominator_ms)]
    return statistics.median(ratios), min(ratios), max(ratios)


def latency_stats(samples_ms: list[float]) -> LatencyStats:
    """Median, p90 (nearest rank) and minimum of timed calls in milliseconds."""
    if not samples_ms:
        raise ValueError("latency_stats needs at least one sample")
    ms = sorted(samples_ms)
    p90 = ms[min(len(ms) - 1, int(round(0.9 * (len(ms) - 1))))]
    return LatencyStats(
        latency_ms_median=statistics.median(ms),
        latency_ms_p90=p90,
        latency_ms_min=ms[0],
        repeats=len(ms),
    )


def measure_peak_bytes(fn: Callable[[], Any], *, device: str | torch.device | None = None) -> int:
    """Peak extra bytes torch allocates during one call of `fn()` (its result included).

    CPU: the profiler records every allocation and free of the CPU allocator (`profile_memory`);
    replaying them in time order, the running sum's maximum is the peak. The pooled map buffers
    (`ops.release_map_workspace`) are released first, so the maps the call writes count in its
    peak even where a warm call would reuse memory held from before. CUDA: the allocator's own
    peak counter, relative to what was allocated before the call.
    """
    dev = _device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
        fn()
        torch.cuda.synchronize(dev)
        return max(0, torch.cuda.max_memory_allocated(dev) - before)
    from torch.profiler import ProfilerActivity, profile

    release_map_workspace()
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _native_stderr_silenced():  # the profiler's C++ start-up log lines, not fn's output
        prof.start()
    try:
        fn()
    finally:
        with _native_stderr_silenced():
            prof.stop()
    events = _cpu_memory_events(prof)
    running = peak = 0
    for _, nbytes in events:
        running += nbytes
        peak = max(peak, running)
    return int(peak)


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the block: the profiler's native code logs its
    start and stop (and a CUDA device probe on CPU-only machines) straight to fd 2."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _cpu_memory_events(prof: Any) -> list[tuple[int, int]]:
    """(time_ns, signed bytes) of the CPU allocator's events in a profile, in time order."""
    out = []
    for e in prof.profiler.kineto_results.events():
        if e.name() == "[memory]" and str(e.device_type()).endswith("CPU"):
            out.append((e.start_ns(), e.nbytes()))
    out.sort()
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_record(**tags: Any) -> dict[str, Any]:
    """Where and with what a measurement was taken, merged with `tags` (threads, dtype, ...).
    `cpu_units` says which matrix units the CPU has (`attnreuse.cpu_units.matrix_units`), so a
    bf16 or int8 figure can be told apart from an emulated one."""
    from importlib import metadata

    from attnreuse.cpu_units import matrix_units

    try:
        ort_version = metadata.version("onnxruntime")
    except metadata.PackageNotFoundError:
        ort_version = None
    record: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpu_units": dict(matrix_units()),
        "logical_cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": ort_version,
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    record.update(tags)
    return record


def matmul_call(size: int, dtype: torch.dtype = torch.float32) -> Callable[[], Any]:
    """A no-argument call of [size, size] @ [size, size] into a preallocated output (2 size^3
    flops): what `matmul_peak_gflops` times, and what `bench ops` times beside its operators."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    c = torch.empty(size, size, dtype=dtype)
    return lambda: torch.mm(a, b, out=c)


def matmul_peak_gflops(
    threads: int, dtype: torch.dtype = torch.float32, *, size: int = 1536, repeats: int = 5
) -> float:
    """This machine's matrix-multiply speed: the best of `repeats` Timer samples (`measure_latency`)
    of [size, size] @ [size, size] products on `threads` threads, in GFLOP/s (2 size^3 flops each). The previous thread count is restored."""
    previous = torch.get_num_threads()
    set_threads(threads)
    try:
        best_ms = measure_latency(matmul_call(size, dtype), warmup=1, repeats=repeats, min_time_s=0.0).latency_ms_min
    finally:
        torch.set_num_threads(previous)
    return 2.0 * size**3 / (best_ms / 1e3) / 1e9


def count_call_macs(fn: Callable[[], Any]) -> int:
    """Multiply-accumulates of `fn()` under inference mode, from PyTorch's FLOP counter (2 flops per
    MAC; element-wise work such as softmax and norms is not counted, as in the papers' MAC figures).
    The counter's table lacks the CPU flash-attention kernel `F.scaled_dot_product_attention` runs
    on CPU, so that kernel is counted with PyTorch's own SDPA formula."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa}
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with torch.inference_mode(), counter:
        fn()
    return int(counter.get_total_flops() // 2)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two representations of the same samples: x: [S, C1], y: [S, C2] -> [0, 1]."""
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must be [S, C] with one S, got {tuple(x.shape)} and {tuple(y.shape)}")
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    cross = (y.T @ x).norm() ** 2
    denom = (x.T @ x).norm() * (y.T @ y).norm()
    return float(cross / denom) if denom > 0 else float("nan")


def _csv_value(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list, tuple)) else value


def write_records(path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> Path:
    """Write records atomically: CSV when `path` ends with .csv (nested values as JSON strings,
    columns in first-seen order), else a JSON list of objects."""
    rows = [dict(r) for r in records]
    target = Path(path)
    if target.suffix.lower() != ".csv":
        return atomic_write_json(target, rows)
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _csv_value(value) for key, value in row.items()})
    return atomic_write_text(target, buf.getvalue())
