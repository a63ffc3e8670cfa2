"""Which registered models the costly per-model checks (torch.fx, TorchScript, torch.export: seconds
each) run on. The sizes of one family and plan share every line of code and differ only in widths,
depths and head counts, so these checks take one model per family and plan (its smallest) and, for
UniForm, the largest as well (uniform_l: a 4-block last stage and unequal head counts). The cheap
checks (default cfgs, names) still run on every model."""

from attnreuse.models import list_models

NAMES = list_models()


def _family(name: str) -> str:
    """`vit_skipat_small_patch16_224` -> `vit_skipat`; `uniform_m4` -> `uniform`."""
    return name.split("_")[0] if name.startswith("uniform") else "_".join(name.split("_")[:2])


_ORDER = ("pico", "tiny", "xs", "s", "small", "m2", "m", "m4", "base", "l")


def _size(name: str) -> int:
    parts = name.split("_")
    return next(_ORDER.index(p) for p in parts[1:] if p in _ORDER)


def representatives() -> list[str]:
    by_family: dict[str, list[str]] = {}
    for name in NAMES:
        by_family.setdefault(_family(name), []).append(name)
    chosen = []
    for family, names in by_family.items():
        names = sorted(names, key=_size)
        chosen += [names[0], names[-1]] if family == "uniform" and len(names) > 1 else [names[0]]
    return sorted(chosen)


HEAVY = representatives()
