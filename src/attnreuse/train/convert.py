"""`attnreuse convert`: retrofit a trained ViT to another attention plan, ready to fine-tune by
distillation (`attnreuse train --init OUT --teacher SOURCE`).

Every weight that still applies is carried over by the ViT's checkpoint mapping
(`attnreuse.models.vit.convert_state_dict`); the new parts are initialised from calibration images
(the first batches of the training split) run through the source model:
- "share" groups: a group is a map-computing layer s and the "share" layers after it. The group's
  map starts from the member whose map is most representative (highest mean cosine with the other
  members' maps): its q/k rows are moved into layer s, with the LayerNorm affine folded so that
  q = W_q LN_member(x) is reproduced on layer s's norm: W' = W diag(g_m / g_s), b' = b + W beta_m - W' beta_s.
  Each "share" layer keeps its V rows and proj, then both are refitted by a short Adam regression so
  that, applying the group's map, it reproduces its original attention output on the calibration images.
- "reuse" / "reuse:G": each of the G maps starts from the q/k rows of the most representative head
  of its block of num_heads/G value heads (highest mean cosine with the block's other heads' maps).
- "skip": SkipAt's Phi is fitted by a short Adam regression (MSE) from the previous layer's attention
  output to this layer's attention output on the calibration tokens; consecutive skipped layers are
  fitted in order, each on its predecessor's approximation, as the converted model will run them.
- "taylor" keeps q/k/v/proj as they are (the Taylor expansion approximates the same softmax).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnreuse._io import atomic_write_json
from attnreuse import runs as ckpt_io

__all__ = ["ConvertConfig", "convert", "parse_target_plan"]


@dataclass(frozen=True)
class ConvertConfig:
    """checkpoint: a train output directory (or a .safetensors file with `model`/`model_kwargs`);
    plan: see `parse_target_plan`."""

    checkpoint: str
    plan: str
    output: str
    model: str | None = None
    model_kwargs: dict = field(default_factory=dict)
    data: str = "digits"
    calib_batches: int = 4
    batch_size: int = 64
    fit_steps: int = 500  # Adam steps of each regression (Phi: relative MSE 0.58 at 150, 0.23 at 500)
    fit_lr: float = 5e-3
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("checkpoint", "plan", "output", "data"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        for name in ("calib_batches", "batch_size", "fit_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not isinstance(self.fit_lr, (int, float)) or self.fit_lr <= 0:
            raise ValueError(f"fit_lr must be a positive float, got {self.fit_lr!r}")
        if not isinstance(self.model_kwargs, dict):
            raise TypeError(f"model_kwargs must be a dict, got {self.model_kwargs!r}")


def parse_target_plan(plan: str, depth: int) -> list[str]:
    """"mha" | "reuse" | "reuse:G" | "taylor" (every layer), "share:G" (groups of G consecutive
    layers, the first computes the map), "skip" (SkipAt's middle half), "skip:I,J,..." (those layer
    indices), or a JSON list with one kind per layer."""
    from attnreuse.models.vit import mapshare_plan, skipat_plan

    text = plan.strip()
    if text.startswith("["):
        entries = json.loads(text)
        if not isinstance(entries, list) or len(entries) != depth:
            raise ValueError(f"plan {plan!r} must list one kind for each of the {depth} layers")
        return [str(e) for e in entries]
    kind, _, arg = text.partition(":")
    if kind in ("mha", "reuse", "taylor"):
        return [text] * depth
    if kind == "share":
        group = int(arg) if arg.isdigit() else 0
        if group < 2:
            raise ValueError(f"plan {plan!r}: use share:G with a group size G >= 2, e.g. share:2")
        return mapshare_plan(depth, group)
    if kind == "skip":
        if not arg:
            return skipat_plan(depth)
        try:
            layers = {int(i) for i in arg.split(",")}
        except ValueError:
            raise ValueError(f"plan {plan!r}: use skip:I,J,... with layer indices") from None
        if not layers <= set(range(1, depth)):
            raise ValueError(f"plan {plan!r}: skipped layers must lie in 1..{depth - 1}, got {sorted(layers)}")
        return ["skip" if i in layers else "mha" for i in range(depth)]
    raise ValueError(
        f"plan {plan!r} is not one of mha, reuse, reuse:G, taylor, share:G, skip, skip:I,J,... or a JSON list"
    )


def _target_name(name: str) -> str:
    """The attnreuse ViT that takes `attn_plan` for a source model name (timm `vit_S_P` /
    `deit_S_P` -> `vit_attnreuse_S_P`; an attnreuse ViT or one of its old names -> itself)."""
    import timm

    from attnreuse.models.vit import OLD_NAMES

    name = OLD_NAMES.get(name, name)
    for candidate in (name, name.replace("vit_", "vit_attnreuse_", 1), name.replace("deit_", "vit_attnreuse_", 1)):
        if candidate.startswith("vit_attnreuse_") and timm.is_model(candidate):
            return candidate
    raise ValueError(f"model {name!r} has no attnreuse ViT counterpart taking attn_plan (timm vit_*/deit_* or vit_attnreuse_*)")


def _load_source(config: ConvertConfig) -> tuple[nn.Module, dict]:
    path = Path(config.checkpoint)
    if ckpt_io.read_model_spec(path) is not None:
        return ckpt_io.load_model_dir(path)
    if config.model is None:
        raise ValueError(f"checkpoint {path} is not a train output directory: give --model (and --model-kwargs)")
    return ckpt_io.load_model(config.model, config.model_kwargs, path)


def _calibration(model: nn.Module, config: ConvertConfig):
    """(calibration batches [B, 3, S, S] from the start of the training split, the val split)."""
    from attnreuse.data import build_transform, open_data

    size = model.patch_embed.img_size
    size = int(size[-1] if isinstance(size, (tuple, list)) else size)
    cfg = model.pretrained_cfg
    tf = build_transform(size, cfg.get("mean"), cfg.get("std"), train=False)
    splits = open_data(config.data).transformed(tf, tf)
    n = min(len(splits.train), config.calib_batches * config.batch_size)
    return list(torch.stack([splits.train[i][0] for i in range(n)]).split(config.batch_size)), splits.val


def _qk_rows(C: int, heads: list[int], d: int) -> tuple[Tensor, Tensor]:
    """Row indices of the q and k parts of a fused qkv weight [3C, C] for the given heads."""
    idx = torch.cat([torch.arange(h * d, (h + 1) * d) for h in heads])
    return idx, C + idx


def _representative(maps: list[Tensor]) -> int:
    """Index of the map (each [B, N, N]) with the highest mean cosine to the others."""
    if len(maps) == 1:
        return 0
    flat = F.normalize(torch.stack([m.flatten(1) for m in maps]).double(), dim=-1)  # [K, B, N*N]
    cos = torch.einsum("kbi,jbi->kjb", flat, flat).mean(-1)
    return int(((cos.sum(1) - cos.diagonal()) / (len(maps) - 1)).argmax())


def _fold_qk(sd: dict, src: dict, member: int, layer: int, C: int) -> None:
    """Layer `layer`'s q/k rows := member's, with LayerNorm affine folded onto layer's norm1."""
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


def _regress(module: nn.Module, params: list[nn.Parameter], inputs: list[tuple], want: Tensor, fn,
             config: ConvertConfig) -> dict:
    """Adam on `params` so that fn(module, *inputs[idx]) ~ want[idx] (MSE), in minibatches of images.

    inputs: per-image argument tuples already stacked along dim 0 (each a tensor [S, ...]).
    Returns the relative MSE before and after; parameters are restored if the fit made it worse.
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


def _share_inputs(target: nn.Module, layer: int, batches: list[Tensor]) -> tuple[Tensor, Tensor]:
    """(normalised input [S, N, C], applied map [S, H, N, N]) of a "share" layer of `target`."""
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


def convert(config: ConvertConfig) -> dict:
    """Convert the checkpoint to the plan, initialise new parts, evaluate, save; returns the report."""
    from attnreuse.capture import capture_attention
    from attnreuse.models import create_model
    from attnreuse.models._plan import map_sources, parse_plan
    from attnreuse.models.vit import convert_state_dict

    torch.manual_seed(config.seed)
    source, spec = _load_source(config)
    kinds = [getattr(b, "kind", "mha") for b in source.blocks]
    if any(k != "mha" for k in kinds):
        raise ValueError(f"the source must use multi-head attention in every layer to be converted, got plan {kinds}")
    depth, heads, C = len(source.blocks), source.blocks[0].attn.num_heads, source.embed_dim
    d = C // heads
    plan = parse_target_plan(config.plan, depth)
    specs = parse_plan(plan, depth, heads)
    name = _target_name(spec["name"])
    kwargs = {**spec["kwargs"], "attn_plan": plan}
    target = create_model(name, **kwargs)
    src_sd = {k: v.detach().clone() for k, v in source.state_dict().items()}
    converted, report = convert_state_dict(src_sd, plan, num_heads=heads, target=target.state_dict())
    if report.mismatched or report.unexpected:
        raise ValueError(f"the source checkpoint does not fit {name} with plan {plan}:\n{report}")
    sd = target.state_dict()
    sd.update({k: v.clone() for k, v in converted.items()})

    batches, val = _calibration(source, config)
    caps = capture_attention(source, batches)
    inits = []
    sources = map_sources(specs)
    for s in range(depth):
        members = [s] + [i for i, src in enumerate(sources) if src == s]
        if len(members) > 1 and specs[s].kind == "mha":
            rep = members[_representative([caps[m].maps.mean(1) for m in members])]
            if rep != s:
                _fold_qk(sd, src_sd, rep, s, C)
            inits.append({"layer": s, "kind": "share group", "members": members, "map_from_layer": rep})
    for i, sp in enumerate(specs):
        if sp.kind == "reuse" and sp.qk_heads != heads:
            per = heads // sp.qk_heads
            chosen = []
            for g in range(sp.qk_heads):
                block = list(range(g * per, (g + 1) * per))
                chosen.append(block[_representative([caps[i].maps[:, h] for h in block])])
            q_rows, k_rows = _qk_rows(C, chosen, d)
            w, b = src_sd[f"blocks.{i}.attn.qkv.weight"], src_sd.get(f"blocks.{i}.attn.qkv.bias")
            sd[f"blocks.{i}.attn.qk.weight"] = torch.cat([w[q_rows], w[k_rows]])
            if b is not None and f"blocks.{i}.attn.qk.bias" in sd:
                sd[f"blocks.{i}.attn.qk.bias"] = torch.cat([b[q_rows], b[k_rows]])
            inits.append({"layer": i, "kind": str(sp), "maps_from_heads": chosen})
    target.load_state_dict(sd)

    target.eval()
    for i, sp in enumerate(specs):
        if sp.kind == "share":
            # The layer keeps its V/proj but now applies another layer's map: refit V and proj so
            # that it reproduces its original attention output on the calibration images.
            attn = target.blocks[i].attn
            x_in, maps = _share_inputs(target, i, batches)
            params = [*attn.v.parameters(), *attn.proj.parameters()]
            fit = _regress(attn, params, [x_in, maps], caps[i].output, lambda m, x, a: m(x, attn_map=a), config)
            inits.append({"layer": i, "kind": "share V/proj", **fit})

    grid = source.patch_embed.dynamic_feat_size(tuple(batches[0].shape[-2:]))
    p = source.num_prefix_tokens
    prev = None
    for i, sp in enumerate(specs):
        if sp.kind != "skip":
            prev = None
            continue
        x = prev if prev is not None else caps[i - 1].output[:, p:]
        y = caps[i].output[:, p:]
        phi = target.blocks[i].phi
        fit = _regress(phi, list(phi.parameters()), [x], y, lambda m, t: m(t, grid), config)
        fit["relative_mse_of_copying_previous"] = float(((x - y) ** 2).mean() / (y**2).mean().clamp(min=1e-12))
        with torch.no_grad():
            prev = phi(x, grid)
        inits.append({"layer": i, "kind": "skip", **fit})

    from attnreuse.data import make_eval_loader
    from attnreuse.train.loop import evaluate

    loader = make_eval_loader(val, config.batch_size, rank=0, world=1)
    result = {
        "source": spec["name"], "target": name,
        "source_val_top1": evaluate(source, loader, torch.device("cpu")),
        "converted_val_top1": evaluate(target, loader, torch.device("cpu")), "plan": plan, "carried": len(converted),
        "target_tensors": len(target.state_dict()), "initialised": inits, "new_keys": list(report.new),
        "dropped": list(report.dropped),
    }
    out = Path(config.output)
    atomic_write_json(out / "config.json", dataclasses.asdict(config))
    ckpt_io.write_model_spec(out, {"name": name, "kwargs": kwargs})
    ckpt_io.save_checkpoint(out, 0, target.state_dict(), None, {"epoch": 0, "step": 0, "converted_from": str(config.checkpoint)})
    atomic_write_json(out / "convert.json", result)
    return result
