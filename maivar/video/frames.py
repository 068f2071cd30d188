"""TSN test-time frame sampling and decoding: ``num_segments`` equal segments, the center frame of each.

- :func:`segment_centers` gives the frame indices exactly as MMAction2's ``SampleFrames(clip_len=1,
  frame_interval=1, num_clips=T, test_mode=True)`` does: ``int((i + 0.5) * n / T) mod n``. A video with
  fewer frames than segments repeats frames (the same rule), never fails for that reason alone.
- :func:`decode_segments` decodes a video once with PyAV and converts to RGB only the frames it keeps
  (the color conversion, not the decoding, dominates the cost); each kept frame is resized so that its
  short side is ``short_side`` (bilinear, as MMAction2's ``Resize(scale=(-1, 256))``) and center-cropped
  to ``crop_size`` x ``crop_size`` (as ``CenterCrop``) as soon as it is decoded, so that at most one
  full-resolution RGB frame is alive whatever the resolution (an 8192x8192 frame is 200 MB; the
  ``num_segments`` kept frames are ``crop_size``-sized). Videos of any resolution give the same shape.
- The expected frame count (the manifest's ``frames``) picks the indices during the single pass; when
  the video decodes a different number of frames the indices are recomputed from what decoded and the
  kept frames are taken in a second pass. Fewer than ``min_decoded_share`` x the expected count is
  ``truncated``: a cut file decodes its first frames without any error, and must not pass as whole.
- Failures are raised as :class:`~maivar.core.rejections.ClipFailure` with a reason code.
"""

from __future__ import annotations

import contextlib
import logging
import time

import cv2
import numpy as np

from maivar.core import rejections
from maivar.core.rejections import ClipFailure

log = logging.getLogger(__name__)

def segment_centers(num_frames: int, num_segments: int) -> np.ndarray:
    """Indices of the center frame of each of ``num_segments`` equal segments of ``num_frames`` frames."""
    if num_frames < 1 or num_segments < 1:
        raise ValueError(f"need at least one frame and one segment (got {num_frames}, {num_segments})")
    avg_interval = num_frames / float(num_segments)
    offsets = np.arange(num_segments) * avg_interval + avg_interval / 2.0
    return np.mod(offsets.astype(np.int32), num_frames).astype(np.int64)


def resize_short_side(rgb: np.ndarray, short_side: int) -> np.ndarray:
    """Resize an H x W x 3 image so that its short side is ``short_side`` (mmcv's rounding, bilinear)."""
    h, w = rgb.shape[:2]
    scale = short_side / min(h, w)
    new_w, new_h = int(w * scale + 0.5), int(h * scale + 0.5)
    if (new_w, new_h) == (w, h):
        return rgb
    return cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` window (as MMAction2's CenterCrop: offsets floor((W - size) / 2))."""
    h, w = img.shape[:2]
    if h < size or w < size:
        raise ValueError(f"a {w}x{h} image is smaller than the {size}x{size} crop")
    top, left = (h - size) // 2, (w - size) // 2
    return img[top : top + size, left : left + size]


def fit_frame(rgb: np.ndarray, short_side: int, crop_size: int) -> np.ndarray:
    """One decoded RGB frame resized (:func:`resize_short_side`) and center-cropped (:func:`center_crop`): a
    ``crop_size`` x ``crop_size`` x 3 array of its own (the full-resolution frame can be freed at once)."""
    return np.ascontiguousarray(center_crop(resize_short_side(rgb, short_side), crop_size))


def _decode(path: str, wanted: set[int], deadline: float, start_s: float | None = None,
            end_s: float | None = None, *, short_side: int, crop_size: int) -> tuple[int, dict[int, np.ndarray]]:
    """Decode every frame (of the window ``[start_s, end_s)`` when given), convert the ``wanted`` ones to RGB,
    resized and cropped at once (:func:`fit_frame`); returns (frames decoded, {index: crop_size x crop_size x 3}),
    indices counted from the first frame (of the window)."""
    import av

    from maivar.data.media import frame_time  # the times prepare measured the same window in

    kept: dict[int, np.ndarray] = {}
    count = 0
    decoded = 0
    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError("the container has no video stream")
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1  # parallelism comes from one decoding process per core
        if start_s:  # start at the keyframe before the window instead of decoding everything before it
            with contextlib.suppress(av.FFmpegError):
                container.seek(int(start_s / stream.time_base) + (stream.start_time or 0), stream=stream,
                               backward=True)
        for frame in container.decode(stream):
            decoded += 1
            if decoded % 64 == 0 and time.monotonic() > deadline:
                raise TimeoutError
            if start_s is not None:
                t = frame_time(frame.pts, stream)
                if t is None or t < start_s:
                    continue
                if t >= end_s:
                    break
            if count in wanted:
                kept[count] = fit_frame(frame.to_ndarray(format="rgb24"), short_side, crop_size)
            count += 1
    return count, kept


def decode_segments(
    path: str,
    *,
    num_segments: int,
    expected_frames: int | None,
    short_side: int,
    crop_size: int,
    timeout_s: float,
    min_decoded_share: float = 0.0,
    start_s: float | None = None,
    end_s: float | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``num_segments`` x ``crop_size`` x ``crop_size`` x 3 uint8 RGB frames; raises :class:`ClipFailure`.

    ``out``, when given, is the array of that shape and dtype to fill and return (e.g. a shared-memory slot:
    :func:`maivar.core.parallel.shared_array`); it is written only once every kept frame has decoded.

    A video that decodes (without an error) fewer than ``min_decoded_share`` x ``expected_frames`` frames is
    ``truncated``: a damaged file is never featurised as if it were whole. With a window ``[start_s, end_s)``
    (a clip out of a longer video), the segments divide the window's frames.
    """
    import av

    shape = (num_segments, crop_size, crop_size, 3)
    if out is not None and (out.shape != shape or out.dtype != np.uint8):
        raise ValueError(f"out is {out.shape} {out.dtype}, not {shape} uint8")  # a caller's mistake, not the clip's
    deadline = time.monotonic() + timeout_s
    guess = int(expected_frames) if expected_frames and expected_frames > 0 else None
    try:
        wanted = set(segment_centers(guess, num_segments).tolist()) if guess else set()
        fit = {"short_side": short_side, "crop_size": crop_size}
        count, kept = _decode(path, wanted, deadline, start_s, end_s, **fit)
        if count == 0:
            raise ClipFailure(rejections.TOO_FEW_FRAMES, "no frame decodes")
        if guess and count < min_decoded_share * guess:
            raise ClipFailure(rejections.TRUNCATED, f"decodes {count} of {guess} expected frames "
                              f"(< {min_decoded_share:g})")
        indices = segment_centers(count, num_segments)
        if count != guess:  # the expected count was wrong or unknown: take the right frames in a second pass
            if guess:
                log.warning("%s decodes %d frames, not the %d expected: sampling over the %d", path, count, guess,
                            count)
            count2, kept = _decode(path, set(indices.tolist()), deadline, start_s, end_s, **fit)
            if count2 != count:
                raise ClipFailure(rejections.DECODE_FAILED, f"decoded {count} then {count2} frames")
        frames = np.empty(shape, dtype=np.uint8) if out is None else out
        for t, index in enumerate(indices):
            frames[t] = kept[int(index)]
        return frames
    except FileNotFoundError:
        raise ClipFailure(rejections.MISSING_FILE, f"{path} not found") from None
    except TimeoutError:
        raise ClipFailure(rejections.TIMEOUT, f"decoding took longer than {timeout_s:g} s") from None
    except (av.error.FFmpegError, ValueError, OSError, cv2.error) as exc:
        detail = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        raise ClipFailure(rejections.DECODE_FAILED, detail) from None
