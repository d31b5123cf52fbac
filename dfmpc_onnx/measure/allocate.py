"""Choose one candidate per layer to minimise the measured divergence under a size budget.

Each layer has candidates (bits, grid, correction) with a size in bytes and the whole-network
divergence measured with that layer alone quantized that way. Assuming the divergences add, the
best plan under a byte budget is a multiple-choice knapsack; the Lagrangian relaxation solves it
well when candidates are many and layers are many: for a price lambda per byte each layer takes the
candidate minimising ``divergence + lambda * bytes``, and lambda is bisected to the budget; the
bytes left over then buy the upgrades with the best divergence saved per byte. The plan is then
measured as a whole (errors interact), by the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    """One way to quantize one layer, with what it costs and what it was measured to do."""

    bits: int
    quantizer: str
    correction: str
    nbytes: float
    divergence: float


def _pick(cands: Sequence[Candidate], price: float) -> int:
    return min(range(len(cands)), key=lambda i: (cands[i].divergence + price * cands[i].nbytes,
                                                 cands[i].nbytes))


def allocate(layers: Sequence[Sequence[Candidate]], budget: float) -> list[int] | None:
    """Index of the chosen candidate per layer, total bytes <= ``budget``; None if even the
    smallest candidate of every layer does not fit."""
    smallest = [min(range(len(c)), key=lambda i, c=c: (c[i].nbytes, c[i].divergence)) for c in layers]
    if sum(c[i].nbytes for c, i in zip(layers, smallest, strict=True)) > budget:
        return None
    free = [min(range(len(c)), key=lambda i, c=c: (c[i].divergence, c[i].nbytes)) for c in layers]
    if sum(c[i].nbytes for c, i in zip(layers, free, strict=True)) <= budget:
        return free
    lo, hi = 0.0, 1.0
    while sum(c[_pick(c, hi)].nbytes for c in layers) > budget:  # a price high enough to fit
        hi *= 4.0
        if hi > 1e30:
            return smallest
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if sum(c[_pick(c, mid)].nbytes for c in layers) > budget:
            lo = mid
        else:
            hi = mid
    choice = [_pick(c, hi) for c in layers]
    return _fill(layers, choice, budget)


def _fill(layers: Sequence[Sequence[Candidate]], choice: list[int], budget: float) -> list[int]:
    """Spend the bytes left: repeatedly take the single-layer change that saves the most
    divergence per extra byte and still fits."""
    used = sum(c[i].nbytes for c, i in zip(layers, choice, strict=True))
    while True:
        best, best_gain = None, 0.0
        for li, cands in enumerate(layers):
            cur = cands[choice[li]]
            for ci, cand in enumerate(cands):
                extra = cand.nbytes - cur.nbytes
                saved = cur.divergence - cand.divergence
                if saved <= 0 or used + extra > budget:
                    continue
                gain = saved / extra if extra > 0 else float("inf")
                if gain > best_gain:
                    best, best_gain = (li, ci), gain
        if best is None:
            return choice
        li, ci = best
        used += layers[li][ci].nbytes - layers[li][choice[li]].nbytes
        choice[li] = ci


def recipe(layers: Sequence[Sequence[Candidate]], params: Sequence[int], budget: float,
           low: int = 4, high: int = 8) -> list[int] | None:
    """The plain recipe (issue 19): rank layers by their measured divergence at ``low`` bits per
    weight, move the least sensitive to ``low`` bits until the plan fits ``budget``, keep the rest
    at ``high`` (their best measured candidate there). It has no 2-bit layer and no layer whose
    low-bit damage is large per byte saved, which the knapsack (``allocate``), trusting that
    divergences add, can pick.

    The low-bit candidate of a moved layer is either its best measured one (any grid) or, one
    family per grid, its candidate on that grid: block-32 scales cost a fifth of a 4-bit weight,
    so at 5 stored bits the best-per-layer family may not fit where block-64 does (PP-OCRv4's
    recogniser: ``benchmarks/plan_check.py``). Of the families that fit, the one of least summed
    divergence. None if none fits, or a layer has no ``high`` candidate."""
    grids = sorted({c.quantizer for cands in layers for c in cands if c.bits == low})
    best = None
    for grid in [None, *grids]:
        choice = _recipe_family(layers, params, budget, low, high, grid)
        if choice is None:
            continue
        total = sum(c[i].divergence for c, i in zip(layers, choice, strict=True))
        if best is None or total < best[0]:
            best = (total, choice)
    return None if best is None else best[1]


def _recipe_family(layers: Sequence[Sequence[Candidate]], params: Sequence[int], budget: float,
                   low: int, high: int, grid: str | None) -> list[int] | None:
    """``recipe`` with each moved layer on ``grid`` where it has a ``low``-bit candidate there
    (else its best ``low``-bit one); ``grid`` None: its best ``low``-bit candidate."""
    best_low, best_high = [], []
    for cands in layers:
        lows = [i for i, c in enumerate(cands) if c.bits == low]
        highs = [i for i, c in enumerate(cands) if c.bits == high]
        if not highs:
            return None
        on_grid = [i for i in lows if cands[i].quantizer == grid]
        lows = on_grid or lows
        best_low.append(min(lows, key=lambda i, c=cands: (c[i].divergence, c[i].nbytes)) if lows else None)
        best_high.append(min(highs, key=lambda i, c=cands: (c[i].divergence, c[i].nbytes)))
    choice = list(best_high)
    used = sum(c[i].nbytes for c, i in zip(layers, choice, strict=True))
    order = sorted((li for li, i in enumerate(best_low) if i is not None),
                   key=lambda li: (layers[li][best_low[li]].divergence / max(1, params[li]), li))
    for li in order:
        if used <= budget:
            break
        saved = layers[li][choice[li]].nbytes - layers[li][best_low[li]].nbytes
        if saved > 0:
            choice[li] = best_low[li]
            used -= saved
    return choice if used <= budget else None
