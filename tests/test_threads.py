"""digitnet.threads: the --threads parser and the governor that picks the thread count from
measured throughput, driven here by a simulated machine (a fake clock and a rate per thread
count that changes when a neighbour arrives or leaves)."""

from __future__ import annotations

import numpy as np
import pytest

from digitnet import threads
from digitnet.errors import UsageError
from digitnet.threads import Governor


@pytest.mark.parametrize("text, expected", [(None, None), ("auto", None), ("AUTO", None), (" auto ", None),
                                            ("1", 1), ("2", 2), ("16", 16), (3, 3)])
def test_parse_accepts_auto_and_whole_numbers(text, expected):
    assert threads.parse(text) == expected


@pytest.mark.parametrize("text", ["0", "-1", "two", "1.5", "", "2x", "1e3"])
def test_parse_refuses_anything_else_in_one_line(text):
    with pytest.raises(UsageError, match="--threads must be auto or a whole number"):
        threads.parse(text)


class Machine:
    """A simulated 2-core run: ``rate(threads, t)`` samples/s, ``neighbours(t)`` busy cores of
    other processes; the governor's stretches advance the clock."""

    def __init__(self, rate, neighbours=lambda t: 0):
        self.rate, self.neighbours, self.t, self.compiled = rate, neighbours, 0.0, False
        self.applied: list[int] = []

    def clock(self) -> float:
        return self.t

    def idle(self) -> float:
        """Idle cores now (what /proc/stat would say over the last window)."""
        return max(0.0, 2.0 - (self.applied[-1] if self.applied else 1) - self.neighbours(self.t))

    def apply(self, n: int) -> None:
        self.applied.append(n)

    def run(self, governor: Governor, total: int, default: int = 4096) -> dict[int, float]:
        """Process ``total`` samples as the training loop does; seconds spent per thread count."""
        done, spent = 0, {}
        while done < total:
            k = min(total - done, max(1, governor.samples(default)))
            n = governor.threads()
            seconds = k / self.rate(n, self.t)
            if not self.compiled:
                seconds += 1.0                     # compilation in the run's first stretch
                self.compiled = True
            self.t += seconds
            spent[n] = spent.get(n, 0.0) + seconds
            governor.done(k, seconds)
            done += k
        return spent


def governor(machine: Machine, **kw) -> Governor:
    return Governor(machine.apply, 2, clock=machine.clock, idle=machine.idle, **kw)


def test_quiet_machine_runs_on_all_cores_and_trials_cost_little():
    """Two threads 1.8× as fast as one: nearly all the time on two, within 3% of pinned two."""
    m = Machine(lambda n, t: 100_000 * (1.8 if n == 2 else 1.0))
    spent = m.run(governor(m), 100_000 * 1.8 * 120)            # two minutes' work at two threads
    total = sum(spent.values())
    assert spent[2] / total > 0.97
    assert total <= 1.03 * (120 + 1.0)


def test_busy_neighbour_keeps_it_on_one_thread_within_ten_percent_of_pinned_one():
    """Two threads 30× slower than one (stalled BLAS threads): auto within 10% of --threads 1."""
    m = Machine(lambda n, t: 10_000 if n == 1 else 10_000 / 30, neighbours=lambda t: 1)
    spent = m.run(governor(m), 10_000 * 60)
    assert sum(spent.values()) <= 1.10 * (60 + 1.0)
    assert spent.get(2, 0.0) < 0.02 * sum(spent.values())


def test_follows_a_neighbour_that_arrives_and_leaves():
    """Quiet for 60 s, a neighbour for 60 s, quiet again: it moves to one thread soon after the
    neighbour arrives and back to two within max_gap (+ a window) after it leaves."""
    def rate(n, t):
        loaded = 60 <= t < 120
        if n == 1:
            return 10_000.0
        return 10_000 / 5 if loaded else 18_000.0

    m = Machine(rate, neighbours=lambda t: 1 if 60 <= t < 120 else 0)
    g = governor(m, max_gap=20.0)
    m.run(g, 18_000 * 55)                               # the quiet minute
    assert g.current == 2
    while m.t < 60 + 3.0:                               # three seconds into the neighbour's stay
        m.run(g, 200)
    assert g.current == 1
    while m.t < 120:
        m.run(g, 2_000)
    assert g.current == 1
    while m.t < 120 + 20.0 + 1.0:
        m.run(g, 2_000)
    assert g.current == 2


def test_pinned_count_is_applied_and_never_changes():
    m = Machine(lambda n, t: 10_000 if n == 1 else 100.0)      # even when another count is faster
    g = governor(m, pinned=2)
    assert g.samples(4096) == 4096                             # stretches as before: chunks of 4096
    m.run(g, 100_000)
    assert set(m.applied) == {2} and g.switches == 0


def test_one_core_never_tries_anything():
    m = Machine(lambda n, t: 1_000.0)
    g = Governor(m.apply, 1, clock=m.clock)
    m.run(g, 50_000)
    assert set(m.applied) == {1}


def test_inference_over_many_rows_goes_through_the_governor(monkeypatch):
    """Network.predict_proba on ≥ INFERENCE_MIN_ROWS rows asks the inference governor for its
    thread count per chunk (and gives the same scores); smaller calls never create it."""
    from digitnet.nn.network import Network, dense_layers

    applied: list[int] = []
    g = Governor(applied.append, 2)
    monkeypatch.setattr(threads, "inference", lambda: g)
    net = Network.init(dense_layers([784, 32, 10], "relu", "softmax"), (1, 28, 28), seed=1)
    x = np.random.default_rng(0).random((3000, 784), dtype=np.float32)
    governed = net.predict_proba(x, chunk=500)
    assert len(applied) == 6
    small = threads.INFERENCE_MIN_ROWS - 1
    plain = np.concatenate([net.predict_proba(x[i:i + small]) for i in range(0, 3000, small)])
    assert len(applied) == 6                                    # calls below the threshold: not governed
    np.testing.assert_allclose(governed, plain, rtol=1e-5, atol=1e-7)


def test_pinned_inference_stays_pinned_for_large_batches(monkeypatch):
    """pin_inference(1) (the draw server's setting) holds for a batched pass too: the governor
    never tries another count."""
    from digitnet.nn.network import Network, dense_layers

    applied: list[int] = []
    monkeypatch.setattr(threads, "BlasThreads", lambda: applied.append)
    monkeypatch.setattr(threads, "_INFERENCE", None)
    threads.pin_inference(1)
    net = Network.init(dense_layers([784, 32, 10], "relu", "softmax"), (1, 28, 28), seed=1)
    x = np.random.default_rng(0).random((4000, 784), dtype=np.float32)
    for _ in range(20):
        net.predict_proba(x, chunk=100)
    assert set(applied) == {1} and len(applied) > 1


def test_without_a_free_core_it_never_tries_more_threads():
    """At one thread beside a neighbour (no idle core), all cores are never tried, even when
    the rate falls: a stalled trial would cost seconds."""
    m = Machine(lambda n, t: 10_000 if n == 1 else 100.0, neighbours=lambda t: 1)
    g = governor(m)
    m.run(g, 10_000 * 30)
    assert set(m.applied) == {1}


def test_idle_meter_reads_proc_stat(tmp_path):
    """Free cores between two reads of /proc/stat's first line ((nice + idle + iowait) over the total)."""
    import os

    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 100 800 0 0 0 0 0 0\n")
    meter = threads.IdleMeter(str(stat))
    stat.write_text("cpu  200 0 100 900 0 0 0 0 0 0\n")        # 200 more jiffies, half of them idle
    assert meter() == pytest.approx(0.5 * os.cpu_count())
    stat.write_text("cpu  300 100 100 900 0 0 0 0 0 0\n")      # 200 more, half of them niced work
    assert meter() == pytest.approx(0.5 * os.cpu_count())
    assert threads.IdleMeter(str(tmp_path / "missing"))() is None


def test_a_free_core_at_the_start_means_all_cores_after_the_first_stretch():
    """A short run (one epoch of a small MLP is a fraction of a second) must not spend its
    time learning: with a core idle during the warm-up stretch, the next stretches run on all."""
    m = Machine(lambda n, t: 100_000 * (1.8 if n == 2 else 1.0))
    g = governor(m)
    spent = m.run(g, 100_000 * 1.8 * 2)                    # two seconds' work
    assert spent[1] <= 1.0 + 0.1                           # compiling (its stretch is the warm-up), a trial of one
    busy = Machine(lambda n, t: 100_000 * (1.8 if n == 2 else 1.0), neighbours=lambda t: 1)
    busy.run(governor(busy), 100_000)
    assert busy.applied[:3] == [1, 1, 1]


def test_a_bad_digitnet_threads_is_named_in_one_line(tmp_path):
    """DIGITNET_THREADS pins batched inference; a bad value is refused naming the variable."""
    import cli_helpers

    r = cli_helpers.run(["evaluate"], DIGITNET_THREADS="x")
    assert r.returncode != 0
    assert r.stderr.decode().strip().splitlines() == [
        "digitnet: error: DIGITNET_THREADS must be auto or a whole number ≥ 1, not 'x'"]
