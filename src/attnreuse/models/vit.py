"""ViT / DeiT whose layers each follow an attention plan: multi-head, Reuse Attention, cross-layer map
sharing, SkipAt skipping, or ViTALiTy Taylor attention.

Papers: ViT (Dosovitskiy et al. 2021) / DeiT (Touvron et al. 2021) as timm builds them; Reuse
Attention (UniForm); attention map reuse across layers (Shim, Choi, Sung 2023); SkipAt (ICLR 2024);
ViTALiTy (HPCA 2023). One implementation with timm's parameter names: a stock timm `vit_*`/`deit_*`
state dict loads into any plan through `checkpoint_filter_fn` (see `convert_state_dict`).

    import attnreuse, timm
    model = timm.create_model("vit_attnreuse_small_patch16_224", attn_plan=["mha", "share"] * 6)
    model = timm.create_model("vit_skipat_tiny_patch16_224", pretrained=True,
                              pretrained_cfg_overlay=dict(file="skipat_tiny.pth"))

Plans (`attnreuse.plan`, one grammar for every host): "mha", "reuse" / "reuse:G", "share",
"skip", "taylor" or any registered kind; one for every layer or one per layer. Each block's
modules come from its kind (`Kind.vit_modules`, `vit_attend`); blocks pass along the latest
softmax map (for kinds that apply one) and the previous attention output (for kinds that read
it); a map is only materialised by a layer a later one applies.
"""

from __future__ import annotations

from functools import partial

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD
from timm.layers import DropPath, LayerNorm, LayerScale, Mlp, to_2tuple
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model, register_model_deprecations
from timm.models._builder import resolve_pretrained_cfg
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from attnreuse.plan import LayerSpec, VitBlockArgs, format_plan, get_kind, map_sources, parse_plan
from attnreuse.ops.backend import symbolic_tracing
from attnreuse.models._vit_checkpoints import ConversionReport, checkpoint_filter_fn, convert_state_dict

__all__ = [
    "AttnReuseVisionTransformer",
    "ConversionReport",
    "OLD_NAMES",
    "PlanBlock",
    "checkpoint_filter_fn",
    "convert_state_dict",
    "describe_plan",
    "mapshare_plan",
    "skipat_plan",
]


class PlanBlock(nn.Module):
    """timm's pre-norm ViT block whose attention is one plan entry; x: [B, N, C] -> [B, N, C].

    Parameter names as timm's `Block` (`norm1`, `attn`, `ls1`, `norm2`, `mlp`, `ls2`); the
    modules in place of `norm1`/`attn` are the kind's (`Kind.vit_modules`): `attnreuse.layers.Attention`
    for "mha", "reuse" and "share" (V only), `TaylorAttention` for "taylor", `phi` (`SkipAtPhi`)
    with no `norm1`/`attn` for "skip".
    forward(x, attn_map, prev_out, grid) -> (x, attn_map, attn_out): `attn_map` is the latest
    softmax map a later "share" layer needs (else None), `attn_out` this layer's attention output
    (after `proj`, before layer scale and residual), `grid` the (H, W) patch grid.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        qk_norm: bool = False,
        scale_attn_norm: bool = False,
        scale_mlp_norm: bool = False,
        proj_bias: bool = True,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        init_values: float | None = None,
        drop_path: float = 0.0,
        act_layer: type[nn.Module] = nn.GELU,
        norm_layer: type[nn.Module] = LayerNorm,
        mlp_layer: type[nn.Module] = Mlp,
        attn_layer: object = None,
        device=None,
        dtype=None,
        *,
        spec: LayerSpec,
        emit_map: bool = False,
        num_prefix_tokens: int = 1,
        reuse_qk_dim: int | None = None,
        taylor_center: str | None = "tokens",
        taylor_sparse: bool = True,
        taylor_sparse_threshold: float = 0.002,
        taylor_sparse_mode: str = "residual",
        taylor_sparse_anneal: float | None = 0.5,
        skip_kernel_size: int = 5,
    ) -> None:
        super().__init__()
        if scale_attn_norm:
            raise ValueError("scale_attn_norm=True is not supported by the attnreuse ViT blocks")
        self.spec = spec
        self.kind = spec.kind
        self.plan_kind = get_kind(spec.kind)
        self.emit_map = emit_map
        self.num_prefix_tokens = num_prefix_tokens
        options = dict(
            reuse_qk_dim=reuse_qk_dim, taylor_center=taylor_center, taylor_sparse=taylor_sparse,
            taylor_sparse_threshold=taylor_sparse_threshold, taylor_sparse_mode=taylor_sparse_mode,
            taylor_sparse_anneal=taylor_sparse_anneal, skip_kernel_size=skip_kernel_size,
        )  # fmt: skip
        args = VitBlockArgs(
            dim, num_heads, qkv_bias=qkv_bias, qk_norm=qk_norm, proj_bias=proj_bias, proj_drop=proj_drop,
            attn_drop=attn_drop, norm_layer=norm_layer, num_prefix_tokens=num_prefix_tokens, options=options,
        )  # fmt: skip
        for name, module in self.plan_kind.vit_modules(spec, args).items():
            self.add_module(name, module)
        self.ls1 = LayerScale(dim, init_values=init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = mlp_layer(
            in_features=dim,
            hidden_features=int(dim * mlp_ratio),
            act_layer=act_layer,
            norm_layer=norm_layer if scale_mlp_norm else None,
            bias=proj_bias,
            drop=proj_drop,
        )
        self.ls2 = LayerScale(dim, init_values=init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    def extra_repr(self) -> str:
        return f"kind={self.spec}" + (", emits map" if self.emit_map else "")

    def forward(
        self, x: Tensor, attn_map: Tensor | None, prev_out: Tensor | None, grid: tuple[int, int]
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        attn_out, new_map = self.plan_kind.vit_attend(self, x, attn_map, prev_out, grid)
        if self.plan_kind.computes_map:
            attn_map = new_map  # this layer's map when a later layer applies it; no older map lives on
        x = x + self.drop_path1(self.ls1(attn_out))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x, attn_map, attn_out


class _PlanBlocks:
    """`block_fn` for timm's `VisionTransformer`: its i-th call builds block i of the plan.

    timm builds the blocks once, in order; the index is counted here rather than read from timm's
    `depth` argument, which older timm 1.0 releases do not pass.
    """

    def __init__(self, specs: tuple[LayerSpec, ...], **block_args) -> None:
        self.specs = specs
        self.emit_maps = frozenset(i for i in map_sources(specs) if i is not None)
        self.block_args = block_args
        self.built = 0

    def __call__(self, **kwargs) -> PlanBlock:
        kwargs.pop("depth", None)
        i = self.built
        self.built += 1
        return PlanBlock(spec=self.specs[i], emit_map=i in self.emit_maps, **self.block_args, **kwargs)


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class AttnReuseVisionTransformer(VisionTransformer):
    """timm's `VisionTransformer` with plan-driven blocks (`PlanBlock`); every timm argument works
    except `block_fn`/`attn_layer` (the plan chooses the blocks) and attention masks.

    Extra arguments:
    attn_plan: a kind for every layer or one per layer ("mha", "reuse", "reuse:G", "share",
        "skip", "taylor"); validated against depth and num_heads.
    reuse_qk_dim: total query/key width of grouped / Reuse layers (default: G * head width).
    taylor_center, taylor_sparse, taylor_sparse_threshold, taylor_sparse_mode, taylor_sparse_anneal:
        `TaylorAttention` options
        ("features" centring is what ViTALiTy's checkpoints were trained with).
    skip_kernel_size: Phi's depthwise kernel (SkipAt: 5).
    """

    def __init__(
        self,
        attn_plan: object = "mha",
        reuse_qk_dim: int | None = None,
        taylor_center: str | None = "tokens",
        taylor_sparse: bool = True,
        taylor_sparse_threshold: float = 0.002,
        taylor_sparse_mode: str = "residual",
        taylor_sparse_anneal: float | None = 0.5,
        skip_kernel_size: int = 5,
        **kwargs,
    ) -> None:
        for key in ("block_fn", "attn_layer"):
            if key in kwargs:
                raise ValueError(f"{key} is chosen by attn_plan in the attnreuse ViT; remove {key}={kwargs[key]!r}")
        depth = _positive_int("depth", kwargs.get("depth", 12))
        num_heads = _positive_int("num_heads", kwargs.get("num_heads", 12))
        embed_dim = _positive_int("embed_dim", kwargs.get("embed_dim", 768))
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} must be divisible by num_heads={num_heads}")
        img_size, patch_size = to_2tuple(kwargs.get("img_size", 224)), to_2tuple(kwargs.get("patch_size", 16))
        if not kwargs.get("dynamic_img_pad", False) and any(i % p for i, p in zip(img_size, patch_size)):
            raise ValueError(
                f"img_size={img_size} must be a multiple of patch_size={patch_size} (or pass dynamic_img_pad=True)"
            )
        specs = parse_plan(attn_plan, depth, num_heads, name="attn_plan", depth_name="depth")
        if reuse_qk_dim is not None:
            _positive_int("reuse_qk_dim", reuse_qk_dim)
        grid_kinds = sorted({s.kind for s in specs if get_kind(s.kind).needs_grid})
        if grid_kinds and kwargs.get("patch_drop_rate", 0.0) > 0:
            raise ValueError(f"patch_drop_rate > 0 breaks the token grid that {grid_kinds} layers need")
        num_prefix_tokens = int(kwargs.get("class_token", True)) + kwargs.get("reg_tokens", 0)
        block_fn = _PlanBlocks(
            specs,
            num_prefix_tokens=num_prefix_tokens,
            reuse_qk_dim=reuse_qk_dim,
            taylor_center=taylor_center,
            taylor_sparse=taylor_sparse,
            taylor_sparse_threshold=taylor_sparse_threshold,
            taylor_sparse_mode=taylor_sparse_mode,
            taylor_sparse_anneal=taylor_sparse_anneal,
            skip_kernel_size=skip_kernel_size,
        )
        super().__init__(block_fn=block_fn, **kwargs)
        self.num_heads = num_heads

    __jit_unused_properties__ = ["attn_plan"]

    @property
    def attn_plan(self) -> tuple[str, ...]:
        """The plan, one normalised kind per block (e.g. ("mha", "reuse:2", "share"))."""
        return tuple(str(blk.spec) for blk in self.blocks)

    def fix_init_weight(self) -> None:
        with torch.no_grad():
            for layer_id, blk in enumerate(self.blocks):
                scale = (2.0 * (layer_id + 1)) ** 0.5
                blk.plan_kind.vit_output_projection(blk).weight.div_(scale)
                blk.mlp.fc2.weight.div_(scale)

    def _check_input(self, x: object) -> None:
        """Validation that stays out of traced graphs: skipped while scripting, and a no-op on the
        Proxies of a `torch.fx` trace."""
        if symbolic_tracing():
            return
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != self.in_chans:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be images [B, {self.in_chans}, H, W], got {got}")
        H, W = x.shape[-2:]
        pe = self.patch_embed
        if pe.dynamic_img_pad:
            return
        if self.dynamic_img_size or not pe.strict_img_size:
            if H % pe.patch_size[0] or W % pe.patch_size[1]:
                raise ValueError(f"input {H}x{W} must be a multiple of the patch size {tuple(pe.patch_size)}")
        elif (H, W) != tuple(pe.img_size):
            raise ValueError(
                f"input {H}x{W} does not match the model's img_size {tuple(pe.img_size)}; create the model with "
                f"img_size=({H}, {W}) (weights' position embeddings are resampled on load) or dynamic_img_size=True"
            )

    def _embed(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Images [B, C_in, H, W] -> tokens [B, prefix + h*w, C] and the patch grid (h, w)."""
        if not torch.jit.is_scripting():
            self._check_input(x)
        if self.dynamic_img_size:
            grid = self.patch_embed.dynamic_feat_size((x.shape[-2], x.shape[-1]))
        else:
            grid = self.patch_embed.grid_size
        x = self.patch_embed(x)
        x = self._pos_embed(x)
        x = self.patch_drop(x)
        return self.norm_pre(x), grid

    def _block(self, blk: PlanBlock, x: Tensor, attn_map, prev_out, grid):
        if self.grad_checkpointing:
            return checkpoint(blk, x, attn_map, prev_out, grid)
        return blk(x, attn_map, prev_out, grid)

    def _forward_blocks(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        """Tokens [B, N, C] through every plan block, each passing on its map and output."""
        attn_map = prev_out = None
        for blk in self.blocks:
            x, attn_map, prev_out = self._block(blk, x, attn_map, prev_out, grid)
        return x

    def __prepare_scriptable__(self) -> "AttnReuseVisionTransformer":
        # timm lists the models TorchScript cannot compile (its tests' EXCLUDE_JIT_FILTERS); this
        # one says so when asked, in one line, instead of a compiler trace from deep inside.
        raise RuntimeError(
            f"{type(self).__name__} is not TorchScript-scriptable: its plan blocks pass maps between "
            "layers and call the FLAT kernels (Python autograd Functions). Use torch.export.export "
            "or `attnreuse export` (ONNX); torch.fx tracing (timm features_only) works"
        )

    def forward_features(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        if attn_mask is not None or is_causal:
            raise ValueError("the attnreuse ViT takes no attention mask or causal flag")
        x, grid = self._embed(x)
        return self.norm(self._forward_blocks(x, grid))

    def forward(self, x: Tensor) -> Tensor:
        """Images [B, C_in, H, W] -> logits [B, num_classes] (no attention mask: see forward_features)."""
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | list[int] | None = None,
        return_prefix_tokens: bool = False,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        output_dict: bool = False,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
    ):
        """As timm's `VisionTransformer.forward_intermediates` (same arguments and outputs)."""
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        if attn_mask is not None or is_causal:
            raise ValueError("the attnreuse ViT takes no attention mask or causal flag")
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        B = x.shape[0]
        x, grid = self._embed(x)
        blocks = self.blocks[: max_index + 1] if stop_early else self.blocks
        intermediates = []
        attn_map = prev_out = None
        for i, blk in enumerate(blocks):
            x, attn_map, prev_out = self._block(blk, x, attn_map, prev_out, grid)
            if i in take_indices:
                intermediates.append(self.norm(x) if norm else x)
        p = self.num_prefix_tokens
        prefix = [y[:, :p] for y in intermediates] if p else None
        intermediates = [y[:, p:] for y in intermediates]
        if output_fmt == "NCHW":
            intermediates = [y.reshape(B, grid[0], grid[1], -1).permute(0, 3, 1, 2).contiguous() for y in intermediates]
        if output_dict:
            result = {"image_intermediates": intermediates}
            if prefix is not None and return_prefix_tokens:
                result["image_intermediates_prefix"] = prefix
            if not intermediates_only:
                result["image_features"] = self.norm(x)
            return result
        if return_prefix_tokens and prefix is not None:
            intermediates = list(zip(intermediates, prefix))
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates


def _cfg(**kwargs) -> dict:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": None,
        "crop_pct": 0.9,
        "interpolation": "bicubic",
        "fixed_input_size": True,
        "mean": IMAGENET_INCEPTION_MEAN,
        "std": IMAGENET_INCEPTION_STD,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        "license": "apache-2.0",
        **kwargs,
    }


_deit = dict(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, crop_pct=0.875)

default_cfgs = generate_default_cfgs(
    {
        "vit_attnreuse_pico_patch4_32": _cfg(
            num_classes=10, input_size=(3, 32, 32), crop_pct=1.0, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
        ),
        "vit_attnreuse_tiny_patch16_224": _cfg(),
        "vit_attnreuse_small_patch16_224": _cfg(),
        "vit_attnreuse_base_patch16_224": _cfg(),
        "vit_skipat_tiny_patch16_224": _cfg(),
        "vit_skipat_small_patch16_224": _cfg(),
        "vit_skipat_base_patch16_224": _cfg(),
        "deit_taylor_tiny_patch16_224": _cfg(**_deit),
        "deit_taylor_small_patch16_224": _cfg(**_deit),
        "vit_reuse_tiny_patch16_224": _cfg(),
        "vit_reuse_small_patch16_224": _cfg(),
        "vit_mapshare_small_patch16_224": _cfg(),
    }
)

# What `attnreuse bench models` compares each plan variant with (read through
# `attnreuse.models.peers`): the same network with the exact "mha" plan.
BENCH = dict(
    family="attnreuse_vit",
    baselines={
        "vit_skipat_tiny_patch16_224": "vit_attnreuse_tiny_patch16_224",
        "vit_skipat_small_patch16_224": "vit_attnreuse_small_patch16_224",
        "vit_skipat_base_patch16_224": "vit_attnreuse_base_patch16_224",
        "deit_taylor_tiny_patch16_224": "vit_attnreuse_tiny_patch16_224",
        "deit_taylor_small_patch16_224": "vit_attnreuse_small_patch16_224",
        "vit_reuse_tiny_patch16_224": "vit_attnreuse_tiny_patch16_224",
        "vit_reuse_small_patch16_224": "vit_attnreuse_small_patch16_224",
        "vit_mapshare_small_patch16_224": "vit_attnreuse_small_patch16_224",
    },
)


def _has_weights_source(variant: str, kwargs: dict) -> bool:
    cfg = resolve_pretrained_cfg(
        variant, pretrained_cfg=kwargs.get("pretrained_cfg"), pretrained_cfg_overlay=kwargs.get("pretrained_cfg_overlay")
    )
    return bool(cfg.file or cfg.state_dict or cfg.url or cfg.hf_hub_id)


def _create_vit(variant: str, pretrained: bool = False, **kwargs) -> AttnReuseVisionTransformer:
    if pretrained and not _has_weights_source(variant, kwargs):
        raise ValueError(
            f"{variant} has no published weights to download; load a local file with "
            "pretrained=True, pretrained_cfg_overlay=dict(file=PATH) (a timm ViT/DeiT, SkipAt or ViTALiTy checkpoint)"
        )
    strict = kwargs.pop("pretrained_strict", True)
    out_indices = kwargs.pop("out_indices", 3)
    return build_model_with_cfg(
        AttnReuseVisionTransformer,
        variant,
        pretrained,
        pretrained_filter_fn=partial(checkpoint_filter_fn, strict=strict),
        pretrained_strict=strict,
        feature_cfg=dict(out_indices=out_indices, feature_cls="getter"),
        **kwargs,
    )


def skipat_plan(depth: int) -> list[str]:
    """SkipAt's layout: layers depth//4 .. 3*depth//4 - 1 skipped (3..8 of 12, as the SkipAt code)."""
    return ["skip" if depth // 4 <= i < 3 * depth // 4 else "mha" for i in range(depth)]


def mapshare_plan(depth: int, group: int = 2) -> list[str]:
    """Map sharing in groups of `group` consecutive layers: the first computes the map."""
    return ["share" if i % group else "mha" for i in range(depth)]


def _build(variant: str, pretrained: bool, model_args: dict, kwargs: dict, plan_rule=None):
    args = dict(model_args, **kwargs)
    if plan_rule is not None:
        args.setdefault("attn_plan", plan_rule(args["depth"]))
    return _create_vit(variant, pretrained=pretrained, **args)


_PICO = dict(img_size=32, patch_size=4, embed_dim=128, depth=6, num_heads=4)
_TINY = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3)
_SMALL = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6)
_BASE = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12)


@register_model
def vit_attnreuse_pico_patch4_32(pretrained: bool = False, **kwargs) -> AttnReuseVisionTransformer:
    """A 1.2M-parameter ViT for 32x32 inputs (the built-in digits data); any attn_plan (default "mha")."""
    return _build("vit_attnreuse_pico_patch4_32", pretrained, _PICO, kwargs)


@register_model
def vit_attnreuse_tiny_patch16_224(pretrained: bool = False, **kwargs) -> AttnReuseVisionTransformer:
    """ViT-Ti/16 (timm `vit_tiny_patch16_224` / `deit_tiny_patch16_224` shapes); any attn_plan (default "mha")."""
    return _build("vit_attnreuse_tiny_patch16_224", pretrained, _TINY, kwargs)


@register_model
def vit_attnreuse_small_patch16_224(pretrained: bool = False, **kwargs) -> AttnReuseVisionTransformer:
    """ViT-S/16 (timm `vit_small_patch16_224` / `deit_small_patch16_224` shapes); any attn_plan (default "mha")."""
    return _build("vit_attnreuse_small_patch16_224", pretrained, _SMALL, kwargs)


@register_model
def vit_attnreuse_base_patch16_224(pretrained: bool = False, **kwargs) -> AttnReuseVisionTransformer:
    """ViT-B/16 (timm `vit_base_patch16_224` / `deit_base_patch16_224` shapes); any attn_plan (default "mha")."""
    return _build("vit_attnreuse_base_patch16_224", pretrained, _BASE, kwargs)


@register_model
def vit_skipat_tiny_patch16_224(pretrained: bool = False, **kwargs) -> AttnReuseVisionTransformer:
    """SkipAt ViT-Ti/16: layers 3..8 skipped (`skipat_plan`)."""
    return _build("vit_skipat_tiny_patch16_224", pretrained, _TINY, kwargs, skipat_plan)


@register_model
def vit_skipat_small_patch16_224(pretrained: bool = False, **kwargs) -> AttnReuseVisionTransformer:
    """SkipAt ViT-S/16: layers 3..8 skipped (`skipat_plan`)."""
    return _build("vit_skipat_small_patch16_224", pretrained, _SMALL, kwargs, skipat_plan)


@register_model
def vit_skipat_base_patch16_224(pretrained: bool = False, **kwargs) -> AttnReuseVisionTransformer:
    """SkipAt ViT-B/16: layers 3..8 skipped (`skipat_plan`)."""
    return _build("vit_skipat_base_patch16_224", pretrained, _BASE, kwargs, skipat_plan)


@register_model
def deit_taylor_tiny_patch16_224(pretrained: bool = False, **kwargs) -> AttnReuseVisionTransformer:
    """ViTALiTy DeiT-Ti/16: Taylor attention in every layer (taylor_center="features" for their checkpoints)."""
    return _build("deit_taylor_tiny_patch16_224", pretrained, _TINY, kwargs, lambda depth: "taylor")


@register_model
def deit_taylor_small_patch16_224(pretrained: bool = False, **kwargs) -> AttnReuseVisionTransformer:
    """ViTALiTy DeiT-S/16: Taylor attention in every layer (taylor_center="features" for their checkpoints)."""
    return _build("deit_taylor_small_patch16_224", pretrained, _SMALL, kwargs, lambda depth: "taylor")


@register_model
def vit_reuse_tiny_patch16_224(pretrained: bool = False, **kwargs) -> AttnReuseVisionTransformer:
    """ViT-Ti/16 with Reuse Attention (one map for all heads) in every layer."""
    return _build("vit_reuse_tiny_patch16_224", pretrained, _TINY, kwargs, lambda depth: "reuse")


@register_model
def vit_reuse_small_patch16_224(pretrained: bool = False, **kwargs) -> AttnReuseVisionTransformer:
    """ViT-S/16 with Reuse Attention (one map for all heads) in every layer."""
    return _build("vit_reuse_small_patch16_224", pretrained, _SMALL, kwargs, lambda depth: "reuse")


@register_model
def vit_mapshare_small_patch16_224(pretrained: bool = False, **kwargs) -> AttnReuseVisionTransformer:
    """ViT-S/16 sharing attention maps across groups of two layers (`mapshare_plan`)."""
    return _build("vit_mapshare_small_patch16_224", pretrained, _SMALL, kwargs, mapshare_plan)


# The names before timm's family-first convention (`vit_*`, `deit_*`), kept as aliases: timm maps
# each to its new name with a deprecation warning.
OLD_NAMES = {
    "attnreuse_vit_pico_patch4_32": "vit_attnreuse_pico_patch4_32",
    "attnreuse_vit_tiny_patch16_224": "vit_attnreuse_tiny_patch16_224",
    "attnreuse_vit_small_patch16_224": "vit_attnreuse_small_patch16_224",
    "attnreuse_vit_base_patch16_224": "vit_attnreuse_base_patch16_224",
    "skipat_vit_tiny_patch16_224": "vit_skipat_tiny_patch16_224",
    "skipat_vit_small_patch16_224": "vit_skipat_small_patch16_224",
    "skipat_vit_base_patch16_224": "vit_skipat_base_patch16_224",
    "taylor_deit_tiny_patch16_224": "deit_taylor_tiny_patch16_224",
    "taylor_deit_small_patch16_224": "deit_taylor_small_patch16_224",
    "reuse_vit_tiny_patch16_224": "vit_reuse_tiny_patch16_224",
    "reuse_vit_small_patch16_224": "vit_reuse_small_patch16_224",
    "mapshare_vit_small_patch16_224": "vit_mapshare_small_patch16_224",
}
register_model_deprecations(__name__, OLD_NAMES)


def describe_plan(model: AttnReuseVisionTransformer) -> str:
    """The model's plan in compact form, e.g. 'mha x3, skip x6, mha x3'."""
    return format_plan([blk.spec for blk in model.blocks])
