"""Peak memory (RSS) of the stages that read clips, on a normal, an 8192x8192 and a 30-minute clip.

Makes each clip with the bundled ffmpeg (imageio-ffmpeg's binary, :func:`maivar.data.media.ffmpeg_exe`) in a
temporary folder, as a one-clip ``csv`` dataset, then runs stages prepare, render and extract_video on it, each
as its own process under ``/usr/bin/time -v`` with the repository's params.yaml (``runtime.workers: 1``), and
prints each stage's "Maximum resident set size". On Linux that figure is the largest RSS of the stage's
process and of every child it waited for (the kernel keeps the maximum over the waited-for descendants; the
first line printed checks it with a child that allocates 400 MB), so it covers the stage's workers too.

- normal: 3 s, 320x240 at 25 fps, 44.1 kHz stereo AAC (the embedded default's clips);
- 8192x8192: 1 s of H.264 (``testsrc2``) at 5 fps, 44.1 kHz AAC (``prepare.max_pixels`` is 8192 x 8192);
- 30 minutes: 160x120 H.264 at 5 fps, 44.1 kHz stereo AAC (prepare's WAV is 318 MB).

extract_audio and the heads read images and feature arrays of fixed size, whatever the clip: not measured.

    .venv/bin/python benchmarks/bench_memory.py [--clips normal big long] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from maivar.data.media import ffmpeg_exe

REPO = Path(__file__).resolve().parents[1]
TIME = "/usr/bin/time"

CLIPS = {
    "normal": ("3 s 320x240", ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=3",
                               "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=3"]),
    "big": ("1 s 8192x8192", ["-f", "lavfi", "-i", "testsrc2=size=8192x8192:rate=5:duration=1",
                              "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=1"]),
    "long": ("30 min 160x120", ["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=5:duration=1800",
                                "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=1800"]),
}


def make_clip(kind: str, path: Path) -> None:
    _, inputs = CLIPS[kind]
    subprocess.run([ffmpeg_exe(), "-nostdin", "-y", "-loglevel", "error", *inputs, "-c:v", "libx264", "-preset",
                    "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "2", "-shortest", str(path)],
                   check=True, stdin=subprocess.DEVNULL)


def peak_mb(cmd: list[str], log: Path) -> tuple[int, float]:
    """(exit code, peak RSS in MB) of ``cmd`` under /usr/bin/time -v."""
    with open(log, "w") as out:
        rc = subprocess.run([TIME, "-v", *cmd], stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}).returncode
    text = log.read_text(errors="replace")
    kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    return rc, kb / 1024


def check_children_counted(work: Path) -> float:
    code = ("import multiprocessing as mp\n"
            "def f():\n    b = bytearray(400 << 20)\n    b[::4096] = b'x' * len(b[::4096])\n"
            "if __name__ == '__main__':\n    p = mp.get_context('fork').Process(target=f); p.start(); p.join()\n")
    return peak_mb([sys.executable, "-c", code], work / "children.log")[1]


def run_case(kind: str, work: Path) -> dict[str, float]:
    root = work / kind / "data"
    root.mkdir(parents=True)
    make_clip(kind, root / "clip.mp4")
    (root / "clips.csv").write_text("path,label,split\nclip.mp4,tone,train\n")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["dataset"].update(format="csv", root=str(root), annotations="clips.csv")
    params["runtime"]["workers"] = 1
    params["prepare"]["timeout_s"] = params["render"]["timeout_s"] = params["extract_video"]["timeout_s"] = 3600
    out = work / kind
    (out / "params.yaml").write_text(yaml.safe_dump(params))
    p = ["--params", str(out / "params.yaml")]
    stages = {
        "prepare": ["stages/prepare.py", "--manifest", out / "manifest.csv", "--rejections", out / "rejections.csv",
                    "--audio", out / "audio", "--metrics", out / "subset.json"],
        "render": ["stages/render.py", "--manifest", out / "manifest.csv", "--images", out / "images.h5",
                   "--previews", out / "previews"],
        "extract_video": ["stages/extract_video.py", "--manifest", out / "manifest.csv", "--features",
                          out / "video.h5"],
    }
    peaks = {}
    for stage, args in stages.items():
        rc, mb = peak_mb([sys.executable, *map(str, args), *p], out / f"{stage}.log")
        if rc != 0:
            raise SystemExit(f"{kind} {stage} failed (exit {rc}): see {out / f'{stage}.log'}")
        peaks[stage] = mb
        print(f"  {kind:7s} {stage:14s} peak RSS {mb:7.0f} MB", flush=True)
    rejected = (out / "rejections.csv").read_text().strip().splitlines()[1:]
    if rejected:
        raise SystemExit(f"{kind}: prepare rejected the clip: {rejected}")
    return peaks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", nargs="+", choices=list(CLIPS), default=list(CLIPS))
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temporary folder)")
    args = ap.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        print(f"/usr/bin/time -v counts waited-for children: a child allocating 400 MB -> peak "
              f"{check_children_counted(work):.0f} MB")
        results = {kind: run_case(kind, work) for kind in args.clips}
        print("\npeak RSS (MB), runtime.workers 1, max over each stage's process tree")
        stages = list(next(iter(results.values())))
        print(f"{'clip':16s}" + "".join(f"{s:>15s}" for s in stages))
        for kind, peaks in results.items():
            print(f"{CLIPS[kind][0]:16s}" + "".join(f"{peaks[s]:15.0f}" for s in stages))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
