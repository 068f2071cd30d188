"""What DVC reads of the dataset: the folder as a dependency (before issue 19) against stage listing (after).

Two DVC projects on the same dataset root, timed with `dvc repro` (the first: DVC, or stage listing, reads the
files; then a no-op one) and a no-op `dvc status`:

- before: a stage whose dependency is the dataset's folder (as prepare and extract_video had ``${dataset.root}``);
- after: stage listing (this checkout's ``stages/listing.py``) and a stage that depends on ``listing.jsonl``.

Datasets: ``--unlisted-gb``: the embedded default's layout (small) plus that many GB of files no annotation lists
(sparse: no disk used; DVC still reads every byte); ``--clips``: a Kinetics-shaped dataset of that many stub
files (100 bytes each) under ``train/<label>/`` with its annotation CSV, all listed.

    python benchmarks/bench_listing.py --unlisted-gb 50 --clips 240000 --dir /tmp
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def sh(cmd: list[str], cwd: Path, env: dict) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t


def project(where: Path, dataset: dict, *, listed: bool, env: dict) -> Path:
    where.mkdir(parents=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["dataset"].update(dataset)
    (where / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if listed:
        stages = {
            "listing": {"cmd": f"{sys.executable} {REPO / 'stages/listing.py'} --listing listing.jsonl",
                        "always_changed": True, "params": ["dataset", "prepare"],
                        "outs": [{"listing.jsonl": {"persist": True}}]},
            "uses": {"cmd": "echo ok > used.txt", "deps": ["listing.jsonl"], "outs": ["used.txt"]},
        }
    else:
        stages = {"uses": {"cmd": "echo ok > used.txt", "deps": [dataset["root"]], "outs": ["used.txt"]}}
    (where / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    for cmd in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"]):
        sh(cmd, where, env)
    return where


def measure(name: str, dataset: dict, work: Path, env: dict) -> None:
    for listed in (False, True):
        label = "after (stage listing)" if listed else "before (folder dependency)"
        proj = project(work / f"{name}-{'after' if listed else 'before'}", dataset, listed=listed, env=env)
        first = sh([str(BIN / "dvc"), "repro"], proj, env)
        again = sh([str(BIN / "dvc"), "repro"], proj, env)
        status = sh([str(BIN / "dvc"), "status"], proj, env)
        print(f"{name:28s} {label:28s} first dvc repro {first:8.2f} s   no-op dvc repro {again:7.2f} s   "
              f"no-op dvc status {status:6.2f} s", flush=True)


def kinetics_stubs(root: Path, clips: int, labels: int = 400) -> None:
    rows = ["label,youtube_id,time_start,time_end,split"]
    payload = b"\0" * 100
    for i in range(clips):
        label = f"class {i % labels:03d}"
        folder = root / "train" / label
        if i < labels:
            folder.mkdir(parents=True)
        yid = f"y{i:010d}"
        (folder / f"{yid}_000000_000010.mp4").write_bytes(payload)
        rows.append(f"{label},{yid},0,10,{'val' if (i // labels) % 10 == 9 else 'train'}")  # a tenth: Kinetics' val
    (root / "train.csv").write_text("\n".join(rows) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unlisted-gb", type=float, default=50)
    parser.add_argument("--clips", type=int, default=240_000)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_listing_", dir=args.dir))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "MAIVAR_CACHE_DIR": str(work / "maivar-cache"),
           "PATH": f"{BIN}:{os.environ['PATH']}"}
    try:
        from maivar.settings.synthesize import SynthesizeSettings
        from maivar.synthetic import synthesize

        if args.unlisted_gb:
            root = work / "ucf"
            small = yaml.safe_load((REPO / "params.yaml").read_text())["synthesize"]
            small.update(width=96, height=72, duration_s=1.0, fps=10, sample_rate=16000)
            synthesize(root, settings=SynthesizeSettings.from_mapping(small), workers=2)
            listed_bytes = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
            with open(root / "unlisted-archive.bin", "wb") as f:
                f.truncate(int(args.unlisted_gb * 1e9))
            print(f"UCF101-layout root: {listed_bytes / 1e6:.1f} MB listed + {args.unlisted_gb:g} GB unlisted "
                  "(sparse)", flush=True)
            measure(f"+{args.unlisted_gb:g} GB unlisted", {"format": "ucf101", "root": str(root)}, work, env)
        if args.clips:
            root = work / "kinetics"
            t = time.perf_counter()
            kinetics_stubs(root, args.clips)
            print(f"Kinetics-shaped root: {args.clips} stub files ({time.perf_counter() - t:.1f} s to write)",
                  flush=True)
            measure(f"{args.clips} clips", {"format": "kinetics", "root": str(root), "annotations": "train.csv"},
                    work, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
