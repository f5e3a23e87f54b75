"""The exact placer: always valid, never worse than its hint, optimal (and says so) on small instances."""

import itertools
import random
import time

import pytest
from conftest import INT8_MODELS

from microforge.errors import PlanError
from microforge.frontend.reader import read_tflite
from microforge.graph.random_graph import random_graph
from microforge.plan.exact import is_valid, overlapping_pairs, place_exact
from microforge.plan.lifetimes import Buffer, buffers_for, lower_bound
from microforge.plan.placement import (
    arena_size,
    check_placement,
    conflicts,
    place_in_order,
)

U = 16  # the alignment unit sizes are counted in below


def first_fit(buffers):
    """The simplest heuristic: buffers in index order, each at the lowest address free during its life."""
    return place_in_order(buffers, list(range(len(buffers))), best_fit=False)


def stacked(buffers, order):
    """Each buffer in `order` directly on top of the highest placed buffer it shares a step with. Every
    placement can be pushed down into one of these, so the best over all orders is the optimum."""
    offsets = [0] * len(buffers)
    placed = []
    for b in order:
        offsets[b.index] = max((offsets[p.index] + p.size for p in placed if p.overlaps_in_time(b)), default=0)
        placed.append(b)
    return offsets


def brute_force_optimum(buffers):
    return min(arena_size(buffers, stacked(buffers, order)) for order in itertools.permutations(buffers))


def make(spec):
    """Buffers from (first step, last step, size in units of 16 bytes)."""
    return [Buffer(f"b{i}", size * U, first, last, index=i) for i, (first, last, size) in enumerate(spec)]


def synthetic(n, seed, longest=8):
    rng = random.Random(seed)
    buffers = []
    for i in range(n):
        first = rng.randrange(n // 3 + 1)
        buffers.append(Buffer(f"b{i}", U * rng.randint(1, 64), first, first + rng.randrange(longest), index=i))
    return buffers


def skyline(buffers):
    """A quick valid hint for big instances: biggest first, each on top of what it overlaps (lifetimes
    here are short, so this is linear)."""
    top = {}
    offsets = [0] * len(buffers)
    for b in sorted(buffers, key=lambda b: -b.size):
        steps = range(b.first, b.last + 1)
        offsets[b.index] = max(top.get(s, 0) for s in steps)
        for s in steps:
            top[s] = offsets[b.index] + b.size
    return offsets


@pytest.mark.parametrize("seed", range(24))
def test_random_graphs_valid_never_worse_and_proven(seed):
    buffers = buffers_for(random_graph(seed, blocks=6 + seed % 7))
    hint = first_fit(buffers)
    bound = lower_bound(buffers)
    offsets, proven = place_exact(buffers, time_limit_s=10.0, hint=hint, lower_bound=bound)
    check_placement(buffers, offsets)
    assert bound <= arena_size(buffers, offsets) <= arena_size(buffers, hint)
    assert proven  # tens of buffers: solved to optimality in milliseconds


def test_without_hint_or_bound():
    buffers = buffers_for(random_graph(3, blocks=10))
    offsets, proven = place_exact(buffers, time_limit_s=10.0)
    check_placement(buffers, offsets)
    assert proven and arena_size(buffers, offsets) == lower_bound(buffers)  # this one reaches the bound


def test_beats_greedy_and_proves_it():
    # first fit puts a at 0 and b above it; c (step 2, twice as big) then has to go above b: 4 units.
    # b at 0, a and c at 1 fits in 3, the most live at one step.
    buffers = make([(0, 1, 1), (1, 2, 1), (2, 2, 2)])
    hint = first_fit(buffers)
    assert arena_size(buffers, hint) == 4 * U
    offsets, proven = place_exact(buffers, time_limit_s=5.0, hint=hint, lower_bound=lower_bound(buffers))
    check_placement(buffers, offsets)
    assert arena_size(buffers, offsets) == 3 * U == lower_bound(buffers)
    assert proven


def test_proves_optimum_above_the_lower_bound():
    # at most 5 units are live at any step, yet no placement fits in 5: the solver must prove 6
    buffers = make([(0, 1, 3), (0, 5, 2), (2, 6, 1), (3, 3, 2), (4, 7, 1), (6, 6, 3), (7, 7, 4)])
    assert lower_bound(buffers) == 5 * U
    offsets, proven = place_exact(buffers, time_limit_s=10.0, hint=first_fit(buffers),
                                  lower_bound=lower_bound(buffers))
    check_placement(buffers, offsets)
    assert proven and arena_size(buffers, offsets) == 6 * U == brute_force_optimum(buffers)


@pytest.mark.parametrize("seed", range(12))
def test_matches_brute_force_on_tiny_instances(seed):
    rng = random.Random(seed)
    spec = []
    for _ in range(rng.randint(3, 6)):
        first = rng.randrange(5)
        spec.append((first, first + rng.randrange(4), rng.choice([1, 2, 3, 5, 8])))
    buffers = make(spec)
    offsets, proven = place_exact(buffers, time_limit_s=10.0, hint=first_fit(buffers))
    check_placement(buffers, offsets)
    assert proven and arena_size(buffers, offsets) == brute_force_optimum(buffers)


@pytest.mark.parametrize("model", ["kws", "vww", "ic", "ad"])
def test_mlperf_models_reach_the_lower_bound(model):
    buffers = buffers_for(read_tflite(INT8_MODELS[model]))
    hint = first_fit(buffers)
    offsets, proven = place_exact(buffers, time_limit_s=10.0, hint=hint, lower_bound=lower_bound(buffers))
    check_placement(buffers, offsets)
    assert proven and arena_size(buffers, offsets) == lower_bound(buffers)


def test_a_hint_at_the_bound_comes_back_unchanged():
    buffers = buffers_for(random_graph(3, blocks=8))
    hint = first_fit(buffers)
    assert arena_size(buffers, hint) == lower_bound(buffers)
    offsets, proven = place_exact(buffers, time_limit_s=5.0, hint=hint, lower_bound=lower_bound(buffers))
    assert offsets == hint and proven


def test_no_time_gives_the_hint_back():
    buffers = buffers_for(random_graph(0, blocks=8))
    hint = first_fit(buffers)
    started = time.monotonic()
    offsets, proven = place_exact(buffers, time_limit_s=0.0, hint=hint, lower_bound=lower_bound(buffers))
    assert time.monotonic() - started < 0.5
    check_placement(buffers, offsets)
    assert not proven and arena_size(buffers, offsets) <= arena_size(buffers, hint)


def test_invalid_hint_is_ignored():
    buffers = make([(0, 1, 1), (1, 2, 1), (2, 2, 2), (0, 2, 3)])
    offsets, proven = place_exact(buffers, time_limit_s=5.0, hint=[0, 0, 0, 0])
    check_placement(buffers, offsets)
    assert proven and arena_size(buffers, offsets) == lower_bound(buffers)


def test_zero_byte_buffers_and_odd_sizes():
    # sizes with a gcd of 8 (not 16), and an empty tensor, which must not sit inside a live buffer
    buffers = [Buffer("a", 24, 0, 1, index=0), Buffer("empty", 0, 1, 1, index=1), Buffer("b", 40, 1, 2, index=2),
               Buffer("c", 8, 2, 3, index=3), Buffer("d", 16, 0, 3, index=4)]
    offsets, proven = place_exact(buffers, time_limit_s=5.0)
    check_placement(buffers, offsets)
    assert proven and arena_size(buffers, offsets) == lower_bound(buffers) == 80


def test_buffers_must_be_numbered():
    with pytest.raises(PlanError):
        place_exact([Buffer("a", 16, 0, 0, index=3)], time_limit_s=1.0)
    assert place_exact([], time_limit_s=1.0) == ([], True)


def test_is_valid_agrees_with_conflicts():
    rng = random.Random(0)
    for _ in range(300):
        buffers = make([(f, f + rng.randrange(3), rng.randint(1, 4)) for f in (rng.randrange(4) for _ in range(6))])
        offsets = [U * rng.randrange(8) for _ in buffers]
        assert is_valid(buffers, offsets) == (not conflicts(buffers, offsets))


def test_overlapping_pairs():
    rng = random.Random(1)
    for _ in range(100):
        buffers = make([(f, f + rng.randrange(4), 1) for f in (rng.randrange(6) for _ in range(rng.randint(0, 12)))])
        expected = sum(a.overlaps_in_time(b) for a, b in itertools.combinations(buffers, 2))
        assert overlapping_pairs(buffers) == expected


@pytest.mark.parametrize("n", [1500, 3000])
def test_big_instances_come_back_in_time(n):
    buffers = synthetic(n, seed=n)
    hint = skyline(buffers)
    check_placement(buffers, hint)
    limit = 2.0
    started = time.monotonic()
    offsets, _ = place_exact(buffers, time_limit_s=limit, hint=hint, lower_bound=lower_bound(buffers))
    elapsed = time.monotonic() - started
    assert elapsed < limit + 0.5, f"{n} buffers took {elapsed:.2f} s for a {limit} s limit"
    check_placement(buffers, offsets)
    assert arena_size(buffers, offsets) <= arena_size(buffers, hint)
