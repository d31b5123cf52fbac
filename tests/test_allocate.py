"""The allocator against brute force on small random knapsacks."""

import itertools

import numpy as np
import pytest

from dfmpc_onnx.measure.allocate import Candidate, allocate


def random_layers(rng, n_layers=4, n_cands=4):
    layers = []
    for _ in range(n_layers):
        params = rng.integers(10, 1000)
        cands = []
        for bits in sorted(rng.choice([2, 3, 4, 6, 8], n_cands, replace=False)):
            cands.append(Candidate(int(bits), "maxabs", "none", params * bits / 8,
                                   float(rng.random() * 2.0 ** -bits)))
        layers.append(cands)
    return layers


def test_never_exceeds_the_budget_and_is_near_the_brute_force_optimum():
    rng = np.random.default_rng(0)
    gaps = []
    for _ in range(100):
        layers = random_layers(rng)
        sizes = [[c.nbytes for c in cands] for cands in layers]
        lo = sum(min(s) for s in sizes)
        hi = sum(max(s) for s in sizes)
        budget = lo + rng.random() * (hi - lo)
        choice = allocate(layers, budget)
        assert choice is not None
        used = sum(layers[i][c].nbytes for i, c in enumerate(choice))
        assert used <= budget + 1e-9
        got = sum(layers[i][c].divergence for i, c in enumerate(choice))
        best = min(sum(layers[i][c].divergence for i, c in enumerate(combo))
                   for combo in itertools.product(*[range(len(c)) for c in layers])
                   if sum(layers[i][c].nbytes for i, c in enumerate(combo)) <= budget)
        assert got >= best - 1e-12
        gaps.append(got - best)
    # the Lagrangian plus greedy fill is exact most of the time on these small problems
    assert np.mean(np.array(gaps) <= 1e-12) > 0.8


def test_a_budget_below_the_smallest_plan_is_refused_and_a_large_one_takes_the_best():
    layers = random_layers(np.random.default_rng(1))
    smallest = sum(min(c.nbytes for c in cands) for cands in layers)
    assert allocate(layers, smallest * 0.99) is None
    choice = allocate(layers, 1e12)
    assert all(layers[i][c].divergence == min(x.divergence for x in layers[i])
               for i, c in enumerate(choice))


def _recipe_layers(rng, n=6):
    layers, sizes = [], []
    for _ in range(n):
        params = int(rng.integers(10, 1000))
        sizes.append(params)
        cands = [Candidate(2, "maxabs", "none", params * 2 / 8, float(rng.random())),
                 Candidate(4, "maxabs", "none", params * 4 / 8, float(rng.random() * 0.1)),
                 Candidate(4, "block32", "none", params * 4.5 / 8, float(rng.random() * 0.1)),
                 Candidate(8, "maxabs", "none", params, float(rng.random() * 1e-3))]
        layers.append(cands)
    return layers, sizes


def _recipe_by_hand(layers, sizes, budget, pick):
    """The recipe by hand for one family: ``pick(i)`` the 4-bit candidate of layer ``i``; layers
    ranked by its divergence per weight, moved in that order while the plan is over the budget."""
    full = sum(c[3].nbytes for c in layers)
    order = sorted(range(len(layers)), key=lambda i: (layers[i][pick(i)].divergence / sizes[i], i))
    expect, used = [3] * len(layers), full
    for i in order:
        if used <= budget:
            break
        expect[i] = pick(i)
        used -= layers[i][3].nbytes - layers[i][pick(i)].nbytes
    return expect if used <= budget + 1e-9 else None


def test_recipe_moves_the_least_sensitive_per_weight_to_4_bits_until_the_budget_fits():
    from dfmpc_onnx.measure.allocate import recipe

    rng = np.random.default_rng(5)
    families_won = set()
    for _ in range(200):
        layers, sizes = _recipe_layers(rng)
        full = sum(c[3].nbytes for c in layers)
        budget = full * (0.5 + 0.5 * rng.random())
        choice = recipe(layers, sizes, budget)
        # Three families: each layer's best 4-bit candidate, every layer on maxabs, on block32;
        # of those that fit, the one of least summed divergence.
        families = {"best": lambda i, layers=layers: min((1, 2), key=lambda j: layers[i][j].divergence),
                    "maxabs": lambda i: 1, "block32": lambda i: 2}
        fits = {k: e for k, f in families.items()
                if (e := _recipe_by_hand(layers, sizes, budget, f)) is not None}
        if not fits:
            assert choice is None
            continue
        total = {k: sum(layers[i][c].divergence for i, c in enumerate(e)) for k, e in fits.items()}
        assert choice is not None
        assert sum(layers[i][c].nbytes for i, c in enumerate(choice)) <= budget + 1e-9
        summed = sum(layers[i][c].divergence for i, c in enumerate(choice))
        assert summed == pytest.approx(min(total.values()))
        families_won |= {k for k in fits if fits[k] == choice}
        assert all(layers[i][c].bits in (4, 8) for i, c in enumerate(choice))  # never 2 bits
    assert {"maxabs", "block32"} <= families_won  # the cheaper grid's family is taken somewhere
    layers, sizes = _recipe_layers(rng)
    assert recipe(layers, sizes, 0.1 * sum(c[3].nbytes for c in layers)) is None  # unreachable
