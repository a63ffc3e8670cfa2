"""Retrofitting an attnreuse ViT to another plan: what `attnreuse convert` hands each kind
(`Kind.vit_retrofit`, then `Kind.vit_fit`), and the surgery several kinds share. The source may
follow any plan whose layers keep what the target's kinds need (`Kind.vit_source_needs`).

Two phases per conversion: `vit_retrofit` edits the target state dict `sd` (already holding every
weight the checkpoint rule carried over) before it is loaded, from the source weights and the
calibration captures; `vit_fit` then fits new parts of the loaded target by short regressions.
Each returns records of what it did (they go into convert.json).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnreuse.plan.registry import LayerSpec, get_kind

__all__ = ["VitRetrofit", "fold_qk", "qk_rows", "regress", "representative", "share_inputs"]


@dataclass
class VitRetrofit:
    """One conversion. specs / sources: the target plan and each layer's map source; dim, num_heads:
    the ViT's; source_specs: the source's plan; source_sd: the source's state dict; sd: the target state dict being built
    (phase 1); target: the target model, loaded (phase 2); captures: per source layer, `.maps`
    [S, H, N, N] (None where the source layer keeps no Q/K) and `.output` [S, N, C] on the calibration images `batches` [B, 3, H, W];
    grid: the patch grid; prefix: prefix (CLS) tokens; config: `seed`, `fit_steps`, `fit_lr`;
    state: scratch a kind keeps between layers (e.g. a chain of skipped layers)."""

    specs: tuple[LayerSpec, ...]
    sources: tuple[int | None, ...]
    dim: int
    num_heads: int
    source_specs: tuple[LayerSpec, ...]
    source_sd: dict[str, Tensor]
    sd: dict[str, Tensor]
    captures: list
    batches: list[Tensor]
    grid: tuple[int, int]
    prefix: int
    config: object
    target: nn.Module | None = None
    state: dict = field(default_factory=dict)

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def members(self, layer: int) -> list[int]:
        """`layer` and the layers that apply its map."""
        return [layer] + [i for i, src in enumerate(self.sources) if src == layer]

    def source_keeps(self, layer: int) -> str:
        """What the source's `layer` keeps of a dense layer's weights (a `DENSE_WEIGHTS` level)."""
        spec = self.source_specs[layer]
        return get_kind(spec.kind).vit_dense_weights(spec, self.num_heads)


def qk_rows(C: int, heads: list[int], d: int) -> tuple[Tensor, Tensor]:
    """Row indices of the q and k parts of a fused qkv weight [3C, C] for the given heads."""
    idx = torch.cat([torch.arange(h * d, (h + 1) * d) for h in heads])
    return idx, C + idx


def representative(maps: list[Tensor]) -> int:
    """Index of the map (each [B, N, N]) with the highest mean cosine to the others."""
    if len(maps) == 1:
        return 0
    flat = F.normalize(torch.stack([m.flatten(1) for m in maps]).double(), dim=-1)  # [K, B, N*N]
    cos = torch.einsum("kbi,jbi->kjb", flat, flat).mean(-1)
    return int(((cos.sum(1) - cos.diagonal()) / (len(maps) - 1)).argmax())


def fold_qk(sd: dict, src: dict, member: int, layer: int, C: int) -> None:
    """Layer `layer`'s q/k rows := member's, with LayerNorm affine folded onto layer's norm1:
    q = W_q LN_member(x) is reproduced on layer's norm by W' = W diag(g_m / g_s),
    b' = b + W beta_m - W' beta_s."""
    w = src[f"blocks.{member}.attn.qkv.weight"][: 2 * C]
    b = src.get(f"blocks.{member}.attn.qkv.bias")
    b = torch.zeros(2 * C) if b is None else b[: 2 * C]
    g_m, beta_m = src[f"blocks.{member}.norm1.weight"], src[f"blocks.{member}.norm1.bias"]
    g_s, beta_s = sd[f"blocks.{layer}.norm1.weight"], sd[f"blocks.{layer}.norm1.bias"]
    safe = torch.where(g_s.abs() < 1e-6, torch.full_like(g_s, 1e-6), g_s)
    w_new = w * (g_m / safe)
    sd[f"blocks.{layer}.attn.qkv.weight"][: 2 * C] = w_new
    if f"blocks.{layer}.attn.qkv.bias" in sd:
        sd[f"blocks.{layer}.attn.qkv.bias"][: 2 * C] = b + w @ beta_m - w_new @ beta_s


def regress(module: nn.Module, params: list[nn.Parameter], inputs: list[Tensor], want: Tensor, fn, config) -> dict:
    """Adam on `params` so that fn(module, *inputs[idx]) ~ want[idx] (MSE), in minibatches of images.

    inputs: per-image arguments stacked along dim 0 (each a tensor [S, ...]); config: `seed`,
    `fit_steps`, `fit_lr`. Returns the relative MSE before and after; parameters are restored if
    the fit made it worse.
    """
    gen = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.Adam(params, lr=config.fit_lr)
    bs = min(32, want.shape[0])
    scale = (want**2).mean().clamp(min=1e-12)

    def error() -> float:
        with torch.no_grad():
            return float(((fn(module, *inputs) - want) ** 2).mean() / scale)

    before = error()
    start = [p.detach().clone() for p in params]
    for _ in range(config.fit_steps):
        idx = torch.randint(0, want.shape[0], (bs,), generator=gen)
        loss = F.mse_loss(fn(module, *(t[idx] for t in inputs)), want[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    after = error()
    if after > before:  # already closer than the regression gets (e.g. a near-identical map): keep it
        with torch.no_grad():
            for p, p0 in zip(params, start):
                p.copy_(p0)
        after = before
    return {"relative_mse_before": before, "relative_mse": after}


def share_inputs(target: nn.Module, layer: int, batches: list[Tensor]) -> tuple[Tensor, Tensor]:
    """(normalised input [S, N, C], applied map [S, H, N, N]) of a map-applying layer of `target`."""
    seen: list[tuple[Tensor, Tensor]] = []

    def hook(_module, args, kwargs):
        seen.append((args[0].detach(), kwargs["attn_map"].detach()))

    handle = target.blocks[layer].attn.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            for x in batches:
                target(x)
    finally:
        handle.remove()
    return torch.cat([a for a, _ in seen]), torch.cat([m for _, m in seen])
