"""The heads' data: features joined with the manifest by id, and with each other (audio + video).

Data rules (what happens to bad input):

- Features are joined to ``data/prepared/manifest.csv`` by ``id``; the manifest gives the split
  (``train``/``test``) and the label. A store id that is not in the manifest, a store label that
  disagrees with the manifest's, or a manifest clip that is neither in a store nor in its rejection
  list (the store invariant of docs/CONTRACTS.md) is a one-line :class:`PipelineError`: the files come
  from different runs and any join would be a silent misalignment.
- A row with NaN or inf features is **excluded** with reason ``nonfinite_features`` (logged; kept in
  the model file's ``excluded`` list).
- Audio + video (fusion, evaluation): the two stores are joined by id. An id in one store but not the
  other is excluded only when the other store *records* it as rejected (reason ``<modality>:<reason>``);
  otherwise it is an error (see above). The same id with different labels in the two stores is an error.
- A class without any training example (after exclusions) is an error: a head cannot learn it, and its
  accuracy would be meaningless. A class without test examples is allowed (its per-class accuracy is empty).

Flip variants: an audio store made with ``extract_audio.flips`` holds N x 4 x D features (attribute ``flips``,
variant 0 unflipped). Its :class:`Features` carry them as ``variants`` (N x 4 x D, replacing the first D
columns of ``x``, which hold variant 0): training draws one variant per clip per epoch, everything else
(normalization statistics, test accuracy, evaluation) uses the unflipped features.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from maivar.core import rejections
from maivar.core.errors import PipelineError
from maivar.core.feature_store import open_store
from maivar.core.rejections import Rejection

log = logging.getLogger(__name__)

HEAD_COLUMNS = ("id", "class_name", "label", "split")  # the manifest's columns the heads read
SEGMENTS = ("mean", "flatten")


def class_names(manifest: pd.DataFrame) -> list[str]:
    """Class names indexed by label; labels must be contiguous 0..C-1 with one name each."""
    pairs = manifest[["label", "class_name"]].drop_duplicates().sort_values("label")
    labels = pairs["label"].tolist()
    if labels != list(range(len(labels))) or pairs["class_name"].duplicated().any():
        raise PipelineError("manifest labels must map one-to-one to class names as 0..C-1: rerun the prepare stage")
    return pairs["class_name"].tolist()


def video_input(features: np.ndarray, segments: str) -> np.ndarray:
    """How the T x D segment features enter a head: ``mean`` over segments (D) or ``flatten`` (T*D)."""
    if segments not in SEGMENTS:
        raise PipelineError(f"video_mlp.segments is {segments!r}: choose mean or flatten")
    if features.ndim == 2:  # already one vector per clip
        return features.astype(np.float32, copy=False)
    if features.ndim != 3:
        raise PipelineError(f"video features must be N x segments x D, got shape {features.shape}")
    if segments == "mean":
        return features.mean(axis=1, dtype=np.float64).astype(np.float32)
    return features.reshape(len(features), -1).astype(np.float32, copy=False)


@dataclass
class Features:
    """One modality's usable rows, aligned: ``ids[i]`` has features ``x[i]`` and label ``y[i]``."""

    modality: str
    ids: list[str]
    x: np.ndarray
    y: np.ndarray
    attrs: dict
    rejected: dict[str, str] = field(default_factory=dict)  # id -> reason, for every manifest id not in ids
    excluded: list[Rejection] = field(default_factory=list)  # rows dropped here (non-finite features)
    variants: np.ndarray | None = None  # N x V x D flip variants of x[:, :D] (variant 0 == x[:, :D]), or None


def load_features(path: str | Path, manifest: pd.DataFrame, modality: str, *, segments: str | None = None) -> Features:
    """Read a feature store and check it against the manifest (see the module docstring)."""
    store = open_store(path, "features")
    x = store.data
    if x is None or len(x) != len(store.ids):
        raise PipelineError(f"{path}: features and ids differ in length: rerun the stage that writes it")
    variants = None
    if segments is not None:
        x = video_input(x, segments)
    elif "flips" in store.attrs and x.ndim == 3:  # N x V x D flip variants (extract_audio.flips)
        variants = x.astype(np.float32, copy=False)
        x = variants[:, 0]
    elif x.ndim != 2:
        raise PipelineError(f"{path}: {modality} features must be N x D, got shape {x.shape}")
    x = x.astype(np.float32, copy=False)
    unknown = [i for i in store.ids if i not in manifest.index]
    if unknown:
        raise PipelineError(
            f"{path} has {len(unknown)} id(s) not in the manifest (e.g. {unknown[0]}): it is stale, rerun dvc repro"
        )
    y = np.asarray(store.labels, dtype=np.int64)
    expected = manifest.loc[store.ids, "label"].to_numpy(dtype=np.int64) if store.ids else y
    if len(y) and not np.array_equal(y, expected):
        k = int(np.flatnonzero(y != expected)[0])
        raise PipelineError(
            f"{path}: clip {store.ids[k]} has label {y[k]} but the manifest says {expected[k]}: rerun dvc repro"
        )
    rejected = {r.id: r.reason for r in store.rejected}
    unaccounted = sorted(set(manifest.index) - set(store.ids) - set(rejected))
    if unaccounted:
        raise PipelineError(
            f"{path} neither holds nor rejects {len(unaccounted)} manifest clip(s) (e.g. {unaccounted[0]}): "
            "it was made from another manifest, rerun dvc repro"
        )
    values = x if variants is None else variants
    finite = np.isfinite(values.reshape(len(values), -1)).all(axis=1) if len(values) else np.ones(0, bool)
    excluded = [
        Rejection(store.ids[i], rejections.NONFINITE_FEATURES, f"{modality} features contain NaN or inf")
        for i in np.flatnonzero(~finite)
    ]
    for r in excluded:
        rejected[r.id] = r.reason
    if excluded:
        log.warning("%s: excluded %d clip(s) with NaN/inf features: %s", modality, len(excluded),
                    ", ".join(r.id for r in excluded[:5]) + (" ..." if len(excluded) > 5 else ""))
    keep = np.flatnonzero(finite)
    return Features(modality, [store.ids[i] for i in keep], x[keep], y[keep], dict(store.attrs), rejected, excluded,
                    None if variants is None else variants[keep])


def join_modalities(audio: Features, video: Features) -> tuple[Features, list[Rejection]]:
    """``[audio, video]`` rows for the ids both hold; the others become recorded exclusions.

    Returns the joined :class:`Features` (modality ``fusion``, ``x`` = audio columns then video columns)
    and the exclusions (ids held by one modality and recorded as rejected by the other).
    """
    a_index = {i: k for k, i in enumerate(audio.ids)}
    v_index = {i: k for k, i in enumerate(video.ids)}
    excluded: list[Rejection] = []
    for one, other, other_index in ((audio, video, v_index), (video, audio, a_index)):
        for clip_id in one.ids:
            if clip_id in other_index:
                continue
            if clip_id not in other.rejected:
                raise PipelineError(
                    f"clip {clip_id} has {one.modality} features but is neither in the {other.modality} features nor "
                    f"in their rejection list: the feature files are out of step, rerun dvc repro"
                )
            excluded.append(Rejection(clip_id, f"{other.modality}:{other.rejected[clip_id]}",
                                      f"no {other.modality} features"))
    ids = sorted(set(a_index) & set(v_index))
    ai = np.array([a_index[i] for i in ids], dtype=np.int64)
    vi = np.array([v_index[i] for i in ids], dtype=np.int64)
    if len(ids) and not np.array_equal(audio.y[ai], video.y[vi]):
        k = int(np.flatnonzero(audio.y[ai] != video.y[vi])[0])
        raise PipelineError(
            f"clip {ids[k]} has label {audio.y[ai][k]} in the audio features but {video.y[vi][k]} in the video "
            "features: the feature files are out of step, rerun dvc repro"
        )
    x = np.concatenate([audio.x[ai], video.x[vi]], axis=1) if len(ids) else np.zeros(
        (0, audio.x.shape[1] + video.x.shape[1]), np.float32)
    rejected = {**audio.rejected, **video.rejected}
    rejected.update({r.id: r.reason for r in excluded})
    excluded = sorted(excluded, key=lambda r: r.id)
    if excluded:
        log.warning("fusion: excluded %d clip(s) held by only one modality: %s", len(excluded),
                    ", ".join(f"{r.id} ({r.reason})" for r in excluded[:5]) + (" ..." if len(excluded) > 5 else ""))
    joined = Features("fusion", ids, x, audio.y[ai], {"audio": audio.attrs, "video": video.attrs}, rejected,
                      audio.excluded + video.excluded + excluded,
                      None if audio.variants is None else audio.variants[ai])  # the audio columns come first
    return joined, excluded


def split_rows(features: Features, manifest: pd.DataFrame, split: str) -> np.ndarray:
    """Row indices of ``features`` whose manifest split is ``split``."""
    splits = manifest.loc[features.ids, "split"].to_numpy() if features.ids else np.array([], dtype=object)
    return np.flatnonzero(splits == split)


def check_classes(y_train: np.ndarray, classes: Sequence[str], modality: str) -> None:
    counts = np.bincount(y_train, minlength=len(classes))
    empty = [classes[c] for c in np.flatnonzero(counts == 0)]
    if empty:
        raise PipelineError(
            f"{modality}: {len(empty)} class(es) have no training example ({', '.join(empty[:5])}): drop them from "
            "the class list (prepare.classes) or fix the split"
        )


def fit_normalization(x_train: np.ndarray, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation of the training rows (std below ``eps`` becomes 1)."""
    mean = x_train.mean(axis=0, dtype=np.float64)
    std = x_train.std(axis=0, dtype=np.float64)
    std = np.where(std < eps, 1.0, std)
    return mean.astype(np.float32), std.astype(np.float32)
