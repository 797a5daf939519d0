"""When to run a job again: exponential back-off, capped, with jitter (pure, no I/O).

"Equal jitter": the n-th delay is drawn from ``[d/2, d]`` with ``d = min(cap, base * 2**n)``,
so retries of many items that failed together (a store outage, a database restart) spread out
instead of returning in step, and no retry comes sooner than half the nominal delay.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from configs.settings import QueueSettings


def backoff(
    attempt: int, *, base_s: float, cap_s: float, rand: Callable[[], float] = random.random
) -> float:
    """Delay before retry number ``attempt + 1`` (``attempt`` counts from 0)."""
    nominal = min(cap_s, base_s * 2.0 ** min(attempt, 62))
    return nominal / 2 + rand() * nominal / 2


def retry_delay(settings: QueueSettings, attempt: int) -> float:
    """After a failed run (it counts against ``pipeline.max_attempts``)."""
    return backoff(attempt, base_s=settings.retry_base_s, cap_s=settings.retry_cap_s)


def store_delay(settings: QueueSettings, tries: int) -> float:
    """Between two tries while the object store is unavailable (they count against nothing
    but ``queue.store_wait_s``)."""
    return backoff(
        tries, base_s=min(1.0, settings.store_retry_cap_s), cap_s=settings.store_retry_cap_s
    )
