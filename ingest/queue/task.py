"""The pipeline as a queue handler: run ``jobs.run`` for one item, decide what a failure means.

* The object store unavailable (``StoreUnavailable``): wait for it, trying again with capped,
  jittered back-off, for up to ``queue.store_wait_s``. These tries use up no attempt and leave
  the item as it is (``processing``): an outage is not the item's fault. A worker asked to stop
  meanwhile hands the job back.
* Any other exception: retry after back-off while ``pipeline.max_attempts`` allows, then give
  up: ``jobs.mark_failed`` says why on the item.
* A run that starts with ``max_attempts`` earlier runs that never answered (their workers were
  killed, e.g. by bytes that crash a decoder) is given up without running again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from configs.settings import Settings
from ingest.queue import Handler, JobRun, Outcome, RetryLater, policy
from ingest.runtime import Runtime
from storage.errors import StoreUnavailable
from storage.processes import pid_alive

log = logging.getLogger(__name__)


def pipeline_handler(rt: Runtime) -> Handler:
    def handle(run: JobRun) -> Outcome:
        return run_pipeline(rt, run)

    return handle


def run_pipeline(rt: Runtime, run: JobRun) -> Outcome:
    from ingest import jobs  # the media tools load only where jobs run

    limit = rt.settings.pipeline.max_attempts
    qs = rt.settings.queue
    if run.attempts >= limit:
        jobs.mark_failed(
            rt, run.item_id, f"gave up after {run.attempts} run(s) that never finished"
        )
        return Outcome.FAILED
    waiting_since: float | None = None
    tries = 0
    while True:
        try:
            status = jobs.run(rt, run.item_id)
        except StoreUnavailable as e:
            now = time.monotonic()
            waiting_since = now if waiting_since is None else waiting_since
            waited = now - waiting_since
            if waited < qs.store_wait_s:
                delay = min(policy.store_delay(qs, tries), qs.store_wait_s - waited)
                tries += 1
                log.warning(
                    "item %s: object store unavailable (%s); trying again in %.1f s",
                    run.item_id,
                    e,
                    delay,
                )
                if _sleep(delay, run.stopping):
                    continue
                raise RetryLater(
                    0, f"handed back while waiting for the store: {e}", counts=False
                ) from e
            error = f"the object store stayed unavailable for {waited:.0f} s: {e}"
        except Exception as e:  # one item must never stop the worker
            log.exception("job for item %s failed (attempt %d)", run.item_id, run.attempts + 1)
            error = f"{type(e).__name__}: {e}"
        else:
            log.info("item %s: %s (attempt %d)", run.item_id, status, run.attempts + 1)
            return Outcome.DONE
        if run.attempts + 1 < limit:
            raise RetryLater(policy.retry_delay(qs, run.attempts), error)
        jobs.mark_failed(rt, run.item_id, error)
        return Outcome.FAILED


def remove_stale_scratch(settings: Settings) -> None:
    """Scratch folders of dead processes of this host (a worker killed mid-transcode)."""
    from ingest import jobs

    jobs.remove_stale_workdirs(settings, alive=pid_alive)


def _sleep(seconds: float, stopping: Callable[[], bool]) -> bool:
    """Sleep, looking at ``stopping`` every 0.2 s; False when it turned true."""
    deadline = time.monotonic() + seconds
    while not stopping():
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(0.2, left))
    return False
