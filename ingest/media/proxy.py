"""The playback proxy: a browser-playable MP4 (H.264 High + AAC, at most 720p, upright,
faststart) or an AAC M4A, made by the ffmpeg binary; remuxed when the source already fits."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import ffmpeg

from ingest.errors import TranscodeError
from ingest.media.tools import default_ffmpeg, file_url, partial_path, run_tool, tool_versions
from ingest.media.values import Derived, Limits, ProbeResult, Recipe, media_error
from ingest.problems import ProblemCode

PROXY_MAX_SHORT_SIDE = 720
"""At most 720p: the short side, so portrait clips keep 720 × 1280."""
# Profiles every browser's H.264 decoder plays; anything else is re-encoded.
_PLAYABLE_H264_PROFILES = frozenset({"Baseline", "Constrained Baseline", "Main", "High"})


@dataclass(frozen=True)
class _ProxyPlan:
    command: list[str]
    role_ext: str
    media_type: str
    params: dict[str, object]


# Global options first: ffmpeg ignores options that trail the last output.
_FFMPEG_GLOBALS = ("-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-y")


def _even(x: float) -> int:
    return max(2, round(x / 2) * 2)


def _proxy_size(info: ProbeResult) -> tuple[int, int] | None:
    """Displayed size scaled so the short side is at most 720 (720p), both dimensions even;
    None when the probe did not learn the size (ffmpeg then works it out from the frames)."""
    if not info.width or not info.height:
        return None
    w, h = info.width, info.height
    scale = min(1.0, PROXY_MAX_SHORT_SIDE / max(1, min(w, h)))
    return _even(w * scale), _even(h * scale)


_SHORT = PROXY_MAX_SHORT_SIDE
_SCALE_FROM_FRAMES = (
    f"scale=w='if(lt(iw,ih),trunc(min({_SHORT},iw)/2)*2,-2)'"
    f":h='if(lt(iw,ih),-2,trunc(min({_SHORT},ih)/2)*2)'"
)
"""The same rule as :func:`_proxy_size`, in ffmpeg's terms, for a size the probe did not see
(a 2 x 2 proxy was made from ``0 x 0``)."""
THREADS = 4
"""ffmpeg's decoder and encoder threads: left alone, it takes about one per core, and on a
many-core host the buffers of 16 to 32 threads pass the 2 GiB address-space limit
(``tools``), and every transcode failed there."""


def _can_remux(info: ProbeResult) -> bool:
    return (
        info.video_codec == "h264"
        and info.video_profile in _PLAYABLE_H264_PROFILES
        and info.audio_codec in (None, "aac")
        and info.rotation == 0
        and min(info.width or 0, info.height or 0) <= PROXY_MAX_SHORT_SIDE
        and (info.width or 1) % 2 == 0
        and (info.height or 1) % 2 == 0
    )


def _proxy_plan(src: Path, info: ProbeResult, dst: Path, ffmpeg_exe: str) -> _ProxyPlan:
    if info.kind not in ("video", "audio"):
        raise media_error(
            TranscodeError, ProblemCode.NO_PROXY, f"a {info.kind} has no playback proxy"
        )
    demuxer = info.container.split(",")[0]  # the content-detected format, not the extension
    inp = ffmpeg.input(file_url(src), f=demuxer, threads=THREADS)
    out_opts: dict[str, object] = {"format": "mp4", "movflags": "+faststart", "sn": None}
    params: dict[str, object] = {}
    if info.kind == "audio":
        mode = "remux" if info.audio_codec == "aac" else "transcode"
        streams = [inp["a:0"]]
        out_opts |= {"c:a": "copy"} if mode == "remux" else {"c:a": "aac", "b:a": "128k"}
        ext, media_type = "m4a", "audio/mp4"
    else:
        mode = "remux" if _can_remux(info) else "transcode"
        streams = [inp["V:0"]] + ([inp["a:0"]] if info.audio_codec else [])
        ext, media_type = "mp4", "video/mp4"
        if mode == "remux":
            out_opts["c"] = "copy"
        else:
            size = _proxy_size(info)
            # ffmpeg autorotates decoded frames, so scale sees (and writes) the displayed size.
            out_opts |= {
                "threads": THREADS,
                "c:v": "libx264",
                "profile:v": "high",
                "pix_fmt": "yuv420p",
                "preset": "veryfast",
                "crf": 23,
                "vf": f"scale={size[0]}:{size[1]}" if size else _SCALE_FROM_FRAMES,
                "c:a": "aac",
                "b:a": "128k",
            }
            params |= {"width": size[0], "height": size[1]} if size else {"size": "from frames"}
    compiled = ffmpeg.output(*streams, file_url(dst), **out_opts).compile(cmd=[])
    command = [ffmpeg_exe, *_FFMPEG_GLOBALS, *compiled]
    params |= {"mode": mode, "source_media_type": info.media_type}
    return _ProxyPlan(command, ext, media_type, params)


def proxy_command(
    src: Path, info: ProbeResult, dst: Path, ffmpeg_exe: str | None = None
) -> list[str]:
    """The exact ffmpeg command make_proxy runs, for benchmarks and for the record."""
    return _proxy_plan(src, info, dst, ffmpeg_exe or default_ffmpeg()).command


def make_proxy(
    src: Path,
    info: ProbeResult,
    workdir: Path,
    *,
    limits: Limits,
    ffmpeg_exe: str | None = None,
) -> Derived:
    """H.264 High/AAC MP4 (≤720p, faststart, upright) or AAC M4A; remux when already fit."""
    exe = ffmpeg_exe or default_ffmpeg()
    workdir.mkdir(parents=True, exist_ok=True)
    ext = "m4a" if info.kind == "audio" else "mp4"
    final = workdir / f"proxy.{ext}"
    partial = partial_path(final)
    plan = _proxy_plan(src, info, partial, exe)
    try:
        run_tool(plan.command, limits=limits, workdir=workdir)
        os.replace(partial, final)  # never leave a half-written proxy under its real name
    finally:
        partial.unlink(missing_ok=True)
    recipe_args = tuple(
        {file_url(src): "{input}", file_url(partial): "{output}"}.get(a, a)
        for a in plan.command[1:]
    )
    versions = tool_versions(exe)
    recipe = Recipe("ffmpeg", versions["ffmpeg"], recipe_args, plan.params | {"tools": versions})
    return Derived("proxy", final, plan.media_type, plan.role_ext, recipe)
