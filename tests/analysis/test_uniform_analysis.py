"""`attnreuse analyze` on UniForm: one map per window per mixer, compared within a stage."""

import json
import math

import torch

import attnreuse.layers.reuse_mixer as reuse_mixer
from attnreuse.analysis.report import AnalyzeConfig, analyze
from attnreuse.layers import ReuseAttention2d


def test_mixer_attention_map_is_the_map_forward_applies(monkeypatch):
    m = ReuseAttention2d(16, 4, window_size=3).eval()
    x = torch.randn(2, 16, 5, 6)
    seen, original = [], torch.softmax
    monkeypatch.setattr(reuse_mixer.torch, "softmax", lambda s, dim: seen.append(original(s, dim)) or seen[-1])
    with torch.no_grad():
        m(x)
        maps = m.attention_map(x)
    assert maps.shape == (2 * 2 * 2, 9, 9)  # 2 images x 2x2 padded windows, one 9 x 9 map each
    torch.testing.assert_close(maps, seen[0])
    torch.testing.assert_close(maps.sum(-1), torch.ones(8, 9))


def test_analyze_uniform_compares_mixers_within_a_stage(tmp_path):
    from safetensors.torch import save_file

    import attnreuse.models  # noqa: F401 - registers uniform_xs
    import timm

    kwargs = {"img_size": 64, "num_classes": 10}
    model = timm.create_model("uniform_xs", **kwargs)
    for mixer in model.modules():
        if isinstance(mixer, ReuseAttention2d):
            mixer.proj.bn.weight.data.fill_(1.0)  # initialised to 0: an untrained mixer outputs zeros
    save_file(model.state_dict(), tmp_path / "weights.safetensors")
    cfg = AnalyzeConfig(output=str(tmp_path / "out"), model="uniform_xs", model_kwargs=kwargs,
                        checkpoint=str(tmp_path / "weights.safetensors"), batches=1, batch_size=4)
    result = analyze(cfg)
    kinds = result["kinds"]
    assert kinds == ["reuse"] * 6  # uniform_xs: 1 + 2 + 3 mixers
    assert all(h == [[1.0]] for h in result["head_cosine"])  # one map shared by every head
    cos = result["layer_map_cosine"]
    stage = [0, 1, 1, 2, 2, 2]
    for i in range(6):
        for j in range(6):
            same = stage[i] == stage[j]
            assert (cos[i][j] is not None) == same, (i, j)
            assert (result["layer_output_cka"][i][j] is not None) == same, (i, j)
    assert cos[1][2] is not None and -1.0 <= cos[1][2] <= 1.0001
    assert result["suggestion"]["plan"] is None and "ViT" in result["suggestion"]["reason"]
    assert not math.isnan(result["summary"]["mean_adjacent_map_cosine"])
    for png in ("heads.png", "layers.png"):
        assert (tmp_path / "out" / png).read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "out" / "similarity.json").read_text())["model"] == "uniform_xs"
