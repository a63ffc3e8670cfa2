import json

import pytest
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

import attnreuse
from attnreuse.analysis.suggest import Geometry, geometry_of, head_groups, plan_macs, suggest_plan
from attnreuse.cli import main

VIT = dict(img_size=16, patch_size=4, embed_dim=32, depth=5, num_heads=2, num_classes=10)


@pytest.mark.parametrize(
    "plan", [["mha"] * 5, ["mha", "reuse", "share", "skip", "taylor"], ["mha", "reuse:2", "share", "share", "skip"]]
)
def test_mac_model_matches_counted_flops(plan):
    model = timm.create_model("vit_attnreuse_pico_patch4_32", **VIT, attn_plan=plan).eval()
    # Grad mode keeps every op on its plain matmul path (the no-grad Taylor kernel writes into
    # preallocated outputs, which FlopCounterMode does not see).
    with attnreuse.ops.use_backend("dense"), torch.enable_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, 16, 16))
    counted = counter.get_total_flops() // 2
    # Exact for "mha"; the others leave out SkipAt's channel-attention conv and Taylor's sums.
    assert abs(plan_macs(geometry_of(model, 17), plan) - counted) <= 0.002 * counted


def _geometry(depth=4):
    return Geometry(tokens=65, prefix_tokens=1, dim=64, heads=4, mlp_hidden=128, depth=depth,
                    patch_size=4, in_chans=3, num_classes=10)


def test_suggestion_takes_the_most_similar_changes_until_the_budget():
    g = _geometry()
    heads = [torch.full((4, 4), 0.3).fill_diagonal_(1.0) for _ in range(4)]
    map_cos = torch.eye(4)
    map_cos[2, 1] = map_cos[1, 2] = 0.95  # layer 2 could share layer 1's map
    cka = torch.eye(4)
    cka[3, 2] = cka[2, 3] = 0.9  # layer 3's output is predictable from layer 2's
    loose = suggest_plan(g, heads, map_cos, cka, budget=0.9, min_score=0.5)
    assert loose["plan"] == ["mha", "mha", "share", "skip"] and loose["budget_met"]
    assert [c["layer"] for c in loose["changes"]] == [2, 3]
    assert loose["macs"] == plan_macs(g, loose["plan"]) and 0.1 <= loose["predicted_saving"] < 0.12
    front = {tuple(f["plan"]): f["macs_fraction"] for f in loose["frontier"]}
    assert next(iter(front)) == ("mha",) * 4 and front[("mha",) * 4] == 1.0
    assert front[tuple(loose["plan"])] == pytest.approx(loose["macs"] / loose["baseline_macs"])  # the suggestion is on it
    strict = suggest_plan(g, heads, map_cos, cka, budget=0.5, min_score=0.92)
    assert strict["plan"] == ["mha", "mha", "share", "mha"] and not strict["budget_met"]
    with pytest.raises(ValueError, match="budget must be a fraction"):
        suggest_plan(g, heads, map_cos, cka, budget=1.5)


def test_head_groups():
    cos = torch.tensor([[1.0, 0.95, 0.1], [0.95, 1.0, 0.2], [0.1, 0.2, 1.0]])
    assert head_groups(cos, 0.9) == [[0, 1], [2]]
    assert head_groups(cos, 0.05) == [[0, 1, 2]]


def test_analyze_cli_writes_matrices_heatmaps_and_plan(tmp_path, capsys):
    out = tmp_path / "an"
    kwargs = json.dumps({**VIT, "depth": 3, "attn_plan": ["mha", "mha", "share"]})
    args = ["analyze", "--model", "vit_attnreuse_pico_patch4_32", "--model-kwargs", kwargs, "--batches", "1",
            "--batch-size", "8", "--mac-budget", "0.95", "--min-score", "0.0", "--output", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "suggested plan" in printed and "on 8 images:" in printed
    rec = json.loads((out / "similarity.json").read_text())
    assert rec["kinds"] == ["mha", "mha", "share"] and rec["images"] == 8
    assert len(rec["head_cosine"]) == 3 and rec["head_cosine"][2] is None
    assert len(rec["layer_map_cosine"]) == 3 and len(rec["layer_output_cka"][0]) == 3
    assert rec["suggestion"]["budget_met"] and rec["suggestion"]["plan"] != ["mha"] * 3
    for png in ("heads.png", "layers.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # more than the validation split holds: all of it, and the line says so (it said nothing)
    more = [*args[:args.index("--batches") + 1], "100", *args[args.index("--batches") + 2:], "--force"]
    assert main(more) == 0
    images = json.loads((out / "similarity.json").read_text())["images"]
    assert 8 < images < 800 and f"on {images} images (all there are; --batches x --batch-size asked for 800)" in capsys.readouterr().out
    assert main(["analyze", "--output", str(out)]) == 2
    assert "give --model NAME or --checkpoint" in capsys.readouterr().err
