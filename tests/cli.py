"""Run the real ``liuhen`` console script as a user would, and measure its peak memory.

The environment names the test services the way an operator would (``LIUHEN_*`` variables);
anything ``LIUHEN_*`` in the caller's own environment is left out so it cannot leak in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from configs.settings import Settings

LIUHEN = Path(sys.executable).parent / "liuhen"


def cli_env(home: Path, settings: Settings | None = None) -> dict[str, str]:
    """``LIUHEN_HOME`` and, given ``settings``, its database and external S3 store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIUHEN_")}
    env["LIUHEN_HOME"] = str(home)
    if settings is not None:
        env |= {
            "LIUHEN_DATABASE__URL": settings.database_url,
            "LIUHEN_S3__EMBEDDED": "false",
            "LIUHEN_S3__ENDPOINT": settings.s3.endpoint,
            "LIUHEN_S3__ACCESS_KEY": settings.s3.access_key,
            "LIUHEN_S3__SECRET_KEY": settings.s3.secret_key.get_secret_value(),
            "LIUHEN_S3__BUCKET": settings.s3.bucket,
        }
    return env


@dataclass(frozen=True)
class CliResult:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    peak_rss: int
    """Peak resident set size of the process, in bytes (``VmHWM``; 0 if it was killed)."""

    def json(self) -> Any:
        """The one JSON document on stdout (``json.loads`` refuses anything after it)."""
        try:
            return json.loads(self.stdout)
        except ValueError as e:
            raise AssertionError(f"{self} did not print one JSON document: {e}") from None

    def __str__(self) -> str:
        return (
            f"liuhen {' '.join(self.args)} → exit {self.returncode}\n"
            f"--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}"
        )


def run_cli(*args: str | Path, env: dict[str, str], cwd: Path, timeout_s: float = 120) -> CliResult:
    """Run ``liuhen ARGS`` to its end, watching its peak memory."""
    argv = tuple(str(a) for a in args)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([str(LIUHEN), *argv], stdout=out, stderr=err, env=env, cwd=cwd)
        killed = False
        try:
            peak = watch_peak_rss(proc, timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            killed, peak = True, 0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if killed:
        stderr += f"\n(killed after {timeout_s} s)"
    return CliResult(argv, proc.returncode, stdout, stderr, peak)


def watch_peak_rss(proc: subprocess.Popen[bytes], timeout_s: float, every_s: float = 0.02) -> int:
    """Wait for ``proc``; return the last high-water mark of its resident set (``VmHWM``).

    Not ``ru_maxrss``: a child's counts the memory of the parent it was forked from (the
    kernel folds the pre-exec image into it), so under a big pytest process it says nothing
    about the child. ``VmHWM`` belongs to the exec'd image alone and only grows, so polling
    it misses at most the last ``every_s`` of the run.
    """
    status = Path(f"/proc/{proc.pid}/status")
    deadline = time.monotonic() + timeout_s
    peak = 0
    while proc.poll() is None:
        if time.monotonic() > deadline:
            raise subprocess.TimeoutExpired(proc.args, timeout_s)
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) * 1024)  # "VmHWM:  123456 kB"
        except (FileNotFoundError, ProcessLookupError):
            pass
        time.sleep(every_s)
    return peak
