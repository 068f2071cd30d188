"""Benchmark stages extract_video and extract_audio against the reference routes, in the same run.

Workload (synthetic, generated into --workdir): ``--videos`` MPEG-4 part 2 AVIs like UCF101's (``--duration``
s, 320x240, 25 fps; ``--unique`` distinct files, the rest symlinks to them, so that generating the full
6837-video workload stays cheap while every video is decoded on its own), and ``--images`` audio images
(``render.image_size`` px) in an ``images.h5`` store. Random weights (seeded): speed does not depend on them.

- video, our route: :func:`maivar.video.features.extract_video_features` with the params.yaml settings of
  ``extract_video`` (PyAV decoding of the 25 center frames in guarded worker processes (maivar.core.parallel),
  batches across videos,
  pinned memory / bf16 autocast / channels_last on CUDA);
- video, reference route: MMAction2's standard test pipeline from the same config
  (DecordInit / SampleFrames(clip_len=1, num_clips=num_segments, test_mode=True) / DecordDecode / Resize /
  CenterCrop / FormatShape / PackActionInputs) + Recognizer2D's data preprocessor and
  ``extract_feat(stage='backbone')`` + average pool, one video at a time, fp32, on ``--ref-videos`` of
  the videos; it also reports how far apart the two routes' features are on the videos both ran;
- audio, our route: :func:`maivar.audio.features.extract_audio_features` with ``extract_audio`` params;
- audio, reference route: the authors' notebook, one image at a time (resize, normalize, forward).

Prints videos/s, images/s, the ratios, the device, and on CUDA the mean GPU utilisation (nvidia-smi).

    .venv/bin/python benchmarks/bench_extract.py                      # CPU-sized: 8 videos, 32 images
    .venv/bin/python benchmarks/bench_extract.py --videos 6837 --images 6837 --ref-videos 200 \
        --ref-images 500                                              # the UCF101 audio subset (GPU)
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import resource
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import torch

from maivar.audio.backbone import build_audio_backbone, create_audio_backbone
from maivar.audio.features import extract_audio_features, preprocess
from maivar.core.feature_store import LazyRows, create_store
from maivar.core.parallel import default_workers
from maivar.extraction.inference import compute_dtype, select_device
from maivar.settings.base import read_params
from maivar.settings.extract import ExtractAudioSettings, ExtractVideoSettings
from maivar.settings.runtime import RuntimeSettings
from maivar.video.features import VideoClip, extract_video_features
from maivar.video.tsn import build_tsn, build_video_backbone

REPO = Path(__file__).resolve().parents[1]


def make_video(path: Path, *, seconds: float, width: int, height: int, fps: int, seed: int) -> int:
    """A moving, noisy MPEG-4 AVI (UCF101's codec and size); returns its frame count."""
    import av

    rng = np.random.default_rng(seed)
    n = int(round(seconds * fps))
    base = rng.integers(0, 256, (height, width * 2, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = 600_000
        for i in range(n):
            shift = (i * 3) % width
            img = base[:, shift : shift + width].copy()
            img[rng.integers(0, height, 500), rng.integers(0, width, 500)] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return n


def video_workload(workdir: Path, *, n: int, unique: int, seconds: float, fps: int) -> list[VideoClip]:
    folder = workdir / "videos"
    folder.mkdir(parents=True, exist_ok=True)
    unique = max(1, min(unique, n))
    frames = {}
    for k in range(unique):
        path = folder / f"u{k:04d}.avi"
        frames[k] = make_video(path, seconds=seconds, width=320, height=240, fps=fps, seed=k) if not path.exists() \
            else int(round(seconds * fps))
    clips = []
    for i in range(n):
        path = folder / f"v{i:05d}.avi"
        if not path.exists():
            path.symlink_to(folder / f"u{i % unique:04d}.avi")
        clips.append(VideoClip(f"v{i:05d}", str(path), frames[i % unique]))
    return clips


def image_workload(workdir: Path, *, n: int, size: int) -> Path:
    path = workdir / "images.h5"
    rng = np.random.default_rng(0)
    with create_store(path, data_name="images", n=n, item_shape=(size, size, 3), dtype=np.uint8) as w:
        for start in range(0, n, 256):
            rows = rng.integers(0, 256, (min(256, n - start), size, size, 3), dtype=np.uint8)
            w.write_rows(start, rows)
        w.finish([f"a{i:05d}" for i in range(n)], [0] * n, [], {})
    return path


class GpuUtilisation:
    """Mean GPU utilisation (%) sampled from nvidia-smi while the block runs; None off CUDA."""

    def __init__(self, device: torch.device):
        self.active = device.type == "cuda" and shutil.which("nvidia-smi") is not None
        self.samples: list[float] = []
        self._stop = threading.Event()

    def _poll(self):
        while not self._stop.is_set():
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True)
            try:
                self.samples.append(float(out.stdout.split()[0]))
            except (ValueError, IndexError):
                pass
            self._stop.wait(0.25)

    def __enter__(self):
        if self.active:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.active:
            self._stop.set()
            self._thread.join()

    def mean(self) -> str:
        return f"{np.mean(self.samples):.0f}%" if self.samples else "n/a"


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (decoding workers): robust to a busy machine."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.inference_mode()
def mmaction_route(model, cfg, clips: list[VideoClip], num_segments: int, device: torch.device) -> np.ndarray:
    """MMAction2's standard test pipeline + Recognizer2D backbone features, one video at a time."""
    from mmengine.dataset import Compose, pseudo_collate

    steps = copy.deepcopy(cfg.test_pipeline)
    for step in steps:
        if step["type"] == "SampleFrames":
            step["num_clips"] = num_segments
    pipeline = Compose(steps)
    out = []
    for clip in clips:
        data = pipeline(dict(filename=clip.path, label=-1, start_index=0, modality="RGB"))
        batch = model.data_preprocessor(pseudo_collate([data]), False)
        feats, _ = model.extract_feat(batch["inputs"].to(device), stage="backbone")
        out.append(feats.mean(dim=(2, 3)).reshape(1, num_segments, -1).cpu().numpy())
    return np.concatenate(out)


@torch.inference_mode()
def notebook_route(model, images, input_size: int, mean, std, device: torch.device) -> np.ndarray:
    """The authors' notebook: one image at a time."""
    mean_t, std_t = torch.tensor(mean, device=device), torch.tensor(std, device=device)
    out = []
    for i in range(len(images)):
        x = torch.from_numpy(images[i])[None].to(device)
        out.append(model(preprocess(x, input_size=input_size, mean=mean_t, std=std_t)).cpu().numpy())
    return np.concatenate(out)


def bench_video(args, s: ExtractVideoSettings, runtime: RuntimeSettings, device) -> None:
    num_segments = s.num_segments
    batch_videos = args.batch_videos or runtime.extract_video.batch_videos
    t0 = time.perf_counter()
    clips = video_workload(args.workdir, n=args.videos, unique=args.unique, seconds=args.duration, fps=25)
    print(f"video config: {s.config}")
    print(f"video workload: {len(clips)} videos ({min(args.unique, len(clips))} distinct) of {args.duration:g} s, "
          f"320x240, 25 fps, generated in {time.perf_counter() - t0:.1f} s")
    s = dataclasses.replace(s, config=str(REPO / s.config), checkpoint=None)  # random weights: the same speed
    backbone = build_video_backbone(s, device, compile_model=bool(args.compile or runtime.extract_video.compile))
    model, pre = backbone.model, backbone.pre
    print(f"video  ours: {backbone.folded} BatchNorm layers folded into their convolutions "
          "(extract_video.fuse_conv_bn)")
    workers = args.workers if args.workers is not None else (runtime.worker_count or default_workers())
    kwargs = dict(num_segments=num_segments, pre=pre, batch_videos=batch_videos, workers=workers,
                  device=device, timeout_s=s.timeout_s, progress=False, precision=s.precision)
    extract_video_features(model, clips[: max(1, min(len(clips), batch_videos))], **kwargs)  # warm-up
    sync(device)
    with GpuUtilisation(device) as gpu:
        t0, c0 = time.perf_counter(), cpu_seconds()
        rows, ours, rejected = extract_video_features(model, clips, **kwargs)
        sync(device)
        ours_s, ours_cpu = time.perf_counter() - t0, cpu_seconds() - c0
    assert not rejected and len(rows) == len(clips)
    ours_rate = len(clips) / ours_s

    ref_clips = clips[: args.ref_videos]
    ref_model, _, cfg = build_tsn(s.config, checkpoint=None, seed=s.seed)
    ref_model.eval().to(device)
    mmaction_route(ref_model, cfg, ref_clips[:1], num_segments, device)  # warm-up
    sync(device)
    t0, c0 = time.perf_counter(), cpu_seconds()
    ref = mmaction_route(ref_model, cfg, ref_clips, num_segments, device)
    sync(device)
    ref_s, ref_cpu = time.perf_counter() - t0, cpu_seconds() - c0
    ref_rate = len(ref_clips) / ref_s
    unflipped = ours[:, 0] if args.flips else ours  # the notebook route has no flips: compare variant 0
    diff = np.abs(unflipped[: len(ref)] - ref).max() / max(np.abs(ref).max(), 1e-12)
    print(f"video  ours   : {len(clips)} videos x {num_segments} segments in {ours_s:.2f} s = {ours_rate:.2f} videos/s "
          f"(batch_videos {batch_videos}, workers {workers}, {compute_dtype(s.precision)}, "
          f"GPU util {gpu.mean()}); "
          f"{ours_cpu / len(clips):.2f} CPU s/video")
    print(f"video  MMAction2 pipeline: {len(ref_clips)} videos in {ref_s:.2f} s = {ref_rate:.2f} videos/s "
          "(batch 1, fp32); "
          f"{ref_cpu / len(ref_clips):.2f} CPU s/video")
    print(f"video  ratio ours / MMAction2: {ours_rate / ref_rate:.2f}x wall-clock, "
          f"{(ref_cpu / len(ref_clips)) / (ours_cpu / len(clips)):.2f}x CPU time; "
          "full subset (6837 videos) at this rate: "
          f"{6837 / ours_rate:.0f} s ours, {6837 / ref_rate:.0f} s MMAction2")
    print(f"video  features: max |ours - MMAction2| / max |MMAction2| = {diff:.2e} "
          f"(PyAV vs decord RGB conversion, folded BatchNorm)")


def bench_audio(args, s: ExtractAudioSettings, runtime: RuntimeSettings, image_size: int, device) -> None:
    batch_size = args.batch_size or runtime.extract_audio.batch_size
    path = image_workload(args.workdir, n=args.images, size=image_size)
    s = dataclasses.replace(s, pretrained=False, checkpoint=None)  # random weights: the same speed
    backbone = build_audio_backbone(s, device, compile_model=bool(args.compile or runtime.extract_audio.compile))
    model, mean, std = backbone.model, backbone.mean, backbone.std
    print(f"audio  ours: {backbone.folded} BatchNorm layers folded into their convolutions "
          "(extract_audio.fuse_conv_bn)")
    images = LazyRows(path, "images")
    workers = args.workers if args.workers is not None else (runtime.worker_count or default_workers())
    kwargs = dict(input_size=s.input_size, mean=mean, std=std, batch_size=batch_size,
                  workers=workers, device=device, progress=False, flips=bool(args.flips), precision=s.precision)
    extract_audio_features(model, [images[i] for i in range(min(len(images), batch_size))], **kwargs)
    sync(device)
    with GpuUtilisation(device) as gpu:
        t0, c0 = time.perf_counter(), cpu_seconds()
        ours = extract_audio_features(model, images, **kwargs)
        sync(device)
        ours_s, ours_cpu = time.perf_counter() - t0, cpu_seconds() - c0
    ref_model, _ = create_audio_backbone(s.backbone, pretrained=False, checkpoint=None, seed=s.seed)
    ref_model.eval().to(device)
    ref_images = [images[i] for i in range(min(args.ref_images, len(images)))]
    notebook_route(ref_model, ref_images[:1], s.input_size, mean, std, device)
    sync(device)
    t0, c0 = time.perf_counter(), cpu_seconds()
    ref = notebook_route(ref_model, ref_images, s.input_size, mean, std, device)
    sync(device)
    ref_s, ref_cpu = time.perf_counter() - t0, cpu_seconds() - c0
    unflipped = ours[:, 0] if args.flips else ours  # the notebook route has no flips: compare variant 0
    diff = np.abs(unflipped[: len(ref)] - ref).max() / max(np.abs(ref).max(), 1e-12)
    ours_rate, ref_rate = len(images) / ours_s, len(ref_images) / ref_s
    flipped = " x 4 flip variants" if args.flips else ""
    print(f"audio  ours   : {len(images)} images{flipped} ({s.backbone} at {s.input_size} px) in "
          f"{ours_s:.2f} s = "
          f"{ours_rate:.1f} images/s (batch {batch_size}, {compute_dtype(s.precision)}, "
          f"GPU util {gpu.mean()}); "
          f"{ours_cpu / len(images):.2f} CPU s/image")
    print(f"audio  notebook (batch 1): {len(ref_images)} images in {ref_s:.2f} s = {ref_rate:.1f} images/s; "
          f"{ref_cpu / len(ref_images):.2f} CPU s/image")
    print(f"audio  ratio ours / notebook: {ours_rate / ref_rate:.2f}x; full subset (6837 images) at this rate: "
          f"{6837 / ours_rate:.0f} s ours; features max rel. diff {diff:.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--unique", type=int, default=64, help="distinct video files; the rest are symlinks")
    ap.add_argument("--duration", type=float, default=7.0)
    ap.add_argument("--ref-videos", type=int, default=4)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--ref-images", type=int, default=8)
    ap.add_argument("--device", default=None, help="auto | cpu | cuda (default: params.yaml)")
    ap.add_argument("--workers", type=int, default=None,
                    help="decoding (video) / DataLoader (audio) workers (default: params.yaml)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the backbones")
    ap.add_argument("--batch-videos", type=int, default=None, help="default: params.yaml extract_video.batch_videos")
    ap.add_argument("--batch-size", type=int, default=None, help="default: params.yaml extract_audio.batch_size")
    ap.add_argument("--config", default=None, help="MMAction2 config (default: params.yaml extract_video.config)")
    ap.add_argument("--flips", action="store_true", help="audio: the four flip variants of each image "
                                                        "(extract_audio.flips)")
    ap.add_argument("--input-size", type=int, default=None, help="default: params.yaml extract_audio.input_size")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default=None,
                    help="our routes' precision (default: params.yaml); the reference routes run fp32")
    ap.add_argument("--skip", choices=["audio", "video"], default=None)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/maivar-bench-extract"))
    args = ap.parse_args()
    params = read_params(REPO / "params.yaml")
    audio, video = ExtractAudioSettings.from_params(params), ExtractVideoSettings.from_params(params)
    runtime = RuntimeSettings.from_params(params)
    if args.config:
        video = dataclasses.replace(video, config=args.config)
    if args.input_size:
        audio = dataclasses.replace(audio, input_size=args.input_size)
    if args.precision:
        audio, video = (dataclasses.replace(s, precision=args.precision) for s in (audio, video))
    device = select_device(args.device or runtime.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {device} ({name}); torch {torch.__version__}")
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.skip != "video":
        bench_video(args, video, runtime, device)
    if args.skip != "audio":
        bench_audio(args, audio, runtime, int(params["render"]["image_size"]), device)


if __name__ == "__main__":
    main()
