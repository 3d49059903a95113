"""What every benchmark needs: medians after a warm-up, peak memory of the process tree, results on disk."""

from __future__ import annotations

import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

RESULTS = Path(__file__).parent / "results"


def timed(fn: Callable[[], object], repeats: int = 3) -> tuple[float, list[float]]:
    """Median wall time of `repeats` runs after one warm-up run, and the runs themselves."""
    fn()
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs), runs


class PeakMemory:
    """Peak resident memory of process trees, sampled: by default this process and all its children
    (Spark's JVM, Python workers); `roots` names other trees (the servers of a stack).

        with PeakMemory() as peak:
            work()
        peak.gib
    """

    def __init__(self, interval: float = 0.1, roots: Callable[[], list[int]] | None = None) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self.roots = roots or (lambda: [os.getpid()])
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def now(self) -> int:
        """Resident bytes of every process of the trees now."""
        total = 0
        for pid in self.roots():
            try:
                root = psutil.Process(pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
        return total

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self.peak = self.now()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())

    @property
    def gib(self) -> float:
        return round(self.peak / 2**30, 2)


def machine() -> str:
    mem = psutil.virtual_memory().total / 2**30
    return f"{platform.machine()}, {os.cpu_count()} cores, {mem:.0f} GiB, {platform.python_implementation()} " \
           f"{platform.python_version()}"


def write(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({**result, "machine": machine()}, indent=1) + "\n")
    return path
