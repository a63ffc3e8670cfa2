"""The kind registry: what a plan kind is and how hosts find it.

A `Kind` says, for one layer of a plan: which argument it takes (`reuse:G`), whether it computes a
softmax map a later layer may apply (`computes_map`), whether it applies an earlier one
(`needs_map`) or reads the previous layer's attention output (`needs_previous`); how it is built
from a dense layer's weights (`retrofit`, the zero-shot initialiser); and how its core runs
(`run`); and which parts of a dense layer's work it removes (`removed_parts`). Hosts hold the
cross-layer state and call `run`; they never test a kind's name.

The attnreuse ViT (`attnreuse.models.vit`) is a second host with timm's parameter names: a kind
builds the modules of its ViT block (`vit_modules`), runs them (`vit_attend`) and says which of a
dense timm block's attention weights it keeps (`vit_dense_weights`); `attnreuse convert` asks it what
it needs of the source layer (`vit_source_needs`) and to initialise its new parts from it
(`vit_retrofit`, `vit_fit`: see `_vit_retrofit`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import Tensor, nn

__all__ = [
    "DENSE_WEIGHTS", "Kind", "LayerSpec", "Registry", "SourceAttention", "VitBlockArgs", "get_kind", "keeps_enough",
    "kind_names", "kinds_summary", "register_kind",
]  # fmt: skip

# What a ViT layer holds of a dense layer's attention weights (`Kind.vit_dense_weights`), each
# level holding the ones before it, with the words messages use for it.
DENSE_WEIGHTS = {"none": "none of them", "values": "V only", "all": "Q, K and V"}


def keeps_enough(kept: str, needed: str) -> bool:
    """Whether a layer keeping `kept` (a DENSE_WEIGHTS level) holds what `needed` asks for."""
    levels = list(DENSE_WEIGHTS)
    return levels.index(kept) >= levels.index(needed)


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
    lay them out); num_heads heads of width C // num_heads; scale: the host's score scale;
    rotary: whether the host rotates each head's query and key by its position (RoPE, in the
    rotate-half layout: dims f and f + d/2 are one pair) after the projections (ModernBERT).
    """

    dim: int
    num_heads: int
    weights: dict[str, Tensor]
    biases: dict[str, Tensor | None]
    scale: float
    rotary: bool = False

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads


@dataclass(frozen=True)
class VitBlockArgs:
    """What the ViT host hands `Kind.vit_modules` for one block: timm's block arguments and the
    model's kind options (`reuse_qk_dim`, `taylor_*`, `skip_kernel_size`: each kind reads its own)."""

    dim: int
    num_heads: int
    qkv_bias: bool = False
    qk_norm: bool = False
    proj_bias: bool = True
    proj_drop: float = 0.0
    attn_drop: float = 0.0
    norm_layer: type[nn.Module] = nn.LayerNorm
    num_prefix_tokens: int = 1
    options: Mapping[str, object] = field(default_factory=dict)


class Kind:
    """Base class of a plan kind. Subclasses set `name` and the flags, and implement `retrofit` and `run`."""

    name: str = ""
    computes_map: bool = False
    needs_map: bool = False
    needs_previous: bool = False
    needs_grid: bool = False  # reads the patch grid (a ViT must not drop patches)
    arg_syntax: str = ""  # how the kind's argument is written ("reuse:G"); empty: it takes none
    help: str = ""

    def parse_arg(self, arg: str, num_heads: int, where: str) -> int | None:
        """The argument after ':' (empty when none); kinds that take one override this."""
        if arg:
            takers = [k for k in _KINDS.values() if k.arg_syntax]
            names = " / ".join(repr(k.name) for k in takers) or "no kind"
            syntax = ", ".join(k.arg_syntax for k in takers)
            raise ValueError(f"{where}: '{self.name}' takes no argument; only {names} takes an argument ({syntax})")
        return None

    def vit_modules(self, spec: LayerSpec, args: VitBlockArgs) -> dict[str, nn.Module]:
        """The modules a ViT block of this kind holds in place of timm's `norm1` and `attn`, by
        attribute name (the names are state-dict keys: keep timm's where the kind has them)."""
        raise NotImplementedError(f"kind {self.name!r} has no ViT block builder (Kind.vit_modules)")

    def vit_attend(
        self, block: nn.Module, x: Tensor, attn_map: Tensor | None, prev_out: Tensor | None, grid: tuple[int, int]
    ) -> tuple[Tensor, Tensor | None]:
        """One ViT block's attention: x [B, N, C] (before `norm1`) -> (attention output [B, N, C]
        after `proj`, this layer's map [B, G, N, N] when `block.emit_map` else None).

        attn_map: the map this layer applies (`needs_map`); prev_out: the previous layer's
        attention output (`needs_previous`); grid: the (H, W) patch grid; `block.num_prefix_tokens`
        leading tokens are not patches."""
        raise NotImplementedError(f"kind {self.name!r} has no ViT block (Kind.vit_attend)")

    def vit_dense_weights(self, spec: LayerSpec, num_heads: int) -> str:
        """Which of a dense timm block's attention weights a ViT block of this kind keeps:
        "all" (`norm1`, fused `attn.qkv` and the rest as they are), "values" (the V rows of
        `attn.qkv` become `attn.v`; q/k rows and q/k norms are dropped) or "none" (`norm1` and
        `attn` are dropped)."""
        return "all"

    def vit_source_needs(self, spec: LayerSpec, num_heads: int) -> str:
        """What `attnreuse convert` needs the source layer to keep (a DENSE_WEIGHTS level, compared
        with the source kind's `vit_dense_weights`) to initialise a layer of this kind from it:
        by default what the kind itself keeps. A layer needing "all" also gets the source
        layer's per-head softmax maps on the calibration images (`VitRetrofit.captures`)."""
        return self.vit_dense_weights(spec, num_heads)

    def vit_output_projection(self, block: nn.Module) -> nn.Linear:
        """The linear layer that writes the block's attention output (rescaled by `fix_init_weight`)."""
        return block.attn.proj

    def vit_retrofit(self, r, layer: int) -> list[dict]:
        """Phase 1 of `attnreuse convert` (r: `VitRetrofit`): edit `r.sd`, the target's state dict,
        for `layer` from the dense source's weights and captures; returns records of what it did.
        The default keeps what the checkpoint rule carried over."""
        return []

    def vit_fit(self, r, layer: int) -> list[dict]:
        """Phase 2: fit `layer`'s new parts in the loaded `r.target` on the calibration captures."""
        return []

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


class Registry(dict):
    """Objects by their `name`, in registration order (a dict, name -> object); `noun` / `title` name
    them in messages ("kind" / "attention kind"). The plan kinds live in one; so do UniForm's mixers
    (`attnreuse.models.uniform_mixers`)."""

    def __init__(self, noun: str, title: str) -> None:
        super().__init__()
        self.noun, self.title = noun, title

    def register(self, obj):
        """Add `obj` under `obj.name`; a second object of the same name is an error."""
        if not obj.name or obj.name in self:
            raise ValueError(f"a {self.noun} needs a new, non-empty name; got {obj.name!r} (known: {self.names()})")
        self[obj.name] = obj
        return obj

    def get(self, name: str):
        """The object registered as `name`; another name is a ValueError listing the known ones."""
        try:
            return self[name]
        except (KeyError, TypeError):
            raise ValueError(f"unknown {self.title} {name!r}; known {self.noun}s: {', '.join(self.names())}") from None

    def names(self) -> tuple[str, ...]:
        return tuple(self)


def register_kind(kind: Kind) -> Kind:
    """Add `kind` under `kind.name`; a second kind of the same name is an error."""
    return _KINDS.register(kind)


def get_kind(name: str) -> Kind:
    return _KINDS.get(name)


def kind_names() -> tuple[str, ...]:
    return _KINDS.names()


def kinds_summary() -> str:
    """The registered kinds as a user writes them, for help texts: 'mha, reuse[:G], ..., kvpool[:R]'."""
    return ", ".join(f"{k.name}[:{k.arg_syntax.partition(':')[2]}]" if k.arg_syntax else k.name for k in _KINDS.values())


_KINDS: Registry = Registry("kind", "attention kind")
