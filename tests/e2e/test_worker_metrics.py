"""``liuhen worker --metrics-port``: a worker is a scrape target of its own, since the stage
durations and errors of the jobs it runs live in its process, not in an API's."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from configs.settings import Settings
from tests.cli import LIUHEN, cli_env, run_cli
from tests.integration import mediagen as gen
from tests.integration.devicekit import free_port


def _pipeline_runs(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "liuhen_stage_duration_seconds_count" and s.labels == {
                "stage": "pipeline"
            }:
                return s.value
    return 0.0


def test_a_worker_serves_the_metrics_of_the_jobs_it_runs(
    settings: Settings, tmp_path: Path
) -> None:
    env = cli_env(tmp_path / "home", settings)
    sealed = run_cli("ingest", gen.wav(tmp_path), "--case", "M-1", env=env, cwd=tmp_path)
    assert sealed.returncode == 0, sealed
    port = free_port()
    worker = subprocess.Popen(
        [str(LIUHEN), "worker", "--threads", "1", "--metrics-port", str(port)],
        env=env,
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline, runs = time.monotonic() + 60, 0.0
        while runs < 1:
            assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
            assert time.monotonic() < deadline, "the worker's metrics never showed the job"
            try:
                runs = _pipeline_runs(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(0.3)
        assert runs == 1
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.stderr is not None
    assert f"metrics on http://127.0.0.1:{port}/metrics" in worker.stderr.read()
