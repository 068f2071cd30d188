"""Benchmark the feed of extract_video: decoded videos delivered to the model process, old route vs new, same run.

Workload: ``--videos`` videos of ``--segments`` x ``--size`` x ``--size`` x 3 uint8 frames (default 25 x 224 x 224
x 3 = 3.6 MiB, TSN's input), made in the worker processes. By default they are synthetic (each worker fills the
array: no decoding), so that what is measured is the transport from the workers to the batches; ``--decode``
decodes real videos instead (``--unique`` small MPEG-4 AVIs like UCF101's, 320x240, ``--duration`` s, the rest
symlinks; :func:`maivar.video.features.decode_clip` at short side 256/224 x ``--size`` and crop ``--size``).
The model is a no-op: on CPU the batch is just taken; with ``--device cuda`` it is copied to the GPU and the
copy waited for (as extract_video's ``.cpu()`` of the features does).

- new route: :func:`maivar.video.features.frame_batches`, as extract_video runs it: each worker writes its
  video into a shared-memory slot (:mod:`maivar.core.shared_slots`), the parent copies it once into a reused
  batch buffer (pinned on CUDA), the reorder window is bounded (2 x workers + batch);
- old route (reference): the pool as it was: :func:`maivar.core.parallel.guarded_imap` without shared memory
  (each video pickled through its worker's pipe) and without a window bound (``window`` = the number of
  videos), then ``np.stack`` of each batch (+ ``pin_memory()`` on CUDA), as extract_video_features did.

Prints for each route the videos delivered per second, the parent's CPU time per video (user + system of the
parent process alone: the feed's cost in the process that also runs the model; the target is <= 1 ms, i.e. one
parent could feed >= 1000 videos/s) and the workers' CPU time per video, then the ratios. Wall-clock rates
depend on the cores the workers get; on a shared machine the numbers are indicative.

    .venv/bin/python benchmarks/bench_feed.py                         # 1000 synthetic videos, all cores
    .venv/bin/python benchmarks/bench_feed.py --decode --videos 64    # real decoding
    .venv/bin/python benchmarks/bench_feed.py --videos 4000 --workers 16 --device cuda --repeat 3
"""

from __future__ import annotations

import argparse
import functools
import resource
import time
from pathlib import Path

import numpy as np
import torch

from maivar.core.parallel import default_start_method, default_workers, guarded_imap, reorder_window, shared_array
from maivar.core.rejections import ClipFailure
from maivar.video.features import decode_clip, frame_batches

MIB = 1 << 20


def synthetic_frames(i: int, *, shape: tuple[int, ...]) -> np.ndarray:
    """Worker: one video's frames without decoding (a fill: about the cost of writing them once)."""
    out = shared_array(shape, np.uint8)  # the video's shared-memory slot on the new route, np.empty on the old
    out.fill(i % 251)
    return out


def cpu_times() -> tuple[float, float]:
    """(this process, its reaped children) user + system CPU seconds."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


class NoOpModel:
    """Takes a batch: on CUDA copies it to the device and waits, as the real model's features' .cpu() would."""

    def __init__(self, device: torch.device):
        self.device = device
        self.videos = 0

    def __call__(self, frames: torch.Tensor) -> None:
        if self.device.type == "cuda":
            frames.to(self.device, non_blocking=True)
            torch.cuda.synchronize(self.device)
        self.videos += len(frames)


def new_route(fn, items, *, shape, batch: int, workers: int, model: NoOpModel) -> None:
    for _, _, rows, frames, _ in frame_batches(fn, items, frame_shape=shape, batch_videos=batch, workers=workers,
                                               timeout_s=120, pin_memory=model.device.type == "cuda"):
        if rows:
            model(frames)


def old_route(fn, items, *, shape, batch: int, workers: int, model: NoOpModel) -> None:
    pending: list[np.ndarray] = []

    def flush():
        frames = torch.from_numpy(np.stack(pending))
        if model.device.type == "cuda":
            frames = frames.pin_memory()
        model(frames)
        pending.clear()

    for result in guarded_imap(fn, items, workers=workers, timeout_s=120, window=len(items)):
        if isinstance(result, ClipFailure):
            continue
        pending.append(result)
        if len(pending) == batch:
            flush()
    if pending:
        flush()


def measure(route, fn, items, **kwargs) -> dict:
    model = NoOpModel(kwargs.pop("device"))
    t0, (p0, c0) = time.perf_counter(), cpu_times()
    route(fn, items, model=model, **kwargs)
    wall, (p1, c1) = time.perf_counter() - t0, cpu_times()
    if model.videos != len(items):
        raise SystemExit(f"{route.__name__}: {len(items) - model.videos} videos failed")
    return {"rate": len(items) / wall, "parent_ms": 1e3 * (p1 - p0) / len(items),
            "workers_ms": 1e3 * (c1 - c0) / len(items), "wall": wall}


def decode_workload(args, shape) -> tuple[functools.partial, list]:
    from bench_extract import video_workload  # only for --decode (it needs PyAV)

    clips = video_workload(args.workdir / f"{args.duration:g}s", n=args.videos, unique=args.unique,
                           seconds=args.duration, fps=25)
    segments, size = shape[0], shape[1]
    fn = functools.partial(decode_clip, num_segments=segments, short_side=size * 256 // 224, crop_size=size,
                           timeout_s=120, min_decoded_share=0.0)
    return fn, clips


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=1000)
    ap.add_argument("--segments", type=int, default=25)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=32, help="videos per batch (extract_video's batch_videos)")
    ap.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    ap.add_argument("--decode", action="store_true", help="decode real videos instead of synthetic frames")
    ap.add_argument("--unique", type=int, default=16, help="--decode: distinct video files; the rest are symlinks")
    ap.add_argument("--duration", type=float, default=2.0, help="--decode: seconds per video")
    ap.add_argument("--device", default="cpu", help="cpu (no-op model) or cuda (the batch goes to the GPU)")
    ap.add_argument("--repeat", type=int, default=1, help="alternate the routes this many times; report the best")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/maivar-bench-feed"))
    args = ap.parse_args()
    device = torch.device(args.device)
    shape = (args.segments, args.size, args.size, 3)
    workers = args.workers or default_workers()
    if args.decode:
        fn, items = decode_workload(args, shape)
        what = f"decoded from {min(args.unique, args.videos)} distinct 320x240 AVIs of {args.duration:g} s"
    else:
        fn, items = functools.partial(synthetic_frames, shape=shape), list(range(args.videos))
        what = "synthetic, made in the workers (no decoding)"
    mib = np.prod(shape) / MIB
    print(f"feed: {len(items)} videos of {'x'.join(map(str, shape))} uint8 ({mib:.2f} MiB each), {what}; "
          f"{workers} workers ({default_start_method()}), batch {args.batch}, window "
          f"{reorder_window(workers, batch=args.batch)}, device {device}; torch {torch.__version__}")
    kwargs = dict(shape=shape, batch=args.batch, workers=workers)
    warm = items[: min(len(items), 2 * args.batch)]
    for route in (old_route, new_route):  # imports, page faults of the first buffers
        measure(route, fn, warm, device=device, **kwargs)
    best: dict[str, dict] = {}
    for _ in range(max(1, args.repeat)):
        for name, route in (("old", old_route), ("new", new_route)):
            got = measure(route, fn, items, device=device, **kwargs)
            if name not in best or got["parent_ms"] < best[name]["parent_ms"]:
                best[name] = got
    labels = {"old": "old (pickled through pipes, no window)", "new": "new (shared-memory slots, bounded window)"}
    for name in ("old", "new"):
        r = best[name]
        print(f"{labels[name]:<43}: {r['rate']:7.1f} videos/s ({r['rate'] * mib:7.1f} MiB/s, {r['wall']:.2f} s); "
              f"parent {r['parent_ms']:6.2f} ms CPU/video (one parent could feed ~{1e3 / r['parent_ms']:.0f} "
              f"videos/s); workers {r['workers_ms']:6.2f} ms CPU/video")
    old, new = best["old"], best["new"]
    print(f"ratio new / old: {new['rate'] / old['rate']:.2f}x videos/s; parent CPU per video "
          f"{old['parent_ms'] / new['parent_ms']:.2f}x less; target <= 1 ms parent CPU/video: "
          f"{'met' if new['parent_ms'] <= 1.0 else 'NOT met'} ({new['parent_ms']:.2f} ms)")


if __name__ == "__main__":
    main()
