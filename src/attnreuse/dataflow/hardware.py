"""Accelerator descriptions for the FLAT cost model: frozen dataclasses, each number cited.

A `Hardware` is a roofline machine: a MAC array running at `clock_hz`, a vector unit for the
softmax's element-wise work, one on-chip buffer and one off-chip memory channel. Energies are per
MAC, per byte moved to/from the on-chip buffer and per byte moved off chip.

Energy assumption shared by every preset (no vendor publishes per-access energies): Horowitz,
"Computing's energy problem", ISSCC 2014, 45 nm figures: FP16 multiply 1.1 pJ + add 0.4 pJ
(1.5 pJ a MAC; FP32: 3.7 + 0.9 = 4.6 pJ), a 64-bit read from a 1 MB SRAM 100 pJ (12.5 pJ a byte;
a large buffer is assumed banked in <= 1 MB banks), a 64-bit DRAM access 1.3-2.6 nJ (the middle,
2.0 nJ, is 250 pJ a byte). Only ratios between dataflows on one preset are meaningful.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HARDWARE", "Hardware", "calibrate_cpu", "cpu_cache_bytes", "get_hardware"]

KIB = 1024
MIB = 1024 * KIB

MAC_J_FP16 = 1.5e-12
MAC_J_FP32 = 4.6e-12
ONCHIP_BYTE_J = 12.5e-12
OFFCHIP_BYTE_J = 250e-12
HOROWITZ = "energy: Horowitz ISSCC 2014, 45 nm (FP MAC, 1 MB SRAM, DRAM per 64-bit access)"


@dataclass(frozen=True)
class Hardware:
    """One accelerator as the cost model sees it.

    macs_per_cycle: MACs the array retires each cycle at full utilisation (rows x cols of PEs).
    vector_ops_per_cycle: element-wise softmax operations per cycle (exp, max, sum, divide).
    vector_overlaps_mac: True when the vector unit runs beside the MAC array (an accelerator's
        special-function unit); False when the same cores do both (a CPU), so their cycles add.
    overlap_memory: True when off-chip transfers overlap compute inside an operator (double-
        buffered DMA: time = max); False when they add (a CPU running one eager op at a time).
    pe_rows, pe_cols: the PE array's shape (rows x cols = macs_per_cycle) for the utilisation of
        small matmul tiles; 0 for a machine modelled at full utilisation (GPU, CPU).
    fresh_alloc_s_per_byte, fresh_alloc_min_bytes: host cost of first touching a freshly allocated
        tensor (page faults + zeroing), charged to an unfused operator's output of at least
        fresh_alloc_min_bytes (smaller blocks are recycled by the allocator). 0 on accelerators.
    buffer_bytes: on-chip buffer (scratchpad, or the last-level cache for a CPU/GPU).
    offchip_bytes_per_s: sustained off-chip bandwidth.
    elem_bytes: bytes per tensor element on this machine (2 for FP16 accelerators, 4 for FP32).
    sources: one line per cited number or stated assumption.
    """

    name: str
    macs_per_cycle: float
    clock_hz: float
    buffer_bytes: int
    offchip_bytes_per_s: float
    vector_ops_per_cycle: float
    vector_overlaps_mac: bool
    elem_bytes: int
    mac_j: float
    onchip_byte_j: float
    offchip_byte_j: float
    overlap_memory: bool = True
    pe_rows: int = 0
    pe_cols: int = 0
    fresh_alloc_s_per_byte: float = 0.0
    fresh_alloc_min_bytes: int = 0
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        for field in ("macs_per_cycle", "clock_hz", "offchip_bytes_per_s", "vector_ops_per_cycle"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"{field} must be a positive number, got {value!r}")
        for field in ("buffer_bytes", "elem_bytes"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{field} must be a positive int, got {value!r}")
        if self.pe_rows or self.pe_cols:
            if self.pe_rows < 1 or self.pe_cols < 1 or self.pe_rows * self.pe_cols != self.macs_per_cycle:
                raise ValueError(
                    f"pe_rows x pe_cols must equal macs_per_cycle={self.macs_per_cycle} (or both be 0), "
                    f"got {self.pe_rows} x {self.pe_cols}"
                )
        if not isinstance(self.fresh_alloc_min_bytes, int) or self.fresh_alloc_min_bytes < 0:
            raise ValueError(f"fresh_alloc_min_bytes must be an int >= 0, got {self.fresh_alloc_min_bytes!r}")
        for field in ("mac_j", "onchip_byte_j", "offchip_byte_j", "fresh_alloc_s_per_byte"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{field} must be a non-negative number, got {value!r}")

    @property
    def offchip_bytes_per_cycle(self) -> float:
        return self.offchip_bytes_per_s / self.clock_hz

    def with_buffer(self, buffer_bytes: int) -> Hardware:
        """The same machine with another on-chip buffer size (for sweeps)."""
        return dataclasses.replace(self, name=f"{self.name}@{buffer_bytes}B", buffer_bytes=buffer_bytes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _flat(name: str, pes: int, buffer_bytes: int, bytes_per_s: float) -> Hardware:
    return Hardware(
        name=name,
        macs_per_cycle=pes * pes,
        clock_hz=940e6,
        buffer_bytes=buffer_bytes,
        offchip_bytes_per_s=bytes_per_s,
        # Assumption: the special-function unit keeps pace with the array (FLAT pipelines the
        # softmax beside Logit/Attend); one op per PE per cycle.
        vector_ops_per_cycle=pes * pes,
        vector_overlaps_mac=True,
        elem_bytes=2,
        mac_j=MAC_J_FP16,
        onchip_byte_j=ONCHIP_BYTE_J,
        offchip_byte_j=OFFCHIP_BYTE_J,
        pe_rows=pes,
        pe_cols=pes,
        sources=(
            f"{pes}x{pes} PEs, {buffer_bytes // KIB} KiB buffer, {bytes_per_s / 1e9:g} GB/s, 940 MHz: "
            "FLAT (Kao et al., ASPLOS 2023) platforms as in NOTES.md section 4",
            "FP16 operands (2 bytes an element); softmax unit pipelined beside the array (assumption)",
            "output-stationary mapping: a matmul output tile smaller than the array idles PEs (assumption)",
            HOROWITZ,
        ),
    )


FLAT_EDGE = _flat("flat-edge", 32, 512 * KIB, 50e9)
FLAT_CLOUD = _flat("flat-cloud", 256, 32 * MIB, 400e9)

# NVIDIA Jetson AGX Orin 64GB data sheet: GPU 2048 CUDA cores + 64 Tensor Cores at up to 1.3 GHz,
# 170 sparse INT8 TOPS from the GPU (85 dense INT8 -> 42.5 dense FP16 TFLOPS = 21.25 T MAC/s),
# 4 MB GPU L2, 256-bit LPDDR5 at 204.8 GB/s.
JETSON_ORIN = Hardware(
    name="jetson-orin",
    macs_per_cycle=21.25e12 / 1.3e9,
    clock_hz=1.3e9,
    buffer_bytes=4 * MIB,
    offchip_bytes_per_s=204.8e9,
    vector_ops_per_cycle=2048 * 2,
    vector_overlaps_mac=True,
    elem_bytes=2,
    mac_j=MAC_J_FP16,
    onchip_byte_j=ONCHIP_BYTE_J,
    offchip_byte_j=OFFCHIP_BYTE_J,
    sources=(
        "NVIDIA Jetson AGX Orin 64GB data sheet: 204.8 GB/s LPDDR5, GPU at 1.3 GHz, 170 sparse "
        "INT8 TOPS -> 42.5 dense FP16 TFLOPS (assumption: dense FP16 = sparse INT8 / 4)",
        "PE-array equivalence: 21.25 T MAC/s / 1.3 GHz = ~16.3k MACs a cycle (~128x128 PEs), "
        "perfect utilisation assumed",
        "on-chip buffer = the 4 MB GPU L2 (assumption: shared memory/L1 used as staging only)",
        "vector unit: 2048 CUDA cores, 2 FP16 ops a cycle each (FP16x2), overlapping Tensor Cores",
        HOROWITZ,
    ),
)

HARDWARE = {hw.name: hw for hw in (FLAT_EDGE, FLAT_CLOUD, JETSON_ORIN)}
CPU_NAME = "this-cpu"
# glibc serves blocks >= 32 MiB with mmap and unmaps them on free; smaller blocks come from the
# heap, which it trims back to the OS when more than its trim threshold is free at the top. Here
# a dense attention's score and probability tensors of 16 MiB each were observed to fault in again
# on every call and 8 MiB ones not (measured, `attnreuse dataflow --validate`): an empirical bound.
FRESH_ALLOC_MIN_BYTES = 16 * MIB


def cpu_cache_bytes(root: str | Path = "/sys/devices/system/cpu/cpu0/cache") -> int:
    """Size of the largest data/unified cache of cpu0, read from sysfs (Linux)."""
    sizes = []
    for index in sorted(Path(root).glob("index*")):
        try:
            kind = (index / "type").read_text().strip()
            text = (index / "size").read_text().strip()
        except OSError:
            continue
        if kind == "Instruction":
            continue
        unit = {"K": KIB, "M": MIB, "G": 1024 * MIB}.get(text[-1:].upper(), 1)
        digits = text[:-1] if unit != 1 else text
        if digits.isdigit():
            sizes.append(int(digits) * unit)
    if not sizes:
        raise FileNotFoundError(f"no data cache sizes under {root}; pass the buffer size explicitly")
    return max(sizes)


def calibrate_cpu(*, threads: int = 1, seconds: float = 0.3) -> Hardware:
    """Measure this CPU: FP32 matmul MAC/s, exp throughput, copy bandwidth; cache from sysfs.

    One 'cycle' of the result is one nanosecond (clock_hz = 1e9), so macs_per_cycle is MACs per ns.
    The numbers move with machine load: calibrate right before the runs they describe.
    """
    from attnreuse.dataflow._calibrate import measure_cpu

    macs_per_s, exp_per_s, bytes_per_s, fault_s_per_byte = measure_cpu(threads=threads, seconds=seconds)
    cache = cpu_cache_bytes()
    return Hardware(
        name=CPU_NAME,
        macs_per_cycle=macs_per_s / 1e9,
        clock_hz=1e9,
        buffer_bytes=cache,
        offchip_bytes_per_s=bytes_per_s,
        vector_ops_per_cycle=exp_per_s / 1e9,
        vector_overlaps_mac=False,
        elem_bytes=4,
        mac_j=MAC_J_FP32,
        onchip_byte_j=ONCHIP_BYTE_J,
        offchip_byte_j=OFFCHIP_BYTE_J,
        overlap_memory=False,
        fresh_alloc_s_per_byte=fault_s_per_byte,
        fresh_alloc_min_bytes=FRESH_ALLOC_MIN_BYTES,
        sources=(
            f"measured with {threads} thread(s): FP32 matmul {macs_per_s / 1e9:.2f} GMAC/s, softmax "
            f"{exp_per_s / 1e9:.2f} G element-wise ops/s, copy {bytes_per_s / 1e9:.2f} GB/s (read + "
            f"write), first touch of fresh memory {fault_s_per_byte * 1e12:.0f} ps/byte",
            f"buffer = largest cache of cpu0 from sysfs: {cache // KIB} KiB",
            "one cycle = 1 ns; MAC, element-wise work and memory traffic of one op add (eager ops)",
            "fresh tensors >= 16 MiB are returned to the OS on free (glibc unmaps/trims them), so each "
            "call faults them in again (observed here; smaller ones are recycled)",
            HOROWITZ + " (FP32 MAC; not measured here)",
        ),
    )


def get_hardware(name: str) -> Hardware:
    """A preset by name, or `this-cpu` (calibrated now; takes about a second)."""
    if name == CPU_NAME:
        return calibrate_cpu()
    if name not in HARDWARE:
        known = ", ".join([*HARDWARE, CPU_NAME])
        raise ValueError(f"unknown hardware {name!r}; choose one of: {known}")
    return HARDWARE[name]
