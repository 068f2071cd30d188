"""Probe a video with PyAV, demux its audio with ffmpeg, and measure the audio's level.

Traps this module handles (each seen with the current PyAV/ffmpeg builds):

- a truncated AVI opens fine, decodes about half its frames and half its audio without an error, and
  ffmpeg exits 0 with a half-length WAV: :func:`probe_video` counts the frames the file really holds
  (packets, or decoded frames) next to what the container *declares* (the AVI header's frame count), and
  the caller compares the frames held with those declared, and records how much of the picture's duration
  the WAV covers; the exit code is never trusted alone;
- a damaged header can make FFmpeg's format probe fall back to a raw elementary stream that "opens" but
  declares no length: that is ``unreadable_video``;
- ffmpeg without ``-y`` and with an open stdin waits forever at its overwrite prompt: every call has
  ``-nostdin -y``, writes to a temporary name renamed after validation, and runs under a timeout;
- a path is a file, never a URL: FFmpeg reads ``file:x``, ``concat:a|b`` or ``http:x`` at the start of a name as
  a protocol, so PyAV gets the absolute path and ffmpeg ``file:<absolute path>`` (its local-file protocol, spelled
  out), whatever the file is called;
- ``ffmpeg.probe`` needs an ``ffprobe`` binary that the ``imageio-ffmpeg`` wheel does not ship: probing is
  done with PyAV, whose exceptions all derive from ``av.FFmpegError``.

Failures are raised as :class:`~maivar.core.rejections.ClipFailure` with a reason code.
"""

from __future__ import annotations

import math
import os
import subprocess
import wave
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import av
import ffmpeg
import numpy as np

from maivar.core import rejections
from maivar.core.rejections import ClipFailure


@dataclass(frozen=True)
class VideoProbe:
    duration_s: float  # declared: the header's frame count / fps (container duration when that is absent);
    #                    for a window [start_s, end_s): its length
    fps: float
    frames: int  # declared frame count (0 when the container does not say); for a window: round(length x fps)
    decoded_frames: int  # the frames the file holds (in the window)
    width: int
    height: int
    has_audio: bool


@dataclass(frozen=True)
class AudioLevel:
    sample_rate: int
    channels: int
    samples: int
    peak_dbfs: float
    rms_dbfs: float

    @property
    def duration_s(self) -> float:
        return self.samples / self.sample_rate if self.sample_rate else 0.0


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """The ffmpeg binary of the ``imageio-ffmpeg`` wheel (no system ffmpeg needed)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _one_line(text: str, limit: int = 300) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return (lines[-1] if lines else "")[:limit]


FRAME_CHECKS = ("packets", "decode")
WINDOW_TOLERANCE_S = 0.5  # a window may end this far past the video's declared end (then it is just truncated)


def as_file(path: str | Path) -> str:
    """``path`` absolute: what PyAV is given, so that no part of a file's name is read as a protocol."""
    return os.path.abspath(os.fspath(path))


def as_ffmpeg_file(path: str | Path) -> str:
    """``file:<absolute path>``: what the ffmpeg command line is given (input and output), so that a name such as
    ``concat:x``, ``http:x`` or ``-y`` is always a local file."""
    return "file:" + as_file(path)


def probe_video(path: str | Path, frame_check: str = "packets", start_s: float | None = None,
                end_s: float | None = None, *, max_duration_s: float | None = None,
                max_pixels: int | None = None) -> VideoProbe:
    """Open the container, read its declared properties and count the video frames it really holds.

    ``frame_check="packets"`` counts the video packets (in AVI one chunk per frame, dropped frames included)
    without decoding: it catches truncation at a fraction of a millisecond per video. ``"decode"`` decodes
    every packet (no color conversion, about 20x slower) and also rejects streams that fail to decode.

    With a window (``start_s``, ``end_s``: a clip out of a longer video), only the frames whose time
    (:func:`frame_time`) lies in ``[start_s, end_s)`` count, and the window declares ``round((end_s -
    start_s) x fps)`` frames: a video shorter than the window holds fewer, as a truncated one does. A window
    that is not finite with ``0 <= start_s < end_s <= duration +`` :data:`WINDOW_TOLERANCE_S` is ``bad_window``.

    A video (or window) declaring more than ``max_duration_s`` seconds is ``too_long``, one whose frames have
    more than ``max_pixels`` pixels is ``too_large``: both refused from the header, before any frame is read.
    """
    if frame_check not in FRAME_CHECKS:
        raise ValueError(f"frame_check must be one of {FRAME_CHECKS}, got {frame_check!r}")
    path = as_file(path)
    try:
        with av.open(path, metadata_errors="ignore") as container:
            if not container.streams.video:
                raise ClipFailure(rejections.UNREADABLE_VIDEO, "the container has no video stream")
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fps = float(rate) if rate else 0.0
            declared = int(stream.frames or 0)
            if declared > 0 and fps > 0:
                duration = declared / fps
            elif container.duration:
                duration = container.duration / av.time_base
                declared = int(round(duration * fps)) if fps else 0
            else:
                raise ClipFailure(rejections.UNREADABLE_VIDEO, f"the container ({container.format.name}) declares no "
                                 "length, so truncation cannot be checked: a damaged header?")
            width, height = stream.codec_context.width, stream.codec_context.height
            has_audio = bool(container.streams.audio)
            windowed = start_s is not None
            if windowed:
                if not (math.isfinite(start_s) and math.isfinite(end_s)
                        and 0 <= start_s < end_s <= duration + WINDOW_TOLERANCE_S):
                    raise ClipFailure(rejections.BAD_WINDOW, f"the window [{start_s!r}, {end_s!r}) s is not inside "
                                      f"the video's {duration:.3f} s (+{WINDOW_TOLERANCE_S:g} s)")
                duration = end_s - start_s
                declared = int(round(duration * fps))
            check_limits(duration, width, height, max_duration_s=max_duration_s, max_pixels=max_pixels)
            counted = 0
            try:
                for packet in container.demux(stream):
                    if packet.dts is None and packet.size == 0:
                        continue  # the end-of-stream marker PyAV yields last
                    if windowed:
                        t = frame_time(packet.pts, stream)
                        if t is None or not start_s <= t < end_s:
                            if frame_check == "decode":
                                packet.decode()  # keep the decoder's state; the frame is outside the window
                            continue
                    counted += len(packet.decode()) if frame_check == "decode" else 1
            except av.FFmpegError as exc:
                raise ClipFailure(rejections.DECODE_FAILED, f"after {counted} frames: {_one_line(exc)}") from None
    except ClipFailure:
        raise
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise ClipFailure(rejections.UNREADABLE_VIDEO, _one_line(f"{type(exc).__name__}: {exc}")) from None
    if fps <= 0 or width <= 0 or height <= 0:
        raise ClipFailure(rejections.UNREADABLE_VIDEO, f"no usable video stream (fps {fps}, {width}x{height})")
    return VideoProbe(duration_s=duration, fps=fps, frames=declared, decoded_frames=counted, width=width,
                      height=height, has_audio=has_audio)


def check_limits(duration_s: float, width: int, height: int, *, max_duration_s: float | None,
                 max_pixels: int | None) -> None:
    """Refuse what cannot sensibly be processed (a limit of None: no limit): ``too_long`` past ``max_duration_s``
    (prepare.max_duration_s), ``too_large`` past ``max_pixels`` pixels a frame (prepare.max_pixels)."""
    if max_duration_s is not None and duration_s > max_duration_s:
        raise ClipFailure(rejections.TOO_LONG, f"declares {duration_s:.1f} s, more than prepare.max_duration_s "
                          f"{max_duration_s:g}")
    if max_pixels is not None and width * height > max_pixels:
        raise ClipFailure(rejections.TOO_LARGE, f"{width}x{height} frames ({width * height} pixels), more than "
                          f"prepare.max_pixels {max_pixels}")


def frame_time(pts: int | None, stream) -> float | None:
    """A packet's or frame's time in seconds from the start of its stream (``pts`` in the stream's time base,
    less the stream's start time): what a window ``[start_s, end_s)`` of a clip is measured in."""
    if pts is None or stream.time_base is None:
        return None
    return float((pts - (stream.start_time or 0)) * stream.time_base)


def demux_command(src: str | Path, dst: str | Path, *, sample_rate: int, channels: int,
                  start_s: float | None = None, end_s: float | None = None) -> list[str]:
    """The ffmpeg command (built with ffmpeg-python) that writes the first audio stream as 16-bit PCM WAV
    (only ``[start_s, end_s)`` of it, when a window is given)."""
    window = {} if start_s is None else {"ss": f"{start_s:.6f}", "t": f"{end_s - start_s:.6f}"}
    stream = ffmpeg.input(as_ffmpeg_file(src), **window).output(
        as_ffmpeg_file(dst), f="wav", map="0:a:0", vn=None, acodec="pcm_s16le", ac=channels, ar=sample_rate,
        map_metadata=-1, fflags="+bitexact", **{"flags:a": "+bitexact"},
    )
    return stream.global_args("-nostdin", "-hide_banner", "-loglevel", "error").compile(
        cmd=ffmpeg_exe(), overwrite_output=True)


def demux_audio(src: str | Path, dst: str | Path, *, sample_rate: int, channels: int, timeout_s: float,
                start_s: float | None = None, end_s: float | None = None) -> AudioLevel:
    """Demux ``src``'s audio (its window ``[start_s, end_s)`` when given) to the WAV ``dst`` and measure it.

    ffmpeg writes to a temporary sibling; the WAV is renamed into place only after it was read back. A
    non-zero exit, an unreadable or empty result, or a timeout raises :class:`ClipFailure` (and leaves no
    file). The caller checks the duration against the container (a truncated video exits 0).
    """
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.part")
    cmd = demux_command(src, tmp, sample_rate=sample_rate, channels=channels, start_s=start_s, end_s=end_s)
    try:
        try:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise ClipFailure(rejections.TIMEOUT, f"ffmpeg demux ran longer than {timeout_s:g} s; killed") from None
        if proc.returncode != 0:
            raise ClipFailure(rejections.DEMUX_FAILED,
                             f"ffmpeg exit code {proc.returncode}: {_one_line(proc.stderr.decode(errors='replace'))}")
        if not tmp.is_file() or tmp.stat().st_size <= 44:
            raise ClipFailure(rejections.DEMUX_FAILED, "ffmpeg exited 0 but wrote no audio")
        level = measure_wav(tmp)
        if level.samples == 0:
            raise ClipFailure(rejections.DEMUX_FAILED, "ffmpeg exited 0 but the WAV holds no samples")
        os.replace(tmp, dst)
        return level
    finally:
        tmp.unlink(missing_ok=True)


def dbfs(value: float) -> float:
    """Level of a full-scale-relative amplitude in dBFS (-inf for digital silence)."""
    return 20 * math.log10(value) if value > 0 else -math.inf


WAV_BLOCK_FRAMES = 1 << 16  # measure_wav reads this many frames at a time (256 KiB of 16-bit stereo)


def measure_wav(path: str | Path, block_frames: int = WAV_BLOCK_FRAMES) -> AudioLevel:
    """Sample rate, channels, length, peak and RMS (dBFS, full scale = 32768) of a 16-bit PCM WAV.

    Streamed: ``block_frames`` frames at a time, so memory does not grow with the clip (a 30-minute WAV is
    318 MB). The peak and the sum of squares are taken on the integers, exactly; the RMS is then the same
    float64 as the mean of the squares of the whole clip as float64 (whose partial sums are exact for any
    clip under 8 M samples: every square is a multiple of 2**-30).
    """
    try:
        with wave.open(str(path), "rb") as wav:
            if wav.getsampwidth() != 2:
                raise ClipFailure(rejections.DEMUX_FAILED, f"expected 16-bit PCM, got {8 * wav.getsampwidth()}-bit")
            rate, channels = wav.getframerate(), wav.getnchannels()
            count, peak, squares = 0, 0, 0
            while True:
                block = wav.readframes(block_frames)
                if not block:
                    break
                data = np.frombuffer(block, dtype="<i2").astype(np.int64)
                count += len(data)
                peak = max(peak, int(np.max(np.abs(data))))
                squares += int(np.dot(data, data))  # < 2**30 per sample: exact in int64 for any block
    except (wave.Error, EOFError) as exc:
        raise ClipFailure(rejections.DEMUX_FAILED, f"unreadable WAV: {exc}") from None
    samples = count // max(channels, 1)
    if count == 0:
        return AudioLevel(rate, channels, 0, -math.inf, -math.inf)
    rms = math.sqrt(squares / 2.0**30 / count) if squares < 2**53 else math.sqrt(squares / count / 2.0**30)
    return AudioLevel(rate, channels, samples, dbfs(peak / 32768.0), dbfs(rms))
