"""Disk footprint of a UCF101-sized run (prepare's WAVs, render's images.h5) with DVC's cache linked and copied,
and whether a lossless compact format (FLAC) would pay for the demuxed audio.

    .venv/bin/python benchmarks/bench_disk.py [--dir /tmp/bench_disk] [--duration 7.2] [--flac-sample 200] [--keep]

1. **Dataset** (in ``--dir``/ucf): UCF101's official split-1 lists (tests/fixtures/ucfTrainTestlist) and, for
   every listed video of the paper's 51 classes (6,845: 4,901 train / 1,944 test), its own synthetic clip
   (``maivar.synthetic.make_clip``: a distinct seed per video, so that no two WAVs are equal and DVC's cache
   cannot deduplicate them), ``--duration`` seconds (UCF101's mean, 7.2 s, by default) of 44.1 kHz stereo
   16-bit audio, a 32 x 32 picture (prepare and render never look at the picture). 8 train clips carry digital
   silence, so prepare's per-video check keeps the paper's 6,837 (4,893 / 1,944).
2. **Run**: a ``git clone`` of this repository (the committed HEAD; its own ``.dvc/cache``, ``.dvc/config`` as
   committed: ``cache.type hardlink,copy``), params ``dataset.root`` = the dataset and ``prepare.classes:
   paper``; prepare's and render's commands (as dvc.yaml has them), each followed by ``dvc commit`` (DVC hashing
   the stage's dependencies and outputs and linking them into the cache), timed apart. ``du`` of the outputs
   (data/, metrics/) and of the outputs together with ``.dvc/cache``: on-disk blocks and apparent sizes, each
   inode counted once as ``du`` does, and with ``-l`` (a hard link counted again: what a tool that ignores links
   would report).
   Then the run is committed in the clone and ``dvc exp run -S representation=mfcc render`` changes a parameter:
   ``du`` again (the cache now holds both image stores, the WAVs still once).
3. **FLAC** on ``--flac-sample`` of the run's WAVs, evenly spaced: libsndfile's FLAC (16-bit, level 5) size
   ratio, its samples equal to the WAV's (int16) and render's reader (``read_audio``) returning the same array;
   render's read time per clip, WAV vs FLAC, taking turns, median of 3 passes; the demux (ffmpeg to WAV vs to
   FLAC) on 40 source videos. The same on the sample after an MP3 round trip at 128 kbit/s (ffmpeg), since real
   videos carry lossy audio, whose decoded samples compress differently from this synthetic audio.
4. **Copy**: the dataset is deleted (to make room), ``dvc config cache.type copy`` and ``dvc checkout --relink``
   turn every output of prepare and render into a copy of its cache file; ``du`` again.

Everything under ``--dir`` is deleted at the end unless ``--keep``. Needs ~2.2x the WAVs' size free at its peak
(~20 GB at the defaults).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
LISTS = REPO / "tests" / "fixtures" / "ucfTrainTestlist"
SILENT = 8  # the paper's 4,901 - 4,893 train videos dropped by its audio check


def make(task):
    from maivar.synthetic import make_clip

    return make_clip(task)


def build(root: Path, duration: float, workers: int | None, limit: int = 0) -> int:
    """The dataset (step 1); returns the number of clips written. ``limit``: every k-th video only (a smoke test)."""
    from maivar.core.parallel import guarded_map
    from maivar.core.rejections import ClipFailure
    from maivar.data.listing import select_classes
    from maivar.data.ucf101 import read_split
    from maivar.synthetic import ClipTask, class_specs

    lists = read_split(LISTS, 1)
    chosen = select_classes("paper", lists.classes)
    specs = dict(zip(chosen, class_specs(len(chosen), 0), strict=True))
    videos = sorted((v for v in lists.videos if v.class_name in specs), key=lambda v: v.id)
    if limit:
        videos = videos[:: max(1, len(videos) // limit)][:limit]
    train = [v.id for v in videos if v.split == "train"]
    silent = set(train[len(train) // (2 * SILENT)::max(1, len(train) // SILENT)][:SILENT])
    shutil.copytree(LISTS, root / "ucfTrainTestlist")
    if limit:  # only the kept videos' lines
        keep = {v.rel_path for v in videos}
        for name in ("trainlist01.txt", "testlist01.txt"):
            lines = (LISTS / name).read_text().splitlines(keepends=True)
            (root / "ucfTrainTestlist" / name).write_text("".join(ln for ln in lines if ln.split()[0] in keep))
    tasks = []
    for i, v in enumerate(videos):
        dst = root / "UCF-101" / v.rel_path
        dst.parent.mkdir(parents=True, exist_ok=True)
        spec = specs[v.class_name]
        tasks.append(ClipTask(path=str(dst), seed=i, look=spec.look, sound=spec.sound, silent=v.id in silent,
                              duration_s=duration, width=32, height=32, fps=25, sample_rate=44100, noise=0.6))
    failed = [r for r in guarded_map(make, tasks, workers=workers, timeout_s=300, desc="clips")
              if isinstance(r, ClipFailure)]
    if failed:
        sys.exit(f"{len(failed)} clips failed: {failed[0]}")
    return len(tasks)


def du(*paths: Path, apparent: bool = False, count_links: bool = False) -> int:
    """Bytes under ``paths`` as ``du -s -c -B1`` counts them (one count per inode across all paths)."""
    cmd = ["du", "-s", "-c", "-B1"] + (["--apparent-size"] if apparent else []) + (["-l"] if count_links else [])
    out = subprocess.run(cmd + [str(p) for p in paths], capture_output=True, text=True, check=True).stdout
    return int(out.strip().splitlines()[-1].split()[0])


def footprint(repo: Path, label: str) -> dict:
    outs = [repo / "data", repo / "metrics"]
    cache = repo / ".dvc" / "cache"
    row = {}
    for kind, kw in (("disk", {}), ("apparent", {"apparent": True})):
        row[f"outputs_{kind}"] = du(*outs, **kw)
        row[f"total_{kind}"] = du(*outs, cache, **kw)
        row[f"total_{kind}_l"] = du(*outs, cache, count_links=True, **kw)
    gb = 1e9
    print(f"[{label}] outputs {row['outputs_disk'] / gb:.3f} GB on disk ({row['outputs_apparent'] / gb:.3f} GB "
          f"apparent); outputs + cache {row['total_disk'] / gb:.3f} GB on disk ({row['total_apparent'] / gb:.3f} GB "
          f"apparent) = {row['total_disk'] / row['outputs_disk']:.3f}x the outputs; counting each link again "
          f"(du -l): {row['total_disk_l'] / gb:.3f} GB")
    for sub in ("data/prepared/audio", "data/audio_images/images.h5", "data/audio_images/previews",
                "data/prepared/manifest.csv", "data/prepared/rejections.csv"):
        p = repo / sub
        print(f"    {sub}: {du(p) / 1e6:.1f} MB on disk, {du(p, apparent=True) / 1e6:.1f} MB apparent"
              + (f", {sum(1 for _ in p.iterdir())} files" if p.is_dir() else ""))
    return row


def stage_cmd(repo: Path, stage: str) -> str:
    """The stage's command line from dvc.yaml, its ``${paths.*}`` filled in."""
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())
    paths = next(v["paths"] for v in spec["vars"] if "paths" in v)
    return re.sub(r"\$\{paths\.(\w+)\}", lambda m: paths[m.group(1)], spec["stages"][stage]["cmd"])


def dvc(repo: Path, env: dict, *args: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(["dvc", *args], cwd=repo, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"dvc {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def flac_check(wavs: list[Path], work: Path, label: str) -> None:
    """Step 3 on ``wavs``: size ratio, exactness, render's read time."""
    import soundfile as sf

    from maivar.audio.wav import read_audio

    work.mkdir(parents=True, exist_ok=True)
    flacs, wav_bytes, flac_bytes = [], 0, 0
    t0 = time.perf_counter()
    for w in wavs:
        data, rate = sf.read(w, dtype="int16", always_2d=True)
        f = work / f"{w.stem}.flac"
        sf.write(f, data, rate, format="FLAC", subtype="PCM_16")
        flacs.append(f)
        wav_bytes += w.stat().st_size
        flac_bytes += f.stat().st_size
    encode = (time.perf_counter() - t0) / len(wavs)
    exact = all(np.array_equal(sf.read(w, dtype="int16")[0], sf.read(f, dtype="int16")[0])
                and np.array_equal(read_audio(str(w))[0], read_audio(str(f))[0])
                for w, f in zip(wavs, flacs, strict=True))
    passes = {"wav": [], "flac": []}
    for _ in range(3):
        for kind, files in (("wav", wavs), ("flac", flacs)):
            t0 = time.perf_counter()
            for p in files:
                read_audio(str(p))
            passes[kind].append((time.perf_counter() - t0) / len(files))
    w_ms, f_ms = (1e3 * statistics.median(passes[k]) for k in ("wav", "flac"))
    print(f"[flac, {label}] {len(wavs)} WAVs: FLAC / WAV size {flac_bytes / wav_bytes:.3f} "
          f"({wav_bytes / len(wavs) / 1e6:.3f} -> {flac_bytes / len(wavs) / 1e6:.3f} MB a clip); samples and "
          f"read_audio arrays equal: {exact}; read_audio per clip: WAV {w_ms:.2f} ms, FLAC {f_ms:.2f} ms "
          f"(+{f_ms - w_ms:.2f} ms, {f_ms / w_ms:.1f}x); encoding (soundfile) {1e3 * encode:.1f} ms a clip")


def demux_check(videos: list[Path], work: Path) -> None:
    from maivar.data.media import ffmpeg_exe

    work.mkdir(parents=True, exist_ok=True)
    times = {"wav": [], "flac": []}
    for _ in range(2):
        for ext, codec in (("wav", "pcm_s16le"), ("flac", "flac")):
            t0 = time.perf_counter()
            for i, v in enumerate(videos):
                subprocess.run([ffmpeg_exe(), "-nostdin", "-y", "-loglevel", "error", "-i", str(v), "-map", "0:a:0",
                                "-vn", "-acodec", codec, "-ac", "2", "-ar", "44100", str(work / f"{i}.{ext}")],
                               check=True, stdin=subprocess.DEVNULL)
            times[ext].append((time.perf_counter() - t0) / len(videos))
    w_ms, f_ms = (1e3 * min(times[k]) for k in ("wav", "flac"))
    sizes = {ext: sum(p.stat().st_size for p in work.glob(f"*.{ext}")) for ext in ("wav", "flac")}
    print(f"[demux] {len(videos)} videos, one ffmpeg each (best of 2): to WAV {w_ms:.1f} ms, to FLAC {f_ms:.1f} ms "
          f"a video (+{f_ms - w_ms:.1f} ms); ffmpeg's FLAC / WAV size {sizes['flac'] / sizes['wav']:.3f}")


def mp3_round_trip(wavs: list[Path], work: Path) -> list[Path]:
    from maivar.data.media import ffmpeg_exe

    work.mkdir(parents=True, exist_ok=True)
    out = []
    for w in wavs:
        mp3, back = work / f"{w.stem}.mp3", work / w.name
        for cmd in (["-i", str(w), "-b:a", "128k", str(mp3)], ["-i", str(mp3), "-acodec", "pcm_s16le", str(back)]):
            subprocess.run([ffmpeg_exe(), "-nostdin", "-y", "-loglevel", "error", *cmd], check=True,
                           stdin=subprocess.DEVNULL)
        out.append(back)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=None, help="scratch folder (default: a new one under the temp dir)")
    ap.add_argument("--duration", type=float, default=7.2, help="seconds of audio per clip (UCF101's mean: 7.2)")
    ap.add_argument("--flac-sample", type=int, default=200, help="WAVs for the FLAC check (0: skip it)")
    ap.add_argument("--workers", type=int, default=0, help="processes building the dataset; 0 = all cores")
    ap.add_argument("--limit", type=int, default=0, help="build only this many clips (a smoke test of the script)")
    ap.add_argument("--skip-copy", action="store_true", help="skip step 4 (copy mode)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = ap.parse_args()
    scratch = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench_disk_"))
    scratch.mkdir(parents=True, exist_ok=True)
    data, repo = scratch / "ucf", scratch / "repo"
    try:
        print(f"uptime: {os.getloadavg()}")
        t0 = time.perf_counter()
        n = build(data, args.duration, args.workers or None, args.limit)
        print(f"dataset: {n} clips of {args.duration:g} s in {time.perf_counter() - t0:.0f} s; "
              f"{du(data) / 1e9:.2f} GB on disk")
        subprocess.run(["git", "clone", "-q", str(REPO), str(repo)], check=True)
        params = yaml.safe_load((repo / "params.yaml").read_text())
        params["dataset"]["root"] = str(data)
        params["prepare"]["classes"] = "paper"
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
               "PYTHONPATH": str(repo), "DVC_NO_ANALYTICS": "1"}
        link = subprocess.run(["dvc", "config", "cache.type"], cwd=repo, env=env, text=True, capture_output=True)
        print(f"cache.type: {link.stdout.strip()}")
        for stage in ("prepare", "render"):  # the stage's own command, then DVC's part (hashing, caching, linking)
            t0 = time.perf_counter()
            subprocess.run(stage_cmd(repo, stage), shell=True, cwd=repo, env=env, check=True, capture_output=True)
            took = time.perf_counter() - t0
            print(f"{stage}: its command {took:.0f} s, then dvc commit {dvc(repo, env, 'commit', '-f', stage):.0f} s "
                  f"(load {os.getloadavg()[0]:.1f})")
        print("subset:", (repo / "metrics" / "subset.json").read_text().replace("\n", " ")[:300])
        footprint(repo, "cache.type hardlink,copy")
        git_env = {**env, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b",
                   "GIT_COMMITTER_EMAIL": "b@b"}
        for cmd in (["git", "add", "-A"], ["git", "commit", "-qm", "UCF-sized run"]):
            subprocess.run(cmd, cwd=repo, env=git_env, check=True, capture_output=True)
        took = dvc(repo, git_env, "exp", "run", "-S", "representation=mfcc", "render")
        print(f"dvc exp run -S representation=mfcc render: {took:.0f} s")
        footprint(repo, "hardlink,copy, after the experiment")

        if args.flac_sample:
            with open(repo / "data" / "prepared" / "manifest.csv") as f:
                rows = list(csv.DictReader(f))
            step = max(1, len(rows) // args.flac_sample)
            sample = rows[::step][: args.flac_sample]
            wavs = [repo / r["audio_path"] for r in sample]
            flac_check(wavs, scratch / "flac", f"as demuxed, {args.duration:g} s synthetic audio")
            demux_check([Path(r["video_path"]) for r in sample[:40]], scratch / "demux")
            flac_check(mp3_round_trip(wavs, scratch / "mp3"), scratch / "flac_mp3", "after an MP3 128k round trip")
            for d in ("flac", "demux", "mp3", "flac_mp3"):
                shutil.rmtree(scratch / d)

        if not args.skip_copy:
            shutil.rmtree(data)  # make room; the outputs no longer need it
            dvc(repo, env, "config", "cache.type", "copy")
            print(f"dvc checkout --relink (copy): {dvc(repo, env, 'checkout', '--relink', 'prepare', 'render'):.0f} s")
            footprint(repo, "cache.type copy")
        print(f"uptime: {os.getloadavg()}")
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
