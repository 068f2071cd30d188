"""Videos -> TSN per-segment features (paper Sec. III-A.1: ``num_segments`` x D, AvgPool2d features).

Videos are decoded in guarded worker processes (:func:`maivar.core.parallel.guarded_imap` over
:func:`maivar.video.frames.decode_segments`: PyAV, RGB conversion of the kept frames only, short side +
centre crop; a hung decoder is killed after ``timeout_s``, a crashed one fails only its video) and batched
across videos (:func:`frame_batches`): each worker writes a video's T x C x C x 3 uint8 frames into a slot of
shared memory, the parent copies them from there into one reused batch buffer (pinned memory on CUDA) and
the slot goes back to the ring; no frame travels pickled through a pipe, and at most ``2 x workers +
batch_videos`` decoded videos wait in memory however long a decoder hangs. The batch goes to the device, is
put in the network's channel order and normalised there as the MMAction2 config's data preprocessor does
(:class:`Preprocessing`), and run through the recognizer's ``extract_feat(stage='backbone')``; the feature
maps are average-pooled over space. A video that fails to decode becomes a
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
from tqdm import tqdm

from maivar.core.errors import PipelineError
from maivar.core.feature_store import create_store
from maivar.core.manifest import read_manifest
from maivar.core.parallel import default_workers, guarded_imap, reorder_window, shared_array
from maivar.core.params import resolve_workers
from maivar.core.rejections import ClipFailure, Rejection, check_rejected_share
from maivar.extraction.data_parallel import (
    Extraction,
    World,
    rank_device,
    rank_summary,
    rank_todo,
    rank_workers,
    run_stage,
)
from maivar.extraction.inference import (
    OomGuard,
    autocast,
    check_precision,
    compute_dtype,
    prepare_for_inference,
    select_device,
    warn_if_emulated,
)
from maivar.extraction.resume import Journal, Resumed, blocks, file_identity

from .frames import decode_segments
from .tsn import build_tsn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoClip:
    id: str
    path: str
    expected_frames: int | None = None
    start_s: float | None = None  # a window of the video (a clip out of a longer one), as the manifest says
    end_s: float | None = None


@dataclass(frozen=True)
class Preprocessing:
    """MMAction2's TSN test preprocessing, read from the config (:func:`preprocessing_from_config`).

    ``channel_order`` is the order of the colour channels the network takes: ``RGB`` (the decoded frames as
    they are: MMAction2's ResNets) or ``BGR`` (reversed: Caffe-trained BN-Inception). ``mean`` and ``std``
    are per channel in that order, applied after the reordering, as MMAction2's ``ActionDataPreprocessor``
    does.
    """

    short_side: int
    crop_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: str = "RGB"


def preprocessing_from_config(cfg) -> Preprocessing:
    """Short side (``Resize(scale=(-1, S))``), crop (``CenterCrop``), mean/std and channel order of an MMAction2
    config.

    The channel order follows ``model.data_preprocessor.to_rgb``. MMAction2's decoders (Decord, PyAV,
    OpenCV) give RGB frames, as ours do; ``ActionDataPreprocessor(to_rgb=True)`` reverses the channels of
    the stacked batch (``inputs[..., [2, 1, 0], :, :]``, named for BGR -> RGB, which on RGB frames gives BGR)
    before subtracting ``mean`` and dividing by ``std``. So ``to_rgb=True`` is ``BGR`` here, and absent or
    False is ``RGB``.
    """
    short_side = crop_size = None
    for step in cfg.get("test_pipeline", []):
        if step.get("type") == "Resize":
            scale = tuple(step.get("scale", ()))
            if len(scale) == 2 and scale[0] == -1 and step.get("keep_ratio", True):
                short_side = int(scale[1])
        elif step.get("type") == "CenterCrop":
            size = step.get("crop_size")
            crop_size = int(size if isinstance(size, int) else size[0])
    pre = cfg.model.get("data_preprocessor", {})
    if short_side is None or crop_size is None or "mean" not in pre or "std" not in pre:
        raise PipelineError(
            "the MMAction2 config needs test_pipeline Resize(scale=(-1, S)) and CenterCrop(crop_size=C), "
            "and model.data_preprocessor mean/std"
        )
    to_rgb = pre.get("to_rgb", False)
    if not isinstance(to_rgb, bool):
        raise PipelineError(f"model.data_preprocessor.to_rgb must be True or False (got {to_rgb!r})")
    return Preprocessing(short_side, crop_size, tuple(map(float, pre["mean"])), tuple(map(float, pre["std"])),
                         "BGR" if to_rgb else "RGB")


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
    """B x T x 3 x H x W normalised frames -> B x T x D: ``extract_feat(stage='backbone')`` + spatial mean."""
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
    done = journal.load(range(0, n)) if journal is not None else Resumed()
    if done.stop:
        log.info("resuming: %d of %d videos were done by an interrupted run (%s)", done.stop, n, journal.dir)
    rows, chunks, rejected = list(done.rows), list(done.features), list(done.rejected)
    for batch, feats, new_rejected in _feature_batches(
        model, clips, [range(done.stop, n)], num_segments=num_segments, pre=pre, batch_videos=batch_videos,
        workers=workers, device=device, timeout_s=timeout_s, min_decoded_share=min_decoded_share,
        recycle_after=recycle_after, journal=journal, precision=precision, progress=progress, total=n,
        initial=done.stop,
    ):
        rows.extend(batch)
        rejected.extend(new_rejected)
        if batch:
            chunks.append(feats)
    if chunks:
        features = np.concatenate(chunks)
    else:
        features = np.empty((0, num_segments, feature_dim(model, pre, device, precision)), dtype=np.float32)
    return rows, features, rejected


@torch.inference_mode()
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
) -> Iterator[tuple[list[int], np.ndarray, list[Rejection]]]:
    """The features of the clips of ``spans`` (ascending, disjoint ranges: all the clips, or a rank's unfinished
    blocks), a batch at a time: ``(rows, features, rejections)`` (the clips of the batch that decoded, their
    features, a rejection for each of the others); a batch never spans two spans. With a ``journal``, every
    batch is journaled, and written at once when it ends a span. ``total`` / ``initial``: the progress bar's."""
    spans = [span for span in spans if len(span)]
    if not spans:
        return
    on_cuda = device.type == "cuda"
    # Decoding runs in guarded worker processes: a video whose demuxer or decoder hangs is killed after
    # ``timeout_s`` and one that crashes its process (a segfault) becomes that video's rejection, not the run's.
    worker = functools.partial(decode_clip, num_segments=num_segments, short_side=pre.short_side,
                               crop_size=pre.crop_size, timeout_s=0.9 * timeout_s, min_decoded_share=min_decoded_share)
    batches = frame_batches(worker, clips, frame_shape=(num_segments, pre.crop_size, pre.crop_size, 3),
                            batch_videos=batch_videos, workers=workers or None, timeout_s=timeout_s,
                            recycle_after=recycle_after, spans=spans, pin_memory=on_cuda)
    mean = torch.tensor(pre.mean, dtype=torch.float32, device=device)
    std = torch.tensor(pre.std, dtype=torch.float32, device=device)
    bgr = pre.channel_order == "BGR"
    guard = OomGuard(batch_videos)
    span_stops = {span.stop for span in spans}

    def forward(frames: torch.Tensor) -> torch.Tensor:
        # B x T x H x W x 3 uint8 RGB -> the network's channel order (ActionDataPreprocessor's to_rgb), normalise
        # in NHWC, then a permuted view: B x T x 3 x H x W whose (B*T) x 3 x H x W reshape (in extract_feat) is
        # channels_last in memory, at no copy.
        if bgr:
            frames = frames.flip(-1)
        x = ((frames.float() - mean) / std).permute(0, 1, 4, 2, 3)
        with autocast(device, precision):
            return pooled_segment_features(model, x).float()

    try:
        with tqdm(total=total, initial=initial, desc="video features", unit="video", disable=not progress,
                  mininterval=1.0) as bar:
            for start, stop, batch, frames, failures in batches:
                new_rejected = [failure.rejection(clips[i].id) for i, failure in failures]
                for i, failure in failures:  # from the decoder, or a worker that hung or crashed
                    log.warning("rejected %s: %s (%s)", clips[i].id, failure.reason, failure.detail)
                feats = np.empty((0,), np.float32)
                if batch:
                    # The frames' buffer is refilled only when the next batch is asked for: after .cpu() below,
                    # which waits for the (non-blocking) copy to the device too.
                    feats = guard(forward, frames.to(device, non_blocking=on_cuda)).cpu().numpy()
                if journal is not None:  # clips [start, stop): this batch and the rejections among them
                    journal.add(start, stop, batch, feats, new_rejected)
                    if stop in span_stops:
                        journal.write()  # a finished block is on disk at once
                bar.update(stop - start)
                yield batch, feats, new_rejected
    finally:
        batches.close()  # stop the decoding workers also when the loop is left by an exception
        if journal is not None:
            journal.write_quietly()  # the finished batches survive an interruption


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
class _VideoJob:
    """What extract_video computes with, set up once per process (:func:`_video_job`)."""

    clips: list[VideoClip]
    labels: dict[str, int]
    model: nn.Module
    pre: Preprocessing
    device: torch.device
    precision: str
    attrs: dict
    journal: Journal
    spans: list[range]
    p: dict
    runtime: dict
    weights_source: str


def _video_job(manifest_path: str | Path, out_path: str | Path, p: dict, runtime: dict, world: World) -> _VideoJob:
    clips, labels = read_clips(manifest_path)
    num_segments = int(p["num_segments"])
    if num_segments < 1:
        raise PipelineError("extract_video.num_segments must be at least 1")
    device = rank_device(select_device(str(runtime["device"])), world)
    precision = check_precision(p["precision"], "extract_video.precision")
    warn_if_emulated(device, precision, "extract_video.precision")
    model, weights, cfg = build_tsn(p["config"], checkpoint=p["checkpoint"], seed=int(p["seed"]))
    pre = preprocessing_from_config(cfg)
    folded = prepare_for_inference(model, device, compile_model=bool(runtime["compile"]),
                                   fold_batchnorm=bool(p["fuse_conv_bn"]), input_size=pre.crop_size,
                                   image_module=model.backbone)
    attrs = {
        "config": str(p["config"]), "backbone": cfg.model.backbone.get("type"),
        "backbone_depth": cfg.model.backbone.get("depth"), "input_size": pre.crop_size,
        "short_side": pre.short_side, "mean": list(pre.mean), "std": list(pre.std),
        "num_segments": num_segments, "device": device.type, "dtype": compute_dtype(precision),
        "conv_bn_folded": folded, **weights.attrs(),
    }
    if pre.channel_order != "RGB":  # recorded only when not RGB: the outputs of RGB configs stay as they were
        attrs["channel_order"] = pre.channel_order
    batch_videos = int(runtime["batch_videos"])
    # finished batches of an interrupted run (or of other ranks, other machines) with the same videos and
    # settings are reused (maivar.extraction.resume); the device is not part of what they depend on
    journal = Journal(out_path, {
        "attrs": {k: v for k, v in attrs.items() if k != "device"}, "batch_videos": batch_videos,
        "min_decoded_share": float(p["min_decoded_share"]),
        "timeout_s": float(p["timeout_s"]),
        "clips": [(c.id, c.expected_frames, *file_identity(c.path), *((c.start_s, c.end_s) if c.start_s is not None
                                                                        else ())) for c in clips],
    }, device=device.type)
    return _VideoJob(clips, labels, model, pre, device, precision, attrs, journal, blocks(len(clips), batch_videos),
                     p, runtime, weights.source)


def _fill_video(job: _VideoJob, world: World, threads: int) -> dict:
    """Compute this rank's unfinished blocks into the journal; a summary for the log."""
    mine, todo = rank_todo(job.journal, job.spans, world, "videos")
    if world.rank == 0:
        log.info("%d videos x %d segments -> %s (short side %d, crop %d) on %s, %d blocks", len(job.clips),
                 int(job.p["num_segments"]), job.p["config"], job.pre.short_side, job.pre.crop_size, job.device,
                 len(job.spans))
    rejected = 0
    for _, _, new_rejected in _feature_batches(
        job.model, job.clips, todo, num_segments=int(job.p["num_segments"]), pre=job.pre,
        batch_videos=int(job.runtime["batch_videos"]),
        workers=rank_workers(resolve_workers(job.runtime["workers"]), world), device=job.device,
        timeout_s=float(job.p["timeout_s"]), min_decoded_share=float(job.p["min_decoded_share"]), journal=job.journal,
        precision=job.precision, progress=world.rank == 0, total=sum(map(len, todo)), initial=0,
    ):
        rejected += len(new_rejected)  # journaled as they come: the store is assembled from the journal
    job.journal.write()
    return rank_summary(world, mine, todo, job.device, threads, rejected=rejected)


def extract_video_stage(manifest_path: str | Path, out_path: str | Path, p: dict, runtime: dict) -> None:
    """Stage extract_video: the manifest's videos -> TSN per-segment features at ``out_path``.

    ``p`` is the ``extract_video`` params section, ``runtime`` its machine settings (``device``, ``workers``,
    ``threads``, ``processes``, ``batch_videos``, ``compile``: :func:`maivar.core.params.runtime_settings`).
    The output holds ``features`` N x num_segments x D
    float32, ids/labels in manifest order, a rejection for every manifest clip that fails to decode, and
    attributes recording the config, backbone (type; depth, or null for a backbone without one such as
    BNInception), input size, mean/std (and the channel order when it is not RGB), num_segments, the device
    and weights (source, sha256).
    Independent of ``representation``. With ``runtime.processes`` > 1, or under torchrun, data parallel
    (:mod:`maivar.extraction.data_parallel`).
    """
    n_videos = len(read_clips(manifest_path)[0])
    run_stage(EXTRACT_VIDEO, (manifest_path, out_path, p, runtime), len(blocks(n_videos, int(runtime["batch_videos"]))),
              select_device(str(runtime["device"])).type)


def _assemble_video(job: _VideoJob, out_path: str | Path, done: Resumed) -> None:
    """The store, from every block's journaled results, in manifest order."""
    clips = job.clips
    rows, rejected = done.rows, done.rejected
    if done.features:
        feats = np.concatenate(done.features)
    else:
        feats = np.empty((0, int(job.p["num_segments"]), feature_dim(job.model, job.pre, job.device, job.precision)),
                         dtype=np.float32)
    if clips and not rows:
        raise PipelineError(f"none of the {len(clips)} videos decoded (first: {rejected[0].reason}: "
                            f"{rejected[0].detail})")
    check_rejected_share(rejected, len(clips), float(job.p["max_rejected_share"]), what="videos could not be decoded",
                         param="extract_video.max_rejected_share")
    if rejected:
        log.warning("rejected %d of %d videos: %s", len(rejected), len(clips),
                    ", ".join(f"{k} {v}" for k, v in sorted(Counter(r.reason for r in rejected).items())))
    attrs = {**job.attrs, "device": ",".join(sorted(done.devices)) or job.device.type}
    ids = [clips[r].id for r in rows]
    with create_store(out_path, data_name="features", n=len(ids), item_shape=feats.shape[1:],
                      dtype=np.float32) as w:
        if len(ids):
            w.write_rows(0, feats)
        w.finish(ids, [job.labels[i] for i in ids], rejected, attrs)
    job.journal.discard()
    log.info("wrote %s: %d x %d x %d features (weights: %s)", out_path, *feats.shape, job.weights_source)


EXTRACT_VIDEO = Extraction("videos", _video_job, _fill_video, _assemble_video)
