"""`skip`: SkipAt (ICLR 2024): the layer's attention output is Phi(previous layer's attention
output); no Q, K or V of its own. Phi starts untrained (hosts fit it on calibration data)."""

from __future__ import annotations

from attnreuse.layers.token_attention import SequencePhi
from attnreuse.plan.registry import Kind, register_kind


class Skip(Kind):
    name = "skip"
    needs_previous = True
    help = "SkipAt: Phi(previous layer's attention output), no attention of its own"

    def retrofit(self, spec, src):
        return SequencePhi(src.dim)

    def run(self, core, x, key_bias, key_mask, attn_map, previous, emit_map):
        return core(previous, key_mask), None


    def removed_parts(self, spec, num_heads):
        return {"qk_proj": 1.0, "v_proj": 1.0, "scores_softmax": 1.0, "av": 1.0}  # Phi takes their place

register_kind(Skip())
