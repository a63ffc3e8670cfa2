"""What each model is benchmarked against (`attnreuse.models.peers`): the tables beside each
family's default_cfgs give the same baselines and family labels `bench models` had in its own
regex and table (the expected rows below were read from that code before it moved)."""

import pytest

import attnreuse  # noqa: F401 - registers the models
from attnreuse.models import list_models, peers, uniform, vit

# name -> (family, baseline) of every default model (in `default_models()` order), as bench computed them
BEFORE = {
    "deit_taylor_small_patch16_224": ("attnreuse_vit", "vit_attnreuse_small_patch16_224"),
    "deit_taylor_tiny_patch16_224": ("attnreuse_vit", "vit_attnreuse_tiny_patch16_224"),
    "uniform_l": ("uniform", "efficientvit_m5"),
    "uniform_m": ("uniform", "efficientvit_m3"),
    "uniform_m2": ("uniform", "efficientvit_m2"),
    "uniform_m4": ("uniform", "efficientvit_m4"),
    "uniform_s": ("uniform", "efficientvit_m1"),
    "uniform_xs": ("uniform", "efficientvit_m0"),
    "vit_attnreuse_base_patch16_224": ("attnreuse_vit", None),
    "vit_attnreuse_pico_patch4_32": ("attnreuse_vit", None),
    "vit_attnreuse_small_patch16_224": ("attnreuse_vit", None),
    "vit_attnreuse_tiny_patch16_224": ("attnreuse_vit", None),
    "vit_mapshare_small_patch16_224": ("attnreuse_vit", "vit_attnreuse_small_patch16_224"),
    "vit_reuse_small_patch16_224": ("attnreuse_vit", "vit_attnreuse_small_patch16_224"),
    "vit_reuse_tiny_patch16_224": ("attnreuse_vit", "vit_attnreuse_tiny_patch16_224"),
    "vit_skipat_base_patch16_224": ("attnreuse_vit", "vit_attnreuse_base_patch16_224"),
    "vit_skipat_small_patch16_224": ("attnreuse_vit", "vit_attnreuse_small_patch16_224"),
    "vit_skipat_tiny_patch16_224": ("attnreuse_vit", "vit_attnreuse_tiny_patch16_224"),
    "efficientvit_m0": ("efficientvit_m", None),
    "efficientvit_m1": ("efficientvit_m", None),
    "efficientvit_m2": ("efficientvit_m", None),
    "efficientvit_m3": ("efficientvit_m", None),
    "efficientvit_m4": ("efficientvit_m", None),
    "efficientvit_m5": ("efficientvit_m", None),
    "deit_tiny_patch16_224": ("peer", None),
    "deit_small_patch16_224": ("peer", None),
    "vit_small_patch16_224": ("peer", None),
    "fastvit_t8": ("peer", None),
    "mobilevit_xxs": ("peer", None),
    "efficientvit_b0": ("peer", None),
}


@pytest.mark.parametrize("name", list(BEFORE))
def test_baselines_and_families_are_the_ones_bench_had(name):
    assert (peers.family_of(name), peers.baseline_of(name)) == BEFORE[name]


def test_default_set_in_the_order_bench_had():
    assert peers.default_models() == list(BEFORE)  # attnreuse's models sorted, then the timm peers


def test_every_registered_model_has_a_family_and_every_baseline_is_registered():
    import timm

    for name in list_models():
        assert peers.family_of(name) in (uniform.BENCH["family"], vit.BENCH["family"]), name
    for module in (uniform, vit):
        assert set(module.BENCH["baselines"]) <= set(module.default_cfgs)
        assert all(timm.is_model(b) for b in module.BENCH["baselines"].values())
    assert peers.family_of("no_such_model") == "peer" and peers.baseline_of("no_such_model") is None
