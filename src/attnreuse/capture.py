"""Record every layer's softmax attention maps and attention outputs with forward hooks.

Works on timm ViT/DeiT (`blocks.N.attn.qkv`, `q_norm`, `k_norm`, `scale`, `proj`), on the
attnreuse ViT (`PlanBlock`: fused `qkv` for "mha", `qk` for "reuse", the source layer's map for
"share", no softmax map for "skip" and "taylor") and on UniForm (every `ReuseAttention2d` mixer:
one map per window shared by its heads, and the mixer's output as tokens). Maps are recomputed
from the captured inputs, so the model runs its normal (fast) path. On the shared floor: `analyze`
reports on the captures and `convert` picks each shared map's source layer from them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnreuse.ops import attention_map
from attnreuse.plan import get_kind

__all__ = ["LayerCapture", "capture_attention", "vit_blocks", "window_mixers"]


@dataclass
class LayerCapture:
    """One layer over the captured batches.

    kind: the plan kind ("mha" for timm blocks, "reuse" for UniForm mixers); maps: [B, Hq, N, N]
    softmax maps (None for layers without one; for a windowed mixer B counts windows and Hq is 1);
    output: [B, N, C] attention output (after `proj`, before the residual; a windowed mixer's
    whole map as H * W tokens; None if the block exposes none).
    """

    kind: str
    maps: Tensor | None
    output: Tensor | None


def vit_blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a timm-style ViT (`model.blocks`), with a clear error otherwise."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, (nn.Sequential, nn.ModuleList)) or len(blocks) == 0:
        raise TypeError(
            f"{type(model).__name__} has no `blocks` list of ViT blocks and no Reuse Attention mixers; "
            "analysis supports timm ViT/DeiT, attnreuse ViT and UniForm models"
        )
    return list(blocks)


def window_mixers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every windowed Reuse Attention mixer (UniForm), in forward order."""
    from attnreuse.layers.reuse_mixer import ReuseAttention2d

    return [(n, m) for n, m in model.named_modules() if isinstance(m, ReuseAttention2d)]


def _capture_mixers(model: nn.Module, mixers: list[nn.Module], batches: list[Tensor]) -> list[LayerCapture]:
    maps: list[list[Tensor]] = [[] for _ in mixers]
    outs: list[list[Tensor]] = [[] for _ in mixers]

    def hook(i: int):
        def fn(mixer, inp, out):
            maps[i].append(mixer.attention_map(inp[0]).float().unsqueeze(1))  # [Bw, 1, N, N]
            outs[i].append(out.float().flatten(2).transpose(1, 2))  # [B, H*W, C]

        return fn

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(mixers)]
    try:
        _run(model, batches)
    finally:
        for h in handles:
            h.remove()
    return [LayerCapture("reuse", torch.cat(m), torch.cat(o)) for m, o in zip(maps, outs)]


def _run(model: nn.Module, batches: list[Tensor]) -> None:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for x in batches:
            model(x)
    model.train(was_training)


def _qk_from(attn: nn.Module, proj_out: Tensor, fused: bool) -> tuple[Tensor, Tensor]:
    """q, k: [B, Hq, N, d] from the output of `attn.qkv` ([B, N, 3C], fused) or `attn.qk` ([B, N, 2Cqk])."""
    B, N, _ = proj_out.shape
    heads, parts = (attn.num_heads, 3) if fused else (attn.qk_heads, 2)
    t = proj_out.reshape(B, N, parts, heads, -1).permute(2, 0, 3, 1, 4)
    q, k = t[0], t[1]
    return attn.q_norm(q), attn.k_norm(k)


def capture_attention(model: nn.Module, batches: list[Tensor], qk_maps: bool = False) -> list[LayerCapture]:
    """Run `model` (eval, no grad) on each batch [B, 3, H, W]; return one LayerCapture per block
    (per mixer for UniForm). qk_maps: also the softmax maps of layers that hold Q/K but compute no
    map ("taylor"): what their Q/K would attend to (`convert` picks q/k rows by them)."""
    mixers = window_mixers(model)
    if mixers and not hasattr(model, "blocks"):
        return _capture_mixers(model, [m for _, m in mixers], batches)
    blocks = vit_blocks(model)
    kinds = [getattr(blk, "kind", "mha") for blk in blocks]
    maps: list[list[Tensor]] = [[] for _ in blocks]
    outs: list[list[Tensor]] = [[] for _ in blocks]
    handles = []

    def on_qk(i: int, attn: nn.Module, fused: bool):
        def hook(_module, _inp, out):
            q, k = _qk_from(attn, out.float(), fused)
            maps[i].append(attention_map(q, k, scale=attn.scale))

        return hook

    def on_block(i: int):
        def hook(_module, _inp, out):
            if isinstance(out, tuple):  # attnreuse PlanBlock: (x, attn_map, attn_out)
                outs[i].append(out[2].float())

        return hook

    def on_attn(i: int):
        def hook(_module, _inp, out):
            outs[i].append(out.float())

        return hook

    try:
        for i, (blk, kind) in enumerate(zip(blocks, kinds)):
            attn = getattr(blk, "attn", None)
            has_qk = attn is not None and (hasattr(attn, "qkv") or hasattr(attn, "qk"))
            if has_qk and (get_kind(kind).computes_map or qk_maps):
                fused = hasattr(attn, "qkv")
                proj = attn.qkv if fused else attn.qk
                handles.append(proj.register_forward_hook(on_qk(i, attn, fused)))
            if hasattr(blk, "kind"):
                handles.append(blk.register_forward_hook(on_block(i)))
            elif attn is not None:
                handles.append(attn.register_forward_hook(on_attn(i)))
        _run(model, batches)
    finally:
        for h in handles:
            h.remove()

    captures, last_map = [], None
    for kind, m, o in zip(kinds, maps, outs):
        layer_maps = torch.cat(m) if m else None
        if get_kind(kind).needs_map:
            layer_maps = last_map  # the layer applies the latest computed map
        elif layer_maps is not None and get_kind(kind).computes_map:
            last_map = layer_maps
        captures.append(LayerCapture(kind, layer_maps, torch.cat(o) if o else None))
    return captures
