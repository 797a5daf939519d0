"""How long a person waits for a command on the embedded default (issue: embedded services).

One temporary home; a 1 MB photo sealed once. Then, alternating, each as a fresh process:
``python -c "import api.cli"`` (the baseline: what any command pays before it does anything),
``liuhen item ID --json`` and ``liuhen get ID -o FILE``, on a warm home (the server running)
and on a cold one (``liuhen services stop`` before each run). Prints medians and each one's
ratio to the baseline measured in the same run. Goals: warm item <= 2x, warm get <= 3x.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
LIUHEN = str(Path(sys.executable).parent / "liuhen")


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIUHEN_")}
    env["LIUHEN_HOME"] = str(home)
    return env


def _run(args: list[str], env: dict[str, str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(args, env=env, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - t0


def _line(name: str, seconds: float, base: float, note: str) -> None:
    print(f"{name:<34} {seconds:8.3f} s  {seconds / base:6.2f}x {note}")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="liuhen-bench-cli-") as tmp:
        root = Path(tmp)
        home = root / "home"
        env = _env(home)
        photo = root / "photo.jpg"
        photo.write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(1024 * 1024))
        out = subprocess.run(
            [LIUHEN, "ingest", str(photo), "--json"],
            env=env,
            cwd=root,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        item_id = json.loads(out)["items"][0]["id"]
        baseline = [sys.executable, "-c", "import api.cli"]
        item = [LIUHEN, "item", item_id, "--json"]
        get = [LIUHEN, "get", item_id, "-o", str(root / "copy.jpg")]
        stop = [LIUHEN, "services", "stop"]
        samples: dict[str, list[float]] = {k: [] for k in ("import", "item", "get")}
        cold: dict[str, list[float]] = {k: [] for k in ("item", "get")}
        try:
            _run(get, env, root)  # warm the server and the page cache once
            for _ in range(ROUNDS):
                samples["import"].append(_run(baseline, env, root))
                samples["item"].append(_run(item, env, root))
                samples["get"].append(_run(get, env, root))
            for _ in range(max(1, ROUNDS // 2)):
                _run(stop, env, root)
                cold["item"].append(_run(item, env, root))
                _run(stop, env, root)
                cold["get"].append(_run(get, env, root))
        finally:
            subprocess.run(stop, env=env, cwd=root, capture_output=True)
        base = statistics.median(samples["import"])
        _line('python -c "import api.cli"', base, base, "(baseline)")
        for name, goal in (("item", 2.0), ("get", 3.0)):
            _line(
                f"warm liuhen {name}", statistics.median(samples[name]), base, f"(goal <= {goal}x)"
            )
        for name in ("item", "get"):
            _line(f"cold liuhen {name}", statistics.median(cold[name]), base, "")
        print(f"({ROUNDS} warm rounds, {max(1, ROUNDS // 2)} cold, alternating; medians)")


if __name__ == "__main__":
    main()
