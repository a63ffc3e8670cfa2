"""CPU matrix-unit detection: flags parsed from /proc/cpuinfo texts of known machines, the dtype
verdicts, and the units carried by every benchmark record."""

import json

import pytest
import torch

from attnreuse import cpu_units, measure

SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: fpu sse avx2 fma avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8\n"
EPYC_ROME = "processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu sse avx avx2 fma\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd asimddp sve i8mm bf16\nCPU implementer\t: 0x41\n"


@pytest.mark.parametrize(
    "text, bf16, int8, units",
    [
        (SAPPHIRE_RAPIDS, "native", "native", {"amx_bf16", "avx512_bf16", "amx_int8", "avx512_vnni"}),
        (EPYC_ROME, "emulated", "emulated", set()),
        (GRAVITON3, "native", "native", {"arm_bf16", "arm_i8mm", "arm_dotprod"}),
    ],
    ids=["sapphire-rapids", "epyc-rome", "graviton3"],
)
def test_units_and_dtype_verdicts_from_cpuinfo(text, bf16, int8, units):
    found = cpu_units._units_from(cpu_units.parse_flags(text), "AVX2")
    assert {u for u in units} <= {u for u, v in found.items() if v is True}
    assert cpu_units.dtype_support("bfloat16", found)["execution"] == bf16
    assert cpu_units.dtype_support("int8", found)["execution"] == int8
    assert cpu_units.dtype_support("float32", found)["native"] is True


def test_unknown_flags_are_unknown_not_absent():
    found = cpu_units._units_from(cpu_units.parse_flags("processor: 0\n"), None)
    assert found["amx_bf16"] is None and found["flags_source"] is None
    verdict = cpu_units.dtype_support("bfloat16", found)
    assert verdict["native"] is None and verdict["execution"] == "unknown"


def test_unknown_dtype_is_named():
    with pytest.raises(ValueError, match="dtype must be one of"):
        cpu_units.dtype_support("float16")


def test_this_machine_is_detected_and_recorded():
    units = cpu_units.matrix_units()
    assert units["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    record = measure.machine_record(threads=1)
    assert record["cpu_units"] == units
    json.dumps(record)
