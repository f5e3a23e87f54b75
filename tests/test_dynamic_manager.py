"""The runtime manager: its selection rule and feedback in Python, and mf_manager.c built with gcc from
generated tables returning the same index as Python on a grid of budgets and feedback sequences."""

import ctypes
import itertools
import random
import subprocess

import pytest

from microforge.dynamic.manager import (INT32_MAX, KERNEL_DIR, MANAGER_SOURCES, Q16_ONE, Manager,
                                        manager_c_tables)
from microforge.dynamic.points import MemberMeasurement, operating_points
from microforge.errors import InputError

FAMILY = [(0.25, 0.78, 750_000), (0.5, 0.88, 2_300_000), (0.75, 0.915, 4_800_000), (1.0, 0.93, 8_000_000)]
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-shared", "-fPIC"]


@pytest.fixture(scope="module")
def points():
    ms = [MemberMeasurement(w, core, acc, int(n * k), True)
          for core, k in (("cortex-m4", 1.0), ("cortex-m7", 0.93)) for w, acc, n in FAMILY]
    return operating_points(ms)


@pytest.fixture(scope="module")
def m4(points):
    return [p for p in points if p.core == "cortex-m4"]


def build(tmp_path, name: str, source: str, prefix: str = "mf"):
    tables = tmp_path / f"{name}_tables.c"
    tables.write_text(source)
    library = tmp_path / f"lib{name}.so"
    defines = [] if prefix == "mf" else [f"-DMF_MANAGER_TABLES={prefix}"]
    cmd = ["gcc", *CFLAGS, *defines, "-I", str(KERNEL_DIR), str(tables),
           *[str(KERNEL_DIR / s) for s in MANAGER_SOURCES], "-o", str(library)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lib = ctypes.CDLL(str(library))
    i32 = ctypes.c_int32
    lib.mf_manager_select.argtypes = [i32, i32, i32, i32]
    lib.mf_manager_select.restype = i32
    lib.mf_manager_observe.argtypes = [i32, i32]
    lib.mf_manager_observe.restype = None
    for fn in ("mf_manager_point_member", "mf_manager_point_mhz"):
        getattr(lib, fn).argtypes = [i32]
        getattr(lib, fn).restype = i32
    lib.mf_manager_load_factor_q16.restype = i32
    return lib


@pytest.fixture(scope="module")
def pairs(m4, tmp_path_factory):
    """(Python manager, C library) with feedback and headroom, and without either under another prefix."""
    tmp = tmp_path_factory.mktemp("manager")
    fed = Manager(m4, feedback=True, smoothing=0.5, headroom=0.05)
    plain = Manager(m4, feedback=False, headroom=0.0)
    return [(fed, build(tmp, "fed", fed.c_tables())),
            (plain, build(tmp, "plain", plain.c_tables("kws"), prefix="kws"))]


def budget_grid(manager: Manager):
    """Budgets around every table value: none, 0, each value, one below, one above, the maximum."""
    n = len(manager.points)
    latencies = {-1, 0, INT32_MAX} | {v + d for i in range(n) for v in (manager.latency_us[i], manager.predicted_us(i))
                                      for d in (-1, 0, 1)}
    energies = {-1, 0, INT32_MAX} | {v + d for v in manager.energy_nj for d in (-1, 0, 1)}
    powers = {-1, 0} | {v + d for v in manager.power_uw for d in (-1, 0, 1)}
    accuracies = {-1, 0, 10000} | {v + d for v in manager.accuracy for d in (-1, 0, 1)}
    return [sorted(s) for s in (latencies, energies, powers, accuracies)]


def test_c_and_python_select_the_same_point_on_a_grid_of_budgets(pairs):
    for manager, lib in pairs:
        manager.reset()
        lib.mf_manager_reset()
        lat, en, pw, acc = budget_grid(manager)
        cases = [(a, -1, -1, -1) for a in lat] + [(-1, e, -1, -1) for e in en] + [(-1, -1, p, -1) for p in pw]
        cases += [(-1, -1, -1, a) for a in acc] + [(a, e, -1, -1) for a in lat for e in en[::3]]
        cases += [(a, -1, p, -1) for a in lat for p in pw] + [(-1, e, -1, a) for e in en for a in acc[::2]]
        rng = random.Random(0)
        cases += [(rng.choice(lat), rng.choice(en), rng.choice(pw), rng.choice(acc)) for _ in range(3000)]
        infeasible = 0
        for case in cases:
            expected = manager.select_units(*case)
            assert lib.mf_manager_select(*case) == expected, case
            infeasible += expected < 0
        assert infeasible > 100 and len(cases) - infeasible > 1000  # both outcomes well exercised


def test_c_and_python_agree_through_feedback_sequences(pairs):
    manager, lib = pairs[0]
    rng = random.Random(1)
    lat, en, pw, acc = budget_grid(manager)
    for sequence in range(5):
        manager.reset()
        lib.mf_manager_reset()
        load = rng.choice([1.0, 1.3, 2.0, 0.8])
        for step in range(200):
            if step % 50 == 0:
                load = rng.choice([1.0, 1.25, 1.7, 2.5, 0.9])
            case = (rng.choice(lat), rng.choice(en), rng.choice(pw), rng.choice(acc))
            code = manager.select_units(*case)
            assert lib.mf_manager_select(*case) == code, (sequence, step, case)
            index = code if code >= 0 else -code - 1
            measured = int(manager.latency_us[index] * load * rng.uniform(0.97, 1.03))
            if step % 37 == 5:
                measured = rng.choice([0, INT32_MAX, 1])  # the clamps
            manager.observe_units(index, measured)
            lib.mf_manager_observe(index, measured)
            assert lib.mf_manager_load_factor_q16() == manager.factor_q16
    # out-of-range observations are ignored by both
    before = manager.factor_q16
    for index, measured in ((-1, 1000), (len(manager.points), 1000), (0, -5)):
        manager.observe_units(index, measured)
        lib.mf_manager_observe(index, measured)
    assert lib.mf_manager_load_factor_q16() == manager.factor_q16 == before


def test_c_point_accessors(pairs):
    manager, lib = pairs[0]
    for i, p in enumerate(manager.points):
        assert lib.mf_manager_point_mhz(i) == p.mhz
        assert manager.members[lib.mf_manager_point_member(i)] == p.member
    for bad in (-1, len(manager.points), 1 << 30):
        assert lib.mf_manager_point_mhz(bad) == -1 and lib.mf_manager_point_member(bad) == -1


def test_without_feedback_the_c_factor_stays_one(pairs):
    manager, lib = pairs[1]
    lib.mf_manager_observe(0, 10 * manager.latency_us[0])
    manager.observe(0, 10 * manager.points[0].latency_ms)
    assert lib.mf_manager_load_factor_q16() == Q16_ONE == manager.factor_q16


def test_generated_tables(m4):
    source = manager_c_tables(m4, feedback=True, headroom=0.05)
    assert "#define MF_MANAGER_POINTS 16" in source
    assert "const int32_t mf_manager_latency_us[MF_MANAGER_POINTS] = {\n    6250, 9375," in source
    assert "const int32_t mf_manager_width_permille[4] = {\n    250, 500, 750, 1000\n};" in source
    assert "mf_manager_headroom_q16 = 3277;" in source and "mf_manager_feedback = 1;" in source
    assert source.isascii()
    other = manager_c_tables(m4, prefix="kws")
    assert "#define MF_MANAGER_TABLES kws" in other and "kws_manager_accuracy[KWS_MANAGER_POINTS]" in other
    for bad in ("1abc", "int", "a-b", ""):
        with pytest.raises(InputError, match="C identifier"):
            manager_c_tables(m4, prefix=bad)


# -- Python semantics ----------------------------------------------------------------------------------

def key(selection):
    return selection.point.width, selection.point.mhz


def test_select_rule(m4):
    manager = Manager(m4)
    # no budget: the most accurate width, at its lowest-energy clock (26 MHz, range 2)
    assert key(manager.select()) == (1.0, 26)
    assert manager.select().feasible
    assert key(manager.select(latency_budget_ms=70)) == (1.0, 120)
    assert key(manager.select(latency_budget_ms=110)) == (1.0, 80)
    assert key(manager.select(latency_budget_ms=20)) == (0.5, 120)
    assert key(manager.select(energy_budget_uj=1000)) == (0.5, 26)
    assert key(manager.select(power_cap_mw=30, latency_budget_ms=70)) == (0.75, 80)
    assert key(manager.select(min_accuracy=0.9, energy_budget_uj=2000)) == (0.75, 26)
    s = manager.select(latency_budget_ms=30)
    assert s.point is manager.points[s.index] and s.feasible


def test_a_budget_equal_to_a_point_admits_it(m4):
    manager = Manager(m4)
    for p in m4:
        assert manager.select(latency_budget_ms=p.latency_ms).point.latency_ms <= p.latency_ms
        chosen = manager.select(latency_budget_ms=p.latency_ms, min_accuracy=p.accuracy, power_cap_mw=p.power_mw,
                                energy_budget_uj=p.energy_uj)
        assert chosen.feasible and chosen.point.accuracy >= p.accuracy


def test_infeasible_budgets_give_the_cheapest_point_flagged(m4):
    manager = Manager(m4)
    for budgets in ({"latency_budget_ms": 1.0}, {"energy_budget_uj": 100.0}, {"power_cap_mw": 5.0},
                    {"min_accuracy": 0.99}, {"latency_budget_ms": 10.0, "power_cap_mw": 10.0}):
        s = manager.select(**budgets)
        assert not s.feasible, budgets
        assert s.point.energy_uj == min(p.energy_uj for p in m4)


def test_headroom_is_a_preference_not_a_budget(m4):
    fastest = min(m4, key=lambda p: p.latency_ms)
    manager = Manager(m4, headroom=0.05)
    # exactly the fastest point's latency: nothing fits with the margin, the fastest fits without it
    s = manager.select(latency_budget_ms=fastest.latency_ms)
    assert s.feasible and s.point == fastest
    # where the margin leaves a choice, it picks the point with room to spare
    width_1 = next(p for p in m4 if p.width == 1.0 and p.mhz == 120)
    assert key(manager.select(latency_budget_ms=width_1.latency_ms * 1.02)) == (0.75, 80)
    assert key(Manager(m4).select(latency_budget_ms=width_1.latency_ms * 1.02)) == (1.0, 120)


def test_feedback_converges_to_the_load_and_changes_the_choice(m4):
    manager = Manager(m4, feedback=True, smoothing=0.25)
    width_1 = next(p for p in m4 if p.width == 1.0 and p.mhz == 120)
    assert key(manager.select(latency_budget_ms=80)) == (1.0, 120)
    for _ in range(60):  # a background task takes 60 % of the cycles: everything 2.5x slower
        s = manager.select(latency_budget_ms=80)
        manager.observe(s.index, s.point.latency_ms * 2.5)
    assert manager.load_factor == pytest.approx(2.5, abs=1e-4)
    s = manager.select(latency_budget_ms=80)
    assert s.point.latency_ms * 2.5 <= 80 and s.point.width < 1.0
    assert manager.predicted_latency_ms(m4.index(width_1)) == pytest.approx(width_1.latency_ms * 2.5, rel=1e-4)
    for _ in range(60):  # and back when it ends
        s = manager.select(latency_budget_ms=80)
        manager.observe(s.index, s.point.latency_ms)
    assert manager.load_factor == pytest.approx(1.0, abs=1e-4)
    assert key(manager.select(latency_budget_ms=80)) == (1.0, 120)
    manager.observe(0, 1e9)
    assert manager.load_factor <= 64
    manager.reset()
    assert manager.load_factor == 1.0


def test_manager_picks_a_core_and_rejects_bad_input(points, m4):
    with pytest.raises(InputError, match="cortex-m4, cortex-m7"):
        Manager(points)
    assert Manager(points, core="cortex-m7").core == "cortex-m7"
    with pytest.raises(InputError, match="core 'cortex-m33'"):
        Manager(points, core="cortex-m33")
    with pytest.raises(InputError, match="no operating points"):
        Manager([])
    for kwargs, message in (({"smoothing": 0}, "smoothing"), ({"smoothing": 1.5}, "smoothing"),
                            ({"headroom": -0.1}, "headroom"), ({"headroom": 1.0}, "headroom")):
        with pytest.raises(InputError, match=message):
            Manager(m4, **kwargs)
    manager = Manager(m4, feedback=True)
    for budgets, message in (({"latency_budget_ms": -1}, "latency_budget_ms"),
                             ({"energy_budget_uj": float("nan")}, "energy_budget_uj"),
                             ({"power_cap_mw": "10"}, "power_cap_mw"), ({"min_accuracy": -0.5}, "min_accuracy")):
        with pytest.raises(InputError, match=message):
            manager.select(**budgets)
    assert manager.select(latency_budget_ms=float("inf")).feasible
    with pytest.raises(InputError, match="index 16 is out of range 0..15"):
        manager.observe(16, 1.0)
    with pytest.raises(InputError, match="measured latency"):
        manager.observe(0, -1.0)


def test_integer_units_are_rounded_once_half_up(m4):
    manager = Manager(m4)
    for i, p in enumerate(m4):
        assert manager.latency_us[i] == int(p.latency_ms * 1000 + 0.5)
        assert manager.accuracy[i] == round(p.accuracy * 1e4)
    assert all(a == b for a, b in itertools.pairwise(manager.power_uw[0::4]))


def test_members_with_depths_index_the_family_in_order(tmp_path):
    # members listed out of order on purpose: the manager's member index is the family's order
    ms = [MemberMeasurement(w, "cortex-m4", acc, n, True, depth=d)
          for w, d, acc, n in ((1.0, 4, 0.95, 8_000_000), (0.25, 1, 0.5, 300_000), (0.25, 4, 0.8, 750_000),
                               (1.0, 1, 0.7, 2_000_000))]
    manager = Manager(operating_points(ms), headroom=0.0)
    assert manager.members == [(0.25, 1), (0.25, 4), (1.0, 1), (1.0, 4)]
    lib = build(tmp_path, "deep", manager.c_tables())
    assert [ctypes.c_int32.in_dll(lib, "mf_manager_member_count").value] == [4]
    assert list((ctypes.c_int32 * 4).in_dll(lib, "mf_manager_depth")) == [1, 4, 1, 4]
    for i, p in enumerate(manager.points):
        assert manager.members[lib.mf_manager_point_member(i)] == p.member
    # the most accurate point without budgets is the deepest, widest member
    chosen = lib.mf_manager_select(-1, -1, -1, -1)
    assert manager.members[lib.mf_manager_point_member(chosen)] == (1.0, 4)
    assert manager.select().point.member == (1.0, 4)
