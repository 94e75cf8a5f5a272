"""How many cores a run uses: pinned by ``--threads N``, or chosen while it runs (``auto``).

On a quiet machine every core helps. Beside a busy neighbour they can hurt: two BLAS threads
that wait for each other at every matrix product stall whenever the scheduler hands one of
them's core to the neighbour, and then lose far more than the core they share (one CPU-bound
neighbour on 2 cores made a 2-thread epoch 3.1× as long as alone, a 1-thread one 1.8×).

``Governor`` measures throughput on the work itself, a window of mini-batches (or inference
chunks) at a time, and moves between one thread and all cores: it runs at the faster setting
and now and then tries the other for one window. It tries again at once when the rate at the
current setting falls (a neighbour arrived), and at growing intervals otherwise (up to
``max_gap`` seconds, so a quiet machine loses under a percent to the trials and a neighbour
that leaves is noticed within that time). Under ``auto`` the thread count changes during a
run, so results are not bit-identical from run to run; a pinned count keeps them so.

No numba here: predict and evaluate use it too (BLAS threads only).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from typing import Callable

from digitnet.errors import UsageError


def cores() -> int:
    """The cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def parse(value: str | int | None, what: str = "--threads") -> int | None:
    """``--threads`` (or ``what``, e.g. an environment variable): "auto" (or None) → None, a
    positive whole number → that number; anything else is a UsageError naming it."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text == "auto":
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1 or str(n) != text.lstrip("+"):
        raise UsageError(f"{what} must be auto or a whole number ≥ 1, not {value!r}")
    return n


class BlasThreads:
    """Sets the thread count of the BLAS libraries NumPy loaded (OpenBLAS), found once via
    threadpoolctl; setting costs about a microsecond."""

    def __init__(self):
        from threadpoolctl import ThreadpoolController

        self._libs = ThreadpoolController().select(user_api="blas").lib_controllers

    def __call__(self, n: int) -> None:
        for lib in self._libs:
            lib.set_num_threads(n)


class IdleMeter:
    """Cores free for us since the previous call, from /proc/stat (Linux): idle, waiting for
    I/O, or running niced work (which yields to ours); None where /proc/stat is missing."""

    def __init__(self, path: str = "/proc/stat"):
        self.path = path
        self._last = self._read()

    def _read(self) -> tuple[float, float] | None:
        try:
            with open(self.path, "rb") as f:
                fields = [float(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError, IndexError):
            return None
        if len(fields) < 4:
            return None
        # idle + iowait, and nice: a niced neighbour yields its core to us
        idle = fields[1] + fields[3] + (fields[4] if len(fields) > 4 else 0.0)
        return idle, sum(fields[:8])

    def __call__(self) -> float | None:
        now, before = self._read(), self._last
        self._last = now
        if now is None or before is None or now[1] <= before[1]:
            return None
        return (now[0] - before[0]) / (now[1] - before[1]) * os.cpu_count()


class Governor:
    """Chooses the thread count for each stretch of work from measured throughput.

    Use: ``g.samples(default)`` for the size of the next stretch of work, ``g.threads()``
    before it (applied through ``apply``), ``g.done(samples, seconds)`` after it.

    It starts on one thread (never the disaster) and moves to all cores after that first
    stretch when a core stood idle meanwhile; then it compares windows of at least ``window``
    seconds at the current setting with a trial of the other. A trial of one thread is one
    short stretch (sized so that even a setting 30× slower costs little), taken at once when
    the rate falls and at doubling intervals otherwise. A trial of all cores is taken only
    when the machine has an idle core (``idle``: /proc/stat), and lasts a window after two
    settling stretches: threads that were parked take a while to get going, and a shorter
    trial undersells them. The first stretch after any change is not measured.
    """

    def __init__(self, apply: Callable[[int], None], n_cores: int | None = None, *, pinned: int | None = None,
                 window: float = 0.25, first_gap: float = 2.0, max_gap: float = 30.0, drop: float = 0.7,
                 margin: float = 1.05, clock: Callable[[], float] = time.perf_counter,
                 idle: Callable[[], float | None] | None = None):
        self.apply, self.clock, self.pinned = apply, clock, pinned
        self.high = max(1, n_cores or cores())
        self.window, self.first_gap, self.max_gap, self.drop, self.margin = window, first_gap, max_gap, drop, margin
        self.idle = idle if idle is not None else IdleMeter() if not pinned and self.high > 1 else (lambda: None)
        self.current = pinned or 1        # the setting believed faster (or the pinned one)
        self.trying: int | None = None    # the setting on trial, if any
        self.gap = first_gap              # seconds between trials while nothing changes
        self.recent: deque[float] = deque(maxlen=3)   # the last few window rates at `current`
        self.reference: float | None = None            # the rate when `current` was last chosen
        self.last_trial = -math.inf      # the other setting is tried right after the first measured window
        self.warm = False
        self._samples = 0.0
        self._seconds = 0.0
        self._applied: int | None = None
        self._last: int | None = None                  # the count of the previous stretch
        self._settle = 0                               # stretches still to leave unmeasured
        self.seconds_at: dict[int, float] = {}         # time spent at each count (for the record)
        self.switches = 0
        self.rates: dict[int, float] = {}              # the last rate measured at each count
        self.log: deque[tuple[float, int, float, str]] = deque(maxlen=4096)   # (time, threads, rate, what)

    def threads(self) -> int:
        """The thread count for the next stretch of work, applied (every time: other code,
        such as a validation pass's own governor, may have set another count meanwhile)."""
        n = self.trying or self.current
        if self._last is None:            # the first stretch: measure the machine's idle cores from here
            self.idle()
        self.apply(n)
        self._applied = n
        return n

    def samples(self, default: int) -> int:
        """How many samples the next stretch of work should hold: about half a window at the
        current setting's rate; on a one-thread trial a quarter window at the rate one thread
        had last time (a sixteenth of the current rate when never tried); at most 512 until a
        rate is known; ``default`` when pinned."""
        if self.pinned or self.high == 1:
            return default
        if not self.recent:               # a small first stretch: the start may be the slow setting
            return min(default, 512)
        if self.trying == 1:
            return max(1, int(self.rates.get(1, self.recent[-1] / 16) * self.window / 4))
        return max(1, int(self.recent[-1] * self.window / 2))

    def done(self, samples: int, seconds: float) -> None:
        """Account a stretch of ``samples`` items that took ``seconds`` at the count applied."""
        n = self._applied or self.current
        self.seconds_at[n] = self.seconds_at.get(n, 0.0) + seconds
        if self.pinned or self.high == 1:
            return
        if n != self._last:               # a change: its first stretches wake (or start) threads
            self._last = n                # (the warm-up measures idle cores, not speed: no settling)
            self._settle = (2 if n > 1 else 1) if self.warm else 0
            self._samples = self._seconds = 0.0
        if self._settle:
            self._settle -= 1
            return
        self._samples += samples
        self._seconds += seconds
        if self._seconds < (0.0 if self.trying == 1 else self.window if self.warm else self.window / 5):
            return                        # (the warm-up only has to see whether a core is idle)
        rate = self._samples / self._seconds
        self._samples = self._seconds = 0.0
        self.log.append((self.clock(), n, rate, "trial" if self.trying else "window" if self.warm else "warm-up"))
        idle = self.idle()                # idle cores over this window
        if not self.warm:                 # compilation and cold caches: not a measurement of speed,
            self.warm = True              # but of the machine: a free core means all cores go first
            if idle is not None and idle >= 0.5:
                self.current = self.high
            return
        self.rates[n] = rate
        if self.trying is not None:
            self._judge(rate)
            return
        self.recent.append(rate)
        if self.reference is None:
            self.reference = max(self.recent)
        fell = rate < self.drop * self.reference
        if fell:                          # a neighbour arrived, perhaps: compare with the rate now
            self.recent.clear()
            self.recent.append(rate)
            self.gap = self.first_gap
        if not (fell or self.clock() - self.last_trial >= self.gap):
            return
        if self.current == self.high:
            self.trying = 1
        elif idle is None or idle >= 0.5:  # more threads only where a core is free to run them
            self.trying = self.high

    def _judge(self, rate: float) -> None:
        """End a trial: switch when the trial beat the current setting's recent rate."""
        here = sorted(self.recent)[len(self.recent) // 2] if self.recent else 0.0
        if rate > self.margin * here:
            self.current, self.reference = self.trying, rate
            self.recent.clear()
            self.recent.append(rate)
            self.gap = self.first_gap
            self.switches += 1
        else:
            self.reference = here or self.reference
            self.gap = min(self.gap * 2, self.max_gap)
        self.trying = None
        self.last_trial = self.clock()


_INFERENCE: Governor | None = None
_INFERENCE_LOCK = threading.Lock()
INFERENCE_MIN_ROWS = 64        # smaller forward passes (one drawn digit, one file) stay import-free


def inference() -> Governor:
    """The process's governor for batched inference (BLAS threads only), created on first
    use; ``DIGITNET_THREADS=N`` pins it."""
    global _INFERENCE
    with _INFERENCE_LOCK:
        if _INFERENCE is None:
            _INFERENCE = Governor(BlasThreads(), pinned=parse(os.environ.get("DIGITNET_THREADS") or None, "DIGITNET_THREADS"),
                                  window=0.1)
        return _INFERENCE


def pin_inference(n: int) -> None:
    """Pin batched inference to ``n`` BLAS threads for the rest of the process (applied now),
    as ``DIGITNET_THREADS=n`` would: for a server whose requests are one image each."""
    global _INFERENCE
    with _INFERENCE_LOCK:
        _INFERENCE = Governor(BlasThreads(), pinned=n)
        _INFERENCE.threads()
