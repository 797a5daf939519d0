"""Benchmark liuhen's proxy and stills against bare ffmpeg on a generated body-camera clip.

    .venv/bin/python bench/transcode.py [--seconds 60] [--repeat 3]

Generates a 1920x1080 30 fps H.264 High + AAC clip in a temporary folder, then, in alternating
order so that a busy machine hurts both sides alike, times (median of ``--repeat`` runs):

- ``media.make_proxy`` against the bare command it runs (``media.proxy_command``, same
  arguments) started with ``subprocess.run``: liuhen's overhead, goal at most 1.05x;
- the real-time factor of the proxy: clip duration / proxy time;
- ``media.make_thumbnails`` + ``media.make_contact_sheet`` against ONE ffmpeg thumbnail
  (``ffmpeg -ss <mid> -i clip -frames:v 1 out.jpg``).

Each figure is printed on one line: name, seconds, ratio.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# Run as a script, this folder comes first on sys.path, and bench/ingest.py would shadow the
# ingest package: put the repository root first.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import imageio_ffmpeg

from ingest import media

OVERHEAD_GOAL = 1.05


def _ffmpeg() -> str:
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def make_clip(directory: Path, seconds: int) -> Path:
    """A body-camera-like clip: moving test pattern, 440 Hz tone, creation time and place."""
    out = directory / "bodycam-1080p.mp4"
    subprocess.run(
        [
            _ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=30:duration={seconds}",
            "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
            "-c:v", "libx264", "-profile:v", "high", "-pix_fmt", "yuv420p", "-preset", "veryfast",
            "-c:a", "aac", "-metadata", "creation_time=2026-03-01T08:00:00Z",
            "-metadata", "location=+40.8423+111.7490/", str(out),
        ],
        check=True,
        timeout=1800,
    )  # fmt: skip
    return out


def _clean(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)


def alternate(a: Callable[[], object], b: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median seconds of ``a`` and of ``b``, run ``repeat`` times each as a, b, b, a, a, b, ..."""
    times: dict[str, list[float]] = {"a": [], "b": []}
    for i in range(repeat):
        order = [("a", a), ("b", b)] if i % 2 == 0 else [("b", b), ("a", a)]
        for key, fn in order:
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    return statistics.median(times["a"]), statistics.median(times["b"])


def figure(name: str, seconds: float, ratio: str) -> None:
    print(f"{name:<46} {seconds:>8.3f} s   {ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="clip length (default 60)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (default 3)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="liuhen-bench-transcode-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        clip = make_clip(root, args.seconds)
        made_in = time.perf_counter() - start
        info = media.probe(clip)
        duration = info.duration or float(args.seconds)
        print(
            f"clip: {duration:.1f} s {info.width}x{info.height} {info.fps:.0f} fps "
            f"{info.video_codec} {info.video_profile} + {info.audio_codec}, "
            f"{clip.stat().st_size / 1e6:.1f} MB (generated in {made_in:.1f} s); "
            f"median of {args.repeat}, alternating order"
        )
        exe = _ffmpeg()
        start = time.perf_counter()
        media.tool_versions(exe)  # once per process, cached: kept out of the timed runs
        versions_s = time.perf_counter() - start

        limits = media.Limits(timeout_s=1800)
        ours_dir, bare_dir = root / "liuhen", root / "bare"

        def liuhen_proxy() -> None:
            _clean(ours_dir)
            media.make_proxy(clip, info, ours_dir, limits=limits, ffmpeg_exe=exe)

        bare_cmd = media.proxy_command(clip, info, bare_dir / "proxy.mp4", exe)

        def bare_proxy() -> None:
            _clean(bare_dir)
            subprocess.run(bare_cmd, check=True, timeout=1800)

        proxy_s, bare_s = alternate(liuhen_proxy, bare_proxy, args.repeat)

        stills_dir, one_dir = root / "stills", root / "one"
        mid = f"{duration / 2:.3f}"
        one_cmd = [exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-ss", mid]
        one_cmd += ["-i", str(clip), "-frames:v", "1", str(one_dir / "out.jpg")]

        def liuhen_stills() -> None:
            _clean(stills_dir)
            thumbs = media.make_thumbnails(clip, info, stills_dir)
            media.make_contact_sheet(thumbs, stills_dir)

        def one_thumbnail() -> None:
            _clean(one_dir)
            subprocess.run(one_cmd, check=True, timeout=600)

        stills_s, one_s = alternate(liuhen_stills, one_thumbnail, args.repeat)
        count = len(list(stills_dir.glob("thumb-*.jpg")))

    print(f"{'figure':<46} {'seconds':>10}   ratio")
    verdict = "ok" if proxy_s / bare_s <= OVERHEAD_GOAL else "OVER GOAL"
    figure(
        "proxy, liuhen media.make_proxy",
        proxy_s,
        f"{proxy_s / bare_s:.3f}x bare ffmpeg (goal <= {OVERHEAD_GOAL}x: {verdict})",
    )
    figure("proxy, bare ffmpeg (same arguments)", bare_s, "1.000x")
    figure(
        "proxy real-time factor (clip / liuhen proxy)",
        proxy_s,
        f"{duration / proxy_s:.2f}x real time ({duration:.1f} s of video)",
    )
    figure(
        f"{count} thumbnails + contact sheet, liuhen",
        stills_s,
        f"{stills_s / one_s:.2f}x one ffmpeg thumbnail",
    )
    figure("one ffmpeg thumbnail (-ss mid -frames:v 1)", one_s, "1.00x")
    figure("tool versions (once per process, not above)", versions_s, "-")


if __name__ == "__main__":
    main()
