"""Workloads for the FLAT cost model: one attention layer or a stack of transformer blocks.

A block is QKV projection -> attention core -> output projection -> FFN (two matmuls). Element-wise
work outside the attention core (LayerNorm, GELU, residual adds) is not modelled: it is the same in
every dataflow. Encoder blocks only (self-attention, M = N).

Shapes of the attention core: q: [B, Hq, N, Dk], k: [B, Hq, N, Dk], v: [B, Hv, N, Dv]; Hv / Hq
value heads share each map (1 = multi-head attention, Hv = Reuse Attention's one map).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["MODELS", "Workload", "attention_layer", "get_workload"]


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


@dataclass(frozen=True)
class Workload:
    """`depth` identical blocks at batch `batch` and sequence length `seq_len`.

    v_heads (Hv) heads of width dv read the maps of q_heads (Hq) query/key heads of width dk.
    attention_only: the block is the attention core alone (no projections, no FFN); embed_dim and
    mlp_hidden are then unused and may be 0.
    """

    name: str
    batch: int
    seq_len: int
    depth: int
    v_heads: int
    q_heads: int
    dk: int
    dv: int
    embed_dim: int = 0
    mlp_hidden: int = 0
    attention_only: bool = False
    source: str = ""

    def __post_init__(self) -> None:
        for field in ("batch", "seq_len", "depth", "v_heads", "q_heads", "dk", "dv"):
            _positive_int(field, getattr(self, field))
        if self.v_heads % self.q_heads:
            raise ValueError(
                f"v_heads must be a multiple of q_heads (each map serves v_heads / q_heads value "
                f"heads), got v_heads={self.v_heads}, q_heads={self.q_heads}"
            )
        if not self.attention_only:
            _positive_int("embed_dim", self.embed_dim)
            _positive_int("mlp_hidden", self.mlp_hidden)

    @property
    def map_sharing(self) -> int:
        """Value heads served by each attention map (Hv / Hq)."""
        return self.v_heads // self.q_heads

    def with_seq(self, seq_len: int, batch: int | None = None) -> Workload:
        return dataclasses.replace(self, seq_len=seq_len, batch=self.batch if batch is None else batch)

    def reuse(self) -> Workload:
        """The Reuse Attention variant: one query/key head whose map serves every value head."""
        return dataclasses.replace(self, name=f"{self.name}+reuse", q_heads=1)

    def attention(self) -> Workload:
        """Only the attention cores of this workload."""
        return dataclasses.replace(self, attention_only=True)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def attention_layer(
    *, batch: int, heads: int, seq_len: int, dk: int, dv: int | None = None, map_sharing: int = 1
) -> Workload:
    """One attention core: `heads` value heads, `heads / map_sharing` maps."""
    _positive_int("heads", heads)
    _positive_int("map_sharing", map_sharing)
    if heads % map_sharing:
        raise ValueError(f"map_sharing must divide heads={heads}, got {map_sharing}")
    return Workload(
        name="attention",
        batch=batch,
        seq_len=seq_len,
        depth=1,
        v_heads=heads,
        q_heads=heads // map_sharing,
        dk=dk,
        dv=dk if dv is None else dv,
        attention_only=True,
    )


def _transformer(name: str, depth: int, dim: int, heads: int, head_dim: int, ffn: int, source: str) -> Workload:
    return Workload(
        name=name, batch=64, seq_len=512, depth=depth, v_heads=heads, q_heads=heads, dk=head_dim,
        dv=head_dim, embed_dim=dim, mlp_hidden=ffn, source=source,
    )


# The four language models FLAT evaluates, with their public configurations (FLAT's exact variants
# are not stated in the abstract; these are the assumption). Batch 64 as in FLAT's evaluation.
MODELS = {
    w.name: w
    for w in (
        _transformer("bert-base", 12, 768, 12, 64, 3072, "BERT-base, Devlin et al. NAACL 2019"),
        _transformer(
            "trxl", 16, 410, 10, 41, 2100, "Transformer-XL WikiText-103 base, Dai et al. ACL 2019"
        ),
        _transformer("t5", 12, 768, 12, 64, 3072, "T5-base encoder, Raffel et al. JMLR 2020"),
        _transformer("xlm", 12, 2048, 16, 128, 8192, "XLM xlm-mlm-en-2048, Lample & Conneau 2019"),
    )
}


def get_workload(name: str, *, batch: int = 64) -> Workload:
    """A FLAT model by name (bert-base, trxl, t5, xlm) or a ViT-style timm/attnreuse model."""
    if name in MODELS:
        return dataclasses.replace(MODELS[name], batch=batch)
    from attnreuse.dataflow.from_model import from_timm  # builds the model: imports torch and timm

    return from_timm(name, batch=batch)
