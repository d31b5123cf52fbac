"""choose-plan's ladder search: bisection against the exhaustive search on fake measurements."""

import itertools

import pytest
from tinymodels import conv_net

from dfmpc_onnx import ConvertOptions, convert
from dfmpc_onnx.passes.choose_plan import smallest_passing


def _exhaustive(flags: list[bool]) -> int | None:
    return next((i for i, f in enumerate(flags) if f), None)


def _counting(flags: list[bool]):
    calls: list[int] = []

    def passes(i: int) -> bool:
        calls.append(i)
        return flags[i]
    return passes, calls


@pytest.mark.parametrize("n", [1, 2, 7, 8])
def test_bisection_matches_the_exhaustive_ladder_when_monotone(n):
    for first in range(n + 1):  # first passing index (n: none passes)
        flags = [i >= first for i in range(n)]
        passes, calls = _counting(flags)
        assert smallest_passing(n, passes) == _exhaustive(flags)
        assert len(calls) <= n.bit_length()  # log2: 3 trials for the 7-budget ladder


def test_bisection_on_non_monotone_flags_returns_only_a_measured_pass():
    n = 7
    for flags in itertools.product([False, True], repeat=n):
        passes, calls = _counting(list(flags))
        got = smallest_passing(n, passes)
        if got is None:
            assert not any(flags[i] for i in calls)
        else:
            assert flags[got] and got in calls  # never a budget that failed or was not tried
            assert got >= _exhaustive(list(flags))  # at worst a larger budget: never less safe
            assert not any(flags[i] for i in calls if i < got)  # smallest among those measured
    # A case that differs: an isolated pass at the smallest budget the bisection never visits.
    flags = [True, False, False, False, True, True, True]
    assert smallest_passing(n, lambda i: flags[i]) == 4


def test_default_plan_measures_at_most_three_budgets():
    q, rep = convert(conv_net(seed=3, c=16, bn=True), ConvertOptions())
    note = next(n for n in rep.notes if "searched by bisection" in n)
    assert "over 1 of them" in note or "over 2 of them" in note or "over 3 of them" in note
