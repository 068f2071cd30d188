"""The audio subset (paper IV-A): which listed videos are kept, and why the others are not.

The rule, applied to the clips the dataset lists (:mod:`maivar.data.readers`: UCF101's split
``dataset.split``, a CSV, or Kinetics' annotations; a clip may be a window of a longer video):

0. **Class list** (``prepare.classes``: ``all`` | a preset | a list). Clips of other classes are
   ``not_in_class_list`` and are not opened; a UCF101 list line naming a class ``classInd.txt`` lacks is
   ``unknown_class``.
1. **Per clip**, in this order (the first failing check is the reason):
   listed inside ``dataset.root`` with a sane window (``outside_root``, ``bad_window``: refused unopened,
   :func:`maivar.data.listing.contain`), file present (``missing_file``), a regular file
   (``not_a_regular_file``: a FIFO or device is never opened), non-empty (``empty_file``), the container opens
   with a video stream and declares its length (``unreadable_video``), a declared duration of at most
   ``max_duration_s`` (``too_long``) and frames of at most ``max_pixels`` pixels (``too_large``; both from the
   header, before anything is decoded or demuxed: no clip costs more time or memory than these allow), the
   frames it holds (``frame_check: packets``, or ``decode``: every frame decoded, else ``decode_failed``)
   number at least ``min_decoded_share`` x the declared count (``truncated``: a damaged or cut file), an audio
   stream is present
   (``no_audio_stream``), ffmpeg demuxes it to a WAV (``demux_failed``; ``sample_rate``, ``channels``,
   16-bit), the audio covers at least ``min_audio_coverage`` of the picture's duration
   (``audio_too_short``: a recording whose sound stops early; the manifest records every kept clip's
   ``audio_coverage``, and render draws the audio that exists over the image's whole width), and its
   peak is at least ``silence_dbfs`` (``silent_audio``); ``min_audio_coverage`` or ``silence_dbfs`` null
   skips its check (the authors' rule, ``presets/paper.yaml``: a decodable audio stream is enough). A probe or
   demux running longer than ``timeout_s`` is killed (``timeout``); a crashed worker gives ``crashed``.
2. **Per class**: a class is kept when the share of its listed clips that passed step 1 is at least
   ``min_class_audio_share`` (null: every class with a passing clip); the passing clips of a dropped class
   become ``class_without_audio``.
3. **Labels** are contiguous 0..C-1 over the kept classes, in the dataset's class order (``classInd.txt``
   for UCF101, sorted names otherwise).

On UCF101 with ``classes: paper`` and split 1 this gives 51 classes and 4901 train / 1944 test before
step 1 (the paper's 4893 / 1944 after it). The stage fails when nothing is kept, or when per-video
*faults* (everything in :data:`FAULTS`: broken or missing files, not a video's lack of sound) exceed
``max_rejected_share`` of the videos probed: then the root is probably wrong or damaged.
"""

from __future__ import annotations

import logging
import math
import os
import stat
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from maivar.core import rejections as R
from maivar.core.errors import PipelineError
from maivar.core.parallel import guarded_map
from maivar.core.rejections import ClipFailure, Rejection, check_rejected_share

from .listing import ListedClip, select_classes
from .media import demux_audio, probe_video
from .readers import read_listing

if TYPE_CHECKING:
    from maivar.settings.data import DatasetSettings, PrepareSettings

log = logging.getLogger(__name__)

FAULTS = (R.MISSING_FILE, R.EMPTY_FILE, R.UNREADABLE_VIDEO, R.DECODE_FAILED, R.TRUNCATED, R.DEMUX_FAILED,
          R.TIMEOUT, R.CRASHED, R.OUTSIDE_ROOT, R.NOT_A_REGULAR_FILE, R.BAD_WINDOW)
MAX_LOGGED = 20  # faults named one by one in the log; all of them are in the rejection list
REJECTION_COLUMNS = ("id", "class_name", "split", "video_path", "reason", "detail")


@dataclass(frozen=True)
class ExamineTask:
    id: str
    video_path: str
    wav_path: str  # where to write the WAV (a temporary directory during the stage)
    sample_rate: int
    channels: int
    min_decoded_share: float
    silence_dbfs: float | None  # None: no silence check
    timeout_s: float
    frame_check: str = "packets"
    min_audio_coverage: float | None = 0.0  # None: no coverage check
    start_s: float | None = None  # a window of the video (a clip out of a longer one)
    end_s: float | None = None
    max_duration_s: float | None = None  # longer is too_long (None: no limit)
    max_pixels: int | None = None  # larger frames are too_large (None: no limit)


@dataclass
class Subset:
    manifest: list[dict]
    rejections: list[dict]
    classes: list[str]  # kept, label order
    metrics: dict


def examine_video(task: ExamineTask) -> dict:
    """Step 1 for one clip (a :func:`~maivar.core.parallel.guarded_map` worker): the clip's manifest
    columns when it passes, else a :class:`ClipFailure` naming the first check it fails. Leaves a WAV only
    when it passes."""
    path = Path(task.video_path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ClipFailure(R.MISSING_FILE, f"{path} does not exist") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
        raise ClipFailure(R.UNREADABLE_VIDEO, f"cannot stat {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not stat.S_ISREG(st.st_mode):  # never opened: opening a FIFO blocks, a device never ends
        raise ClipFailure(R.NOT_A_REGULAR_FILE, f"{path} is not a regular file (a FIFO, device, socket or folder)")
    if st.st_size == 0:
        raise ClipFailure(R.EMPTY_FILE, "0 bytes")
    wav = Path(task.wav_path)
    window = {"start_s": task.start_s, "end_s": task.end_s}
    probe = probe_video(path, task.frame_check, **window, max_duration_s=task.max_duration_s,
                        max_pixels=task.max_pixels)
    info = {"duration_s": round(probe.duration_s, 6), "fps": round(probe.fps, 6), "frames": probe.frames,
            "width": probe.width, "height": probe.height,
            # the "partial" record: frames held / declared (a kept video holds at least min_decoded_share)
            "decoded_share": round(probe.decoded_frames / probe.frames, 4) if probe.frames else 0.0}
    if task.start_s is not None:
        info.update(window)
    in_window = " in its window" if task.start_s is not None else ""
    if probe.frames and probe.decoded_frames < task.min_decoded_share * probe.frames:
        raise ClipFailure(R.TRUNCATED, f"holds {probe.decoded_frames} of {probe.frames} declared frames{in_window} "
                          f"({task.frame_check})")
    if not probe.has_audio:
        raise ClipFailure(R.NO_AUDIO_STREAM, "the container has no audio stream")
    level = demux_audio(path, wav, sample_rate=task.sample_rate, channels=task.channels, timeout_s=task.timeout_s,
                        **window)
    coverage = level.duration_s / probe.duration_s if probe.duration_s > 0 else 1.0
    info.update(audio_sample_rate=level.sample_rate, audio_channels=level.channels,
                audio_peak_dbfs=_round_db(level.peak_dbfs), audio_rms_dbfs=_round_db(level.rms_dbfs),
                audio_coverage=round(coverage, 4))
    if task.min_audio_coverage is not None and coverage < task.min_audio_coverage:
        wav.unlink(missing_ok=True)
        raise ClipFailure(R.AUDIO_TOO_SHORT, f"the audio lasts {level.duration_s:.2f} s of the picture's "
                          f"{probe.duration_s:.2f} s ({coverage:.0%} < prepare.min_audio_coverage "
                          f"{task.min_audio_coverage:g})")
    if task.silence_dbfs is not None and not level.peak_dbfs >= task.silence_dbfs:
        wav.unlink(missing_ok=True)
        raise ClipFailure(R.SILENT_AUDIO, f"peak {level.peak_dbfs:.1f} dBFS < {task.silence_dbfs:g} dBFS")
    return info


def _round_db(value: float) -> float:
    return round(value, 3) if math.isfinite(value) else value


def apply_class_rule(
    listed: list[ListedClip], examined: dict[str, dict | ClipFailure], classes: list[str],
    min_class_audio_share: float | None,
) -> tuple[list[str], dict[str, float]]:
    """Step 2: the kept classes (in ``classes`` order) and every examined class's share of passing videos
    (``examined``: a passing video's manifest columns, or its :class:`ClipFailure`). ``min_class_audio_share``
    None: every class with a passing video is kept."""
    total, passed = Counter(), Counter()
    for video in listed:
        if video.id in examined:
            total[video.class_name] += 1
            passed[video.class_name] += not isinstance(examined[video.id], ClipFailure)
    share = {c: passed[c] / total[c] for c in classes if total[c]}
    least = 0.0 if min_class_audio_share is None else min_class_audio_share
    kept = [c for c in classes if c in share and passed[c] > 0 and share[c] >= least]
    return kept, share


def build_subset(
    lists_classes: list[str],
    listed: list[ListedClip],
    unknown: list[ListedClip],
    selected: list[str],
    examined: dict[str, dict | ClipFailure],
    *,
    audio_dir: str,
    min_class_audio_share: float | None,
) -> Subset:
    """Steps 2-3 and the bookkeeping: manifest rows, rejection rows (both sorted by id) and metrics."""
    chosen = set(selected)
    in_list = [v for v in listed if v.class_name in chosen]
    kept, share = apply_class_rule(in_list, examined, selected, min_class_audio_share)
    label = {c: i for i, c in enumerate(kept)}
    manifest, rejected = [], []

    def reject(video: ListedClip, reason: str, detail: str) -> None:
        rejected.append({"id": video.id, "class_name": video.class_name, "split": video.split,
                         "video_path": video.path, "reason": reason, "detail": detail})

    for video in unknown:
        reject(video, R.UNKNOWN_CLASS, f"{video.source}: class {video.class_name!r} is not in classInd.txt")
    for video in listed:
        if video.class_name not in chosen:
            reject(video, R.NOT_IN_CLASS_LIST, "class not selected by prepare.classes")
            continue
        result = examined[video.id]
        if isinstance(result, ClipFailure):
            reject(video, result.reason, result.detail)
        elif video.class_name not in label:
            reject(video, R.CLASS_WITHOUT_AUDIO, f"only {share[video.class_name]:.0%} of the class's videos have "
                   f"audible audio (< {min_class_audio_share:.0%})")
        else:
            manifest.append({"id": video.id, "class_name": video.class_name, "label": label[video.class_name],
                             "split": video.split, "video_path": video.path,
                             "audio_path": f"{audio_dir}/{video.id}.wav", **result})
    manifest.sort(key=lambda r: r["id"])
    rejected.sort(key=lambda r: r["id"])
    reasons = Counter(r["reason"] for r in rejected)
    faults = sum(reasons[r] for r in FAULTS)
    metrics = {
        "videos": len(manifest),
        "classes": len(kept),
        "train": sum(r["split"] == "train" for r in manifest),
        "test": sum(r["split"] == "test" for r in manifest),
        "rejected": dict(sorted(reasons.items())),
        "listed": len(listed) + len(unknown),
        "listed_classes": len(lists_classes),
        "selected_classes": len(selected),
        "probed": len(examined),
        "faults": faults,
        "dropped_classes": [c for c in selected if c not in label],
        "kept_seconds": round(sum(r["duration_s"] for r in manifest), 3),  # total declared duration
    }
    return Subset(manifest=manifest, rejections=rejected, classes=kept, metrics=metrics)


def check_subset(subset: Subset, max_rejected_share: float) -> None:
    """Fail (one line) when nothing is kept or when faults exceed ``max_rejected_share`` of the probed videos."""
    faults = [Rejection(r["id"], r["reason"], r["detail"]) for r in subset.rejections if r["reason"] in FAULTS]
    check_rejected_share(faults, subset.metrics["probed"], max_rejected_share, what="probed videos are broken or "
                         "missing", param="prepare.max_rejected_share", hint="check dataset.root")
    if not subset.manifest:
        top = ", ".join(f"{k}: {v}" for k, v in Counter(r["reason"] for r in subset.rejections).most_common(4))
        raise PipelineError(f"no video passed the audio-subset rule ({top or 'nothing listed'}): check dataset.root, "
                            "prepare.classes and the thresholds in params.yaml (prepare)")


def prepare_subset(
    *,
    dataset: DatasetSettings,
    prepare: PrepareSettings,
    wav_dir: str | Path,
    audio_dir: str,
    workers: int | None = None,
) -> Subset:
    """Run the whole rule with ``prepare``'s settings on the dataset ``dataset`` describes
    (:func:`maivar.data.readers.read_listing`); WAVs of kept clips are left in ``wav_dir``.

    ``audio_dir`` is how the manifest names the WAVs' folder (the final place ``wav_dir`` is renamed to);
    ``workers`` is :func:`~maivar.core.parallel.guarded_map`'s (None: all cores).
    """
    listing = read_listing(dataset)
    selected = select_classes(prepare.classes, listing.classes)
    chosen = set(selected)
    to_probe = sorted((v for v in listing.clips if v.class_name in chosen), key=lambda v: v.id)
    log.info("%s dataset %s: %d clips listed (%d classes), %d of %d selected classes to probe, %d unknown-class lines",
             dataset.format, dataset.root,
             len(listing.clips) + len(listing.unknown), len(listing.classes), len(to_probe), len(selected),
             len(listing.unknown))
    examined: dict[str, dict | ClipFailure] = {v.id: ClipFailure(*v.refusal) for v in to_probe if v.refusal}
    tasks = [ExamineTask(id=v.id, video_path=v.path, wav_path=str(Path(wav_dir) / f"{v.id}.wav"),
                         sample_rate=prepare.sample_rate, channels=prepare.channels,
                         min_decoded_share=prepare.min_decoded_share, silence_dbfs=prepare.silence_dbfs,
                         timeout_s=prepare.timeout_s * 0.9, frame_check=prepare.frame_check,
                         min_audio_coverage=prepare.min_audio_coverage, start_s=v.start_s, end_s=v.end_s,
                         max_duration_s=prepare.max_duration_s, max_pixels=prepare.max_pixels)
             for v in to_probe if not v.refusal]
    results = guarded_map(examine_video, tasks, workers=workers, timeout_s=prepare.timeout_s, desc="probe+demux")
    for task, result in zip(tasks, results, strict=True):
        if isinstance(result, ClipFailure):  # e.g. a worker killed after a timeout: its WAV may be half-written
            Path(task.wav_path).unlink(missing_ok=True)
        examined[task.id] = result
    subset = build_subset(listing.classes, listing.clips, listing.unknown, selected, examined, audio_dir=audio_dir,
                          min_class_audio_share=prepare.min_class_audio_share)
    kept_ids = {r["id"] for r in subset.manifest}
    for task in tasks:  # WAVs of clips whose class was dropped
        if task.id not in kept_ids:
            Path(task.wav_path).unlink(missing_ok=True)
    for reason, count in subset.metrics["rejected"].items():
        log.info("rejected %d clip(s): %s", count, reason)
    noteworthy = [r for r in subset.rejections if r["reason"] in FAULTS or r["reason"] == R.UNKNOWN_CLASS]
    for row in noteworthy[:MAX_LOGGED]:
        log.warning("%s: %s (%s)", row["id"], row["reason"], row["detail"])
    if len(noteworthy) > MAX_LOGGED:
        log.warning("... and %d more (see the rejection list)", len(noteworthy) - MAX_LOGGED)
    log.info("kept %d clips of %d classes: %d train / %d test", subset.metrics["videos"], subset.metrics["classes"],
             subset.metrics["train"], subset.metrics["test"])
    return subset


def to_csv(rows: list[dict], columns: tuple[str, ...]) -> str:
    """Rows as CSV text (stable formatting, LF line ends)."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="raise")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    return buf.getvalue()
