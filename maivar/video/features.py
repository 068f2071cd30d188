"""Videos -> TSN per-segment features (paper Sec. III-A.1: ``num_segments`` x D, AvgPool2d features).

Videos are decoded in guarded worker processes (:func:`maivar.core.parallel.guarded_imap` over
:func:`maivar.video.frames.decode_segments`: PyAV, RGB conversion of the kept frames only, short side +
center crop; a hung decoder is killed after ``timeout_s``, a crashed one fails only its video) and batched
across videos (:func:`frame_batches`): each worker writes a video's T x C x C x 3 uint8 frames into a slot of
shared memory, the parent copies them from there into one reused batch buffer (pinned memory on CUDA) and
the slot goes back to the ring; no frame travels pickled through a pipe, and at most ``2 x workers +
batch_videos`` decoded videos wait in memory however long a decoder hangs. The batch goes to the device, is
put in the network's channel order and normalized there as the MMAction2 config's data preprocessor does
(:class:`~maivar.video.tsn.Preprocessing`), and run through the recognizer's ``extract_feat(stage='backbone')``
(:func:`maivar.video.tsn.build_video_backbone`; the loop: :func:`maivar.extraction.job.journaled_batches`); the
feature maps are average-pooled over space. A video that fails to decode becomes a
:class:`~maivar.core.rejections.Rejection`; the other rows keep the input order.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import pandas as pd
import torch
from torch import nn

from maivar.core.errors import PipelineError
from maivar.core.manifest import read_manifest
from maivar.core.parallel import default_workers, guarded_imap, reorder_window, shared_array
from maivar.core.rejections import ClipFailure, Rejection, check_rejected_share
from maivar.extraction.data_parallel import JobSpec, World, rank_device, rank_workers, run_extraction
from maivar.extraction.inference import autocast, compute_dtype, select_device
from maivar.extraction.job import Batch, Job, journaled_batches, journaled_prefix
from maivar.extraction.resume import Journal, Resumed, blocks, file_identity
from maivar.settings.extract import ExtractVideoSettings
from maivar.settings.runtime import RuntimeSettings

from .frames import decode_segments
from .tsn import Preprocessing, VideoBackbone, build_video_backbone

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoClip:
    id: str
    path: str
    expected_frames: int | None = None
    start_s: float | None = None  # a window of the video (a clip out of a longer one), as the manifest says
    end_s: float | None = None


def decode_clip(clip: VideoClip, *, num_segments: int, short_side: int, crop_size: int, timeout_s: float,
                min_decoded_share: float) -> np.ndarray:
    """Worker (:func:`~maivar.core.parallel.guarded_imap`): one video's T x C x C x 3 uint8 frames, written
    straight into the video's shared-memory slot when the pool has one; raises
    :class:`~maivar.core.rejections.ClipFailure`."""
    cv2.setNumThreads(1)  # one decoding process per core: no nested thread pools
    return decode_segments(clip.path, num_segments=num_segments, expected_frames=clip.expected_frames,
                           short_side=short_side, crop_size=crop_size, timeout_s=timeout_s,
                           min_decoded_share=min_decoded_share, start_s=clip.start_s, end_s=clip.end_s,
                           out=shared_array((num_segments, crop_size, crop_size, 3), np.uint8))


class FrameBatch(NamedTuple):
    """One batch of :func:`frame_batches`: it accounts for the items ``[start, stop)``."""

    start: int
    stop: int
    rows: list[int]
    frames: torch.Tensor
    failures: list[tuple[int, ClipFailure]]


def frame_batches(
    decode: Callable[[object], np.ndarray],
    items: Sequence,
    *,
    frame_shape: tuple[int, ...],
    batch_videos: int,
    workers: int | None,
    timeout_s: float,
    recycle_after: int = 1000,
    spans: Sequence[range] | None = None,
    pin_memory: bool = False,
    shared_memory: bool = True,
) -> Iterator[FrameBatch]:
    """Run ``decode`` (a :func:`~maivar.core.parallel.guarded_imap` worker giving one ``frame_shape`` uint8
    array, or raising :class:`ClipFailure`) over the ``items`` of ``spans`` (default: all; ascending, disjoint
    ranges of indices, e.g. a rank's blocks) and yield a :class:`FrameBatch` per batch:

    - ``rows``: the indices of the up to ``batch_videos`` items in the batch, in order;
    - ``frames``: their ``len(rows) x frame_shape`` uint8 frames, a view of one buffer (pinned with
      ``pin_memory``) that every batch reuses: use it (or copy it, or wait for a non-blocking copy from it)
      before asking for the next batch;
    - ``failures``: ``(index, failure)`` for the items that failed since the previous batch;
    - ``start``, ``stop``: the items the batch accounts for. A batch never spans two spans: the last one of
      a span ends at the span's end (it may be short, or hold only failures).

    One pool of decoding workers serves all the spans. The arrays come from the workers through shared memory
    (``shared_memory``; pickled through pipes without
    it, or when the machine has no room for the ring) and are copied once, into the buffer; at most
    :func:`~maivar.core.parallel.reorder_window` (``workers``, ``batch=batch_videos``) decoded items wait at
    once. Memory: that window of videos in the ring, reserved when the run starts (16 workers, batches of 32,
    25 x 224 x 224 x 3: 64 x 3.6 MiB = 230 MiB), plus the batch buffer.
    """
    batch_videos = max(1, int(batch_videos))
    spans = [range(0, len(items))] if spans is None else [s for s in spans if len(s)]
    order = [i for span in spans for i in span]
    span_stop = [span.stop for span in spans for _ in span]
    buffer = torch.empty((batch_videos, *frame_shape), dtype=torch.uint8, pin_memory=pin_memory)
    slots = buffer.numpy()
    results = guarded_imap(decode, [items[i] for i in order], workers=workers, timeout_s=timeout_s,
                           recycle_after=recycle_after,
                           window=reorder_window(workers or default_workers(), batch=batch_videos),
                           shared_bytes=slots[0].nbytes if shared_memory else 0)
    rows: list[int] = []
    failures: list[tuple[int, ClipFailure]] = []
    start = None
    try:
        for i, stop_of_span, result in zip(order, span_stop, results, strict=True):
            start = i if start is None else start
            if isinstance(result, ClipFailure):  # from the decoder, or a worker that hung or crashed
                failures.append((i, result))
            else:
                slots[len(rows)] = result  # out of its shared-memory slot, which goes back when the next one comes
                rows.append(i)
            if len(rows) == batch_videos or i + 1 == stop_of_span:
                yield FrameBatch(start, i + 1, rows, buffer[: len(rows)], failures)
                start, rows, failures = None, [], []
    finally:
        results.close()  # stop the workers also when the consumer leaves early


def pooled_segment_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """B x T x 3 x H x W normalized frames -> B x T x D: ``extract_feat(stage='backbone')`` + spatial mean."""
    b, t = x.shape[:2]
    feats, _ = model.extract_feat(x, stage="backbone")
    if isinstance(feats, (tuple, list)):
        feats = feats[-1]
    feats = feats.float()  # pool in float32 also under bf16 autocast
    if feats.ndim == 4:  # (B*T) x D x h x w
        feats = feats.mean(dim=(2, 3))
    elif feats.ndim == 3:  # (B*T) x L x D (transformers)
        feats = feats.mean(dim=1)
    return feats.reshape(b, t, -1)


def feature_dim(model: nn.Module, pre: Preprocessing, device: torch.device, precision: str = "fp32") -> int:
    """D, from one forward pass on a single black frame."""
    x = torch.zeros(1, 1, 3, pre.crop_size, pre.crop_size, device=device)
    with torch.inference_mode(), autocast(device, precision):
        return int(pooled_segment_features(model, x).shape[-1])


@torch.inference_mode()
def extract_video_features(
    model: nn.Module,
    clips: Sequence[VideoClip],
    *,
    num_segments: int,
    pre: Preprocessing,
    batch_videos: int,
    workers: int,
    device: torch.device,
    timeout_s: float,
    min_decoded_share: float = 0.0,
    recycle_after: int = 1000,
    progress: bool = True,
    journal: Journal | None = None,
    precision: str = "fp32",
) -> tuple[list[int], np.ndarray, list[Rejection]]:
    """``(rows, features, rejections)``: the indices of ``clips`` that decoded (in order), their
    ``len(rows) x num_segments x D`` float32 features, and a rejection for every clip that did not (including
    one that decodes fewer than ``min_decoded_share`` x its expected frames, or hangs, or crashes its worker).

    With a ``journal`` (:mod:`maivar.extraction.resume`), finished batches are journaled, and the clips an
    interrupted run already finished are taken from it instead of being decoded and run again.
    """
    n = len(clips)
    done = journaled_prefix(journal, n, "videos")
    rows, chunks, rejected = list(done.rows), list(done.features), list(done.rejected)
    for batch, feats in _feature_batches(
        model, clips, [range(done.stop, n)], num_segments=num_segments, pre=pre, batch_videos=batch_videos,
        workers=workers, device=device, timeout_s=timeout_s, min_decoded_share=min_decoded_share,
        recycle_after=recycle_after, journal=journal, precision=precision, progress=progress, total=n,
        initial=done.stop,
    ):
        rows.extend(batch.rows)
        rejected.extend(batch.rejected)
        if batch.rows:
            chunks.append(feats)
    if chunks:
        features = np.concatenate(chunks)
    else:
        features = np.empty((0, num_segments, feature_dim(model, pre, device, precision)), dtype=np.float32)
    return rows, features, rejected


def _clip_batches(batches: Iterator[FrameBatch], clips: Sequence[VideoClip]) -> Iterator[Batch]:
    """:func:`frame_batches`' batches with a rejection for each clip that failed (logged)."""
    try:
        for start, stop, rows, frames, failures in batches:
            for i, failure in failures:  # from the decoder, or a worker that hung or crashed
                log.warning("rejected %s: %s (%s)", clips[i].id, failure.reason, failure.detail)
            yield Batch(start, stop, rows, frames, [failure.rejection(clips[i].id) for i, failure in failures])
    finally:
        batches.close()  # stop the decoding workers also when the loop is left by an exception


def _feature_batches(
    model: nn.Module,
    clips: Sequence[VideoClip],
    spans: Sequence[range],
    *,
    num_segments: int,
    pre: Preprocessing,
    batch_videos: int,
    workers: int,
    device: torch.device,
    timeout_s: float,
    min_decoded_share: float,
    journal: Journal | None,
    precision: str,
    progress: bool,
    total: int,
    initial: int,
    recycle_after: int = 1000,
) -> Iterator[tuple[Batch, np.ndarray]]:
    """The features of the clips of ``spans`` (ascending, disjoint ranges: all the clips, or a rank's unfinished
    blocks), a batch at a time (:func:`~maivar.extraction.job.journaled_batches`): the batch (the clips that
    decoded, a rejection for each of the others) and the features of the clips that decoded."""
    # Decoding runs in guarded worker processes: a video whose demuxer or decoder hangs is killed after
    # ``timeout_s`` and one that crashes its process (a segfault) becomes that video's rejection, not the run's.
    worker = functools.partial(decode_clip, num_segments=num_segments, short_side=pre.short_side,
                               crop_size=pre.crop_size, timeout_s=0.9 * timeout_s, min_decoded_share=min_decoded_share)
    frames = frame_batches(worker, clips, frame_shape=(num_segments, pre.crop_size, pre.crop_size, 3),
                           batch_videos=batch_videos, workers=workers or None, timeout_s=timeout_s,
                           recycle_after=recycle_after, spans=[span for span in spans if len(span)],
                           pin_memory=device.type == "cuda")
    mean = torch.tensor(pre.mean, dtype=torch.float32, device=device)
    std = torch.tensor(pre.std, dtype=torch.float32, device=device)
    bgr = pre.channel_order == "BGR"

    def forward(frames: torch.Tensor) -> torch.Tensor:
        # B x T x H x W x 3 uint8 RGB -> the network's channel order (ActionDataPreprocessor's to_rgb), normalize
        # in NHWC, then a permuted view: B x T x 3 x H x W whose (B*T) x 3 x H x W reshape (in extract_feat) is
        # channels_last in memory, at no copy.
        if bgr:
            frames = frames.flip(-1)
        x = ((frames.float() - mean) / std).permute(0, 1, 4, 2, 3)
        with autocast(device, precision):
            return pooled_segment_features(model, x).float()

    return journaled_batches(_clip_batches(frames, clips), forward, spans=spans, chunk=batch_videos, device=device,
                             journal=journal, progress=progress, total=total, initial=initial, desc="video features",
                             unit="video")


def read_clips(manifest_path: str | Path) -> tuple[list[VideoClip], dict[str, int]]:
    """The manifest's videos (with their expected frame counts and windows, when known) and each clip's label."""
    df = read_manifest(manifest_path, ("id", "label", "video_path"))

    def column(name: str) -> list:
        values = df[name] if name in df.columns else [None] * len(df)
        return [None if v is None or pd.isna(v) else float(v) for v in values]

    clips = [
        VideoClip(i, v, int(f) if f is not None else None, start, end)
        for i, v, f, start, end in zip(df["id"], df["video_path"], column("frames"), column("start_s"),
                                       column("end_s"), strict=True)
    ]
    return clips, dict(zip(df["id"], df["label"].astype(int), strict=True))


@dataclass
class VideoJob(Job):
    """What extract_video computes with, set up once per process (:func:`video_job`)."""

    clips: list[VideoClip]
    labels: dict[str, int]
    backbone: VideoBackbone
    settings: ExtractVideoSettings
    runtime: RuntimeSettings

    def batches(self, todo: list[range], world: World) -> Iterator[tuple[Batch, np.ndarray]]:
        s, b = self.settings, self.backbone
        return _feature_batches(
            b.model, self.clips, todo, num_segments=s.num_segments, pre=b.pre,
            batch_videos=self.runtime.extract_video.batch_videos,
            workers=rank_workers(self.runtime.worker_count, world), device=self.device, timeout_s=s.timeout_s,
            min_decoded_share=s.min_decoded_share, journal=self.journal, precision=s.precision,
            progress=world.rank == 0, total=sum(map(len, todo)), initial=0,
        )

    def describe(self) -> str:
        s, pre = self.settings, self.backbone.pre
        return (f"{len(self.clips)} videos x {s.num_segments} segments -> {s.config} (short side {pre.short_side}, "
                f"crop {pre.crop_size}) on {self.device}")

    def store_rows(self, done: Resumed) -> tuple[list[str], list[int], list[Rejection]]:
        clips, rows, rejected = self.clips, done.rows, done.rejected
        if clips and not rows:
            raise PipelineError(f"none of the {len(clips)} videos decoded (first: {rejected[0].reason}: "
                                f"{rejected[0].detail})")
        check_rejected_share(rejected, len(clips), self.settings.max_rejected_share,
                             what="videos could not be decoded", param="extract_video.max_rejected_share")
        if rejected:
            log.warning("rejected %d of %d videos: %s", len(rejected), len(clips),
                        ", ".join(f"{k} {v}" for k, v in sorted(Counter(r.reason for r in rejected).items())))
        ids = [clips[r].id for r in rows]
        return ids, [self.labels[i] for i in ids], rejected

    def item_shape(self) -> tuple[int, ...]:
        b = self.backbone
        return self.settings.num_segments, feature_dim(b.model, b.pre, self.device, self.settings.precision)


# Settings that do not change what a batch gives: a journal filled with other values is still used.
NOT_IN_JOURNAL_KEY = ("device", "extract_video.max_rejected_share")


def video_job(spec: JobSpec, world: World) -> VideoJob:
    """extract_video's :class:`VideoJob` in this process (``make_job`` of :mod:`maivar.extraction.data_parallel`)."""
    settings, runtime = spec.settings, spec.runtime
    clips, labels = read_clips(spec.source)
    device = rank_device(select_device(runtime.device), world)
    backbone = build_video_backbone(settings, device, weights_file=spec.weights,
                                    compile_model=runtime.extract_video.compile)
    attrs = {**settings.to_attrs(), **backbone.attrs(), "device": device.type,
             "dtype": compute_dtype(settings.precision)}
    batch_videos = runtime.extract_video.batch_videos
    # finished batches of an interrupted run (or of other ranks, other machines) with the same videos and
    # settings are reused (maivar.extraction.resume); the device is not part of what they depend on
    journal = Journal(spec.out_path, {
        "attrs": {k: v for k, v in attrs.items() if k not in NOT_IN_JOURNAL_KEY}, "batch_videos": batch_videos,
        "clips": [(c.id, c.expected_frames, *file_identity(c.path), *((c.start_s, c.end_s) if c.start_s is not None
                                                                        else ())) for c in clips],
    }, device=device.type)
    return VideoJob("videos", device, backbone.weights, attrs, journal, blocks(len(clips), batch_videos), clips,
                    labels, backbone, settings, runtime)


def extract_video_stage(manifest_path: str | Path, out_path: str | Path, weights_path: str | Path, *,
                        settings: ExtractVideoSettings, runtime: RuntimeSettings) -> None:
    """Stage extract_video: the manifest's videos -> TSN per-segment features at ``out_path``.

    The output holds ``features`` N x num_segments x D float32, ids/labels in manifest order, a rejection for
    every manifest clip that fails to decode, and attributes: every ``extract_video.*`` setting, and what was
    resolved from them (the config's backbone type and depth, or null for a backbone without one such as
    BNInception, its short side, crop size, mean/std and, when it is not RGB, channel order; the weights' source
    and sha256, the BatchNorm layers folded, the device, the compute dtype). Independent of ``representation``.
    With ``runtime.processes`` > 1, or under torchrun, data parallel (:mod:`maivar.extraction.data_parallel`).
    """
    n_videos = len(read_clips(manifest_path)[0])
    run_extraction(video_job, JobSpec(str(manifest_path), str(out_path), settings, runtime, str(weights_path)),
                   n_blocks=len(blocks(n_videos, runtime.extract_video.batch_videos)),
                   device_type=select_device(runtime.device).type)
