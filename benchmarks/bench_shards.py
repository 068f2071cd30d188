"""Many small files at scale (issue 19, item 4): DVC on one WAV per clip vs on a sharded audio store.

For each N (``--n``, e.g. 10000 60000 240000), in a scratch git + DVC repository under ``--dir``:

1. **WAVs**: N synthetic WAVs in one folder, as ``prepare`` writes them (``audio/<id>.wav``, flat), each
   ``--duration`` seconds of 44.1 kHz stereo 16-bit noise (a different seed per clip, so that DVC's cache cannot
   deduplicate them). Small clips on purpose: the bytes cost DVC ~430 MB/s whatever the layout (BENCHMARKS "Disk
   at scale"); what differs between the layouts is the per-file cost.
2. **Shards**: the same samples in ``ceil(N / --per-shard)`` HDF5 files (``shards/<k>.h5``): one int16 dataset
   ``samples`` (frames x 2, the clips end to end, contiguous, uncompressed), ``offsets`` (clips + 1) and ``ids``.
3. For each layout, the folder is the output of a command-less stage (``dvc stage add -n prepare -o <folder>``,
   as ``prepare``'s ``data/prepared/audio``), and, timed apart: ``dvc commit -f prepare`` (hashing, caching with
   the project's ``cache.type hardlink,copy``, the ``.dir`` listing and dvc.lock), a no-op ``dvc status`` (twice;
   DVC's state database knows every file), ``dvc status`` after deleting the state database (``.dvc/tmp``: what
   a fresh clone or a copy that changed the mtimes costs: every file hashed again), ``dvc push`` to a local-path
   remote (a new folder under ``--dir``) and a second, no-op ``dvc push``. Each tree (and its remote) is deleted
   after it is measured.

``--read N`` (default 800: one shard) measures what ``render``'s read of one clip costs: ``read_audio`` (render's
reader: soundfile, float32, channel mean) on each clip's own WAV against the same clip's rows from its shard
(h5py slice -> float32 -> the same channel mean; the arrays are checked equal), the shard opened for each clip
and the shard kept open with its offsets read once (render reading a shard's clips in turn), and the same WAVs
as members of one uncompressed tar kept open (seek, read the member, soundfile on the bytes),
taking turns, median over the clips of the median of 3 passes, warm page cache; at ``--duration`` and at
``--read-duration`` (UCF101's mean, 7.2 s).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

RATE, CHANNELS = 44100, 2


def wav_bytes(samples: np.ndarray) -> bytes:
    """A canonical 44-byte-header PCM WAV of int16 ``samples`` (frames x channels)."""
    data = samples.astype("<i2", copy=False).tobytes()
    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(data), b"WAVE", b"fmt ", 16, 1, CHANNELS, RATE,
                         RATE * CHANNELS * 2, CHANNELS * 2, 16, b"data", len(data))
    return header + data


def clip(i: int, frames: int) -> np.ndarray:
    return np.random.default_rng(i).integers(-8000, 8000, size=(frames, CHANNELS), dtype=np.int16)


def write_wavs(folder: Path, n: int, frames: int) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        (folder / f"v{i:07d}.wav").write_bytes(wav_bytes(clip(i, frames)))


def write_shards(folder: Path, n: int, frames: int, per_shard: int) -> int:
    import h5py

    folder.mkdir(parents=True)
    shards = math.ceil(n / per_shard)
    for k in range(shards):
        ids = range(k * per_shard, min(n, (k + 1) * per_shard))
        with h5py.File(folder / f"{k:05d}.h5", "w") as f:
            f.create_dataset("samples", data=np.concatenate([clip(i, frames) for i in ids]))
            f.create_dataset("offsets", data=np.arange(len(ids) + 1, dtype=np.int64) * frames)
            f.create_dataset("ids", data=np.array([f"v{i:07d}".encode() for i in ids]))
    return shards


def read_wav_bytes(data: bytes) -> np.ndarray:
    """A tar member's WAV as render reads a WAV: soundfile, float32, the channel mean."""
    import io

    import soundfile as sf

    from maivar.audio.wav import _mix

    return _mix(sf.read(io.BytesIO(data), dtype="float32", always_2d=True)[0])[0]


def dvc(repo: Path, *args: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(["dvc", *args], cwd=repo, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"dvc {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def measure_dvc(scratch: Path, layout: str, n: int, make) -> dict:
    repo, remote = scratch / f"repo_{layout}", scratch / f"remote_{layout}"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    for args in (("init", "-q"), ("config", "core.analytics", "false"), ("config", "cache.type", "hardlink,copy"),
                 ("remote", "add", "-d", "local", str(remote))):
        dvc(repo, *args)
    t0 = time.perf_counter()
    files = make(repo / layout)
    build = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in (repo / layout).iterdir())
    dvc(repo, "stage", "add", "-q", "-n", "prepare", "-o", layout, "true")
    row = {"layout": layout, "N": n, "files": files, "GB": size / 1e9, "build": build}
    row["commit"] = dvc(repo, "commit", "-f", "-q", "prepare")
    row["status"] = min(dvc(repo, "status"), dvc(repo, "status"))
    shutil.rmtree(repo / ".dvc" / "tmp")
    row["status_cold"] = dvc(repo, "status")
    row["push"] = dvc(repo, "push", "-q")
    row["push_noop"] = dvc(repo, "push", "-q")
    print(f"[{layout}] N {n:,}: {files:,} files, {row['GB']:.3f} GB (built in {build:.0f} s); dvc commit "
          f"{row['commit']:.1f} s, status (no-op) {row['status']:.2f} s, status without the state database "
          f"{row['status_cold']:.1f} s, push {row['push']:.1f} s, push again (no-op) {row['push_noop']:.1f} s; "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    shutil.rmtree(repo)
    shutil.rmtree(remote, ignore_errors=True)
    return row


def measure_read(scratch: Path, n: int, frames: int, label: str) -> None:
    import h5py

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from maivar.audio.wav import _mix, read_audio

    work = scratch / "read"
    write_wavs(work / "wav", n, frames)
    write_shards(work / "shard", n, frames, n)
    shard = work / "shard" / "00000.h5"
    paths = [str(work / "wav" / f"v{i:07d}.wav") for i in range(n)]

    def from_shard(f, i, offsets=None):
        lo, hi = (f["offsets"] if offsets is None else offsets)[i:i + 2]
        return _mix(f["samples"][lo:hi].astype(np.float32) / 32768.0)[0]

    tar = work / "shard.tar"  # the same WAVs as members of one uncompressed tar, read through its index
    with tarfile.open(tar, "w", format=tarfile.GNU_FORMAT) as t:
        for p in paths:
            t.add(p, arcname=Path(p).name)
    with tarfile.open(tar) as t:
        index = [(m.offset_data, m.size) for m in t.getmembers()]

    def from_tar(f, i):
        f.seek(index[i][0])
        return read_wav_bytes(f.read(index[i][1]))

    with h5py.File(shard, "r") as f, open(tar, "rb") as g:  # the same samples every way
        assert all(np.array_equal(read_audio(paths[i])[0], from_shard(f, i))
                   and np.array_equal(read_audio(paths[i])[0], from_tar(g, i)) for i in range(0, n, max(1, n // 50)))
    times = {k: [[] for _ in range(n)] for k in ("wav", "shard_open", "shard_kept", "tar_kept")}
    for _ in range(3):
        for i, p in enumerate(paths):
            t0 = time.perf_counter()
            read_audio(p)
            times["wav"][i].append(time.perf_counter() - t0)
        for i in range(n):
            t0 = time.perf_counter()
            with h5py.File(shard, "r") as f:
                from_shard(f, i)
            times["shard_open"][i].append(time.perf_counter() - t0)
        with h5py.File(shard, "r") as f:
            offsets = f["offsets"][:]
            for i in range(n):
                t0 = time.perf_counter()
                from_shard(f, i, offsets)
                times["shard_kept"][i].append(time.perf_counter() - t0)
        with open(tar, "rb") as f:
            for i in range(n):
                t0 = time.perf_counter()
                from_tar(f, i)
                times["tar_kept"][i].append(time.perf_counter() - t0)
    ms = {k: 1e3 * statistics.median(statistics.median(t) for t in v) for k, v in times.items()}
    print(f"[read, {label}, {n} clips, {frames * CHANNELS * 2 / 1e3:.1f} KB of samples each] median a clip: "
          f"own WAV (read_audio) {ms['wav']:.3f} ms; shard opened per clip {ms['shard_open']:.3f} ms "
          f"({ms['shard_open'] / ms['wav']:.2f}x); shard kept open {ms['shard_kept']:.3f} ms "
          f"({ms['shard_kept'] / ms['wav']:.2f}x); tar shard kept open {ms['tar_kept']:.3f} ms "
          f"({ms['tar_kept'] / ms['wav']:.2f}x)", flush=True)
    shutil.rmtree(work)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="*", default=[10000, 60000], help="clip counts to measure DVC on")
    ap.add_argument("--duration", type=float, default=0.1, help="seconds a clip (44.1 kHz stereo 16-bit)")
    ap.add_argument("--per-shard", type=int, default=800, help="clips a shard")
    ap.add_argument("--read", type=int, default=800, help="clips for the read measurement (0: skip it)")
    ap.add_argument("--read-duration", type=float, default=7.2, help="seconds a clip in the second read measurement")
    ap.add_argument("--dir", default=None, help="scratch folder (default: a new one under the temp dir)")
    args = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench_shards_", dir=args.dir))
    os.environ["DVC_NO_ANALYTICS"] = "1"
    frames = round(args.duration * RATE)
    version = subprocess.run(["dvc", "--version"], capture_output=True, text=True).stdout.strip()
    print(f"load averages {os.getloadavg()}; dvc {version}", flush=True)
    try:
        if args.read:
            measure_read(scratch, args.read, frames, f"{args.duration:g} s")
            measure_read(scratch, args.read, round(args.read_duration * RATE), f"{args.read_duration:g} s")
        for n in args.n:
            wav = measure_dvc(scratch, "audio", n, lambda d, n=n: (write_wavs(d, n, frames), n)[1])
            shard = measure_dvc(scratch, "shards", n, lambda d, n=n: write_shards(d, n, frames, args.per_shard))
            print(f"[N {n:,}] WAVs / shards: commit {wav['commit'] / shard['commit']:.0f}x, no-op status "
                  f"{wav['status'] / shard['status']:.1f}x, status without state "
                  f"{wav['status_cold'] / shard['status_cold']:.0f}x, "
                  f"push {wav['push'] / shard['push']:.0f}x; per WAV file: commit {1e3 * wav['commit'] / n:.2f} ms, "
                  f"no-op status {1e3 * wav['status'] / n:.3f} ms, push {1e3 * wav['push'] / n:.2f} ms", flush=True)
        print(f"load averages {os.getloadavg()}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
