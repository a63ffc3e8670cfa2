"""A cost-model workload read off a built timm/attnreuse model: the one part of the workloads that
needs torch and timm (imported inside the function), kept apart so the rest of `dataflow` needs
neither (the contract "dataflow needs no torch" in pyproject.toml names this module's edges)."""

from __future__ import annotations

from attnreuse.dataflow.workload import MODELS, Workload

__all__ = ["from_timm"]


def from_timm(name: str, *, batch: int = 64) -> Workload:
    """Dimensions of a ViT-style timm/attnreuse model (built on the meta device, no weights).

    Reads embed_dim, len(blocks), blocks[0].attn.num_heads/head_dim, blocks[0].mlp.fc1 and the
    token count (patches + prefix tokens). Models without that layout raise ValueError.
    """
    import timm
    import torch

    import attnreuse  # noqa: F401 - registers the attnreuse models with timm

    if name not in timm.list_models():
        raise ValueError(f"unknown model {name!r}: not a FLAT model ({', '.join(MODELS)}) nor a timm model")
    with torch.device("meta"):
        model = timm.create_model(name)
    try:
        attn = model.blocks[0].attn
        heads = int(attn.num_heads)
        head_dim = int(getattr(attn, "head_dim", model.embed_dim // heads))
        tokens = int(model.patch_embed.num_patches) + int(getattr(model, "num_prefix_tokens", 0))
        workload = Workload(
            name=name,
            batch=batch,
            seq_len=tokens,
            depth=len(model.blocks),
            v_heads=heads,
            q_heads=heads,
            dk=head_dim,
            dv=head_dim,
            embed_dim=int(model.embed_dim),
            mlp_hidden=int(model.blocks[0].mlp.fc1.out_features),
            source=f"timm.create_model({name!r})",
        )
    except AttributeError as err:
        raise ValueError(
            f"model {name!r} is not ViT-shaped (needs embed_dim, blocks[i].attn.num_heads, "
            f"blocks[i].mlp.fc1, patch_embed.num_patches): {err}"
        ) from None
    return workload
