"""Which matrix units this CPU has, and whether a dtype runs on native units or is emulated.

Part of the shared floor (beside `measure`): every benchmark record carries `matrix_units()` through
`measure.machine_record`, so a bf16 or int8 figure says whether silicon or emulation produced it.

Sources: the kernel's CPU flags (`/proc/cpuinfo`: x86 `flags`, Arm `Features`; Linux only; on
other systems the units are unknown, not absent) and torch's own dispatch level
(`torch.backends.cpu.get_cpu_capability()`: "AVX2", "AVX512", "ZVECTOR", "NO AVX" ...). Flag
names are the Linux kernel's (arch/x86/include/asm/cpufeatures.h, arch/arm64 hwcaps).
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["DTYPE_UNITS", "UNIT_FLAGS", "dtype_support", "matrix_units", "parse_flags"]

# unit -> the /proc/cpuinfo flags that each alone signal it
UNIT_FLAGS: dict[str, tuple[str, ...]] = {
    "amx_bf16": ("amx_bf16",),  # Intel AMX tiles, bf16 (Sapphire Rapids and later)
    "amx_int8": ("amx_int8",),
    "avx512_bf16": ("avx512_bf16",),  # VDPBF16PS (Cooper Lake, Sapphire Rapids, AMD Zen 4)
    "avx512_vnni": ("avx512_vnni",),  # VPDPBUSD int8 dot products on 512-bit vectors
    "avx_vnni": ("avx_vnni",),  # the same on 256-bit vectors (Alder Lake, Zen 5)
    "avx512f": ("avx512f",),
    "avx2": ("avx2",),
    "arm_bf16": ("bf16",),  # Armv8.6 BFDOT / BFMMLA (Graviton 3, Neoverse V1/N2)
    "arm_i8mm": ("i8mm",),  # Armv8.6 SMMLA int8 matrix multiply
    "arm_dotprod": ("asimddp",),  # Armv8.2 SDOT int8 dot products
    "arm_sve": ("sve",),
}
# dtype -> the units that execute it natively (any one suffices); float32 needs none
DTYPE_UNITS: dict[str, tuple[str, ...]] = {
    "float32": (),
    "bfloat16": ("amx_bf16", "avx512_bf16", "arm_bf16"),
    "int8": ("amx_int8", "avx512_vnni", "avx_vnni", "arm_i8mm", "arm_dotprod"),
}


def parse_flags(cpuinfo: str) -> set[str] | None:
    """The CPU flags of the first processor in a /proc/cpuinfo text (x86 `flags`, Arm
    `Features`), or None where the text has neither line."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return None


def _read_cpuinfo() -> str | None:
    try:
        with open("/proc/cpuinfo") as fh:
            return fh.read()
    except OSError:
        return None


def _units_from(flags: set[str] | None, capability: str | None) -> dict[str, Any]:
    units: dict[str, Any] = {
        unit: (None if flags is None else any(f in flags for f in names)) for unit, names in UNIT_FLAGS.items()
    }
    units["flags_source"] = None if flags is None else "/proc/cpuinfo"
    units["torch_cpu_capability"] = capability
    return units


@functools.lru_cache(maxsize=1)
def matrix_units() -> dict[str, Any]:
    """{unit: True | False | None (unknown)} for every unit of `UNIT_FLAGS`, with `flags_source`
    and `torch_cpu_capability` (the vector ISA torch's kernels dispatch to). Read once per process."""
    import torch

    text = _read_cpuinfo()
    flags = parse_flags(text) if text is not None else None
    return _units_from(flags, torch.backends.cpu.get_cpu_capability())


def dtype_support(dtype: str, units: dict[str, Any] | None = None) -> dict[str, Any]:
    """Whether `dtype` ("float32", "bfloat16", "int8") runs on native units of this CPU:
    {"dtype", "native": True | False | None (flags unknown), "units": the present units that
    serve it, "execution": "native" | "emulated" | "unknown"}. "emulated" means the dtype still
    runs (bf16 converted to fp32 in vector registers; int8 through wider integer SIMD) without the
    units its speed targets assume."""
    if dtype not in DTYPE_UNITS:
        raise ValueError(f"dtype must be one of {sorted(DTYPE_UNITS)}, got {dtype!r}")
    units = matrix_units() if units is None else units
    wanted = DTYPE_UNITS[dtype]
    if not wanted:
        return {"dtype": dtype, "native": True, "units": [], "execution": "native"}
    present = [u for u in wanted if units.get(u)]
    known = all(units.get(u) is not None for u in wanted)
    native = True if present else (False if known else None)
    execution = {True: "native", False: "emulated", None: "unknown"}[native]
    return {"dtype": dtype, "native": native, "units": present, "execution": execution}
