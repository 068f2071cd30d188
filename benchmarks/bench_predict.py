"""Benchmark ``maivar predict``: seconds per 7 s video (cold start and warm) and videos per second for a folder.

Needs a trained run in the workspace (``dvc repro``: the embedded default's, or any). Synthesizes ``--n``
videos of ``--duration`` seconds like the embedded default's clips (320x240, 25 fps, 44.1 kHz stereo; UCF101's
clips average about 7 s), then times, in the same run:

- cold start: ``python -m maivar predict one.avi`` in a new process (imports, both backbones built and checked
  against the recorded weights, one video), wall time;
- warm: one video through a :class:`~maivar.predict.engine.Predictor` already built (median of ``--repeat``);
- folder: all ``--n`` videos through that Predictor (chunks: every video's sound in parallel, then the TSN).

    .venv/bin/python benchmarks/bench_predict.py [--n 16] [--duration 7] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from maivar.predict.engine import Predictor, predictor_settings
from maivar.predict.run import load_run
from maivar.synthetic import ClipTask, class_specs, make_clip

REPO = Path(__file__).resolve().parents[1]


def make_videos(folder: Path, n: int, duration: float) -> list[str]:
    specs = [s for s in class_specs(8, 2) if s.sound is not None]
    paths = []
    for i in range(n):
        spec = specs[i % len(specs)]
        path = folder / f"clip{i:03d}.avi"
        make_clip(ClipTask(path=str(path), seed=100 + i, look=spec.look, sound=spec.sound, silent=False,
                           duration_s=duration, width=320, height=240, fps=25, sample_rate=44100, noise=0.6))
        paths.append(str(path))
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16, help="videos in the folder")
    ap.add_argument("--duration", type=float, default=7.0, help="seconds per video")
    ap.add_argument("--repeat", type=int, default=3, help="warm single-video runs (median)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        videos = make_videos(Path(tmp), args.n, args.duration)
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "maivar", "predict", videos[0], "-k", "1"], cwd=REPO,
                              capture_output=True, text=True)
        cold = time.perf_counter() - t
        if proc.returncode != 0:
            raise SystemExit(f"maivar predict failed: {proc.stderr[-2000:]}")

        settings = predictor_settings(REPO / "params.yaml")
        run = load_run(REPO)
        t = time.perf_counter()
        predictor = Predictor(run, device=str(settings["device"]), workers=settings["workers"],
                              batch_images=settings["batch_size"], batch_videos=settings["batch_videos"])
        build = time.perf_counter() - t
        warm = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            list(predictor.predict(videos[:1]))
            warm.append(time.perf_counter() - t)
        t = time.perf_counter()
        results = list(predictor.predict(videos))
        folder = time.perf_counter() - t
        run.close()
    failed = sum(r.error is not None for r in results)
    print(f"device {predictor.device}, {predictor.workers} workers, chunks of {predictor.chunk} videos, "
          f"{args.duration:g} s videos (320x240, 25 fps, 44.1 kHz stereo)")
    print(f"cold start (new process, one video):   {cold:6.1f} s")
    print(f"building the backbones (in process):   {build:6.1f} s")
    print(f"warm, one video (median of {args.repeat}):      {statistics.median(warm):6.2f} s")
    print(f"folder of {args.n} videos:                  {folder:6.1f} s = {args.n / folder:.2f} videos/s"
          f"{f' ({failed} failed)' if failed else ''}")


if __name__ == "__main__":
    main()
