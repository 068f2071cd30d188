"""Make damaged and odd media for the fault-injection tests (``tests/test_faults_*.py``).

Everything is generated here with the ``imageio-ffmpeg`` binary (lavfi test sources, so no input files are
needed) and byte surgery; all of it is deterministic (bitexact flags, fixed seeds) and tiny.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from maivar.data.media import ffmpeg_exe

FPS = 25
SECONDS = 2.0
SIZE = "96x72"


def ffmpeg(*args, timeout: float = 60) -> None:
    subprocess.run([ffmpeg_exe(), "-nostdin", "-y", "-hide_banner", "-loglevel", "error", *map(str, args)],
                   check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)


def _video_src(seconds: float, fps: int | str) -> list[str]:
    return ["-f", "lavfi", "-i", f"testsrc=size={SIZE}:rate={fps}:duration={seconds}"]


def _audio_src(seconds: float, rate: int = 44100, layout: str = "stereo", silent: bool = False) -> list[str]:
    expr = "0" if silent else "0.4*sin(2*PI*440*t)"
    return ["-f", "lavfi", "-i", f"aevalsrc={expr}:s={rate}:c={layout}:d={seconds}"]


BITEXACT = ["-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact", "-map_metadata", "-1",
            "-threads", "1"]


def make_avi(path: Path, *, seconds: float = SECONDS, fps: int = FPS, audio: bool = True,
             audio_seconds: float | None = None, silent: bool = False, rate: int = 44100,
             layout: str = "stereo") -> Path:
    """UCF101's format: MPEG-4 part 2 video + 16-bit PCM audio in AVI (index at the end, idx1)."""
    args = _video_src(seconds, fps)
    if audio:
        args += _audio_src(audio_seconds or seconds, rate, layout, silent)
    args += ["-c:v", "mpeg4", "-q:v", "5", "-g", "12"]
    args += ["-c:a", "pcm_s16le"] if audio else ["-an"]
    ffmpeg(*args, *BITEXACT, path)
    return path


def make_mp4(path: Path, *, seconds: float = SECONDS, fps: int | str = FPS, faststart: bool = False,
             audio: bool = True, vfr: bool = False) -> Path:
    """H.264 + AAC in MP4; ``faststart`` puts the index (moov) at the front, else it is at the end."""
    args = _video_src(seconds, fps)
    if audio:
        args += _audio_src(seconds)
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-g", "12", "-pix_fmt", "yuv420p"]
    args += ["-c:a", "aac", "-b:a", "64k"] if audio else ["-an"]
    if vfr:  # drop every third frame and keep the timestamps: a variable frame rate
        args += ["-vf", "select='not(eq(mod(n\\,3)\\,2))'", "-fps_mode", "vfr"]
    if faststart:
        args += ["-movflags", "+faststart"]
    ffmpeg(*args, *BITEXACT, path)
    return path


def make_audio_only(path: Path, *, seconds: float = SECONDS) -> Path:
    """A container with an audio stream and no video stream."""
    ffmpeg(*_audio_src(seconds), "-c:a", "pcm_s16le", *BITEXACT, path)
    return path


# --- byte surgery -----------------------------------------------------------------------------------------

def truncate(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def overwrite_middle(src: Path, dst: Path, length: int = 4096, seed: int = 0) -> Path:
    """Random bytes over ``length`` bytes in the middle of the file (the size is unchanged)."""
    data = bytearray(src.read_bytes())
    start = len(data) // 2 - length // 2
    data[start : start + length] = np.random.default_rng(seed).integers(0, 256, length, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst


def random_bytes(dst: Path, n: int = 65536, seed: int = 0) -> Path:
    dst.write_bytes(np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes())
    return dst


def header_only(src: Path, dst: Path) -> Path:
    """The container's header and nothing else: up to the first media chunk (AVI ``movi`` / MP4 ``mdat``)."""
    data = src.read_bytes()
    marks = [i for i in (data.find(b"movi"), data.find(b"mdat")) if i > 0]
    end = min(marks) + 4 if marks else 512
    dst.write_bytes(data[:end])
    return dst
