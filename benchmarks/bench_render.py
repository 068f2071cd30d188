"""Benchmark: audio images, ours vs the authors' matplotlib route, side by side on the same clips.

    .venv/bin/python benchmarks/bench_render.py [--clips 8] [--repeats 3] [--stage-clips 64] [--duration 4.8]

1. Per representation, on one core, the same synthetic 4.8 s / 44.1 kHz clips (already in memory, so file
   reading is out of both): ms per clip for ``maivar.audio.drawing.render`` (features + image array, with
   params.yaml's ``pixel_mapping`` and, for information, the other one) and for
   the reference route, PyMAiVAR's figure recipe with current librosa (features + a 14x5-inch matplotlib
   figure + ``savefig`` to PNG in memory, the point where the authors' route has an image file; decoding
   and resizing that PNG, which their classifier also pays, is not counted). Then the ratio. Target: >= 20x.
2. The whole stage (``render_manifest``: WAV reading, resampling check, rendering, HDF5 + previews) over
   ``--stage-clips`` 16-bit stereo 44.1 kHz WAVs, with 1 worker and with all cores.

The reference route lives here, for comparison only; the pipeline never draws a figure.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core for the per-clip comparison

import argparse
import io
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from maivar.audio.drawing import render, style_from_settings
from maivar.audio.raster import PIXEL_MAPPINGS
from maivar.audio.representations import NAMES
from maivar.settings.base import read_params
from maivar.settings.render import RenderSettings, representation_from_params

SR = 44100
DURATION_S = 4.8  # the clip length of the reference figures in ../shared/notes/reference-routes.md


def synthetic_clip(seed: int, sr: int = SR, duration_s: float = DURATION_S) -> np.ndarray:
    """Action-like audio: impacts (decaying noise bursts), a sweep, a tone and background noise."""
    rng = np.random.default_rng(seed)
    n = int(duration_s * sr)
    t = np.arange(n) / sr
    y = 0.02 * rng.standard_normal(n)
    for start in rng.uniform(0, duration_s - 0.2, size=rng.integers(3, 9)):
        i, m = int(start * sr), int(0.15 * sr)
        y[i : i + m] += rng.uniform(0.3, 0.9) * rng.standard_normal(m) * np.exp(-np.arange(m) / (0.03 * sr))
    f0 = rng.uniform(150, 600)
    y += 0.15 * np.sin(2 * np.pi * (f0 * t + rng.uniform(50, 500) * t**2))
    return np.clip(y, -1, 1).astype(np.float32)


# ------------------------------------------------------------------ the reference (authors') route


def reference_route(representation: str):
    """PyMAiVAR's recipe for one representation with current librosa: ``fn(x, sr) -> PNG bytes``."""
    import librosa
    import librosa.display
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import sklearn.preprocessing

    warnings.filterwarnings("ignore", category=UserWarning, module="sklearn")  # float32 MFCCs, as theirs

    def normalize(x, axis=0):
        return sklearn.preprocessing.minmax_scale(x, axis=axis)

    def save(fig) -> bytes:
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        return buf.getvalue()

    def waveplot(x, sr):
        fig = plt.figure(figsize=(14, 5))
        librosa.display.waveshow(x, sr=sr)  # waveplot() in librosa 0.8
        plt.axis("off")
        return save(fig)

    def curve(x, sr, feature, figsize):
        frames = range(len(feature))
        t = librosa.frames_to_time(frames)  # their default-sr frame times (the time-axis bug), same cost
        fig = plt.figure(figsize=figsize)
        librosa.display.waveshow(x, sr=sr, alpha=0.4)
        plt.plot(t, normalize(feature), color="r")
        plt.axis("off")
        return save(fig)

    def spectral_centroid(x, sr):
        return curve(x, sr, librosa.feature.spectral_centroid(y=x, sr=sr)[0], (14, 5))

    def spectral_rolloff(x, sr):
        return curve(x, sr, librosa.feature.spectral_rolloff(y=x + 0.01, sr=sr)[0], (10, 5))

    def mfcc(x, sr, scaled=False):
        m = librosa.feature.mfcc(y=x, sr=sr)
        if scaled:
            m = sklearn.preprocessing.scale(m, axis=1)
        fig = plt.figure(figsize=(14, 5))
        librosa.display.specshow(m, sr=sr, x_axis="time")
        plt.axis("off")
        return save(fig)

    def chromagram(x, sr):
        c = librosa.feature.chroma_stft(y=x, sr=sr, hop_length=512)
        fig = plt.figure(figsize=(14, 5))
        librosa.display.specshow(c, x_axis="time", y_axis="chroma", hop_length=512, cmap="coolwarm")
        plt.axis("off")
        return save(fig)

    def melspectrogram(x, sr):  # ours (not in PyMAiVAR): drawn as they drew the MFCCs
        m = librosa.power_to_db(librosa.feature.melspectrogram(y=x, sr=sr), ref=np.max)
        fig = plt.figure(figsize=(14, 5))
        librosa.display.specshow(m, sr=sr, x_axis="time")
        plt.axis("off")
        return save(fig)

    return {
        "waveplot": waveplot,
        "spectral_centroid": spectral_centroid,
        "spectral_rolloff": spectral_rolloff,
        "mfcc": mfcc,
        "mfcc_scaled": lambda x, sr: mfcc(x, sr, scaled=True),
        "chromagram": chromagram,
        "melspectrogram": melspectrogram,
    }[representation]


# wall-clock time, and the process's CPU time (all single-threaded here), which other processes on a shared
# machine do not inflate.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def to_array(png: bytes, size: int) -> np.ndarray:
    """What the authors' classifier then does with the PNG: decode it and resize it to the input size."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB").resize((size, size), Image.BILINEAR))


def librosa_features_alone(representation: str):
    """Only the librosa call inside the reference route (no figure): the floor any route over it pays."""
    import librosa
    import sklearn.preprocessing

    return {
        "waveplot": lambda x, sr: None,
        "spectral_centroid": lambda x, sr: librosa.feature.spectral_centroid(y=x, sr=sr),
        "spectral_rolloff": lambda x, sr: librosa.feature.spectral_rolloff(y=x + 0.01, sr=sr),
        "mfcc": lambda x, sr: librosa.feature.mfcc(y=x, sr=sr),
        "mfcc_scaled": lambda x, sr: sklearn.preprocessing.scale(librosa.feature.mfcc(y=x, sr=sr), axis=1),
        "chromagram": lambda x, sr: librosa.feature.chroma_stft(y=x, sr=sr, hop_length=512),
        "melspectrogram": lambda x, sr: librosa.power_to_db(librosa.feature.melspectrogram(y=x, sr=sr), ref=np.max),
    }[representation]


# ------------------------------------------------------------------------------------ measurements


def per_clip(clips, repeats: int, settings: RenderSettings, interleaved: bool = False) -> list[dict]:
    """ms per clip for each route. Default protocol: each route renders all ``clips`` in a loop (as a stage
    does), the routes take turns block by block (so that load from other processes hits all alike), and
    the figure is the median over ``repeats`` of block time / clips. ``interleaved``: one call of each route
    per clip in turn, the median over all calls: a ~1 ms call after a ~40 ms matplotlib call then also pays
    for a cold CPU cache and a CPU that idled, which a loop over clips does not (see BENCHMARKS.md)."""
    import torch

    torch.set_num_threads(1)
    p = settings
    style = style_from_settings(p)
    size = p.image_size
    other = [m for m in PIXEL_MAPPINGS if m != p.pixel_mapping][0]
    rows = []
    for representation in NAMES:
        ref = reference_route(representation)
        feat = librosa_features_alone(representation)

        def ours(x, representation=representation, mapping=p.pixel_mapping):
            return render(x, SR, representation, size=size, n_fft=p.n_fft, hop_length=p.hop_length, n_mfcc=p.n_mfcc,
                          chroma_tuning=p.chroma_tuning, style=style, pixel_mapping=mapping)

        pngs = {}

        def png(i, x, pngs=pngs, ref=ref):
            pngs[i] = ref(x, SR)

        routes = {  # name -> fn(index, clip); each is used within this loop iteration only
            "ours": lambda i, x, ours=ours: ours(x),
            "png": png,
            "decode": lambda i, x, pngs=pngs: to_array(pngs[i], size),  # the PNG -> array step of the route
            "features": lambda i, x, feat=feat: feat(x, SR),
            "other": lambda i, x, ours=ours: ours(x, mapping=other),
        }
        for fn in routes.values():  # warm-up: imports, numba compilation, font cache, filterbanks
            fn(0, clips[0])
        times = {clock: {k: [] for k in routes} for clock in CLOCKS}
        names = list(routes)
        for r in range(repeats):
            if interleaved:
                for i, x in enumerate(clips):
                    for name in names:
                        t0 = {c: f() for c, f in CLOCKS.items()}
                        routes[name](i, x)
                        t1 = {c: f() for c, f in CLOCKS.items()}
                        for c in CLOCKS:
                            times[c][name].append(t1[c] - t0[c])
            else:
                order = names[r % len(names):] + names[: r % len(names)]  # repeat 0: png before decode
                for name in order:
                    t0 = {c: f() for c, f in CLOCKS.items()}
                    for i, x in enumerate(clips):
                        routes[name](i, x)
                    t1 = {c: f() for c, f in CLOCKS.items()}
                    for c in CLOCKS:
                        times[c][name].append((t1[c] - t0[c]) / len(clips))
        row = {"representation": representation}
        for c in CLOCKS:
            for k, v in times[c].items():
                row[f"{c}_{k}_ms"] = 1e3 * float(np.median(v))
            row[f"{c}_array_ms"] = row[f"{c}_png_ms"] + row[f"{c}_decode_ms"]
        rows.append(row)
        for c in CLOCKS:
            ours_ms, png_ms, arr_ms = row[f"{c}_ours_ms"], row[f"{c}_png_ms"], row[f"{c}_array_ms"]
            print(f"{representation:18s} {c:4s} ours {ours_ms:6.2f}   route to PNG {png_ms:7.1f}   ratio "
                  f"{png_ms / ours_ms:6.1f}x   | route to {size}px array {arr_ms:7.1f}   ratio {arr_ms / ours_ms:6.1f}x"
                  f"   | librosa features alone {row[f'{c}_features_ms']:6.2f}"
                  f"   | ours with pixel_mapping {other} {row[f'{c}_other_ms']:6.2f} "
                  f"({png_ms / row[f'{c}_other_ms']:5.1f}x)", flush=True)
    return rows


def whole_stage(n_clips: int, settings: RenderSettings, representation: str, duration_s: float) -> None:
    import pandas as pd
    import soundfile as sf

    from maivar.audio.render import render_manifest
    from maivar.core.parallel import default_workers

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = []
        for i in range(n_clips):
            path = tmp / f"v_Bench_g{i // 4 + 1:02d}_c{i % 4 + 1:02d}.wav"
            y = synthetic_clip(1000 + i, duration_s=duration_s)
            sf.write(path, np.stack([y, y], axis=1), SR, subtype="PCM_16")
            rows.append({"id": path.stem, "class_name": f"C{i % 4}", "label": i % 4, "audio_path": str(path)})
        manifest = pd.DataFrame(rows).sort_values("id").reset_index(drop=True)
        for workers in (1, default_workers()):
            import librosa

            t0 = time.perf_counter()
            render_manifest(manifest, representation=representation, settings=settings, workers=workers,
                            out_path=tmp / f"images_{workers}.h5", previews_dir=tmp / f"previews_{workers}",
                            librosa_version=librosa.__version__)
            dt = time.perf_counter() - t0
            print(f"stage render ({representation}) {n_clips} clips, {workers} worker(s): {dt:6.2f} s, "
                  f"{1e3 * dt / n_clips:6.2f} ms/clip, {n_clips / dt:6.1f} clips/s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=8, help="clips per representation (same clips for both routes)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stage-clips", type=int, default=64, help="0 skips the whole-stage timing")
    ap.add_argument("--representation", default=None, help="for the whole-stage timing (default: params.yaml)")
    ap.add_argument("--duration", type=float, default=DURATION_S, help="clip length in seconds (UCF101: ~7)")
    ap.add_argument("--interleaved", action="store_true", help="time single calls in turn instead of loops")
    args = ap.parse_args()

    params = read_params(str(Path(__file__).resolve().parents[1] / "params.yaml"))
    settings = RenderSettings.from_params(params)
    print(f"{args.clips} clips of {args.duration} s at {SR} Hz, image {settings.image_size} px, one core, "
          f"pixel_mapping {settings.pixel_mapping}, {'interleaved calls' if args.interleaved else 'loops'}; "
          f"median of {args.clips * args.repeats if args.interleaved else args.repeats} timings each, in ms per clip; "
          f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    clips = [synthetic_clip(i, duration_s=args.duration) for i in range(args.clips)]
    rows = per_clip(clips, args.repeats, settings, interleaved=args.interleaved)
    for c in CLOCKS:
        print(f"slowest ratio ({c}): {min(r[f'{c}_png_ms'] / r[f'{c}_ours_ms'] for r in rows):.1f}x against the "
              f"route to PNG, {min(r[f'{c}_array_ms'] / r[f'{c}_ours_ms'] for r in rows):.1f}x against the route to "
              f"an array (target 20x)")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if args.stage_clips:
        whole_stage(args.stage_clips, settings, args.representation or representation_from_params(params),
                    args.duration)


if __name__ == "__main__":
    main()
