"""A plan kind is one registered object: a kind defined outside the package builds, loads and runs
in the attnreuse ViT with no change to the ViT; the one grammar names the kinds unambiguously."""

import pytest
import timm
import torch
from torch import nn

from attnreuse.models.vit import convert_state_dict
from attnreuse.plan import Kind, LayerSpec, get_kind, map_sources, parse_plan, register_kind
from attnreuse.plan import registry

PICO = dict(img_size=16, patch_size=4, embed_dim=32, depth=4, num_heads=2, num_classes=10)


class MeanMix(Kind):
    """A test kind: every token's attention output is the mean of the normalised tokens, projected
    (one `proj`, no q/k/v; takes timm's `norm1` and `attn.proj` from a dense checkpoint)."""

    name = "test-meanmix"
    help = "mean of the tokens, projected"

    def vit_modules(self, spec, args):
        attn = nn.Module()
        attn.proj = nn.Linear(args.dim, args.dim, bias=args.proj_bias)
        return {"norm1": args.norm_layer(args.dim), "attn": attn}

    def vit_attend(self, block, x, attn_map, prev_out, grid):
        mixed = block.norm1(x).mean(1, keepdim=True).expand_as(x)
        return block.attn.proj(mixed), None

    def vit_dense_weights(self, spec, num_heads):
        return "all"


@pytest.fixture
def meanmix():
    kind = register_kind(MeanMix())
    yield kind
    registry._KINDS.pop(kind.name)


def test_a_kind_from_outside_the_package_builds_and_runs_a_vit(meanmix):
    plan = ["mha", "test-meanmix", "share", "skip"]
    model = timm.create_model("vit_attnreuse_pico_patch4_32", attn_plan=plan, **PICO)
    assert model.attn_plan == tuple(plan)
    assert model.blocks[2].emit_map is False and model.blocks[0].emit_map  # share applies layer 0's map
    x = torch.randn(2, 3, 16, 16)
    out = model(x)
    assert out.shape == (2, 10)
    out.pow(2).mean().backward()
    assert model.blocks[1].attn.proj.weight.grad is not None
    # which dense weights it keeps is the kind's word: the proj and norm1 load from an all-mha model
    dense = timm.create_model("vit_attnreuse_pico_patch4_32", **PICO).state_dict()
    converted, report = convert_state_dict(dense, plan, num_heads=2, target=model.state_dict())
    assert "blocks.1.attn.proj.weight" in converted and "blocks.1.attn.qkv.weight" in report.unexpected


def test_grammar_names_and_messages():
    assert parse_plan("mha, reuse:2 ,share", 3, num_heads=4) == (LayerSpec("mha"), LayerSpec("reuse", 2), LayerSpec("share"))
    assert parse_plan("reuse:1", 1, 4) == parse_plan("reuse", 1, 4)  # one map either way
    assert map_sources(parse_plan("reuse:2,share,taylor,share", 4, 4)) == (None, 0, None, 0)
    with pytest.raises(ValueError, match=r"attn_plan\[0\]='share:2': 'share' takes no argument; only 'reuse' / 'kvpool' takes"):
        parse_plan("share:2", 2, 4, name="attn_plan")
    with pytest.raises(ValueError, match=r"plan\[1\]='flash' is not a known kind \(unknown attention kind 'flash'; known kinds: mha, reuse"):
        parse_plan(["mha", "flash"], 2, 4)
    with pytest.raises(ValueError, match="has 1 entries but the model has 2 layers"):
        parse_plan(["mha"], 2, 4)
    assert get_kind("skip").needs_grid and not get_kind("share").needs_grid


def test_convert_layouts_have_their_own_names_and_the_old_spellings_say_what_to_write():
    from attnreuse.train.convert import parse_target_plan

    assert parse_target_plan("mapshare:2", 4) == ["mha", "share", "mha", "share"]
    assert parse_target_plan("skipat:1,3", 4) == ["mha", "skip", "mha", "skip"]
    assert parse_target_plan("reuse:2", 2) == ["reuse:2", "reuse:2"]  # G maps in every layer, as in attn_plan
    for old, new in (("share:2", "mapshare:2"), ("skip:1,3", "skipat:1,3"), ("skip", "skipat")):
        with pytest.warns(FutureWarning, match=f"write '{new}'"):
            assert parse_target_plan(old, 4) == parse_target_plan(new, 4)


def test_kinds_summary_lists_every_registered_kind_as_written():
    from attnreuse.plan import kind_names, kinds_summary

    written = kinds_summary().split(", ")
    assert [w.partition("[")[0] for w in written] == list(kind_names())
    assert "reuse[:G]" in written and "kvpool[:R]" in written and "mha" in written
