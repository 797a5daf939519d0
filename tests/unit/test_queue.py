"""The queue's pure parts: back-off with jitter, and what the pipeline handler decides for
each kind of failure (``jobs.run`` and ``jobs.mark_failed`` replaced by fakes: no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from configs.settings import PipelineSettings, QueueSettings
from ingest import jobs
from ingest.queue import JobRun, Outcome, RetryLater, policy, task
from storage.errors import StoreUnavailable


def test_backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() -> None:
    for attempt, nominal in [(0, 2.0), (1, 4.0), (2, 8.0), (10, 300.0), (500, 300.0)]:
        low = policy.backoff(attempt, base_s=2, cap_s=300, rand=lambda: 0.0)
        high = policy.backoff(attempt, base_s=2, cap_s=300, rand=lambda: 1.0)
        assert (low, high) == (nominal / 2, nominal)


def test_backoff_spreads_retries_that_failed_together() -> None:
    delays = {round(policy.backoff(3, base_s=2, cap_s=300), 3) for _ in range(200)}
    assert len(delays) > 150
    assert all(8 <= d <= 16 for d in delays)


def test_stalled_must_be_at_least_two_heartbeats() -> None:
    with pytest.raises(ValueError, match="two heartbeats"):
        QueueSettings(heartbeat_s=5, stalled_s=9)


@dataclass
class FakeSettings:
    pipeline: PipelineSettings = field(default_factory=lambda: PipelineSettings(max_attempts=3))
    queue: QueueSettings = field(
        default_factory=lambda: QueueSettings(store_wait_s=0.6, store_retry_cap_s=0.1)
    )


@dataclass
class FakeRuntime:
    settings: FakeSettings = field(default_factory=FakeSettings)


@pytest.fixture
def pipeline(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """Scripted ``jobs.run`` outcomes; what ``mark_failed`` was told."""
    calls: dict[str, list[Any]] = {"script": [], "runs": [], "failed": []}

    def run(rt: object, item_id: str) -> str:
        calls["runs"].append(item_id)
        step = calls["script"].pop(0) if calls["script"] else "ready"
        if isinstance(step, BaseException):
            raise step
        return str(step)

    monkeypatch.setattr(jobs, "run", run)
    monkeypatch.setattr(jobs, "mark_failed", lambda _rt, _i, msg: calls["failed"].append(msg))
    return calls


def handle(attempts: int, *, stopping: bool = False) -> Outcome:
    run = JobRun(item_id="I1", attempts=attempts, stopping=lambda: stopping)
    return task.run_pipeline(FakeRuntime(), run)  # type: ignore[arg-type]


def test_store_outage_is_waited_out_without_an_attempt(pipeline: dict[str, list[Any]]) -> None:
    pipeline["script"] = [StoreUnavailable("down"), StoreUnavailable("down"), "ready"]
    assert handle(2) is Outcome.DONE  # the last attempt allowed: the waits did not count
    assert len(pipeline["runs"]) == 3
    assert pipeline["failed"] == []


def test_store_outage_longer_than_the_bound_is_a_failed_run(
    pipeline: dict[str, list[Any]],
) -> None:
    pipeline["script"] = [StoreUnavailable("down")] * 100
    with pytest.raises(RetryLater) as retry:
        handle(0)
    assert retry.value.counts
    assert "stayed unavailable" in retry.value.error
    assert handle(2) is Outcome.FAILED
    (message,) = pipeline["failed"]
    assert message.startswith("the object store stayed unavailable for")


def test_a_stopping_worker_hands_a_waiting_job_back_uncounted(
    pipeline: dict[str, list[Any]],
) -> None:
    pipeline["script"] = [StoreUnavailable("down")]
    with pytest.raises(RetryLater) as retry:
        handle(0, stopping=True)
    assert (retry.value.delay_s, retry.value.counts) == (0, False)
    assert pipeline["failed"] == []


def test_an_error_is_retried_with_backoff_then_given_up(pipeline: dict[str, list[Any]]) -> None:
    pipeline["script"] = [RuntimeError("bug"), RuntimeError("bug"), RuntimeError("bug")]
    for attempt in (0, 1):
        with pytest.raises(RetryLater) as retry:
            handle(attempt)
        assert retry.value.error == "RuntimeError: bug"
        assert 2.0 * 2**attempt / 2 <= retry.value.delay_s <= 2.0 * 2**attempt
    assert handle(2) is Outcome.FAILED
    assert pipeline["failed"] == ["RuntimeError: bug"]


def test_runs_that_never_finished_are_given_up_without_running(
    pipeline: dict[str, list[Any]],
) -> None:
    assert handle(3) is Outcome.FAILED
    assert pipeline["runs"] == []
    assert pipeline["failed"] == ["gave up after 3 run(s) that never finished"]
