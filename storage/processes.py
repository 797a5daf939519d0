"""Whether a process is still there: leases (embedded SeaweedFS, pipeline jobs) name PIDs."""

from __future__ import annotations

import os
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs. A zombie (exited, not yet reaped by its parent) is gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    try:
        # /proc/<pid>/stat: "pid (comm) state ..."; comm may hold spaces and parentheses.
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True  # no procfs here: trust the signal
    return state not in {"Z", "X"}


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot, ``/proc/<pid>/stat`` field 22): with its
    PID this names one process for good, where a PID alone is reused. None without procfs or
    when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return int(fields[19])  # field 22 counted from 1; fields here start at field 3
    except (OSError, IndexError, ValueError):
        return None


def same_process(pid: int, ticks: int | None) -> bool:
    """Whether ``pid`` is still the process that started at ``ticks`` (recorded by
    :func:`start_ticks`) and runs. Without a record, or without procfs, as :func:`pid_alive`."""
    if not pid_alive(pid):
        return False
    if ticks is None:
        return True
    now = start_ticks(pid)
    return now is None or now == ticks
