"""`attnreuse convert`: retrofit a trained ViT to another attention plan, ready to fine-tune by
distillation (`attnreuse train --init OUT --teacher SOURCE`).

The source may follow any plan (a timm ViT counts as all "mha") whose layers keep what the target
layers' kinds need: each kind says what it keeps of a dense layer's attention weights
(`Kind.vit_dense_weights`: Q, K and V; V only; none) and what it needs of its source layer
(`Kind.vit_source_needs`), so a "taylor" layer (which keeps its Q/K/V) can become "mha" or "reuse",
and a "share" layer (V only) can become "share" or "skip" but not "mha" (`check_sources` says so).

Every weight that still applies is carried over by the ViT's checkpoint mapping
(`attnreuse.models.vit.convert_state_dict`); the new parts are initialised by each layer's kind
(`Kind.vit_retrofit` / `vit_fit` in `attnreuse.plan`) from calibration images (the first batches of
the training split) run through the source model:
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
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from attnreuse import runs as ckpt_io
from attnreuse._io import atomic_write_json
from attnreuse.plan import DENSE_WEIGHTS, LayerSpec, get_kind, keeps_enough
from attnreuse.train.config import ConvertConfig
from attnreuse.plan._vit_retrofit import fold_qk as _fold_qk  # noqa: F401  (tests/train/test_convert.py reaches them here)
from attnreuse.plan._vit_retrofit import regress as _regress  # noqa: F401

__all__ = ["ConvertConfig", "check_sources", "convert", "parse_target_plan"]


# The old layout spellings read like plan entries with an argument ("share:2" beside "reuse:2",
# where G counts maps in one layer) but named groups of layers: they still work, with a warning.
_OLD_LAYOUTS = {"share": "mapshare", "skip": "skipat"}


def parse_target_plan(plan: str, depth: int) -> list[str]:
    """A plan for every layer: any registered kind that reads no earlier layer ("mha", "reuse:G",
    "taylor", "kvpool:R", ...: every layer), a layout
    "mapshare:G" (groups of G consecutive layers sharing the first one's map), "skipat" (SkipAt's
    middle half skipped), "skipat:I,J,..." (those layers skipped), or a JSON list with one entry per
    layer. The old "share:G" / "skip" / "skip:I,J" still work, with a FutureWarning naming the new form."""
    import warnings

    from attnreuse.models.vit import mapshare_plan, skipat_plan

    text = plan.strip()
    if text.startswith("["):
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"plan {plan!r} is not a valid JSON list ({err})") from None
        if not isinstance(entries, list) or len(entries) != depth:
            raise ValueError(f"plan {plan!r} must list one kind for each of the {depth} layers")
        return [str(e) for e in entries]
    kind, colon, arg = text.partition(":")
    if kind in _OLD_LAYOUTS:  # neither kind can fill every layer, so the bare name was a layout too
        new = _OLD_LAYOUTS[kind] + colon + arg
        warnings.warn(f"plan {plan!r} is an old spelling (a layout of layers, not a kind's argument); write {new!r}",
                      FutureWarning, stacklevel=2)
        kind = _OLD_LAYOUTS[kind]
    try:
        every = get_kind(kind)
    except ValueError:
        every = None
    if every is not None and not (every.needs_map or every.needs_previous):  # a kind that can fill every layer
        return [text] * depth
    if kind == "mapshare":
        group = int(arg) if arg.isdigit() else 0
        if group < 2:
            raise ValueError(f"plan {plan!r}: use mapshare:G with a group size G >= 2, e.g. mapshare:2")
        return mapshare_plan(depth, group)
    if kind == "skipat":
        if not arg:
            return skipat_plan(depth)
        try:
            layers = {int(i) for i in arg.split(",")}
        except ValueError:
            raise ValueError(f"plan {plan!r}: use skipat:I,J,... with layer indices") from None
        if not layers <= set(range(1, depth)):
            raise ValueError(f"plan {plan!r}: skipped layers must lie in 1..{depth - 1}, got {sorted(layers)}")
        return ["skip" if i in layers else "mha" for i in range(depth)]
    from attnreuse.plan import kinds_summary

    raise ValueError(
        f"plan {plan!r} is neither a kind that can fill every layer ({kinds_summary()}; not share/skip, which read "
        "an earlier layer), nor mapshare:G, skipat, skipat:I,J,... or a JSON list"
    )


def check_sources(source: Sequence[LayerSpec], target: Sequence[LayerSpec], num_heads: int) -> None:
    """Every target layer's kind needs what its source layer keeps of a dense layer's attention
    weights (`Kind.vit_source_needs` against the source kind's `vit_dense_weights`), unless the layer
    keeps its kind; the first layer that does not is a ValueError naming the layer and both kinds."""
    for i, (src, tgt) in enumerate(zip(source, target)):
        if src == tgt:
            continue  # kept as it is: it holds its own weights
        kept = get_kind(src.kind).vit_dense_weights(src, num_heads)
        needed = get_kind(tgt.kind).vit_source_needs(tgt, num_heads)
        if not keeps_enough(kept, needed):
            raise ValueError(
                f"layer {i} cannot become {str(tgt)!r}: its source kind {str(src)!r} keeps {DENSE_WEIGHTS[kept]} of the "
                f"attention weights, {str(tgt)!r} needs {DENSE_WEIGHTS[needed]}"
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
    if not path.exists():
        raise FileNotFoundError(f"--checkpoint {path}: no such file or directory")
    spec = ckpt_io.read_model_spec(path)
    if spec is not None:
        # the run's model.json names the model; a --model / --model-kwargs beside it would be ignored
        if config.model is not None and config.model != spec["name"]:
            raise ValueError(f"--model {config.model} differs from the model of the checkpoint run {path} "
                             f"({spec['name']}, its model.json); drop --model or give that run")
        if config.model_kwargs:
            raise ValueError(f"--model-kwargs apply to a .safetensors --checkpoint; the run {path} reads its own from "
                             "model.json: drop --model-kwargs")
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


def convert(config: ConvertConfig) -> dict:
    """Convert the checkpoint to the plan, initialise new parts, evaluate, save; returns the report."""
    from attnreuse.capture import capture_attention
    from attnreuse.models import create_model
    from attnreuse.plan import map_sources, parse_plan
    from attnreuse.plan._vit_retrofit import VitRetrofit
    from attnreuse.models.vit import convert_state_dict

    torch.manual_seed(config.seed)
    source, spec = _load_source(config)
    depth, heads, C = len(source.blocks), source.blocks[0].attn.num_heads, source.embed_dim  # layer 0 attends
    source_specs = tuple(getattr(b, "spec", LayerSpec("mha")) for b in source.blocks)  # a timm ViT: mha
    plan = parse_target_plan(config.plan, depth)
    specs = parse_plan(plan, depth, heads)
    check_sources(source_specs, specs, heads)
    name = _target_name(spec["name"])
    kwargs = {**spec["kwargs"], "attn_plan": plan}
    target = create_model(name, **kwargs)
    src_sd = {k: v.detach().clone() for k, v in source.state_dict().items()}
    converted, report = convert_state_dict(src_sd, plan, num_heads=heads, target=target.state_dict())
    # A source layer of another kind may hold parts the target kind has no place for (a reuse:G
    # layer's own `attn.qk` when it becomes "share"): they are dropped, as a dense layer's q/k rows are.
    changed = {f"blocks.{i}." for i, (a, b) in enumerate(zip(source_specs, specs)) if a != b}
    left = [k for k in report.unexpected if k.startswith(tuple(changed))]
    for key in left:
        del converted[key]
    report = dataclasses.replace(report, dropped=report.dropped + tuple(left),
                                 unexpected=tuple(k for k in report.unexpected if k not in left))
    if report.mismatched or report.unexpected:
        raise ValueError(f"the source checkpoint does not fit {name} with plan {plan}:\n{report}")
    sd = target.state_dict()
    sd.update({k: v.clone() for k, v in converted.items()})

    batches, val = _calibration(source, config)
    r = VitRetrofit(
        specs=specs, sources=map_sources(specs), dim=C, num_heads=heads, source_specs=source_specs, source_sd=src_sd,
        sd=sd, captures=capture_attention(source, batches, qk_maps=True), batches=batches,
        grid=source.patch_embed.dynamic_feat_size(tuple(batches[0].shape[-2:])), prefix=source.num_prefix_tokens,
        config=config,
    )  # fmt: skip
    inits = []
    for i, sp in enumerate(specs):  # phase 1: each kind edits the state dict from the source
        inits += get_kind(sp.kind).vit_retrofit(r, i)
    target.load_state_dict(sd)
    target.eval()
    r.target = target
    for i, sp in enumerate(specs):  # phase 2: each kind fits its new parts in the loaded model
        inits += get_kind(sp.kind).vit_fit(r, i)

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
