"""Fault injection, media (issue 6, parts 1-3): damaged files, odd but valid files, hung and crashing decoders.

Each damaged file goes through both guards a video meets in the pipeline: ``prepare`` (:func:`examine_video`:
declared vs present frames, WAV duration) and ``extract_video`` (:func:`decode_segments`: decoded vs expected
frames). Damage must end as a rejection with a reason code, or (only within ``min_decoded_share``) as a
video whose decoded share is at least that threshold; never as a partial video featurised as if whole.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from maivar.audio.wav import load_audio
from maivar.core import rejections as R
from maivar.core.rejections import ClipFailure
from maivar.data.media import demux_command, measure_wav
from maivar.data.subset import FAULTS, ExamineTask, examine_video
from maivar.video.frames import decode_segments, segment_centers

from faults import (
    FPS,
    SECONDS,
    header_only,
    make_audio_only,
    make_avi,
    make_mp4,
    overwrite_middle,
    random_bytes,
    truncate,
)

SHARE = 0.9  # prepare.min_decoded_share / extract_video.min_decoded_share
DECLARED = int(FPS * SECONDS)
SEGMENTS, SHORT, CROP = 25, 64, 56


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("media")
    make_avi(d / "clip.avi")
    make_mp4(d / "clip_end.mp4")  # index (moov) after the media data
    make_mp4(d / "clip_front.mp4", faststart=True)  # index before the media data
    return d


def examine(path: Path, tmp_path: Path, **kw) -> dict | ClipFailure:
    """prepare's check of one video: its manifest columns, or the ClipFailure it raised."""
    task = dict(id=path.stem, video_path=str(path), wav_path=str(tmp_path / f"{path.stem}.wav"), sample_rate=44100,
                channels=2, min_decoded_share=SHARE, silence_dbfs=-60.0, timeout_s=30, frame_check="packets")
    try:
        return examine_video(ExamineTask(**{**task, **kw}))
    except ClipFailure as failure:
        return failure


def segments(path: Path, expected: int | None = DECLARED, share: float = SHARE) -> np.ndarray | ClipFailure:
    """extract_video's decode of one video: its frames, or the ClipFailure it raised."""
    try:
        return decode_segments(str(path), num_segments=SEGMENTS, expected_frames=expected, short_side=SHORT,
                               crop_size=CROP, timeout_s=30, min_decoded_share=share)
    except ClipFailure as failure:
        return failure


def kept(result) -> bool:
    return not isinstance(result, ClipFailure)


def count_frames(path: Path) -> int:
    import av

    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


# --- 1. damaged media --------------------------------------------------------------------------------------

SOURCES = ("clip.avi", "clip_end.mp4", "clip_front.mp4")
DAMAGE = {
    "zero_bytes": lambda src, dst: (dst.write_bytes(b""), dst)[1],
    "random_bytes": lambda src, dst: random_bytes(dst),
    "header_only": header_only,
    "truncated_5%": lambda src, dst: truncate(src, dst, 0.05),
    "truncated_30%": lambda src, dst: truncate(src, dst, 0.30),
    "truncated_60%": lambda src, dst: truncate(src, dst, 0.60),
    "truncated_90%": lambda src, dst: truncate(src, dst, 0.90),
    "truncated_98%": lambda src, dst: truncate(src, dst, 0.98),
    "overwritten_middle": lambda src, dst: overwrite_middle(src, dst, 2048),
}


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("source", SOURCES)
def test_damaged_media_is_rejected_or_kept_only_within_the_decoded_share(media, tmp_path, source, damage):
    src = media / source
    bad = DAMAGE[damage](src, tmp_path / f"bad{src.suffix}")
    result = examine(bad, tmp_path)
    wav = tmp_path / "bad.wav"
    if not kept(result):
        assert result.reason in FAULTS, result
        assert result.detail and "\n" not in result.detail
        assert not wav.exists()  # no partial WAV left behind
    else:  # prepare kept it: the video holds at least SHARE of its declared frames and audio, and says how much
        assert result["frames"] == DECLARED
        assert SHARE <= result["decoded_share"] <= 1.0
        if damage.startswith("truncated") and src.suffix == ".avi":
            assert result["decoded_share"] == count_frames(bad) / DECLARED < 1.0  # recorded as partial
        assert measure_wav(wav).duration_s >= SHARE * SECONDS
    out = segments(bad, expected=(result["frames"] if kept(result) else None) or DECLARED)
    if isinstance(out, np.ndarray):  # extract_video featurises only videos that decode (nearly) whole
        assert out.shape == (SEGMENTS, CROP, CROP, 3) and out.dtype == np.uint8
        assert count_frames(bad) >= SHARE * DECLARED
    else:
        assert out.reason in R.ALL and out.detail and "\n" not in out.detail
    if damage in ("zero_bytes", "random_bytes", "header_only") or (damage.startswith("truncated")
                                                                   and int(damage[10:-1]) <= 60):
        # Clearly broken: both guards reject it, each on its own.
        assert not kept(result) and result.reason in FAULTS and not isinstance(out, np.ndarray), (result, out)


def test_a_truncated_video_that_decodes_without_error_is_truncated_not_resampled(media, tmp_path):
    """A cut AVI decodes its first frames with no error at all: without the count check it would be sampled
    over what decoded and featurised as if whole."""
    cut = truncate(media / "clip.avi", tmp_path / "cut.avi", 0.6)
    present = count_frames(cut)
    assert 0 < present < SHARE * DECLARED  # PyAV raises nothing: the trap
    out = segments(cut)
    assert out.reason == R.TRUNCATED and f"{present} of {DECLARED}" in out.detail
    assert isinstance(segments(cut, share=0.0), np.ndarray)  # the only thing that catches it is the share
    result = examine(cut, tmp_path)
    assert result.reason == R.TRUNCATED and f"holds {present} of {DECLARED}" in result.detail


# --- 2. odd but valid media --------------------------------------------------------------------------------

def test_video_without_audio_is_no_audio_stream_and_still_decodes(tmp_path):
    clip = make_avi(tmp_path / "mute.avi", audio=False)
    assert examine(clip, tmp_path).reason == R.NO_AUDIO_STREAM
    assert segments(clip).shape == (SEGMENTS, CROP, CROP, 3)


def test_audio_without_video_is_unreadable_video(tmp_path):
    clip = make_audio_only(tmp_path / "sound.avi")
    result = examine(clip, tmp_path)
    assert result.reason == R.UNREADABLE_VIDEO and "no video stream" in result.detail
    assert segments(clip).reason == R.DECODE_FAILED
    assert not (tmp_path / "sound.wav").exists()


def test_silent_track_is_silent_audio(tmp_path):
    clip = make_avi(tmp_path / "quiet.avi", silent=True)
    result = examine(clip, tmp_path)
    assert result.reason == R.SILENT_AUDIO and "dBFS" in result.detail
    assert not (tmp_path / "quiet.wav").exists()


@pytest.mark.parametrize("channels,rate", [(2, 44100), (1, 22050)])
def test_six_channel_8khz_audio_becomes_the_target_channels_and_rate(tmp_path, channels, rate):
    clip = make_avi(tmp_path / "surround.avi", rate=8000, layout="5.1")
    result = examine(clip, tmp_path, sample_rate=rate, channels=channels)
    assert kept(result), result
    assert (result["audio_sample_rate"], result["audio_channels"]) == (rate, channels)
    level = measure_wav(tmp_path / "surround.wav")
    assert (level.sample_rate, level.channels) == (rate, channels)
    assert level.duration_s == pytest.approx(SECONDS, abs=0.01)
    y, _ = load_audio(str(tmp_path / "surround.wav"), 16000)  # render: mono at render.sample_rate
    assert y.ndim == 1 and len(y) == pytest.approx(16000 * SECONDS, abs=2)


@pytest.mark.parametrize("faststart", [False, True])
def test_mp4_h264_aac_beside_the_avis_is_handled_like_them(tmp_path, faststart):
    clip = make_mp4(tmp_path / "clip.mp4", faststart=faststart)
    result = examine(clip, tmp_path)
    assert kept(result), result
    assert (result["frames"], result["fps"], result["decoded_share"]) == (DECLARED, FPS, 1.0)
    assert (result["width"], result["height"]) == (96, 72)
    level = measure_wav(tmp_path / "clip.wav")
    assert (level.sample_rate, level.channels) == (44100, 2)
    assert level.duration_s == pytest.approx(SECONDS, abs=0.05)  # AAC priming is trimmed
    assert segments(clip).shape == (SEGMENTS, CROP, CROP, 3)


def test_variable_frame_rate_samples_the_frames_it_holds(tmp_path):
    clip = make_mp4(tmp_path / "vfr.mp4", vfr=True)
    result = examine(clip, tmp_path)
    assert kept(result), result
    held = count_frames(clip)
    assert held < DECLARED  # every third frame dropped
    out = segments(clip, expected=result["frames"])
    assert out.shape == (SEGMENTS, CROP, CROP, 3)


def test_clip_with_fewer_frames_than_segments_repeats_frames(tmp_path):
    clip = make_avi(tmp_path / "short.avi", seconds=0.4)  # 10 frames < 25 segments
    result = examine(clip, tmp_path)
    assert kept(result) and result["frames"] == 10
    out = segments(clip, expected=10)
    assert out.shape == (SEGMENTS, CROP, CROP, 3)
    idx = segment_centers(10, SEGMENTS)
    same = [(a, b) for a in range(SEGMENTS) for b in range(a) if idx[a] == idx[b]]
    other = [(a, b) for a in range(SEGMENTS) for b in range(a) if idx[a] != idx[b]]
    assert same and all(np.array_equal(out[a], out[b]) for a, b in same)  # the same frame, repeated
    assert all(not np.array_equal(out[a], out[b]) for a, b in other)  # every decoded frame is used


def test_audio_longer_than_video_is_kept_whole(tmp_path):
    """Policy: the audio track is demuxed whole (the audio image covers all of it); the manifest's duration
    is the video's declared one."""
    clip = make_avi(tmp_path / "long.avi", audio_seconds=2 * SECONDS)
    result = examine(clip, tmp_path)
    assert kept(result) and result["duration_s"] == pytest.approx(SECONDS)
    assert measure_wav(tmp_path / "long.wav").duration_s == pytest.approx(2 * SECONDS, abs=0.01)


# --- 3. hangs, crashes, prompts -----------------------------------------------------------------------------

def test_ffmpeg_never_waits_at_a_prompt_with_an_open_stdin_and_an_existing_output(media, tmp_path):
    dst = tmp_path / "out.wav"
    dst.write_bytes(b"an older file")
    cmd = demux_command(media / "clip.avi", dst, sample_rate=44100, channels=2)
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.wait(timeout=30)  # without -nostdin -y it would ask "Overwrite? [y/N]" and wait forever
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdin.close()
    assert proc.returncode == 0 and measure_wav(dst).duration_s == pytest.approx(SECONDS, abs=0.01)


def _hang_or_crash(path, **kwargs):
    name = Path(path).name
    if name.startswith("hang"):
        time.sleep(3600)  # a demux that never returns
    if name.startswith("segv"):
        os.kill(os.getpid(), signal.SIGSEGV)  # a decoder that crashes its process
    return decode_segments(path, **kwargs)


def test_hung_and_crashing_decoders_fail_their_video_not_the_extraction(media, tmp_path, monkeypatch):
    import torch

    import maivar.video.features as vf
    from maivar.video.tsn import build_tsn, preprocessing_from_config

    from test_backbones import write_tiny_tsn

    config = write_tiny_tsn(tmp_path / "tsn.py")
    model, _, cfg = build_tsn(config, checkpoint=None, seed=0)
    pre = preprocessing_from_config(cfg)
    for name in ("a.avi", "hang.avi", "segv.avi", "b.avi"):
        (tmp_path / name).write_bytes((media / "clip.avi").read_bytes())
    fifo = tmp_path / "fifo.avi"
    os.mkfifo(fifo)  # opening it blocks forever inside PyAV: a real hang, not a simulated one
    clips = [vf.VideoClip(Path(n).stem, str(tmp_path / n), DECLARED)
             for n in ("a.avi", "hang.avi", "segv.avi", "fifo.avi", "b.avi")]
    monkeypatch.setattr(vf, "decode_segments", _hang_or_crash)  # inherited by the forked workers
    start = time.monotonic()
    rows, feats, rejected = vf.extract_video_features(model, clips, num_segments=3, pre=pre, batch_videos=2,
                                                      workers=2, device=torch.device("cpu"), timeout_s=4,
                                                      min_decoded_share=SHARE, progress=False)
    assert time.monotonic() - start < 60
    assert rows == [0, 4] and feats.shape[:2] == (2, 3)
    assert {r.id: r.reason for r in rejected} == {"hang": R.TIMEOUT, "segv": R.CRASHED, "fifo": R.TIMEOUT}
    assert all(r.detail for r in rejected)
