"""The plan search both `analyze` commands share: the least predicted loss within a MAC budget.

Every layer starts as `base` ("mha"). A change to another kind costs that kind's MACs instead and
carries a similarity score in [.., 1] (measured by the caller: map cosines, head cosines, output
CKA); its predicted loss is 1 - score. Among the plans whose changes each score at least
`min_score`, `search_plan` returns the one with the least summed loss whose MACs are within the
budget, exactly: dynamic programming over the layers, with the state the index of the latest layer
that computes a softmax map (which map a "share" applies, so its score, depends on it) and, per
state, the Pareto front of (MACs, loss). Where no plan meets the budget it returns the cheapest one
the scores allow. `plan_frontier` lists every plan that no other beats on both MACs and loss (the
trade-off a budget picks from). `brute_force_plan` enumerates every plan: the reference the search
is tested against on small depths.

Scores are pairwise measurements; the accuracy of the combined plan is a prediction to check.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from attnreuse.plan.registry import get_kind

__all__ = ["PlanSearch", "brute_force_plan", "plan_frontier", "search_plan", "within"]

# score(layer, kind, map_source) -> the change's score, or None where the change is not allowed;
# map_source: the nearest earlier map-computing layer (None where there is none).
ScoreFn = Callable[[int, str, "int | None"], "float | None"]


@dataclass(frozen=True)
class PlanSearch:
    plan: tuple[str, ...]
    macs: int
    loss: float  # summed 1 - score over the changed layers
    scores: tuple[float | None, ...]  # per layer: the score of its change (None: kept as base)
    budget_met: bool


def _step(i: int, kind: str, base: str, source: int | None, score: ScoreFn, min_score: float):
    """(score or None for the base, next map source), or None where layer i cannot take `kind`."""
    k = get_kind(kind.partition(":")[0])
    if (k.needs_map and source is None) or (k.needs_previous and i == 0):
        return None
    s = None
    if kind != base:
        s = score(i, kind, source)
        if s is None or math.isnan(s) or s < min_score:
            return None
    return s, (i if k.computes_map else source)


def _pick(finals: list[PlanSearch]) -> PlanSearch:
    met = [f for f in finals if f.budget_met]
    if met:  # least loss (rounded: sums in a different order must tie), then fewer MACs
        return min(met, key=lambda f: (round(f.loss, 9), f.macs, f.plan))
    return min(finals, key=lambda f: (f.macs, round(f.loss, 9), f.plan))


def search_plan(depth: int, kinds: Sequence[str], macs: dict[str, int], score: ScoreFn, *, budget_macs: float,
                min_score: float, base: str = "mha") -> PlanSearch:
    """The least-loss plan of `depth` layers within `budget_macs` (see the module docstring).

    kinds: the changes a layer may take; macs: one layer's MACs per kind (`base` included)."""
    return within(plan_frontier(depth, kinds, macs, score, min_score=min_score, base=base), budget_macs)


def plan_frontier(depth: int, kinds: Sequence[str], macs: dict[str, int], score: ScoreFn, *, min_score: float,
                  base: str = "mha") -> list[PlanSearch]:
    """Every plan no other beats on both MACs and loss, from the all-`base` plan (most MACs, loss
    0) down to the cheapest the scores allow: the MAC-loss trade-off a budget picks a point of
    (`within`). Every point's `budget_met` is True (no budget applies)."""
    finals = sorted(_finals(depth, kinds, macs, score, min_score, base), key=lambda f: (f.macs, f.loss, f.plan))
    front, best = [], math.inf
    for f in finals:
        if round(f.loss, 9) < best:
            front.append(f)
            best = round(f.loss, 9)
    return front[::-1]


def within(front: list[PlanSearch], budget_macs: float) -> PlanSearch:
    """The plan a budget picks from a `plan_frontier`: its most expensive point within `budget_macs`
    (the least loss there), else its cheapest point, `budget_met` False."""
    fits = [f for f in front if f.macs <= budget_macs]
    return replace(fits[0] if fits else front[-1], budget_met=bool(fits))


def _finals(depth, kinds, macs, score, min_score, base) -> list[PlanSearch]:
    """The dynamic programme's surviving plans (module docstring): a Pareto front per map source."""
    # state: latest map-computing layer -> {macs: (loss, plan, scores)}, pruned to a Pareto front
    states: dict[int | None, dict[int, tuple[float, tuple[str, ...], tuple]]] = {None: {0: (0.0, (), ())}}
    for i in range(depth):
        nxt: dict[int | None, dict[int, tuple[float, tuple[str, ...], tuple]]] = {}
        for source, front in states.items():
            for kind in (base, *kinds):
                step = _step(i, kind, base, source, score, min_score)
                if step is None:
                    continue
                s, new_source = step
                cell = nxt.setdefault(new_source, {})
                for cost, (loss, plan, scores) in front.items():
                    c, lo = cost + macs[kind], loss + (0.0 if s is None else 1.0 - s)
                    if c not in cell or lo < cell[c][0]:
                        cell[c] = (lo, (*plan, kind), (*scores, s))
        states = {src: _pareto(cell) for src, cell in nxt.items()}
    return [PlanSearch(plan, c, lo, scores, True) for front in states.values() for c, (lo, plan, scores) in front.items()]


def _pareto(cell: dict[int, tuple]) -> dict[int, tuple]:
    """Keep a (MACs, loss) entry only where no cheaper entry has a loss as low."""
    kept, best = {}, math.inf
    for c in sorted(cell):
        if cell[c][0] < best:
            kept[c], best = cell[c], cell[c][0]
    return kept


def brute_force_plan(depth: int, kinds: Sequence[str], macs: dict[str, int], score: ScoreFn, *,
                     budget_macs: float, min_score: float, base: str = "mha") -> PlanSearch:
    """`search_plan` by enumerating every plan ((1 + len(kinds)) ** depth of them): the reference."""
    finals = []
    for plan in itertools.product((base, *kinds), repeat=depth):
        source, scores, ok = None, [], True
        for i, kind in enumerate(plan):
            step = _step(i, kind, base, source, score, min_score)
            if step is None:
                ok = False
                break
            scores.append(step[0])
            source = step[1]
        if ok:
            cost = sum(macs[k] for k in plan)
            loss = sum(1.0 - s for s in scores if s is not None)
            finals.append(PlanSearch(tuple(plan), cost, loss, tuple(scores), cost <= budget_macs))
    return _pick(finals)
