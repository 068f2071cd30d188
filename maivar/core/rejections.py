"""Rejected clips, in one vocabulary shared by every stage.

- the **reason codes** below, one per way a clip can be unusable;
- :class:`ClipFailure`, the one exception per-clip code raises when a clip cannot be used (a damaged
  video, an unreadable WAV, a decoder that hangs). :func:`maivar.core.parallel.guarded_imap` also hands
  it back, instead of a result, for an item whose worker hung or crashed;
- :class:`Rejection`, the record ``(id, reason, detail)`` that a stage writes for each rejected clip. A
  rejected clip is never silently dropped: the stages after it read the records back, so that ids stay
  aligned across the audio and video files;
- :func:`check_rejected_share`, the one check that fails a stage whose rejections exceed its threshold.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from .errors import PipelineError

MISSING_FILE = "missing_file"  # named in the split list, absent on disk
EMPTY_FILE = "empty_file"  # 0 bytes
UNREADABLE_VIDEO = "unreadable_video"  # the container cannot be opened or has no video stream
NO_AUDIO_STREAM = "no_audio_stream"  # the container has no audio stream
SILENT_AUDIO = "silent_audio"  # an audio stream whose peak is below the silence threshold
AUDIO_TOO_SHORT = "audio_too_short"  # a whole picture whose audio stops early: below prepare.min_audio_coverage
DEMUX_FAILED = "demux_failed"  # ffmpeg failed, or wrote nothing usable
TRUNCATED = "truncated"  # decoded much less than the container declares
TIMEOUT = "timeout"  # a probe, demux or decode took longer than its timeout and was killed
CRASHED = "crashed"  # the worker process died (e.g. a segfault in a decoder)
CLASS_WITHOUT_AUDIO = "class_without_audio"  # the audio-subset rule dropped the whole class
NOT_IN_CLASS_LIST = "not_in_class_list"  # the class is outside the configured class list
UNKNOWN_CLASS = "unknown_class"  # a split line names a class that classInd.txt does not have
UNREADABLE_AUDIO = "unreadable_audio"  # a WAV that cannot be read
UPSTREAM_REJECTED = "upstream_rejected"  # absent from an input file because an earlier stage rejected it
TOO_FEW_FRAMES = "too_few_frames"  # a video that decodes fewer frames than the sampling needs
DECODE_FAILED = "decode_failed"  # decoding failed part-way
NONFINITE_FEATURES = "nonfinite_features"  # a feature vector with NaN or inf (excluded from training/evaluation)
TOO_LONG = "too_long"  # longer than a stage's duration limit (prepare.max_duration_s, render.max_whole_clip_s)
TOO_LARGE = "too_large"  # frames of more pixels than prepare.max_pixels
OUTSIDE_ROOT = "outside_root"  # the listed file, links resolved, lies outside dataset.root
NOT_A_REGULAR_FILE = "not_a_regular_file"  # a FIFO, device, socket or folder where a video file was expected
BAD_WINDOW = "bad_window"  # a clip's window is not finite, not 0 <= start < end, or ends past the video

ALL = (
    MISSING_FILE,
    EMPTY_FILE,
    UNREADABLE_VIDEO,
    NO_AUDIO_STREAM,
    SILENT_AUDIO,
    AUDIO_TOO_SHORT,
    DEMUX_FAILED,
    TRUNCATED,
    TIMEOUT,
    CRASHED,
    CLASS_WITHOUT_AUDIO,
    NOT_IN_CLASS_LIST,
    UNKNOWN_CLASS,
    UNREADABLE_AUDIO,
    UPSTREAM_REJECTED,
    TOO_FEW_FRAMES,
    DECODE_FAILED,
    NONFINITE_FEATURES,
    TOO_LONG,
    TOO_LARGE,
    OUTSIDE_ROOT,
    NOT_A_REGULAR_FILE,
    BAD_WINDOW,
)


class ClipFailure(Exception):
    """One clip cannot be used: a reason code (above) and a one-line detail.

    Raised by per-clip code; :func:`~maivar.core.parallel.guarded_imap` yields it (not raises it) for an item
    that failed, so that the caller records the clip and goes on. It pickles across processes.
    """

    def __init__(self, reason: str, detail: str):
        super().__init__(reason, detail)
        self.reason, self.detail = reason, detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"

    def __eq__(self, other) -> bool:
        return isinstance(other, ClipFailure) and (self.reason, self.detail) == (other.reason, other.detail)

    def __hash__(self) -> int:
        return hash((self.reason, self.detail))

    def rejection(self, clip_id: str) -> Rejection:
        """The record of this failure for clip ``clip_id``."""
        return Rejection(clip_id, self.reason, self.detail)


@dataclass(frozen=True)
class Rejection:
    """A clip a stage did not keep, and why (``reason``: a code above; ``detail``: one line)."""

    id: str
    reason: str
    detail: str = ""


def exceeds_share(n_rejected: int, n_total: int, max_share: float) -> bool:
    """``n_rejected > max_share * n_total``, exactly: the share is taken as the decimal it is written as
    (0.29 is 29/100, not the binary float just below it), and the comparison is done on integers, so that
    29 of 100 at 0.29 passes and 30 of 100 fails."""
    share = Fraction(str(max_share))
    return n_rejected * share.denominator > share.numerator * n_total


def check_rejected_share(rejected: Sequence[Rejection], n_total: int, max_share: float, *, what: str,
                         param: str, hint: str = "check the inputs") -> None:
    """Raise a one-line :class:`PipelineError` when more than ``max_share`` of the ``n_total`` inputs were
    ``rejected``, so that the stage exits non-zero and DVC never caches a mostly-failed output. ``what`` says
    what the rejected inputs are ("videos could not be decoded"), ``param`` names the threshold's parameter,
    ``hint`` what to look at first."""
    if n_total and rejected and exceeds_share(len(rejected), n_total, max_share):
        top = Counter(r.reason for r in rejected).most_common(3)
        first = rejected[0]
        raise PipelineError(
            f"{len(rejected)} of {n_total} {what} ({', '.join(f'{k}: {v}' for k, v in top)}; e.g. {first.id}: "
            f"{first.detail}), more than {param}={max_share:g}: {hint}, or raise the share")
