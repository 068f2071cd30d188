"""Benchmark the memory of a store's assembly and of ``train_video`` as the dataset grows (issue 19, item 3).

For each N (``--sizes``, default 10,000 / 60,000 / 240,000 clips, Kinetics-400's size), a synthetic video
journal is written as extract_video leaves it (blocks of 8 batches of 8 videos, one chunk file a block, one clip
in 97 rejected; features N x ``--segments`` x ``--dim`` float32, Gaussian), then measured, each in a fresh
process (peak RSS: ``ru_maxrss``; ``base``: the process's peak after its imports, ``delta``: what the work
added):

- ``assemble``: :func:`maivar.extraction.data_parallel._collect` and :meth:`maivar.extraction.job.Job.assemble`,
  the journal -> ``video.h5`` (the journal is kept for the next run);
- ``train_video``: :func:`maivar.heads.training.train_single_modality` on that store, with params.yaml's
  ``video_mlp`` (``segments: mean``) and ``train`` settings, one epoch (the memory does not depend on the
  epochs), a manifest of the N clips with prepare's 19 columns (51 classes, a third of them test clips), once for each
  ``--memory-mb`` (``runtime.heads.memory_mb``; default 2048, params.yaml's: the features in memory at these sizes,
  and 0: read from a file a batch at a time); ``s`` is the stage's wall time (one epoch, load included).

``--code DIR`` runs the measured processes on the maivar package of another checkout (e.g. ``git worktree add
/tmp/old <commit>``) to compare with it; the journals and stores are the same. Disk: about twice the store
(``N x segments x dim x 4`` bytes) under ``--dir``, removed at the end unless ``--keep``.

    .venv/bin/python benchmarks/bench_scale.py [--sizes 10000 60000 240000] [--segments 5] [--dim 256]
        [--memory-mb 2048 0] [--dir /tmp/bench_scale] [--code DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BATCH = 8  # videos a batch: blocks of 64 videos, as extract_video's default batch_videos
CLASSES = 51


def _identity(n: int, segments: int, dim: int) -> dict:
    return {"bench_scale": [n, segments, dim]}


def _rejected(row: int) -> bool:
    return row % 97 == 5


def _clip_id(row: int) -> str:
    return f"v{row:07d}"


def build(work: Path, n: int, segments: int, dim: int) -> None:
    """The journal of ``work/video.h5`` and the manifest of its ``n`` clips."""
    from maivar.core.rejections import DECODE_FAILED, Rejection
    from maivar.extraction.resume import Journal, blocks

    work.mkdir(parents=True, exist_ok=True)
    journal = Journal(work / "video.h5", _identity(n, segments, dim), every_s=1e9, device="cpu")
    rng = np.random.default_rng(0)
    for span in blocks(n, BATCH):
        for start in range(span.start, span.stop, BATCH):
            stop = min(start + BATCH, span.stop)
            rows = [r for r in range(start, stop) if not _rejected(r)]
            rejected = [Rejection(_clip_id(r), DECODE_FAILED, "synthetic") for r in range(start, stop) if _rejected(r)]
            feats = rng.standard_normal((len(rows), segments, dim), dtype=np.float32)
            journal.add(start, stop, rows, feats, rejected)
        journal.write()
    write_manifest(work, n)


def write_manifest(work: Path, n: int) -> None:
    """``work/manifest.csv``: ``n`` clips with every column prepare writes (Kinetics-like paths and figures)."""
    from maivar.core.manifest import MANIFEST_COLUMNS

    with open(work / "manifest.csv", "w") as fh:
        fh.write(",".join(MANIFEST_COLUMNS) + "\n")
        for r in range(n):
            split = "test" if (r // CLASSES) % 3 == 0 else "train"
            name, cid = f"Class{r % CLASSES:02d}", _clip_id(r)
            row = {"id": cid, "class_name": name, "label": r % CLASSES, "split": split,
                   "video_path": f"/data/kinetics400/{split}/{name}/{cid}_000012_000022.mp4",
                   "audio_path": f"data/prepared/audio/{cid}.wav", "start_s": 12.0, "end_s": 22.0, "duration_s": 10.0,
                   "fps": 29.97, "frames": 300, "width": 340, "height": 256, "audio_sample_rate": 44100,
                   "audio_channels": 2, "audio_peak_dbfs": -3.125, "audio_rms_dbfs": -18.25, "audio_coverage": 1.0,
                   "decoded_share": 1.0}
            fh.write(",".join(str(row[c]) for c in MANIFEST_COLUMNS) + "\n")


def _assemble(work: Path, n: int, segments: int, dim: int) -> None:
    import torch

    from maivar.extraction.checkpoints import Weights
    from maivar.extraction.data_parallel import _collect
    from maivar.extraction.job import Job
    from maivar.extraction.resume import Journal, blocks

    class KeptJournal(Journal):
        def discard(self) -> None:  # kept for the next measurement
            self._pending.clear()

    @dataclass
    class BenchJob(Job):
        def store_rows(self, done):
            ids = [_clip_id(r) for r in done.rows]
            return ids, [r % CLASSES for r in done.rows], done.rejected

        def item_shape(self):
            return segments, dim

    journal = KeptJournal(work / "video.h5", _identity(n, segments, dim), every_s=1e9, device="cpu")
    job = BenchJob("videos", torch.device("cpu"), Weights("random", False, "0" * 64), {"backbone": "synthetic"},
                   journal, blocks(n, BATCH))
    base = _peak_mib()
    job.assemble(work / "video.h5", _collect(job, 1))
    _report(base)


def _train_video(work: Path, memory_mb: int | None) -> None:
    import inspect
    import time

    import pandas  # noqa: F401
    import yaml

    import dvclive  # noqa: F401 - imported before the baseline, as the stage's own imports are
    from maivar.heads.training import train_single_modality
    from maivar.settings.heads import TrainSettings, VideoHeadSettings

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["video_mlp"]["epochs"] = 1
    head, train = VideoHeadSettings.from_params(params), TrainSettings.from_params(params)
    memory = {"memory_mb": memory_mb} if "memory_mb" in inspect.signature(train_single_modality).parameters else {}
    base, start = _peak_mib(), time.perf_counter()
    train_single_modality(modality="video", manifest_path=work / "manifest.csv", features_path=work / "video.h5",
                          model_path=work / "video_mlp.pt", live_dir=work / "dvclive", head=head, train=train,
                          **memory)
    _report(base, time.perf_counter() - start)


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _report(base: float, seconds: float = 0.0) -> None:
    print(json.dumps({"base_mib": round(base, 1), "peak_mib": round(_peak_mib(), 1), "s": round(seconds, 1)}))


def measure(what: str, work: Path, n: int, segments: int, dim: int, code: Path | None, memory_mb: int = -1) -> dict:
    env = dict(os.environ, PYTHONPATH=str(code or ROOT))
    out = subprocess.run([sys.executable, __file__, f"_{what}", str(work), str(n), str(segments), str(dim),
                          str(memory_mb)], env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 60_000, 240_000])
    p.add_argument("--segments", type=int, default=5)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--dir", type=Path, default=Path("/tmp/bench_scale"))
    p.add_argument("--memory-mb", type=int, nargs="+", default=[2048, 0],
                   help="runtime.heads.memory_mb values for train_video (ignored by code without the setting)")
    p.add_argument("--code", type=Path, default=None, help="measure the maivar package of this checkout instead")
    p.add_argument("--keep", action="store_true", help="keep the journals and stores")
    args = p.parse_args()
    print(f"features N x {args.segments} x {args.dim} float32; code: {args.code or ROOT}")
    heads = "".join(f" | {f'train_video ({m} MB) peak':>24} {'delta':>6} {'s':>5}" for m in args.memory_mb)
    print(f"{'N':>8} {'store MiB':>10} {'N x D MiB':>10} | {'assemble peak':>13} {'delta':>7}{heads}   (MiB)")
    for n in args.sizes:
        work = args.dir / f"n{n}"
        if not (work / "manifest.csv").is_file():
            build(work, n, args.segments, args.dim)
        elif "video_path" not in (work / "manifest.csv").open().readline():  # kept from a version with 4 columns
            write_manifest(work, n)
        kept = sum(not _rejected(r) for r in range(n))
        a = measure("assemble", work, n, args.segments, args.dim, args.code)
        cells = ""
        for memory_mb in args.memory_mb:
            t = measure("train_video", work, n, args.segments, args.dim, args.code, memory_mb)
            cells += f" | {t['peak_mib']:>24.0f} {t['peak_mib'] - t['base_mib']:>6.0f} {t['s']:>5.1f}"
        print(f"{n:>8} {kept * args.segments * args.dim * 4 / 2**20:>10.0f} {kept * args.dim * 4 / 2**20:>10.0f} | "
              f"{a['peak_mib']:>13.0f} {a['peak_mib'] - a['base_mib']:>7.0f}{cells}", flush=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("_assemble", "_train_video"):
        work, n, segments, dim = Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
        if sys.argv[1] == "_assemble":
            _assemble(work, n, segments, dim)
        else:
            _train_video(work, int(sys.argv[6]))
    else:
        main()
