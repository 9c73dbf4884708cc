"""atcourse.timing: interleaved repeats, median and quartiles, on a fake clock."""

import pytest

from atcourse.timing import Spread, compare


class FakeMachine:
    """A clock and workloads: each call advances the clock by its cost times the load."""

    def __init__(self, load=lambda call: 1.0):
        self.now = 0.0
        self.calls: list[str] = []
        self.load = load

    def clock(self) -> float:
        return self.now

    def work(self, name: str, cost: float):
        def run():
            self.now += cost * self.load(len(self.calls))
            self.calls.append(name)

        return run


def test_rounds_interleave_and_rotate_after_unrecorded_warmup():
    m = FakeMachine()
    fns = {n: m.work(n, 1.0) for n in "abc"}
    out = compare(fns, repeats=4, warmup=2, clock=m.clock)
    rounds = ["abc", "bca", "cab", "abc", "bca", "cab"]  # 2 warm-up rounds, then 4 recorded
    assert m.calls == list("".join(rounds))
    assert list(out) == ["a", "b", "c"]
    assert all(s.samples == (1.0,) * 4 for s in out.values())  # warm-up rounds not recorded


def test_a_load_burst_widens_the_spread_instead_of_reversing_the_result():
    # The first 6 calls run 30 times slower (another process woke up). Timed one after the
    # other, "fast" would have taken all of the burst and looked 15x slower than "slow".
    m = FakeMachine(load=lambda call: 30.0 if call < 6 else 1.0)
    out = compare({"fast": m.work("fast", 1.0), "slow": m.work("slow", 2.0)}, repeats=9,
                  warmup=0, clock=m.clock)  # fmt: skip
    fast, slow = out["fast"], out["slow"]
    assert fast.median == 1.0 and slow.median == 2.0
    assert fast.median < slow.median
    assert fast.iqr > 0 and slow.iqr > 0  # the burst shows as spread
    assert (slow / fast).samples == (2.0,) * 9  # paired rounds cancel the load exactly


def test_sync_runs_before_every_clock_reading():
    m = FakeMachine()
    events = []
    reads = []

    def clock():
        reads.append(len(events))
        return m.clock()

    compare({"a": m.work("a", 1.0)}, repeats=2, warmup=1, clock=clock,
            sync=lambda: events.append("sync"))  # fmt: skip
    assert len(events) == 2 * 3  # before the start and the end reading of each call
    assert reads == [1, 2, 3, 4, 5, 6]  # each reading right after a sync


def test_spread_statistics():
    s = Spread((5.0, 1.0, 3.0, 2.0, 4.0))
    assert s.n == 5 and s.median == 3.0
    assert (s.q1, s.q3, s.iqr) == (2.0, 4.0, 2.0)
    one = Spread((7.0,))
    assert (one.median, one.q1, one.q3, one.iqr) == (7.0, 7.0, 7.0, 0.0)
    assert (s * 1000).median == 3000.0 and (1000 * s).q3 == 4000.0
    assert "3 (IQR 2-4, n=5)" == str(s)


def test_bad_input_is_named():
    m = FakeMachine()
    with pytest.raises(ValueError, match="at least one function"):
        compare({})
    with pytest.raises(TypeError, match="'a' is int"):
        compare({"a": 3})
    with pytest.raises(ValueError, match="repeats"):
        compare({"a": m.work("a", 1)}, repeats=0)
    with pytest.raises(ValueError, match="warmup"):
        compare({"a": m.work("a", 1)}, warmup=-1)
    with pytest.raises(ValueError, match="cannot pair 2 samples with 3"):
        Spread((1.0, 2.0)) / Spread((1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="at least one sample"):
        Spread(())
    with pytest.raises(ValueError, match="finite"):
        Spread((1.0, float("nan")))


def test_real_clock_records_every_call():
    calls = []
    out = compare({"x": lambda: calls.append(1)}, repeats=3, warmup=1)
    assert len(calls) == 4 and out["x"].n == 3 and all(t >= 0 for t in out["x"].samples)
