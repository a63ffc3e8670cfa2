"""Map stock timm ViT/DeiT, SkipAt and ViTALiTy state dicts onto an attnreuse ViT attention plan.

Sources understood:
- timm `vit_*` / `deit_*` (and timm 0.5.4, the SkipAt code's base): `blocks.N.attn.qkv` rows [q; k; v].
- SkipAt's published checkpoints: timm 0.5.4 keys (skipped blocks keep unused `norm1`/`attn`) plus
  `param_1..param_6` Phi modules (`linear1.0`, `dwconv.0`, `linear2.0`, `eca.conv`), the i-th
  of which belongs to the i-th skipped layer.
- ViTALiTy's DeiT checkpoints: DeiT keys plus quantiser state under `blocks.N.attn.quant*`.
Per plan kind (`Kind.vit_dense_weights`): "mha", "taylor" and "reuse:<num_heads>" keep `attn.qkv`;
"share" and grouped "reuse" keep only the V rows of `qkv` as `attn.v` (their q/k rows are dropped;
"reuse" gets new `attn.qk`); "skip" drops `norm1` and `attn` (and gets `phi`). Checkpoints already in a plan's
layout (`attn.qk`, `attn.v`, `phi`: saved attnreuse models) pass through unchanged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from timm.models.vision_transformer import checkpoint_filter_fn as timm_checkpoint_filter_fn
from torch import Tensor, nn

from attnreuse.plan import LayerSpec, format_plan, get_kind, parse_plan

__all__ = ["ConversionReport", "checkpoint_filter_fn", "convert_state_dict"]

_logger = logging.getLogger(__name__)

_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_SKIPAT_PHI = re.compile(r"^param_(\d+)\.(.+)$")
_SKIPAT_PHI_NAMES = {"linear1.0.": "fc1.", "dwconv.0.": "dwconv.", "linear2.0.": "fc2.", "eca.conv.": "eca.conv."}
_DISTILLATION = ("dist_token", "head_dist.")


@dataclass(frozen=True)
class ConversionReport:
    """What `convert_state_dict` did. `new`, `unexpected`, `mismatched` and `reinitialised` are
    filled only when a target state dict was given.

    renamed: (source key, target key) pairs, V-row slices of `qkv` included.
    dropped: source keys (or row ranges) the plan no longer uses.
    new: target keys the checkpoint does not provide (they keep their initialisation).
    unexpected: converted keys the target does not have.
    mismatched: (key, checkpoint shape, target shape).
    reinitialised: classifier keys whose class count differs (left to the target's initialisation).
    """

    plan: str
    renamed: tuple[tuple[str, str], ...] = ()
    dropped: tuple[str, ...] = ()
    new: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = ()
    reinitialised: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """Every target tensor comes from the checkpoint (classifier re-initialisation aside) and
        every converted tensor has a place in the target."""
        return not (self.new or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = [f"plan: {self.plan}"]

        def keys(title: str, items: Sequence[str]) -> None:
            if items:
                shown = ", ".join(items[:12]) + (f", ... ({len(items)} in all)" if len(items) > 12 else "")
                lines.append(f"{title} ({len(items)}): {shown}")

        keys("renamed", [f"{a} -> {b}" for a, b in self.renamed])
        keys("dropped (unused by the plan)", self.dropped)
        keys("new (not in the checkpoint, initialised)", self.new)
        keys("unexpected (no place in the model)", self.unexpected)
        keys("shape mismatch", [f"{k} {tuple(a)} vs model {tuple(b)}" for k, a, b in self.mismatched])
        keys("classifier re-initialised (class count differs)", self.reinitialised)
        return "\n".join(lines)


def _unwrap(state_dict: Mapping[str, object]) -> dict[str, Tensor]:
    for key in ("model", "state_dict"):
        if key in state_dict and isinstance(state_dict[key], Mapping):
            state_dict = state_dict[key]
    if state_dict and all(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module.") :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def _depth(state_dict: Mapping[str, Tensor]) -> int:
    blocks = {int(m.group(1)) for m in map(_BLOCK.match, state_dict) if m}
    if not blocks:
        raise ValueError("state_dict has no 'blocks.N.*' keys: it is not a ViT/DeiT state dict")
    return max(blocks) + 1


def _v_rows(t: Tensor) -> Tensor:
    """The V third of a fused qkv weight [3C, C] or bias [3C]."""
    c = t.shape[0] // 3
    return t[2 * c :].clone()


def _convert_block(key: str, i: int, rest: str, spec: LayerSpec, fused_source: bool, num_heads: int, value: Tensor, out, renamed, dropped):
    """Place one `blocks.i.*` tensor; `fused_source`: the checkpoint's block i has a fused `attn.qkv`."""
    keeps = get_kind(spec.kind).vit_dense_weights(spec, num_heads)
    to_split = fused_source and keeps == "values"
    if rest.startswith("attn.quant"):
        dropped.append(key)  # ViTALiTy quantiser statistics: no counterpart
    elif keeps == "none" and rest.startswith(("norm1.", "attn.")):
        dropped.append(key)
    elif to_split and rest in ("attn.qkv.weight", "attn.qkv.bias"):
        target = f"blocks.{i}.attn.v.{rest.rsplit('.', 1)[1]}"
        out[target] = _v_rows(value)
        renamed.append((f"{key}[v rows]", target))
        dropped.append(f"{key}[q, k rows]")
    elif to_split and rest.startswith(("attn.q_norm.", "attn.k_norm.")):
        dropped.append(key)
    else:
        out[key] = value


def convert_state_dict(
    state_dict: Mapping[str, object],
    attn_plan: object,
    *,
    num_heads: int,
    target: Mapping[str, Tensor] | None = None,
    classifier: str = "head",
) -> tuple[dict[str, Tensor], ConversionReport]:
    """Convert a ViT/DeiT/SkipAt/ViTALiTy state dict to the parameter names of `attn_plan`.

    state_dict: the checkpoint (nested under "model"/"state_dict" and a "module." prefix are undone).
    attn_plan: a kind or one kind per layer, as `attn_plan=` of the attnreuse ViT models; its
        length is checked against the checkpoint's number of blocks.
    num_heads: the model's heads (needed to read "reuse:G").
    target: the model's state dict; when given, the report lists new, unexpected and mismatched
        keys, and classifier keys (`classifier`.weight/.bias) with another class count are removed
        from the result and listed as re-initialised.
    Returns (converted state dict, report). Nothing is resampled here: the model's
    `checkpoint_filter_fn` runs timm's position-embedding resampling first.
    """
    sd = _unwrap(state_dict)
    specs = parse_plan(attn_plan, _depth(sd), num_heads, owner="the checkpoint", name="attn_plan", depth_name="depth")
    # SkipAt's param_N is the Phi of its N-th skipped layer: here the N-th layer whose kind reads the
    # previous layer's output in place of attention weights of its own
    skip_layers = [i for i, s in enumerate(specs) if get_kind(s.kind).needs_previous]
    out: dict[str, Tensor] = {}
    renamed: list[tuple[str, str]] = []
    dropped: list[str] = []
    for key, value in sd.items():
        block, phi = _BLOCK.match(key), _SKIPAT_PHI.match(key)
        if phi:
            n, rest = int(phi.group(1)), phi.group(2)
            if not 1 <= n <= len(skip_layers):
                dropped.append(key)
                continue
            for old, new in _SKIPAT_PHI_NAMES.items():
                if rest.startswith(old):
                    rest = new + rest[len(old) :]
                    break
            target_key = f"blocks.{skip_layers[n - 1]}.phi.{rest}"
            out[target_key] = value
            renamed.append((key, target_key))
        elif block:
            i = int(block.group(1))
            fused_source = f"blocks.{i}.attn.qkv.weight" in sd
            _convert_block(key, i, block.group(2), specs[i], fused_source, num_heads, value, out, renamed, dropped)
        elif key.startswith(_DISTILLATION):
            dropped.append(key)  # DeiT distillation token / head: the attnreuse ViT has none
        else:
            out[key] = value
    report = dict(plan=format_plan(specs), renamed=tuple(renamed), dropped=tuple(dropped))
    if target is not None:
        head = (f"{classifier}.weight", f"{classifier}.bias")
        mismatched, reinit = [], []
        for key in sorted(set(out) & set(target)):
            got, want = tuple(out[key].shape), tuple(target[key].shape)
            if got != want:
                if key in head and got[1:] == want[1:]:
                    reinit.append(key)
                    del out[key]
                else:
                    mismatched.append((key, got, want))
        report.update(
            new=tuple(sorted(set(target) - set(out) - set(reinit))),
            unexpected=tuple(sorted(set(out) - set(target))),
            mismatched=tuple(mismatched),
            reinitialised=tuple(reinit),
        )
    return out, ConversionReport(**report)


def _first_conv_channels_only(key: str, got: tuple[int, ...], want: tuple[int, ...]) -> bool:
    """patch_embed weights differing only in input channels: timm adapts those after filtering."""
    return key == "patch_embed.proj.weight" and len(got) == len(want) == 4 and got[0] == want[0] and got[2:] == want[2:]


def checkpoint_filter_fn(state_dict: dict, model: nn.Module, strict: bool = True) -> dict:
    """The attnreuse ViT's `pretrained_filter_fn`: timm's ViT filter (unnesting, patch and position
    embedding resampling), then `convert_state_dict` onto `model.attn_plan`.

    The report is kept as `model.load_report`. strict=True (the default) raises ValueError unless
    every model tensor comes from the checkpoint (a classifier with another class count aside) and
    every checkpoint tensor the plan uses has a place; strict=False keeps what matches, logs the
    report and leaves the rest initialised.
    """
    state_dict = timm_checkpoint_filter_fn(state_dict, model)
    out, report = convert_state_dict(
        state_dict, model.attn_plan, num_heads=model.num_heads, target=model.state_dict()
    )
    report = replace(report, mismatched=tuple(m for m in report.mismatched if not _first_conv_channels_only(*m)))
    model.load_report = report
    if report.complete:
        return out
    if strict:
        raise ValueError(
            f"checkpoint does not match this model:\n{report}\n"
            "Pass pretrained_strict=False to load the matching tensors and keep the rest initialised."
        )
    _logger.warning("loading a partial checkpoint:\n%s", report)
    bad = set(report.unexpected) | {k for k, _, _ in report.mismatched}
    return {k: v for k, v in out.items() if k not in bad}
