"""Progress of long work: a bar on a terminal, log lines without one.

tqdm draws nothing useful into a log file, so when the output is not a terminal (``robin eval >
log.txt``, a batch job, CI) :func:`progress` returns a stand-in with tqdm's small API that logs one
line at the start, then at most one every ``every_s`` seconds with the rate and the time left, and
one at the end, through the ``robin_plugin.progress`` logger (the ``robin`` command prints
``robin_plugin`` log lines to stdout).
"""
from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["LogProgress", "progress", "is_terminal"]

_log = logging.getLogger(__name__)


def is_terminal() -> bool:
    """Whether both stdout and stderr are terminals (so a bar is seen and no log file is filled)."""
    return all(getattr(s, "isatty", lambda: False)() for s in (sys.stdout, sys.stderr))


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class LogProgress:
    """tqdm's ``update`` / ``set_postfix`` / ``close`` / iteration API, reporting with log lines.

    Args:
        iterable: iterate over it (optional).
        total: number of units of the whole job (None: unknown, no ETA).
        desc: what is being done, e.g. ``"epoch 2/5"`` or ``"apgd-ce"``.
        unit: unit name in the lines.
        every_s: seconds between lines (the first and last are always written).
        clock: time source (tests pass a fake one).
    """

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
                 every_s: float = 30.0, clock=time.monotonic):
        self.iterable, self.desc, self.unit, self.every_s, self.clock = iterable, desc, unit, every_s, clock
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.n, self.postfix = total, 0, ""
        self.start = self.last = clock()
        self.closed = False
        _log.info("%s: started%s", desc, f" ({total} {unit})" if total is not None else "")

    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def set_postfix(self, values: dict[str, Any] | None = None, **kwargs: Any) -> None:
        items = {**(values or {}), **kwargs}
        self.postfix = ", " + ", ".join(f"{k}={v}" for k, v in items.items()) if items else ""

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last >= self.every_s and (self.total is None or self.n < self.total):
            self.last = now
            _log.info("%s", self._line(now))

    def _line(self, now: float, final: bool = False) -> str:
        elapsed = now - self.start
        done = f"{self.n}/{self.total} {self.unit} ({100 * self.n / self.total:.0f}%)" if self.total else f"{self.n} {self.unit}"
        eta = ""
        if self.total and self.n and not final:
            eta = f", about {_duration(elapsed / self.n * (self.total - self.n))} left"
        return f"{self.desc}: {done} after {_duration(elapsed)}{eta}{self.postfix}"

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            _log.info("%s (done)", self._line(self.clock(), final=True))


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             enabled: bool = True, every_s: float = 30.0, leave: bool = False):
    """A tqdm bar on a terminal, a :class:`LogProgress` otherwise, or a silent bar when not ``enabled``.

    Args:
        iterable, total, desc, unit: as tqdm's.
        enabled: False shows nothing at all.
        every_s: seconds between log lines without a terminal.
        leave: keep the bar on the screen when done (terminal only).
    """
    from tqdm.auto import tqdm

    if enabled and not is_terminal():
        return LogProgress(iterable, total=total, desc=desc, unit=unit, every_s=every_s)
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled, leave=leave, dynamic_ncols=True)
