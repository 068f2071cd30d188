"""Tiny, deterministic stand-ins for the manifest and the audio/video feature stores (tests and benchmarks).

Each class has a random mean direction per modality; a clip's features are that mean times ``signal``
plus Gaussian noise, passed through ReLU like pooled CNN features. ``audio_signal < video_signal`` makes
audio the weaker modality, as in the paper; the two modalities' noise is independent, so fusing them
helps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from maivar.core.feature_store import create_store
from maivar.core.rejections import Rejection


def make_manifest(classes: int = 4, train_per_class: int = 12, test_per_class: int = 5) -> pd.DataFrame:
    rows = []
    for c in range(classes):
        name = f"Class{c}"
        for k in range(train_per_class + test_per_class):
            split = "test" if k < test_per_class else "train"
            rows.append({"id": f"v_{name}_g{k + 1:02d}_c01", "class_name": name, "label": c, "split": split})
    return pd.DataFrame(rows).sort_values("id").reset_index(drop=True)


def make_features(manifest: pd.DataFrame, dim: int, *, segments: int | None = None, signal: float = 1.0,
                  seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    classes = int(manifest["label"].max()) + 1
    means = rng.normal(size=(classes, dim))
    labels = manifest["label"].to_numpy()
    shape = (len(manifest), dim) if segments is None else (len(manifest), segments, dim)
    noise = rng.normal(size=shape)
    base = means[labels] if segments is None else means[labels][:, None, :]
    return np.maximum(signal * base + noise, 0).astype(np.float32)


def write_store(path: Path, manifest: pd.DataFrame, features: np.ndarray, *, drop: dict[str, str] | None = None,
                labels: dict[str, int] | None = None, attrs: dict | None = None) -> None:
    """A feature store over the manifest's clips; ``drop`` maps ids to a rejection reason (left out)."""
    drop = drop or {}
    keep = [i for i, cid in enumerate(manifest["id"]) if cid not in drop]
    ids = [manifest["id"].iloc[i] for i in keep]
    y = [int((labels or {}).get(cid, manifest["label"].iloc[i])) for i, cid in zip(keep, ids, strict=True)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with create_store(path, data_name="features", n=len(keep), item_shape=features.shape[1:], dtype="float32") as w:
        for row, i in enumerate(keep):
            w.write(row, features[i])
        w.finish(ids, y, [Rejection(cid, reason, "test") for cid, reason in drop.items()],
                 attrs or {"pretrained": False})


def write_dataset(root: Path, *, classes: int = 4, train_per_class: int = 12, test_per_class: int = 5,
                  audio_dim: int = 32, video_dim: int = 24, segments: int = 5, audio_signal: float = 0.5,
                  video_signal: float = 0.6, seed: int = 0) -> pd.DataFrame:
    """``root/data/prepared/manifest.csv`` and ``root/data/features/{audio,video}.h5``; returns the manifest."""
    manifest = make_manifest(classes, train_per_class, test_per_class)
    (root / "data/prepared").mkdir(parents=True, exist_ok=True)
    manifest.to_csv(root / "data/prepared/manifest.csv", index=False)
    audio = make_features(manifest, audio_dim, signal=audio_signal, seed=seed)
    video = make_features(manifest, video_dim, segments=segments, signal=video_signal, seed=seed + 1)
    write_store(root / "data/features/audio.h5", manifest, audio,
                attrs={"pretrained": False, "representation": "chromagram"})
    write_store(root / "data/features/video.h5", manifest, video, attrs={"pretrained": False})
    return manifest
