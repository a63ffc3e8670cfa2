"""The exact plan search against enumerating every plan, and the case the old greedy search missed."""

import itertools
import random

import pytest

from attnreuse.plan.search import brute_force_plan, search_plan

KINDS = ("share", "skip", "reuse")
MACS = {"mha": 100, "share": 60, "skip": 45, "reuse": 80}


def _random_scores(depth: int, seed: int):
    rng = random.Random(seed)
    table = {(i, k, s): rng.uniform(0.2, 1.0) for i in range(depth) for k in KINDS for s in (None, *range(depth))}
    table.update({(i, "reuse", s): float("nan") for i in range(depth) for s in (None, *range(depth)) if rng.random() < 0.2})
    return lambda i, kind, source: table[i, kind, source]


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("budget", [0.45, 0.6, 0.75, 0.9])
def test_search_matches_enumeration(seed, budget):
    depth = 5
    score = _random_scores(depth, seed)
    kw = dict(budget_macs=budget * depth * MACS["mha"], min_score=0.5)
    exact, ref = search_plan(depth, KINDS, MACS, score, **kw), brute_force_plan(depth, KINDS, MACS, score, **kw)
    assert exact.budget_met == ref.budget_met
    assert exact.macs == ref.macs and exact.loss == pytest.approx(ref.loss, abs=1e-9)
    # what it returns is a real plan: its scores and MACs are those the plan gets
    assert exact.macs == sum(MACS[k] for k in exact.plan)
    assert exact.loss == pytest.approx(sum(1 - s for s in exact.scores if s is not None))
    assert all(s is None or s >= 0.5 for s in exact.scores)


def test_search_finds_the_plan_a_greedy_choice_misses():
    """Greedy (highest score first) takes reuse at layers 1-3 (0.99 each) and is stuck at 340 MACs
    for a 290 budget; sharing layer 0's map in layers 1-3 (0.8) costs 280."""
    macs = {"mha": 100, "share": 60, "reuse": 80}

    def score(i, kind, source):
        if i == 0:
            return None
        return 0.99 if kind == "reuse" else (0.8 if source == 0 else 0.1)

    found = search_plan(4, ("share", "reuse"), macs, score, budget_macs=290, min_score=0.5)
    assert found.plan == ("mha", "share", "share", "share") and found.budget_met and found.macs == 280
    # at 300, two shares and a reuse (loss 0.41) beat three shares (0.6)
    assert search_plan(4, ("share", "reuse"), macs, score, budget_macs=300, min_score=0.5).plan.count("reuse") == 1
    # within a looser budget the least loss wins: one reuse (0.01) over one share (0.2)
    loose = search_plan(4, ("share", "reuse"), macs, score, budget_macs=380, min_score=0.5)
    assert loose.plan.count("reuse") == 1 and loose.plan.count("share") == 0 and loose.macs == 380
    # nothing within 200: the cheapest plan the scores allow, said not to meet it
    tight = search_plan(4, ("share", "reuse"), macs, score, budget_macs=200, min_score=0.5)
    assert not tight.budget_met and tight.macs == 280


def test_search_is_fast_at_the_depth_of_large_encoders():
    score = _random_scores(24, 0)
    found = search_plan(24, KINDS, MACS, score, budget_macs=0.6 * 2400, min_score=0.5)
    assert found.budget_met and len(found.plan) == 24


@pytest.mark.parametrize("seed", range(6))
def test_frontier_is_the_enumerated_pareto_set_and_holds_every_budgets_answer(seed):
    from attnreuse.plan.search import plan_frontier

    depth, score = 5, _random_scores(5, seed)
    front = plan_frontier(depth, KINDS, MACS, score, min_score=0.5)
    # every plan, enumerated: the (MACs, loss) points no other plan beats on both
    points = []
    for budget in sorted({sum(MACS[k] for k in p) for p in itertools.product(MACS, repeat=depth)}):
        ref = brute_force_plan(depth, KINDS, MACS, score, budget_macs=budget, min_score=0.5)
        if ref.budget_met and (not points or round(ref.loss, 9) < points[-1][1]):
            points.append((ref.macs, round(ref.loss, 9)))
    assert [(f.macs, round(f.loss, 9)) for f in front] == points[::-1]
    assert front[0].plan == ("mha",) * depth and front[0].loss == 0
    assert all(a.macs > b.macs and a.loss < b.loss for a, b in zip(front, front[1:]))
    for f in front:  # the search within each point's MACs finds that point
        assert search_plan(depth, KINDS, MACS, score, budget_macs=f.macs, min_score=0.5).macs == f.macs
