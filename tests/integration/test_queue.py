"""The queue on real services: a job commits or rolls back with its item, one waiting job per
item, stalled jobs put back by the database's clock, retries due by the database's clock, and a
pipeline that waits out an object-store outage (a private SeaweedFS stopped mid-run)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from procrastinate import exceptions as pexc
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from configs.settings import Settings
from ingest import media
from ingest.intake import seal_file
from ingest.manifest import Manifest
from ingest.queue import BackgroundWorkers, JobRun, JobState, Outcome, RetryLater, open_queue
from ingest.queue import procrastinate as pq
from ingest.queue.procrastinate import ProcrastinateQueue
from ingest.runtime import Runtime, open_runtime
from storage import people as storage_people
from storage import repository as repo
from storage.errors import IndexUnavailable
from storage.seaweed import EmbeddedS3, EmbeddedSeaweed
from storage.tables import Item
from tests.conftest import SettingsFactory
from tests.integration import mediagen as gen
from tests.tcpproxy import cuttable


def seal(rt: Runtime, path: Path) -> str:
    return seal_file(rt, path, Manifest(file_name=path.name), actor="test").item_id


def items(rt: Runtime) -> int:
    with rt.sessions() as session:
        return int(session.execute(select(func.count()).select_from(Item)).scalar_one())


def test_a_seal_that_rolls_back_leaves_no_job(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job is deferred inside the sealing transaction: the index fails after it (at the
    hold check, the last step), so the transaction rolls back, and neither the item nor its
    job exists."""
    photo = gen.small_h264(tmp_path)

    def refuse(*_: Any, **__: Any) -> set[str]:
        raise IndexUnavailable("index gone (test)")

    monkeypatch.setattr(storage_people, "held_items", refuse)
    with pytest.raises(IndexUnavailable, match="index gone"):
        seal(rt, photo)
    assert (items(rt), rt.queue.depth()) == (0, 0)
    monkeypatch.undo()
    item_id = seal(rt, photo)
    assert items(rt) == 1
    assert rt.queue.depth() == 1
    job = rt.queue.job(item_id)
    assert job is not None and (job.state, job.attempts) == (JobState.QUEUED, 0)


def test_defer_twice_while_waiting_queues_one_job(rt: Runtime, tmp_path: Path) -> None:
    item_id = seal(rt, gen.small_h264(tmp_path))
    with rt.sessions() as session, session.begin():
        rt.queue.defer(session, item_id)
        rt.queue.defer(session, item_id)
    assert rt.queue.depth() == 1
    assert rt.queue.oldest_age() >= 0


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_job_asked_for_while_it_runs_waits_for_that_run(rt: Runtime, tmp_path: Path) -> None:
    """The item's job is deferred again while it runs (a track linked meanwhile): an idle
    worker beside it must not run the item at the same time; it runs once more afterwards."""
    item_id = seal(rt, gen.wav(tmp_path))
    started, release, guard = threading.Event(), threading.Event(), threading.Lock()
    runs: list[int] = []
    running = [0, 0]  # now, most at once

    def handler(run: JobRun) -> Outcome:
        with guard:
            runs.append(run.attempts)
            running[0] += 1
            running[1] = max(running)
        started.set()
        try:
            assert release.wait(60)
        finally:
            with guard:
                running[0] -= 1
        return Outcome.DONE

    queue = open_queue(rt.settings, rt.engine, rt.sessions, handler)
    workers = BackgroundWorkers(queue, 2)
    workers.start()
    try:
        assert started.wait(60), "the job did not start"
        with rt.sessions() as session, session.begin():
            queue.defer(session, item_id)
        job = queue.job(item_id)  # SQLite: the running job; procrastinate: a new one waits
        assert job is not None and job.state in {JobState.RUNNING, JobState.QUEUED}
        time.sleep(3 * rt.settings.queue.poll_s)  # the idle worker looks a few times
        assert runs == [0]
        release.set()
        deadline = time.monotonic() + 60
        while len(runs) < 2 or queue.depth():
            assert time.monotonic() < deadline, f"runs {runs}, depth {queue.depth()}"
            time.sleep(0.1)
    finally:
        release.set()
        workers.stop(timeout=60)
    assert runs == [0, 0]
    assert running[1] == 1
    job = queue.job(item_id)
    assert job is not None and (job.state, job.attempts) == (JobState.DONE, 0)


@pytest.mark.parametrize("backend", ["postgresql"])
def test_stalled_worker_jobs_are_put_back_by_database_time(rt: Runtime, tmp_path: Path) -> None:
    queue = rt.queue
    assert isinstance(queue, ProcrastinateQueue)
    dead_id, alive_id = seal(rt, gen.small_h264(tmp_path)), seal(rt, gen.wav(tmp_path))
    stalled = rt.settings.queue.stalled_s
    with rt.engine.begin() as conn:
        # Two workers as procrastinate records them: one silent for longer than stalled_s
        # (by the database's clock), one that just beat; each holds one job.
        dead = conn.execute(
            text(
                "INSERT INTO procrastinate_workers (last_heartbeat)"
                " VALUES (now() - make_interval(secs => :s)) RETURNING id"
            ),
            {"s": stalled + 1},
        ).scalar_one()
        alive = conn.execute(
            text("INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id")
        ).scalar_one()
        for item_id, worker in ((dead_id, dead), (alive_id, alive)):
            conn.execute(
                text(
                    "UPDATE procrastinate_jobs SET status = 'doing', worker_id = :w WHERE lock = :i"
                ),
                {"w": worker, "i": item_id},
            )
    assert queue.recover_stalled() == 1
    back, running = queue.job(dead_id), queue.job(alive_id)
    assert back is not None and (back.state, back.attempts) == (JobState.QUEUED, 1)
    assert running is not None and running.state == JobState.RUNNING
    assert queue.recover_stalled() == 0


def _blocked_worker(
    make_settings: SettingsFactory, tmp_path: Path, **overrides: Any
) -> tuple[Runtime, ProcrastinateQueue, str, threading.Event, threading.Event, list[str]]:
    """A runtime with fast beats (0.5 s, stalled after 1.5 s), one sealed item, and a queue
    whose handler says it started and then waits to be released; its runs are listed."""
    rt = open_runtime(make_settings(queue={"heartbeat_s": 0.5, "stalled_s": 1.5}, **overrides))
    item_id = seal(rt, gen.wav(tmp_path))
    started, release, runs = threading.Event(), threading.Event(), []

    def handler(run: JobRun) -> Outcome:
        runs.append(run.item_id)
        started.set()
        assert release.wait(60)
        return Outcome.DONE

    queue = open_queue(rt.settings, rt.engine, rt.sessions, handler)
    assert isinstance(queue, ProcrastinateQueue)
    return rt, queue, item_id, started, release, runs


def _ran_once_then_close(
    rt: Runtime, queue: ProcrastinateQueue, item_id: str, runs: list[str]
) -> None:
    """The blocked worker's job ended done, after one run and no attempt used."""
    try:
        job = queue.job(item_id)
        assert job is not None and (job.state, job.attempts) == (JobState.DONE, 0)
        assert runs == [item_id]
    finally:
        rt.close()


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_stopping_worker_beats_until_its_job_ends(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    """A stopping worker lets its running job finish and beats meanwhile: the job is not put
    back (to run a second time beside itself) however long it takes."""
    rt, queue, item_id, started, release, runs = _blocked_worker(make_settings, tmp_path)
    stop = threading.Event()
    worker = threading.Thread(target=queue.run_worker, kwargs={"concurrency": 1, "stop": stop})
    worker.start()
    try:
        assert started.wait(60), "the job did not start"
        stop.set()
        time.sleep(3 * rt.settings.queue.stalled_s)
        assert queue.recover_stalled() == 0
        assert worker.is_alive()  # still waiting for its job
    finally:
        release.set()
        worker.join(60)
    assert not worker.is_alive()
    _ran_once_then_close(rt, queue, item_id, runs)


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_failed_heartbeat_is_not_the_last(
    make_settings: SettingsFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One heartbeat fails (the database away for a moment): the worker beats again at the
    next one, so its running job is not taken for stalled."""
    rt, queue, item_id, started, release, runs = _blocked_worker(make_settings, tmp_path)
    real_beat = pq._beat_on
    failed: list[int] = []

    async def beat_failing_once(conn: Any, worker_id: int) -> None:
        if not failed:
            failed.append(worker_id)
            raise psycopg.OperationalError("the database went away (test)")
        await real_beat(conn, worker_id)

    monkeypatch.setattr(pq, "_beat_on", beat_failing_once)
    workers = BackgroundWorkers(queue, 1)
    workers.start()
    try:
        assert started.wait(60), "the job did not start"
        time.sleep(3 * rt.settings.queue.stalled_s)
        assert failed, "no heartbeat was tried"
        with rt.engine.connect() as conn:
            ages = conn.execute(
                text("SELECT EXTRACT(EPOCH FROM now() - last_heartbeat) FROM procrastinate_workers")
            ).scalars()
            assert [float(a) < rt.settings.queue.stalled_s for a in ages] == [True]
        assert queue.recover_stalled() == 0
        release.set()
        assert queue.wait_for([item_id], timeout_s=60) == set()
    finally:
        release.set()
        workers.stop(timeout=60)
    _ran_once_then_close(rt, queue, item_id, runs)


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_job_end_the_database_missed_is_written_again(
    rt: Runtime,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The database is away at the moment a job ends: the end is written once it answers,
    instead of leaving the job ``doing`` under a live worker for ever."""
    item_id = seal(rt, gen.wav(tmp_path))
    real_write = pq._JobManager._fenced
    refused: list[int | None] = []

    async def write_failing_once(self: pq._JobManager, job: Any, *a: Any, **kw: Any) -> None:
        if not refused:
            refused.append(job.id)
            gone = psycopg.OperationalError("the connection was closed (test)")
            raise pexc.ConnectorException("finish_job failed") from gone
        await real_write(self, job, *a, **kw)

    monkeypatch.setattr(pq._JobManager, "_fenced", write_failing_once)
    queue = open_queue(rt.settings, rt.engine, rt.sessions, lambda _run: Outcome.DONE)
    with caplog.at_level(logging.WARNING, logger="ingest.queue.procrastinate"):
        assert queue.wait_for([item_id], timeout_s=30) == set()
    assert refused
    job = queue.job(item_id)
    assert job is not None and (job.state, job.attempts) == (JobState.DONE, 0)
    assert "the database did not take its end" in caplog.text


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_retry_is_due_by_the_database_clock(rt: Runtime, tmp_path: Path) -> None:
    item_id = seal(rt, gen.wav(tmp_path))
    runs: list[JobRun] = []

    def handler(run: JobRun) -> Outcome:
        runs.append(run)
        raise RetryLater(600, "not now (test)")

    queue = open_queue(rt.settings, rt.engine, rt.sessions, handler)
    assert queue.wait_for([item_id], timeout_s=3) == {item_id}  # retried in 10 min: not done
    assert [r.attempts for r in runs] == [0]
    with rt.engine.connect() as conn:
        due_in = conn.execute(
            text(
                "SELECT EXTRACT(EPOCH FROM scheduled_at - now()) FROM procrastinate_jobs"
                " WHERE lock = :i"
            ),
            {"i": item_id},
        ).scalar_one()
    assert 590 < float(due_in) <= 600
    job = queue.job(item_id)
    assert job is not None and (job.state, job.attempts) == (JobState.QUEUED, 1)


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_worker_outlives_its_database_connections(rt: Runtime, tmp_path: Path) -> None:
    """The database drops every connection (a restart or failover does that): the worker
    starts again on new connections and runs the next job, and the next seal finds its pooled
    connection dead and takes a new one (it used to fail: the ping's error was translated)."""
    done: list[str] = []

    def handler(run: JobRun) -> Outcome:
        done.append(run.item_id)
        return Outcome.DONE

    queue = open_queue(rt.settings, rt.engine, rt.sessions, handler)
    stop = threading.Event()
    worker = threading.Thread(target=queue.run_worker, kwargs={"concurrency": 2, "stop": stop})
    worker.start()
    try:
        first = seal(rt, gen.wav(tmp_path))
        wait_until(lambda: (j := queue.job(first)) is not None and j.state is JobState.DONE)
        with rt.engine.connect() as conn:
            killed = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        assert killed >= 2  # the worker's pool and its listener at least
        second = seal(rt, gen.small_h264(tmp_path))
        wait_until(lambda: (j := queue.job(second)) is not None and j.state is JobState.DONE, 30)
    finally:
        stop.set()
        worker.join(30)
    assert not worker.is_alive()
    assert done.count(first) == 1 and done.count(second) == 1


def wait_until(condition: Any, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_job_handed_back_unfinished_keeps_its_attempts(rt: Runtime, tmp_path: Path) -> None:
    """A worker stopping while its job waits for the store hands it back: that run does not
    count, on either queue (procrastinate's own retry would count it)."""
    item_id = seal(rt, gen.wav(tmp_path))
    calls: list[int] = []

    def handler(run: JobRun) -> Outcome:
        calls.append(run.attempts)
        if len(calls) <= hand_backs:
            raise RetryLater(0, "handed back (test)", counts=False)
        return Outcome.DONE

    hand_backs = rt.settings.pipeline.max_attempts + 1  # more than would give the item up
    queue = open_queue(rt.settings, rt.engine, rt.sessions, handler)
    assert queue.wait_for([item_id], timeout_s=60) == set()
    assert calls == [0] * (hand_backs + 1)
    job = queue.job(item_id)
    assert job is not None and job.state is JobState.DONE and job.attempts == 0


# --------------------------------------------------------------------------- store outage


@pytest.fixture
def private_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[EmbeddedSeaweed, EmbeddedS3]]:
    """A SeaweedFS of this test alone, restarted on the same ports (kept in its folder)."""
    server = EmbeddedSeaweed(tmp_path / "seaweed")
    s3 = server.start()
    yield server, s3
    server.release()
    server.stop()


def store_settings(make_settings: SettingsFactory, s3: EmbeddedS3, **queue: Any) -> Settings:
    return make_settings(
        s3={
            "endpoint": s3.endpoint,
            "access_key": s3.access_key,
            "secret_key": s3.secret_key,
            "bucket": "outage",
            # what these tests watch is the queue's wait; the store's own retries (20 s by
            # default) would only be waited out first
            "retry_s": 1.0,
        },
        pipeline={"max_attempts": 1, "thumbnails": 3},
        queue={"store_retry_cap_s": 1.0, **queue},
    )


def test_pipeline_waits_for_the_store_to_come_back(
    make_settings: SettingsFactory,
    private_store: tuple[EmbeddedSeaweed, EmbeddedS3],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The store stops while the job transcodes and starts again seconds later: the job waits
    (one attempt allowed, none used) and the item ends ``ready`` with all its derivatives."""
    server, s3 = private_store
    rt = open_runtime(store_settings(make_settings, s3))
    try:
        item_id = seal(rt, gen.small_h264(tmp_path))
        started, go = threading.Event(), threading.Event()
        real_derive = media.derive

        def gated(*args: Any, **kwargs: Any) -> Any:
            started.set()
            assert go.wait(60)
            return real_derive(*args, **kwargs)

        monkeypatch.setattr(media, "derive", gated)
        workers = BackgroundWorkers(rt.queue, 1)
        caplog.set_level(logging.WARNING, logger="ingest.queue.task")
        workers.start()
        try:
            assert started.wait(60), "the job did not start"
            server.stop()  # the store is gone while the job holds its work
            go.set()
            deadline = time.monotonic() + 60
            while "object store unavailable" not in caplog.text:
                assert time.monotonic() < deadline, "the job never met the outage"
                time.sleep(0.1)
            time.sleep(2)  # a few tries fail meanwhile
            server.start()
            assert rt.queue.wait_for([item_id], timeout_s=120) == set()
        finally:
            go.set()
            workers.stop(timeout=60)
        with rt.sessions() as session:
            item = repo.get_item(session, item_id=item_id)
            roles = {d.role for d in repo.derivatives_of(session, item_id=item_id)}
        assert item.status == "ready"
        assert {p["code"] for p in item.problems} == {"capture_time_unknown"}  # a bare clip
        assert roles == {"proxy", "contact", "thumb-000", "thumb-001", "thumb-002"}
        job = rt.queue.job(item_id)
        assert job is not None and (job.state, job.attempts) == (JobState.DONE, 0)
        assert caplog.text.count("object store unavailable") >= 2
    finally:
        rt.close()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_wait_for_the_store_is_bounded(
    make_settings: SettingsFactory,
    private_store: tuple[EmbeddedSeaweed, EmbeddedS3],
    tmp_path: Path,
) -> None:
    server, s3 = private_store
    rt = open_runtime(store_settings(make_settings, s3, store_wait_s=1.5))
    try:
        item_id = seal(rt, gen.wav(tmp_path))
        server.stop()
        started = time.monotonic()
        assert rt.queue.wait_for([item_id], timeout_s=60) == set()
        assert time.monotonic() - started >= 1.5
        with rt.sessions() as session:
            item = repo.get_item(session, item_id=item_id)
        assert item.status == "unprocessable"
        (problem,) = item.problems
        assert problem["code"] == "pipeline_failed"
        assert "the object store stayed unavailable for" in problem["message"]
    finally:
        server.start()
        rt.close()


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_database_outage_longer_than_stalled_runs_no_job_twice(
    make_settings: SettingsFactory, database_url: str, tmp_path: Path
) -> None:
    """The network to the database is cut for three stall periods while a job runs: nobody
    could beat, so every heartbeat is old when it returns; the live worker's job is still not
    put back beside itself, and its end is written once."""
    url = make_url(database_url)
    with cuttable((url.host or "127.0.0.1", url.port or 5432)) as proxy:
        through = url.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
        rt, queue, item_id, started, release, runs = _blocked_worker(
            make_settings, tmp_path, database={"url": through}
        )
        stop = threading.Event()
        workers = [  # two: the idle one would take the job if it were put back
            threading.Thread(target=queue.run_worker, kwargs={"concurrency": 1, "stop": stop})
            for _ in range(2)
        ]
        for worker in workers:
            worker.start()
        try:
            assert started.wait(60), "the job did not start"
            proxy.cut()
            time.sleep(3 * rt.settings.queue.stalled_s)
            proxy.restore()
            # Lookers wait stalled_s once back; this is past that, with beats heard again.
            time.sleep(rt.settings.queue.stalled_s + 3 * rt.settings.queue.heartbeat_s)
            release.set()
            wait_until(
                lambda: (j := queue.job(item_id)) is not None and j.state is JobState.DONE, 30
            )
            time.sleep(2 * rt.settings.queue.heartbeat_s)  # a second run would have started
        finally:
            release.set()
            stop.set()
            for worker in workers:
                worker.join(60)
        assert not any(worker.is_alive() for worker in workers)
        _ran_once_then_close(rt, queue, item_id, runs)


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_wait_leaves_the_work_to_live_workers(rt: Runtime, tmp_path: Path) -> None:
    """``ingest --wait`` with workers heard of only waits (it must not take on their queue);
    once none is heard of, it runs the job itself."""
    item_id = seal(rt, gen.wav(tmp_path))
    ran: list[str] = []

    def handler(run: JobRun) -> Outcome:
        ran.append(run.item_id)
        return Outcome.DONE

    queue = open_queue(rt.settings, rt.engine, rt.sessions, handler)
    assert isinstance(queue, ProcrastinateQueue)
    with rt.engine.begin() as conn:  # a worker on another machine, beating
        elsewhere = conn.execute(
            text("INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id")
        ).scalar_one()
    assert queue.live_workers() == 1
    assert queue.wait_for([item_id], timeout_s=2) == {item_id}
    assert ran == []
    with rt.engine.begin() as conn:  # it went away
        conn.execute(text("DELETE FROM procrastinate_workers WHERE id = :i"), {"i": elsewhere})
    assert queue.wait_for([item_id], timeout_s=60) == set()
    assert ran == [item_id]


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_job_end_is_written_only_by_the_run_that_has_the_job(rt: Runtime, tmp_path: Path) -> None:
    """The fence on job ends: a run whose job was put back and taken again (by another
    worker, or by its own after the put-back counted an attempt) ends nothing."""
    item_id = seal(rt, gen.wav(tmp_path))
    with rt.engine.begin() as conn:
        mine, other = (
            conn.execute(
                text("INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id")
            ).scalar_one()
            for _ in range(2)
        )
        conn.execute(
            text(
                "UPDATE procrastinate_jobs SET status = 'doing', worker_id = :w, attempts = 1"
                " WHERE lock = :i"
            ),
            {"w": mine, "i": item_id},
        )
        job_id = conn.execute(
            text("SELECT id FROM procrastinate_jobs WHERE lock = :i"), {"i": item_id}
        ).scalar_one()
    url = pq.libpq_url(rt.engine)

    def end(query: str, workers: list[int], attempts: int, **args: Any) -> int:
        with psycopg.connect(url, autocommit=True) as conn:
            cur = conn.execute(
                query,
                {"job_id": job_id, "workers": workers, "attempts": attempts, **args},
            )
            return len(cur.fetchall())

    finish = {"status": "succeeded"}
    retry = {"step": 1, "delay_s": 0, "new_priority": None, "new_queue_name": None,
             "new_lock": None}  # fmt: skip
    assert end(pq.FINISH_BY_ITS_WORKER, [other], 1, **finish) == 0  # another worker's run
    assert end(pq.FINISH_BY_ITS_WORKER, [mine], 0, **finish) == 0  # an earlier run of mine
    assert end(pq.RETRY_BY_DATABASE_TIME, [mine], 0, **retry) == 0
    job = rt.queue.job(item_id)
    assert job is not None and job.state is JobState.RUNNING
    assert end(pq.FINISH_BY_ITS_WORKER, [mine], 1, **finish) == 1  # the run that has it
    job = rt.queue.job(item_id)
    assert job is not None and job.state is JobState.DONE
