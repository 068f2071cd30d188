"""Reason codes for rejected clips, shared by every stage.

A rejected clip is never silently dropped: each stage records ``(id, reason, detail)`` rows, and the
stages after it read them back, so that ids stay aligned across audio and video files.
"""

MISSING_FILE = "missing_file"  # named in the split list, absent on disk
EMPTY_FILE = "empty_file"  # 0 bytes
UNREADABLE_VIDEO = "unreadable_video"  # the container cannot be opened or has no video stream
NO_AUDIO_STREAM = "no_audio_stream"  # the container has no audio stream
SILENT_AUDIO = "silent_audio"  # an audio stream whose peak is below the silence threshold
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

ALL = (
    MISSING_FILE,
    EMPTY_FILE,
    UNREADABLE_VIDEO,
    NO_AUDIO_STREAM,
    SILENT_AUDIO,
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
)


def check_rejected_share(n_rejected: int, n_total: int, max_share: float, rejected, *, what: str, param: str) -> None:
    """Raise a one-line ``PipelineError`` when more than ``max_share`` of the ``n_total`` inputs were rejected
    (``rejected``: objects with ``id``, ``reason``, ``detail``), so that the stage exits non-zero and DVC never
    caches a mostly-failed output."""
    from collections import Counter

    from .errors import PipelineError

    if n_total and n_rejected > max_share * n_total:
        top = Counter(r.reason for r in rejected).most_common(3)
        first = rejected[0]
        raise PipelineError(
            f"{n_rejected} of {n_total} {what} ({', '.join(f'{k}: {v}' for k, v in top)}; e.g. {first.id}: "
            f"{first.detail}), more than {param}={max_share:g}: check the inputs, or raise the share")
