"""Memory bounded by design (issue 18): what a stage holds does not grow with a clip's resolution or length.

- extract_video resizes each frame as it is decoded: at most one full-resolution RGB frame is alive;
- prepare measures the WAV in bounded blocks and refuses, from the header, clips longer than
  ``prepare.max_duration_s`` (``too_long``) or with frames larger than ``prepare.max_pixels`` (``too_large``);
- render (recipe corrected, pixel_mapping nearest) reads only the samples it draws, in bounded reads, and the
  image is the one the whole clip gives; a drawing that needs the whole clip refuses one longer than
  ``render.max_whole_clip_s`` (``too_long``).

The numbers on an 8192x8192 and a 30-minute clip are benchmarks/bench_memory.py's (BENCHMARKS.md).
"""

from __future__ import annotations

import math
import tracemalloc
import wave

import av
import numpy as np
import pytest
import soundfile as sf

from maivar.audio import wav as wav_module
from maivar.audio.drawing import render, style_from_settings
from maivar.audio.render import render_clip
from maivar.audio.wav import WavClip, load_audio
from maivar.core import rejections as R
from maivar.core.rejections import ClipFailure
from maivar.data.media import dbfs, measure_wav
from maivar.data.subset import FAULTS, ExamineTask, examine_video
from maivar.settings.base import read_params
from maivar.settings.render import RenderSettings
from maivar.video.frames import decode_segments

from conftest import REPO


def _video(path, n_frames, width, height):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(n_frames):
            img = np.full((height, width, 3), (7 * i) % 256, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_decoding_keeps_at_most_one_full_resolution_frame_alive(tmp_path):
    """25 frames of 640x480 sampled into 25 segments: the numpy memory traced during decoding stays under
    two full-resolution RGB frames (keeping the frames before resizing, as before issue 18, holds 25)."""
    video = _video(tmp_path / "v.avi", 25, 640, 480)
    frame_bytes = 640 * 480 * 3
    tracemalloc.start()
    try:
        frames = decode_segments(str(video), num_segments=25, expected_frames=25, short_side=64, crop_size=64,
                                 timeout_s=60)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert frames.shape == (25, 64, 64, 3)
    assert peak < 2 * frame_bytes, f"{peak / frame_bytes:.1f} full-resolution frames alive at the peak"


def test_measure_wav_reads_in_bounded_blocks_and_measures_exactly(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    data = (rng.standard_normal((10_007, 2)) * 6000).clip(-32768, 32767).astype("<i2")
    data[123, 1] = -32768  # full scale: its absolute value overflows int16
    path = tmp_path / "a.wav"
    sf.write(path, data, 44100, subtype="PCM_16")
    sizes = []
    readframes = wave.Wave_read.readframes
    monkeypatch.setattr(wave.Wave_read, "readframes", lambda self, n: sizes.append(n) or readframes(self, n))
    level = measure_wav(path, block_frames=1000)
    assert sizes and max(sizes) <= 1000 and len(sizes) >= 11
    x = data.reshape(-1).astype(np.float64) / 32768.0  # the whole-clip formula measure_wav had before
    assert (level.samples, level.channels, level.sample_rate) == (10_007, 2, 44100)
    assert level.peak_dbfs == dbfs(float(np.max(np.abs(x)))) == 0.0
    assert level.rms_dbfs == dbfs(float(np.sqrt(np.mean(x * x))))
    assert not math.isinf(level.rms_dbfs)


@pytest.fixture(scope="module")
def settings():
    return RenderSettings.from_params(read_params(REPO / "params.yaml"))


def _keywords(settings, representation, size=32, **change):
    kw = dict(representation=representation, sample_rate=8000, size=size, n_fft=512, hop_length=128, n_mfcc=13,
              chroma_tuning=0.0, style=style_from_settings(settings), pixel_mapping="nearest", recipe="corrected")
    return {**kw, **change}


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory):
    """120 s of stereo noise at 8 kHz with a louder stretch, as 16-bit PCM (a 'long' clip at a small cost)."""
    rng = np.random.default_rng(2)
    data = rng.standard_normal((960_001, 2)).astype(np.float32) * 0.05
    data[400_000:420_000] *= 10
    path = tmp_path_factory.mktemp("wav") / "long.wav"
    sf.write(path, data.clip(-1, 0.999), 8000, subtype="PCM_16")
    return path


@pytest.mark.parametrize("representation", ["chromagram", "waveplot", "spectral_centroid", "mfcc_scaled"])
def test_render_reads_only_what_it_draws_and_draws_the_same_image(settings, long_wav, monkeypatch, representation):
    monkeypatch.setattr(WavClip, "BLOCK", 50_000)  # the envelope's blocks: small, so that 20 blocks stream
    kw = _keywords(settings, representation)
    y, _ = load_audio(str(long_wav), 8000)
    whole = render(y, 8000, representation, **{k: v for k, v in kw.items() if k not in ("representation",
                                                                                       "sample_rate")})
    reads = []
    read = sf.SoundFile.read
    monkeypatch.setattr(sf.SoundFile, "read", lambda self, frames=-1, *a, **k: reads.append(frames) or
                        read(self, frames, *a, **k))
    got = render_clip(str(long_wav), **kw)
    assert np.array_equal(got.image, whole)  # byte for byte the image the whole clip gives
    assert reads and -1 not in reads
    if representation in ("chromagram", "mfcc_scaled"):  # a matrix: only the windows of the 32 frames shown
        assert sum(reads) <= 32 * 512
    else:  # the envelope streamed (and a curve's windows)
        assert max(reads) <= 50_000


def test_a_drawing_that_needs_the_whole_clip_refuses_a_long_one(settings, tmp_path):
    path = tmp_path / "two_seconds.wav"
    sf.write(path, np.full(16_000, 0.1, np.float32), 8000, subtype="PCM_16")
    for change in ({"pixel_mapping": "area"}, {"recipe": "pymaivar"}, {"sample_rate": 16000}):
        with pytest.raises(ClipFailure) as failure:
            render_clip(str(path), **_keywords(settings, "mfcc", max_whole_clip_s=1.5, **change))
        assert failure.value.reason == R.TOO_LONG and "render.max_whole_clip_s 1.5" in failure.value.detail
        render_clip(str(path), **_keywords(settings, "mfcc", max_whole_clip_s=2.5, **change))  # within the bound
    render_clip(str(path), **_keywords(settings, "mfcc", max_whole_clip_s=1.5))  # corrected + nearest: any length


def test_a_float_wav_counts_its_non_finite_samples_streamed(settings, tmp_path, monkeypatch):
    data = np.full((3000, 2), 0.1, np.float32)
    data[10, 0], data[2500, 1] = np.nan, np.inf
    path = tmp_path / "f.wav"
    sf.write(path, data, 8000, subtype="FLOAT")
    monkeypatch.setattr(WavClip, "BLOCK", 1000)
    assert render_clip(str(path), **_keywords(settings, "waveplot")).non_finite == 2
    assert wav_module.read_audio(str(path))[2] == 2


@pytest.mark.parametrize("limit, reason", [({"max_duration_s": 0.5}, R.TOO_LONG),
                                           ({"max_pixels": 64 * 48 - 1}, R.TOO_LARGE)])
def test_prepare_refuses_too_long_or_too_large_clips_from_the_header(tmp_path, limit, reason):
    video = _video(tmp_path / "v.avi", 25, 64, 48)  # 1 s of 64x48, no audio: the limits come first
    task = ExamineTask(id="v", video_path=str(video), wav_path=str(tmp_path / "v.wav"), sample_rate=8000,
                       channels=1, min_decoded_share=0.9, silence_dbfs=-60.0, timeout_s=30, **limit)
    with pytest.raises(ClipFailure) as failure:
        examine_video(task)
    assert failure.value.reason == reason and f"prepare.{next(iter(limit))}" in failure.value.detail
    assert not (tmp_path / "v.wav").exists() and reason not in FAULTS and reason in R.ALL
    with pytest.raises(ClipFailure) as within:  # at the limit it passes them, to the next check
        examine_video(ExamineTask(**{**task.__dict__, **{k: v + 1 for k, v in limit.items()}}))
    assert within.value.reason == R.NO_AUDIO_STREAM
