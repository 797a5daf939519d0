"""Running the external tools: versions for recipes, ffmpeg under a time and memory cap, and
writing outputs so that no half-written file ever stands under its real name."""

from __future__ import annotations

import ctypes
import functools
import os
import resource
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import av
import cv2
import imageio_ffmpeg
import PIL

from ingest.errors import ToolTimeout, TranscodeError
from ingest.media.values import Limits, media_error
from ingest.problems import ProblemCode

_STDERR_TAIL_BYTES = 4096


@functools.cache
def _tool_versions(ffmpeg_exe: str) -> tuple[tuple[str, str], ...]:
    done = subprocess.run(
        [ffmpeg_exe, "-hide_banner", "-version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    first = done.stdout.splitlines()[0] if done.stdout else "unknown"
    versions = {"ffmpeg": first.split(" Copyright")[0].removeprefix("ffmpeg version ").strip()}
    versions["pyav"] = av.__version__
    for lib, parts in sorted(av.library_versions.items()):
        versions[f"pyav.{lib}"] = ".".join(str(p) for p in parts)
    versions["opencv"] = cv2.__version__
    versions["pillow"] = PIL.__version__
    versions["pillow_heif"] = _pillow_heif_version()
    return tuple(versions.items())


def tool_versions(ffmpeg_exe: str | None = None) -> dict[str, str]:
    """Versions of every media tool a recipe may depend on (cached per ffmpeg binary)."""
    return dict(_tool_versions(ffmpeg_exe or default_ffmpeg()))


def default_ffmpeg() -> str:
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def _pillow_heif_version() -> str:
    import pillow_heif

    return str(pillow_heif.__version__)


@functools.cache
def register_heif() -> None:
    """Teach Pillow HEIC once, on first use rather than at import."""
    import pillow_heif

    pillow_heif.register_heif_opener()


def file_url(path: Path) -> str:
    """An absolute ``file:`` URL: no name (``-y.mp4``, ``concat:x``) can read as an option."""
    return "file:" + str(path.resolve())


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's prctl, loaded before any fork (loading a library in a forked child may hang)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def run_tool(cmd: list[str], *, limits: Limits, workdir: Path) -> None:
    """Run a media tool with a time and memory cap; stderr goes to a file, not into memory.

    On Linux the tool is killed when the thread that started it dies, so a worker killed
    mid-transcode leaves no ffmpeg running on.
    """
    prctl = _prctl()
    parent = os.getpid()

    def cap_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # the parent died before the line above took effect
                os._exit(1)

    with tempfile.TemporaryFile(dir=workdir) as err:
        try:
            done = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                timeout=limits.timeout_s,
                preexec_fn=cap_memory,  # only setrlimit runs between fork and exec
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise media_error(
                ToolTimeout,
                ProblemCode.TOOL_TIMEOUT,
                f"{Path(cmd[0]).name} ran past {limits.timeout_s:g} s",
            ) from exc
        if done.returncode != 0:
            raise media_error(
                TranscodeError,
                ProblemCode.TRANSCODE_FAILED,
                f"{Path(cmd[0]).name} exited with {done.returncode}: {_stderr_tail(err)}",
            )


def _stderr_tail(err: IO[bytes]) -> str:
    size = err.seek(0, os.SEEK_END)
    err.seek(max(0, size - _STDERR_TAIL_BYTES))
    lines = [ln.strip() for ln in err.read().decode("utf-8", "replace").splitlines()]
    unique = list(dict.fromkeys(ln for ln in lines if ln))
    return "; ".join(unique[-5:])[-600:] or "no error output"


def partial_path(final: Path) -> Path:
    return final.with_name(f".{final.stem}.partial{final.suffix}")


def write_atomic(final: Path, data: bytes) -> None:
    partial = partial_path(final)
    partial.write_bytes(data)
    os.replace(partial, final)
