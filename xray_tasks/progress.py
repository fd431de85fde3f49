"""Progress of a long stage in the log: done / total, rate and ETA, at a steady interval (not every item)."""

from __future__ import annotations

import logging
import time


class Progress:
    """``update(n)`` after each piece of work; a line is logged at most every ``every`` seconds, and by ``done``.

    ``features: 320/1000 images (32%), 41.2 images/s, ETA 17 s``
    """

    def __init__(
        self, what: str, total: int | None, unit: str = "images", every: float = 10.0, log=None
    ) -> None:
        self.what, self.total, self.unit, self.every = what, total, unit, every
        self.log = log or logging.getLogger("xray_tasks.progress")
        self.count = 0
        self.started = self.last = time.monotonic()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.count / elapsed
        if self.total:
            left = max(self.total - self.count, 0)
            eta = f", ETA {left / rate:.0f} s" if rate > 0 else ""
            return (
                f"{self.what}: {self.count}/{self.total} {self.unit} ({100 * self.count / self.total:.0f}%), "
                f"{rate:.1f} {self.unit}/s{eta}"
            )
        return f"{self.what}: {self.count} {self.unit}, {rate:.1f} {self.unit}/s"

    def update(self, n: int = 1) -> None:
        self.count += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.log.info("%s", self.line())

    def done(self) -> None:
        self.log.info("%s (done in %.1f s)", self.line(), time.monotonic() - self.started)
