"""One thread that runs a step every so often until stopped: the serving process's chores
(signing leaves nobody asked a receipt for, sweeping uploads)."""

from __future__ import annotations

import threading
from collections.abc import Callable


def every(
    period_s: float,
    step: Callable[[], None],
    *,
    name: str,
    first_s: float | None = None,
    join_s: float = 30.0,
) -> Callable[[], None]:
    """Run ``step`` after ``first_s`` (default ``period_s``), then every ``period_s``, on a
    daemon thread; returns the function that stops it (waiting up to ``join_s`` for a step
    under way). ``step`` handles its own errors: one that escapes ends the thread."""
    stop = threading.Event()

    def run() -> None:
        wait = period_s if first_s is None else first_s
        while not stop.wait(wait):
            wait = period_s
            step()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()

    def halt() -> None:
        stop.set()
        thread.join(timeout=join_s)

    return halt
