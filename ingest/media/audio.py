"""The waveform of an audio-only item: min/max peaks decoded as a stream, drawn as a PNG."""

from __future__ import annotations

import math
from pathlib import Path

import av
import cv2
import numpy as np
import numpy.typing as npt

from ingest.errors import MediaError
from ingest.media.probing import open_av, stream_duration
from ingest.media.tools import tool_versions, write_atomic
from ingest.media.values import Derived, Recipe, media_error
from ingest.problems import ProblemCode

WAVEFORM_SIZE = (1200, 240)
"""Width, height in pixels."""


class _Peaks:
    """Running min/max per block of samples; halves its resolution to stay bounded."""

    def __init__(self, samples_per_block: int, max_blocks: int) -> None:
        self.per_block = max(1, samples_per_block)
        self.max_blocks = max_blocks
        self.lows: list[float] = []
        self.highs: list[float] = []
        self.position = 0

    def add(self, samples: npt.NDArray[np.float32]) -> None:
        start = 0
        while start < len(samples):
            block = self.position // self.per_block
            take = min(len(samples) - start, (block + 1) * self.per_block - self.position)
            chunk = samples[start : start + take]
            low, high = float(chunk.min()), float(chunk.max())
            if block == len(self.lows):
                self.lows.append(low)
                self.highs.append(high)
            else:
                self.lows[block] = min(self.lows[block], low)
                self.highs[block] = max(self.highs[block], high)
            start += take
            self.position += take
            if len(self.lows) > self.max_blocks:
                self._halve()

    def _halve(self) -> None:
        self.lows = [min(self.lows[i : i + 2]) for i in range(0, len(self.lows), 2)]
        self.highs = [max(self.highs[i : i + 2]) for i in range(0, len(self.highs), 2)]
        self.per_block *= 2


def _audio_peaks(src: Path, width: int) -> _Peaks:
    with open_av(src) as container:
        if not container.streams.audio:
            raise media_error(MediaError, ProblemCode.NO_AUDIO, "the file has no audio stream")
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate or 8000
        seconds = stream_duration(container, stream) or 60.0
        peaks = _Peaks(math.ceil(seconds * rate / width), max_blocks=2 * width)
        resampler = av.AudioResampler(format="flt", layout="mono")
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.FFmpegError:
                continue  # a damaged packet costs one gap, not the waveform
            for frame in frames:
                for mono in resampler.resample(frame):
                    peaks.add(np.asarray(mono.to_ndarray()[0], dtype=np.float32))
    return peaks


def make_waveform(src: Path, workdir: Path) -> Derived:
    """PNG min/max waveform of the first audio stream, decoded as a stream (bounded memory)."""
    width, height = WAVEFORM_SIZE
    peaks = _audio_peaks(src, width)
    if not peaks.lows:
        raise media_error(
            MediaError, ProblemCode.NO_AUDIO_FRAMES, "no audio frame could be decoded"
        )
    pick = np.arange(width) * len(peaks.lows) // width  # stretch or squeeze blocks to columns
    lows = np.clip(np.asarray(peaks.lows)[pick], -1.0, 1.0)
    highs = np.clip(np.asarray(peaks.highs)[pick], -1.0, 1.0)
    mid = (height - 1) / 2
    top = np.floor(mid - highs * mid).astype(int)
    bottom = np.ceil(mid - lows * mid).astype(int)
    rows = np.arange(height)[:, None]
    img = np.full((height, width, 3), 255, dtype=np.uint8)
    img[round(mid), :] = (200, 200, 200)
    img[(rows >= top) & (rows <= bottom)] = (160, 80, 20)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise media_error(MediaError, ProblemCode.ENCODE_FAILED, "could not encode the waveform")
    workdir.mkdir(parents=True, exist_ok=True)
    final = workdir / "waveform.png"
    write_atomic(final, buf.tobytes())
    recipe = Recipe(
        "pyav+opencv",
        av.__version__,
        (),
        {"width": width, "height": height, "channels": "mono-mix", "tools": tool_versions()},
    )
    return Derived("waveform", final, "image/png", "png", recipe)
