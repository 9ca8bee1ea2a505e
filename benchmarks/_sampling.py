"""Background sampling shared by the benchmark scripts (imported as ``_sampling``: scripts run from this folder)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class PeriodicSampler:
    """Call ``probe()`` every ``every`` seconds in a daemon thread inside a ``with`` block.

    The results are kept, in order, in ``samples``; the first call happens on entry.
    """

    def __init__(self, probe: Callable[[], Any], every: float = 5.0):
        self.probe, self.every = probe, every
        self.samples: list[Any] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.probe())
            self._stop.wait(self.every)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
