"""UniForm: EfficientViT-skeleton networks whose token mixer is Reuse Attention (seed 000).

Paper: the Reuse Attention / UniForm abstract (seed 000): one attention map, computed once and
reused by every head. Architecture as the authors' code
(seulkiyeom/mixtransform, mmpretrain `MixViT`), as the project's research notes (NOTES.md section 1)
summarise it:
stem of four stride-2 3x3 ConvBN (stride 16) -> three stages of sandwich blocks
(residual DW3x3 -> residual FFN -> residual Reuse-Attention mixer -> residual DW3x3 -> residual FFN),
stages 2 and 3 entered through residual DW+FFN, PatchMerging, residual DW+FFN -> average pool ->
BatchNorm1d + Linear.

Names: the code's keys m0..m5 are the widths of EfficientViT-M0..M5. The paper's four sizes are
registered as xs = m0, s = m1, m = m3, l = m5 (the mapping an earlier version of the code states in
a comment); m2 and m4 are registered as `uniform_m2`, `uniform_m4`.

Input: x: [B, 3, H, W] with H and W multiples of 16. Attention windows are ws x ws with
ws = min(window_size, that stage's resolution at `img_size`), as EfficientViT: at other inputs the
maps are zero-padded to whole windows.
"""

import re
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import SelectAdaptivePool2d, resize_rel_pos_bias_table_levit, to_2tuple
from timm.models import (
    build_model_with_cfg,
    checkpoint,
    checkpoint_seq,
    generate_default_cfgs,
    register_model,
)
from timm.models._features import feature_take_indices
from torch import Tensor, nn

from attnreuse.layers.conv import ConvBN, ConvFFN, NormLinear, PatchMerging, Residual
from attnreuse.models.uniform_mixers import get_mixer
from attnreuse.ops.backend import symbolic_tracing

__all__ = ["UNIFORM_CONFIGS", "UniForm", "apply_mixer", "checkpoint_filter_fn"]

PATCH_SIZE = 16

# The authors' configurations (later version of mixvit.py): one line per code key.
UNIFORM_CONFIGS: dict[str, dict] = {
    "m0": dict(embed_dim=(64, 128, 192), depth=(1, 2, 3), num_heads=(4, 4, 4)),
    "m1": dict(embed_dim=(128, 144, 192), depth=(1, 2, 3), num_heads=(2, 3, 3)),
    "m2": dict(embed_dim=(128, 192, 224), depth=(1, 2, 3), num_heads=(4, 3, 2)),
    "m3": dict(embed_dim=(128, 240, 320), depth=(1, 2, 3), num_heads=(4, 3, 4)),
    "m4": dict(embed_dim=(128, 256, 384), depth=(1, 2, 3), num_heads=(4, 4, 4)),
    "m5": dict(embed_dim=(192, 288, 384), depth=(1, 3, 4), num_heads=(3, 3, 4)),
}


class UniFormBlock(nn.Module):
    """Sandwich block: residual DW3x3, FFN, token mixer (Reuse Attention; `mixer` names a registered
    `uniform_mixers.UniFormMixer`), DW3x3, FFN. [B, C, H, W] -> same."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        key_dim: int,
        window_size: int,
        kernels: Sequence[int],
        drop_path: float = 0.0,
        mixer: str = "reuse",
    ):
        super().__init__()
        self.dw0 = Residual(ConvBN(dim, dim, 3, groups=dim, bn_weight_init=0.0), drop_path)
        self.ffn0 = Residual(ConvFFN(dim, 2 * dim), drop_path)
        self.mixer = get_mixer(mixer).build(
            dim, num_heads, key_dim=key_dim, window_size=window_size, kernels=kernels, drop_path=drop_path
        )
        self.dw1 = Residual(ConvBN(dim, dim, 3, groups=dim, bn_weight_init=0.0), drop_path)
        self.ffn1 = Residual(ConvFFN(dim, 2 * dim), drop_path)

    def forward(self, x: Tensor) -> Tensor:
        return self.ffn1(self.dw1(self.mixer(self.ffn0(self.dw0(x)))))


def _downsample(in_dim: int, out_dim: int) -> nn.Sequential:
    """Residual DW+FFN at in_dim, PatchMerging (stride 2), residual DW+FFN at out_dim."""
    return nn.Sequential(OrderedDict(
        dw0=Residual(ConvBN(in_dim, in_dim, 3, groups=in_dim)),
        ffn0=Residual(ConvFFN(in_dim, 2 * in_dim)),
        merge=PatchMerging(in_dim, out_dim),
        dw1=Residual(ConvBN(out_dim, out_dim, 3, groups=out_dim)),
        ffn1=Residual(ConvFFN(out_dim, 2 * out_dim)),
    ))


class UniFormStage(nn.Module):
    """Optional downsampling, then `depth` blocks. [B, in_dim, H, W] -> [B, out_dim, H', W']."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        depth: int,
        num_heads: int,
        key_dim: int,
        window_size: int,
        kernels: Sequence[int],
        downsample: bool,
        drop_path: Sequence[float],
        mixer: str = "reuse",
    ):
        super().__init__()
        self.downsample = _downsample(in_dim, out_dim) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[
            UniFormBlock(
                out_dim, num_heads, key_dim=key_dim, window_size=window_size, kernels=kernels,
                drop_path=drop_path[i], mixer=mixer,
            )
            for i in range(depth)
        ])

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.downsample(x))


def _stem(in_chans: int, dim: int) -> nn.Sequential:
    """Four 3x3 stride-2 ConvBN with ReLU between: in_chans -> C/8 -> C/4 -> C/2 -> C (stride 16)."""
    return nn.Sequential(OrderedDict(
        conv1=ConvBN(in_chans, dim // 8, 3, stride=2), relu1=nn.ReLU(),
        conv2=ConvBN(dim // 8, dim // 4, 3, stride=2), relu2=nn.ReLU(),
        conv3=ConvBN(dim // 4, dim // 2, 3, stride=2), relu3=nn.ReLU(),
        conv4=ConvBN(dim // 2, dim, 3, stride=2),
    ))


def _check_input(x: Tensor, in_chans: int) -> None:
    """Validation that stays out of traced graphs: callers skip it while scripting, and it returns
    at once on the Proxies of a `torch.fx` trace."""
    if symbolic_tracing():
        return
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != in_chans:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be an image batch [B, {in_chans}, H, W], got {got}")
    H, W = x.shape[-2:]
    if H % PATCH_SIZE or W % PATCH_SIZE or H == 0 or W == 0:
        raise ValueError(
            f"x height and width must be positive multiples of {PATCH_SIZE} (the stem's stride), "
            f"got {H}x{W}; resize or pad the image"
        )


class UniForm(nn.Module):
    """UniForm classifier. x: [B, in_chans, H, W] (H, W multiples of 16) -> logits [B, num_classes].

    Features: stage i has `embed_dim[i]` channels at stride 16 * 2 ** i. mixer: a registered
    `uniform_mixers` name ("reuse", the paper's; "pointwise" / "none" are cost probes).
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: Sequence[int] = (64, 128, 192),
        depth: Sequence[int] = (1, 2, 3),
        num_heads: Sequence[int] = (4, 4, 4),
        key_dim: int = 16,
        window_size: int = 7,
        kernels: Sequence[int] = (1, 3, 5, 7),
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        mixer: str = "reuse",
    ):
        super().__init__()
        get_mixer(mixer)  # an unknown name fails here, naming the known ones
        if not (len(embed_dim) == len(depth) == len(num_heads) >= 1):
            raise ValueError(
                "embed_dim, depth and num_heads need one entry per stage, got "
                f"{len(embed_dim)}, {len(depth)}, {len(num_heads)} entries"
            )
        img = min(to_2tuple(img_size))
        if img % PATCH_SIZE or img < PATCH_SIZE:
            raise ValueError(f"img_size must be a positive multiple of {PATCH_SIZE}, got {img_size!r}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.img_size = to_2tuple(img_size)  # the size it was built for (window sizes follow it)
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        self.patch_embed = _stem(in_chans, embed_dim[0])
        resolution, stride = img // PATCH_SIZE, PATCH_SIZE
        dpr = torch.linspace(0, drop_path_rate, sum(depth)).tolist()
        stages, self.feature_info = [], []
        prev = embed_dim[0]
        for i, (dim, d, h) in enumerate(zip(embed_dim, depth, num_heads)):
            if i > 0:
                resolution, stride = (resolution - 1) // 2 + 1, stride * 2
            stages.append(UniFormStage(
                prev, dim, depth=d, num_heads=h, key_dim=key_dim,
                window_size=min(window_size, resolution), kernels=kernels, downsample=i > 0,
                drop_path=dpr[sum(depth[:i]):sum(depth[:i + 1])], mixer=mixer,
            ))
            self.feature_info.append(dict(num_chs=dim, reduction=stride, module=f"stages.{i}"))
            prev = dim
        self.stages = nn.Sequential(*stages)

        self.num_features = self.head_hidden_size = embed_dim[-1]
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))
        self.head = self._make_head(num_classes)

    def _make_head(self, num_classes: int) -> nn.Module:
        if num_classes > 0:
            return NormLinear(self.num_features, num_classes, drop=self.drop_rate)
        return nn.Identity()

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {k for k in self.state_dict() if k.endswith("attention_biases")}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(
            stem=r"^patch_embed",
            blocks=r"^stages\.(\d+)" if coarse else [
                (r"^stages\.(\d+)\.downsample", (0,)),
                (r"^stages\.(\d+)\.blocks\.(\d+)", None),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.linear if isinstance(self.head, NormLinear) else self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            if not global_pool and num_classes:
                raise ValueError(f"a classifier needs pooled features: global_pool='' with num_classes={num_classes}")
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))
        device = next(self.parameters()).device
        self.head = self._make_head(num_classes).to(device)
        self.head.train(self.training)

    @torch.no_grad()
    def fuse(self) -> "UniForm":
        """Fold every ConvBN / BatchNorm+Linear into one conv / Linear for deployment, in place.

        Uses BatchNorm running statistics: the model must be in eval mode, and is afterwards
        inference-only (there are no BatchNorms left to train). Calling it again changes nothing.
        """
        if self.training:
            raise ValueError("fuse() folds BatchNorm running statistics; call model.eval() first")
        from timm.utils.model import reparameterize_model

        return reparameterize_model(self, inplace=True)

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Stage outputs [B, embed_dim[i], H / 2^(4+i), W / 2^(4+i)] for the stages `indices` picks
        (timm semantics: an int n takes the last n, None all)."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        if not torch.jit.is_scripting():
            _check_input(x, self.in_chans)
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        intermediates = []
        x = self.patch_embed(x)
        stages = self.stages if not stop_early else self.stages[:max_index + 1]
        for i, stage in enumerate(stages):
            x = checkpoint(stage, x) if self.grad_checkpointing else stage(x)
            if i in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages after the last one `indices` needs (and the head); returns the indices."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        if max_index < len(self.stages) - 1:
            self.stages = self.stages[:max_index + 1]
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
            prune_head = True
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: Tensor) -> Tensor:
        """x: [B, in_chans, H, W] -> [B, embed_dim[-1], H / 64 (rounded up), W / 64 (rounded up)]."""
        if not torch.jit.is_scripting():
            _check_input(x, self.in_chans)
        x = self.patch_embed(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.stages, x)
        return self.stages(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.global_pool(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def apply_mixer(model: nn.Module, name: str) -> nn.Module:
    """Give every UniForm block of `model` the registered mixer `name` (`uniform_mixers`), in place,
    reusing the modules it keeps (before `fuse()`: the pointwise mixer's convs fold like Reuse
    Attention's). Returns `model`."""
    mixer = get_mixer(name)
    blocks = [m for m in model.modules() if isinstance(m, UniFormBlock)]
    if not blocks:
        raise ValueError(f"UniForm mixers apply to UniForm models, got a {type(model).__name__}")
    for block in blocks:
        block.mixer = mixer.replace(block.mixer)
    return model


# --- Loading the authors' mmpretrain checkpoints -------------------------------------------------

# (their key pattern, ours) after the `backbone.` prefix is removed; applied in order.
_MMPRETRAIN_RENAMES = (
    (r"^(stages\.\d+\.downsample)\.res1\.0\.", r"\1.dw0."),
    (r"^(stages\.\d+\.downsample)\.res1\.1\.", r"\1.ffn0."),
    (r"^(stages\.\d+\.downsample)\.res2\.0\.", r"\1.dw1."),
    (r"^(stages\.\d+\.downsample)\.res2\.1\.", r"\1.ffn1."),
    (r"^(stages\.\d+\.downsample)\.patchmerge\.se\.conv(\d)\.conv\.", r"\1.merge.se.fc\2."),
    (r"^(stages\.\d+\.downsample)\.patchmerge\.", r"\1.merge."),
    (r"\.mixer\.m\.attn\.qkvs\.", ".mixer.m.qk."),
    (r"\.mixer\.m\.attn\.dws\.", ".mixer.m.q_dw."),
    (r"\.mixer\.m\.attn\.proj\.1\.", ".mixer.m.proj."),
    (r"\.mixer\.m\.attn\.attention_biases$", ".mixer.m.attention_biases"),
)
_MIX_KEY = re.compile(r"^(.*\.mixer\.m)\.attn\.mix\.(\d+)\.(weight|bias)$")


def _unwrap(state_dict: dict) -> dict:
    for key in ("state_dict", "model"):
        if key in state_dict and isinstance(state_dict[key], dict):
            return state_dict[key]
    return state_dict


def _pack_values(prefix: str, heads: dict[int, dict[str, Tensor]], model: nn.Module) -> dict[str, Tensor]:
    """The authors' per-head value convs mix.i ([C/h, 1, k_i, k_i] + bias) -> our packed v_dw."""
    mixer = model.get_submodule(prefix)
    if sorted(heads) != list(range(mixer.num_heads)):
        raise ValueError(
            f"{prefix}: checkpoint has value convs for heads {sorted(heads)}, the model has {mixer.num_heads} heads"
        )
    k_max = mixer.v_dw.kernel_size[0]
    weights, biases = [], []
    for i, k in enumerate(mixer.kernels):
        w = heads[i]["weight"]
        if w.shape[-1] != k:
            raise ValueError(
                f"{prefix}: checkpoint value conv of head {i} has a {w.shape[-1]}x{w.shape[-1]} kernel, "
                f"the model uses {k}x{k} (kernels={mixer.kernels})"
            )
        pad = (k_max - k) // 2
        weights.append(F.pad(w, (pad, pad, pad, pad)))
        biases.append(heads[i]["bias"])
    return {f"{prefix}.v_dw.weight": torch.cat(weights), f"{prefix}.v_dw.bias": torch.cat(biases)}


def _from_mmpretrain(state_dict: dict, model: nn.Module) -> dict:
    out, mix = {}, {}
    for key, value in state_dict.items():
        if key.startswith("head."):
            out[key] = value
            continue
        if not key.startswith("backbone.") or key.endswith("attention_bias_idxs"):
            continue
        key = key[len("backbone."):]
        m = _MIX_KEY.match(key)
        if m:
            mix.setdefault(m.group(1), {}).setdefault(int(m.group(2)), {})[m.group(3)] = value
            continue
        for pattern, repl in _MMPRETRAIN_RENAMES:
            key = re.sub(pattern, repl, key)
        if key.endswith("attention_biases"):
            value = value[:1]  # the code uses only head 0's row: one map for all heads
        out[key] = value
    for prefix, heads in mix.items():
        out.update(_pack_values(prefix, heads, model))
    return out


def checkpoint_filter_fn(state_dict: dict, model: nn.Module) -> dict:
    """Map a checkpoint onto `model`'s keys.

    Accepts our own state dicts and the authors' mmpretrain ones (`backbone.` / `head.` keys,
    module names of mixvit.py: `res1`/`patchmerge`/`res2`, `attn.qkvs`/`attn.dws`/`attn.mix.i`/
    `attn.proj.1`, per-head bias rows of which row 0 is used). Relative-position bias tables are
    resized (bicubic, as timm does for LeViT) when the window size differs.
    """
    state_dict = _unwrap(state_dict)
    if any(k.startswith("backbone.") for k in state_dict):
        state_dict = _from_mmpretrain(state_dict, model)
    target = model.state_dict()
    out = {}
    for key, value in state_dict.items():
        if key.endswith("attention_bias_idxs"):
            continue
        if key.endswith("attention_biases") and key in target and value.shape != target[key].shape:
            value = resize_rel_pos_bias_table_levit(value.T, target[key].shape[::-1]).T.contiguous()
        out[key] = value
    return out


def _cfg(**kwargs) -> dict:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (4, 4),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.conv1.conv",
        "classifier": "head.linear",
        "fixed_input_size": False,
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    name: _cfg() for name in ("uniform_xs", "uniform_s", "uniform_m2", "uniform_m", "uniform_m4", "uniform_l")
})

# What `attnreuse bench models` compares each size with (read through `attnreuse.models.peers`):
# timm's EfficientViT-M of the same widths (NOTES.md section 1: xs = m0, s = m1, m = m3, l = m5).
BENCH = dict(
    family="uniform",
    baseline_family="efficientvit_m",
    baselines={
        "uniform_xs": "efficientvit_m0",
        "uniform_s": "efficientvit_m1",
        "uniform_m2": "efficientvit_m2",
        "uniform_m": "efficientvit_m3",
        "uniform_m4": "efficientvit_m4",
        "uniform_l": "efficientvit_m5",
    },
)


def _create_uniform(variant: str, code_key: str, pretrained: bool = False, **kwargs) -> UniForm:
    out_indices = kwargs.pop("out_indices", (0, 1, 2))
    model_args = dict(UNIFORM_CONFIGS[code_key], **kwargs)
    return build_model_with_cfg(
        UniForm,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(flatten_sequential=True, out_indices=out_indices),
        **model_args,
    )


@register_model
def uniform_xs(pretrained: bool = False, **kwargs) -> UniForm:
    """UniForm-XS: the code's m0 (64/128/192 channels, EfficientViT-M0 widths)."""
    return _create_uniform("uniform_xs", "m0", pretrained, **kwargs)


@register_model
def uniform_s(pretrained: bool = False, **kwargs) -> UniForm:
    """UniForm-S: the code's m1 (128/144/192, EfficientViT-M1 widths)."""
    return _create_uniform("uniform_s", "m1", pretrained, **kwargs)


@register_model
def uniform_m2(pretrained: bool = False, **kwargs) -> UniForm:
    """The code's m2 (128/192/224, EfficientViT-M2 widths)."""
    return _create_uniform("uniform_m2", "m2", pretrained, **kwargs)


@register_model
def uniform_m(pretrained: bool = False, **kwargs) -> UniForm:
    """UniForm-M: the code's m3 (128/240/320, EfficientViT-M3 widths)."""
    return _create_uniform("uniform_m", "m3", pretrained, **kwargs)


@register_model
def uniform_m4(pretrained: bool = False, **kwargs) -> UniForm:
    """The code's m4 (128/256/384, EfficientViT-M4 widths)."""
    return _create_uniform("uniform_m4", "m4", pretrained, **kwargs)


@register_model
def uniform_l(pretrained: bool = False, **kwargs) -> UniForm:
    """UniForm-L: the code's m5 (192/288/384, EfficientViT-M5 widths)."""
    return _create_uniform("uniform_l", "m5", pretrained, **kwargs)
