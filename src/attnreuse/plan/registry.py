"""The kind registry: what a plan kind is and how hosts find it.

A `Kind` says, for one layer of a plan: which argument it takes (`reuse:G`), whether it computes a
softmax map a later layer may apply (`computes_map`), whether it applies an earlier one
(`needs_map`) or reads the previous layer's attention output (`needs_previous`); how it is built
from a dense layer's weights (`retrofit`, the zero-shot initialiser); and how its core runs
(`run`); and which parts of a dense layer's work it removes (`removed_parts`). Hosts hold the
cross-layer state and call `run`; they never test a kind's name.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

__all__ = ["Kind", "LayerSpec", "SourceAttention", "get_kind", "kind_names", "register_kind"]

_KINDS: dict[str, Kind] = {}


@dataclass(frozen=True)
class LayerSpec:
    """One layer of a parsed plan: the kind's name and its argument (None when it takes none)."""

    kind: str
    arg: int | None = None

    def __str__(self) -> str:
        return self.kind if self.arg is None else f"{self.kind}:{self.arg}"


@dataclass(frozen=True)
class SourceAttention:
    """A dense multi-head self-attention's weights, as a host hands them to `Kind.retrofit`.

    weights / biases: "query", "key", "value" -> [C, C] / [C] (rows head-major, as BERT and timm
    lay them out); num_heads heads of width C // num_heads; scale: the host's score scale.
    """

    dim: int
    num_heads: int
    weights: dict[str, Tensor]
    biases: dict[str, Tensor | None]
    scale: float

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads


class Kind:
    """Base class of a plan kind. Subclasses set `name` and the flags, and implement `retrofit` and `run`."""

    name: str = ""
    computes_map: bool = False
    needs_map: bool = False
    needs_previous: bool = False
    help: str = ""

    def parse_arg(self, arg: str, num_heads: int, where: str) -> int | None:
        """The argument after ':' (empty when none); kinds that take one override this."""
        if arg:
            raise ValueError(f"{where}: '{self.name}' takes no argument")
        return None

    def retrofit(self, spec: LayerSpec, src: SourceAttention) -> nn.Module:
        """The layer core for `spec`, initialised from the dense layer `src` (zero-shot)."""
        raise NotImplementedError

    def run(self, core: nn.Module, x: Tensor, key_bias: Tensor | None, key_mask: Tensor | None,
            attn_map: Tensor | None, previous: Tensor | None, emit_map: bool) -> tuple[Tensor, Tensor | None]:
        """x [B, N, C] -> (attention output [B, N, C], this layer's map when `emit_map`, else None).

        key_bias [B, 1, 1|N, N] additive / key_mask [B, N] bool: padding; attn_map: the map of the
        layer this one applies (kinds with `needs_map`); previous: the previous layer's output
        (kinds with `needs_previous`).
        """
        raise NotImplementedError

    def parameters_kept(self) -> tuple[str, ...]:
        """Which of the dense layer's projections ("query", "key", "value") the kind keeps as they are."""
        return ()

    def removed_parts(self, spec: LayerSpec, num_heads: int) -> dict[str, float]:
        """Which share of each part of a dense (mha) layer this layer does not compute, by part:
        "qk_proj", "v_proj", "out_proj", "scores_softmax", "av" (the breakdown `attnreuse bench
        study` times). It predicts the layer's saving from the mha plan's measured breakdown
        (Amdahl); work the kind adds in their place (a linear core, Phi) is not in it."""
        return {}


def register_kind(kind: Kind) -> Kind:
    """Add `kind` under `kind.name`; a second kind of the same name is an error."""
    if not kind.name or kind.name in _KINDS:
        raise ValueError(f"a kind needs a new, non-empty name; got {kind.name!r} (known: {kind_names()})")
    _KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> Kind:
    try:
        return _KINDS[name]
    except KeyError:
        raise ValueError(f"unknown attention kind {name!r}; known kinds: {', '.join(kind_names())}") from None


def kind_names() -> tuple[str, ...]:
    return tuple(_KINDS)
