"""Benchmark stage prepare (probe + ffmpeg demux + subset rule) on a UCF101-sized dataset.

Builds a dataset in UCF101 layout under the official split lists (tests/fixtures/ucfTrainTestlist: 13,320
videos, 101 classes): a few distinct synthetic clips, hard-linked under every listed name. Videos of the
paper's 51 classes get a clip with audio, the other 50 (UCF50) classes a clip without an audio stream, as
in UCF101 (about half). ``--n`` keeps a class-stratified subset of the lists for a quicker run.

Then times, in the same run:
- ``prepare_subset`` over all listed videos with all cores (``classes: all``: every video is probed);
- the reference route (the authors' preprocessing): one ``ffmpeg -i v.avi -ab 160k -ac 2 -ar 44100 -vn
  out.wav`` per video, sequentially, on a sample of ``--reference-sample`` videos, extrapolated.

Hard links share one file, so the page cache holds the inputs: this measures the pipeline, not the disk.

    .venv/bin/python benchmarks/bench_prepare.py [--n 13320] [--duration 4] [--workers 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from maivar.data.listing import PRESETS, read_class_list
from maivar.data.media import ffmpeg_exe
from maivar.data.subset import prepare_subset
from maivar.data.ucf101 import read_split
from maivar.settings.base import read_params
from maivar.settings.data import DatasetSettings, PrepareSettings
from maivar.synthetic import ClipTask, class_specs, make_clip

REPO = Path(__file__).resolve().parents[1]

LISTS = REPO / "tests" / "fixtures" / "ucfTrainTestlist"


def build(root: Path, n: int, duration: float, distinct: int) -> tuple[int, int]:
    specs = class_specs(distinct * 2, distinct)
    clips = {True: [], False: []}
    (root / "clips").mkdir(parents=True)
    for i, spec in enumerate(specs):
        path = root / "clips" / f"{i}.avi"
        make_clip(ClipTask(path=str(path), seed=i, look=spec.look, sound=spec.sound, silent=False,
                           duration_s=duration, width=320, height=240, fps=25, sample_rate=44100, noise=0.6))
        clips[spec.sound is not None].append(path)
    lists = read_split(LISTS, 1)
    voiced = {c.lower() for c in read_class_list(PRESETS["paper"])}
    videos = sorted(lists.videos, key=lambda v: v.id)
    if n < len(videos):  # every k-th video: keeps all classes and both splits
        step = len(videos) / n
        videos = [videos[int(i * step)] for i in range(n)]
    keep = {v.id for v in videos}
    out = root / "ucf" / "ucfTrainTestlist"
    out.mkdir(parents=True)
    shutil.copy(LISTS / "classInd.txt", out / "classInd.txt")
    for kind in ("train", "test"):
        lines = [f"{v.rel_path} {lists.classes.index(v.class_name) + 1}\n" for v in lists.videos
                 if v.split == kind and v.id in keep]
        (out / f"{kind}list01.txt").write_text("".join(lines))
    with_audio = 0
    for i, v in enumerate(videos):
        has_audio = v.class_name.lower() in voiced
        with_audio += has_audio
        src = clips[has_audio][i % len(clips[has_audio])]
        dst = root / "ucf" / "UCF-101" / v.rel_path
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.link(src, dst)
    return len(videos), with_audio


def reference_route(videos: list[Path], out_dir: Path) -> float:
    start = time.perf_counter()
    for i, video in enumerate(videos):
        subprocess.run([ffmpeg_exe(), "-nostdin", "-y", "-loglevel", "quiet", "-i", str(video), "-ab", "160k",
                        "-ac", "2", "-ar", "44100", "-vn", str(out_dir / f"{i}.wav")], stdin=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=13320, help="videos (default: all 13,320 of split 1's lists)")
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per clip (default 4)")
    ap.add_argument("--distinct", type=int, default=3, help="distinct clips per kind (with / without audio)")
    ap.add_argument("--frame-check", choices=("packets", "decode"), default=None,
                    help="override prepare.frame_check")
    ap.add_argument("--workers", type=int, default=0, help="0 = all cores")
    ap.add_argument("--reference-sample", type=int, default=200, help="videos timed on the reference route")
    ap.add_argument("--dir", default=None, help="scratch folder (default: a temporary one, removed)")
    args = ap.parse_args()
    prepare = PrepareSettings.from_params(read_params(REPO / "params.yaml"))
    prepare = dataclasses.replace(prepare, classes="all", frame_check=args.frame_check or prepare.frame_check)
    scratch = Path(args.dir or tempfile.mkdtemp(prefix="bench_prepare_"))
    try:
        t0 = time.perf_counter()
        n, with_audio = build(scratch, args.n, args.duration, args.distinct)
        print(f"dataset: {n} videos ({with_audio} with audio), {args.duration:g} s each, built in "
              f"{time.perf_counter() - t0:.1f} s")
        wav_dir = scratch / "wav"
        wav_dir.mkdir()
        t0 = time.perf_counter()
        dataset = DatasetSettings.from_mapping({"format": "ucf101", "root": str(scratch / "ucf"), "split": 1,
                                                "annotations": None})
        subset = prepare_subset(dataset=dataset, prepare=prepare, wav_dir=wav_dir, audio_dir="audio",
                                workers=args.workers or None)
        ours = time.perf_counter() - t0
        m = subset.metrics
        print(f"prepare: {n} videos in {ours:.1f} s = {n / ours:.1f} clips/s (kept {m['videos']}, "
              f"{m['classes']} classes, {m['train']}/{m['test']}; rejected {m['rejected']})")
        shutil.rmtree(wav_dir)
        sample = sorted((scratch / "ucf" / "UCF-101").rglob("*.avi"))
        sample = sample[:: max(1, len(sample) // args.reference_sample)][: args.reference_sample]
        ref_dir = scratch / "ref"
        ref_dir.mkdir()
        ref = reference_route(sample, ref_dir)
        per = ref / len(sample)
        print(f"reference (one ffmpeg per video, sequential): {len(sample)} videos in {ref:.1f} s = "
              f"{1 / per:.1f} clips/s -> {n} videos in {per * n:.0f} s (extrapolated)")
        print(f"ratio (reference time / prepare time): {per * n / ours:.2f} "
              f"(and also probes every container, checks frame counts ({prepare.frame_check}) and measures levels)")
    finally:
        if not args.dir:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
