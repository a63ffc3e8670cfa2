"""`skip`: SkipAt (ICLR 2024): the layer's attention output is Phi(previous layer's attention
output); no Q, K or V of its own. Phi starts untrained (hosts fit it on calibration data)."""

from __future__ import annotations

import torch

from attnreuse.layers import SkipAtPhi
from attnreuse.layers.token_attention import SequencePhi
from attnreuse.plan._vit_retrofit import regress
from attnreuse.plan.registry import Kind, register_kind


class Skip(Kind):
    name = "skip"
    needs_previous = True
    needs_grid = True
    help = "SkipAt: Phi(previous layer's attention output), no attention of its own"

    def retrofit(self, spec, src):
        return SequencePhi(src.dim)

    def run(self, core, x, key_bias, key_mask, attn_map, previous, emit_map):
        return core(previous, key_mask), None


    def removed_parts(self, spec, num_heads):
        return {"qk_proj": 1.0, "v_proj": 1.0, "scores_softmax": 1.0, "av": 1.0}  # Phi takes their place

    def vit_modules(self, spec, args):
        return {"phi": SkipAtPhi(args.dim, kernel_size=args.options["skip_kernel_size"])}

    def vit_attend(self, block, x, attn_map, prev_out, grid):
        # Phi on the patch tokens of the previous attention output; the prefix (CLS) tokens keep
        # the previous layer's, i.e. the last computed layer's, output.
        p = block.num_prefix_tokens
        return torch.cat([prev_out[:, :p], block.phi(prev_out[:, p:], grid)], dim=1), None

    def vit_dense_weights(self, spec, num_heads):
        return "none"

    def vit_output_projection(self, block):
        return block.phi.fc2

    def vit_fit(self, r, layer):
        """Phi is fitted by a short Adam regression (MSE) from the previous layer's attention output
        to this layer's on the calibration tokens; consecutive skipped layers are fitted in order,
        each on its predecessor's approximation, as the converted model will run them."""
        p = r.prefix
        x = r.state.get(("skip output", layer - 1))
        x = r.captures[layer - 1].output[:, p:] if x is None else x
        y = r.captures[layer].output[:, p:]
        phi = r.target.blocks[layer].phi
        fit = regress(phi, list(phi.parameters()), [x], y, lambda m, t: m(t, r.grid), r.config)
        fit["relative_mse_of_copying_previous"] = float(((x - y) ** 2).mean() / (y**2).mean().clamp(min=1e-12))
        with torch.no_grad():
            r.state[("skip output", layer)] = phi(x, r.grid)
        return [{"layer": layer, "kind": "skip", **fit}]

register_kind(Skip())
