"""The clock the live core reads: presence expiry, typing timeouts, throttles, budgets.

Code takes a `Clock` instead of calling `time` or `asyncio.sleep` itself, so that tests
drive time with a `ManualClock` (`clock.advance(5)`) and never sleep to wait for it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Any, Protocol


class Timer(Protocol):
    """A scheduled callback that can be cancelled."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """What the live core needs of time."""

    def now(self) -> float:
        """Monotonic seconds, for intervals in this process."""

    def time(self) -> float:
        """Wall-clock seconds, for expiry times shared with other processes (Redis)."""

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        """Run `callback(*args)` on the event loop after `delay` seconds."""

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds`."""


class SystemClock:
    """The real clock: the event loop's time and timers."""

    def now(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback, *args)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _ManualTimer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock that moves only when a test calls `advance()`; timers and sleeps then fire."""

    def __init__(self, start: float = 1_000.0, wall: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall - start
        self._order = itertools.count()
        self._due: list[tuple[float, int, _ManualTimer, Callable[..., Any], tuple[Any, ...]]] = []

    def now(self) -> float:
        return self._now

    def time(self) -> float:
        return self._now + self._wall_offset

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        timer = _ManualTimer()
        heapq.heappush(self._due, (self._now + delay, next(self._order), timer, callback, args))
        return timer

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        timer = self.call_later(seconds, wake)
        try:
            await future
        finally:
            timer.cancel()

    def advance(self, seconds: float) -> None:
        """Move time forward, running every timer (and waking every sleep) due by then."""
        end = self._now + seconds
        while self._due and self._due[0][0] <= end:
            when, _, timer, callback, args = heapq.heappop(self._due)
            self._now = max(self._now, when)
            if not timer.cancelled:
                callback(*args)
        self._now = end

    def pending(self) -> int:
        """Timers not yet run nor cancelled."""
        return sum(1 for entry in self._due if not entry[2].cancelled)


system = SystemClock()
