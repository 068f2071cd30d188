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
from maivar.core.feature_store import READ_BYTES, open_store, read_row_chunks
from maivar.core.rejections import Rejection

from .rows import DiskRows, Spill, is_spilled

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


def video_shape(shape: Sequence[int], segments: str) -> tuple[int, ...]:
    """The shape one clip's video features take as a head's input, from the store's (N x T x D, or N x D)."""
    if segments not in SEGMENTS:
        raise PipelineError(f"video_mlp.segments is {segments!r}: choose mean or flatten")
    shape = tuple(shape)
    if len(shape) == 2:  # already one vector per clip
        return shape[1:]
    if len(shape) != 3:
        raise PipelineError(f"video features must be N x segments x D, got shape {shape}")
    return (shape[2],) if segments == "mean" else (shape[1] * shape[2],)


def video_input(features: np.ndarray, segments: str) -> np.ndarray:
    """How the T x D segment features enter a head: ``mean`` over segments (D) or ``flatten`` (T*D). Row by row:
    the same numbers for any chunk of rows as for the whole."""
    video_shape(features.shape, segments)
    if features.ndim == 2:
        return features.astype(np.float32, copy=False)
    if segments == "mean":
        return features.mean(axis=1, dtype=np.float64).astype(np.float32)
    return features.reshape(len(features), -1).astype(np.float32, copy=False)


@dataclass
class Features:
    """One modality's usable rows, aligned: ``ids[i]`` has features ``x[i]`` and label ``y[i]``."""

    modality: str
    ids: list[str]
    x: np.ndarray | DiskRows  # DiskRows: past runtime.heads.memory_mb, in a file (maivar.heads.rows)
    y: np.ndarray
    attrs: dict
    rejected: dict[str, str] = field(default_factory=dict)  # id -> reason, for every manifest id not in ids
    excluded: list[Rejection] = field(default_factory=list)  # rows dropped here (non-finite features)
    variants: np.ndarray | DiskRows | None = None  # N x V x D flip variants of x[:, :D] (variant 0 == x[:, :D])


def load_features(path: str | Path, manifest: pd.DataFrame, modality: str, *, segments: str | None = None,
                  read_bytes: int = READ_BYTES, spill: Spill | None = None) -> Features:
    """Read a feature store and check it against the manifest (see the module docstring).

    The features are read ``read_bytes`` at a time (:func:`~maivar.core.feature_store.read_row_chunks`) into the
    one array the head takes: video features are averaged over their segments (``segments: mean``) a chunk at a
    time as they are read, so the store's N x T x D is never in memory, only N x D; the rows with NaN or inf are
    left out as they are read. The same numbers for any ``read_bytes``.

    ``spill`` (:func:`~maivar.heads.rows.spill_beside`): when holding the rows twice (the features and their
    standardized copy) would pass its budget, they are written to a file of it as they are read, and ``x`` is a
    :class:`~maivar.heads.rows.DiskRows` over it: the same rows, not in memory."""
    store = open_store(path, "features", load_data=False)
    shape = store.shape
    if not shape or shape[0] != len(store.ids):
        raise PipelineError(f"{path}: features and ids differ in length: rerun the stage that writes it")
    flips = segments is None and "flips" in store.attrs and len(shape) == 3  # N x V x D (extract_audio.flips)
    if segments is not None:
        row_shape = video_shape(shape, segments)
    elif len(shape) != 2 and not flips:
        raise PipelineError(f"{path}: {modality} features must be N x D, got shape {shape}")
    else:
        row_shape = shape[1:]
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
    held = 2 * len(store.ids) * 4 * int(np.prod(row_shape, dtype=np.int64))  # the rows + their standardized copy
    writer = None if spill is None or spill.holds(held) else spill.writer(modality, tuple(row_shape))
    if writer is not None:
        log.info("%s: %d x %s features (%.1f MiB, twice in memory) pass runtime.heads.memory_mb (%d MB): read "
                 "from %s, a batch at a time", modality, len(store.ids), "x".join(map(str, row_shape)),
                 held / 2 / 2**20, spill.budget >> 20, writer.path)
    values = np.empty((0 if writer else len(store.ids), *row_shape), np.float32)  # the rows kept, from the first on
    finite, at, kept = np.ones(len(store.ids), bool), 0, 0  # at: the chunk's first row in the store
    for chunk in read_row_chunks(path, "features", max_bytes=read_bytes):
        chunk = video_input(chunk, segments) if segments is not None else chunk
        ok = np.isfinite(chunk.reshape(len(chunk), -1)).all(axis=1)
        finite[at : at + len(chunk)] = ok
        if writer is not None:
            writer.append(chunk if ok.all() else chunk[ok])
        else:
            values[kept : kept + int(ok.sum())] = chunk if ok.all() else chunk[ok]
        at, kept = at + len(chunk), kept + int(ok.sum())
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
    if writer is not None:
        values = writer.finish()
        x, variants = (values.part(0), values) if flips else (values, None)
    else:
        values = values[:kept]  # a view: the rows of excluded clips are not copied out
        x, variants = (values[:, 0], values) if flips else (values, None)
    return Features(modality, [store.ids[i] for i in keep], x, y[keep], dict(store.attrs), rejected, excluded,
                    variants)


def join_modalities(audio: Features, video: Features, *, spill: Spill | None = None
                    ) -> tuple[Features, list[Rejection]]:
    """``[audio, video]`` rows for the ids both hold; the others become recorded exclusions.

    Returns the joined :class:`Features` (modality ``fusion``, ``x`` = audio columns then video columns)
    and the exclusions (ids held by one modality and recorded as rejected by the other). With ``spill``, the
    joined rows go to a file of it (:class:`~maivar.heads.rows.DiskRows`) when either modality's are in a file or
    holding them twice would pass its budget, a chunk of rows at a time.
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
    width = audio.x.shape[1] + video.x.shape[1]
    held = 2 * 4 * len(ids) * (width + (0 if audio.variants is None else int(np.prod(audio.variants.shape[1:]))))
    if spill is not None and (is_spilled(audio.x) or is_spilled(video.x) or not spill.holds(held)):
        x, variants = _join_into(spill, audio, video, ai, vi)
    else:
        x = np.concatenate([audio.x[ai], video.x[vi]], axis=1) if len(ids) else np.zeros((0, width), np.float32)
        variants = None if audio.variants is None else audio.variants[ai]
    rejected = {**audio.rejected, **video.rejected}
    rejected.update({r.id: r.reason for r in excluded})
    excluded = sorted(excluded, key=lambda r: r.id)
    if excluded:
        log.warning("fusion: excluded %d clip(s) held by only one modality: %s", len(excluded),
                    ", ".join(f"{r.id} ({r.reason})" for r in excluded[:5]) + (" ..." if len(excluded) > 5 else ""))
    joined = Features("fusion", ids, x, audio.y[ai], {"audio": audio.attrs, "video": video.attrs}, rejected,
                      audio.excluded + video.excluded + excluded, variants)  # the audio columns come first
    return joined, excluded


def _join_into(spill: Spill, audio: Features, video: Features, ai: np.ndarray, vi: np.ndarray,
               chunk_bytes: int = 16 << 20) -> tuple[DiskRows, DiskRows | None]:
    """:func:`join_modalities`'s rows (and the audio variants of them) written to ``spill``'s files, a chunk of rows
    at a time: the same rows as the in-memory join."""
    width = audio.x.shape[1] + video.x.shape[1]
    log.info("fusion: %d x %d joined features written to %s, read a batch at a time", len(ai), width,
             spill.directory)
    rows = spill.writer("fusion", (width,))
    flips = None if audio.variants is None else spill.writer("fusion-variants", tuple(audio.variants.shape[1:]))
    step = max(1, chunk_bytes // (4 * width))
    for k in range(0, len(ai), step):
        rows.append(np.concatenate([audio.x[ai[k : k + step]], video.x[vi[k : k + step]]], axis=1))
        if flips is not None:
            flips.append(audio.variants[ai[k : k + step]])
    return rows.finish(), None if flips is None else flips.finish()


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


def fit_normalization(x: np.ndarray, rows: np.ndarray | None = None, eps: float = 1e-6, *,
                      chunk_bytes: int = 16 << 20) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation of the rows ``rows`` of ``x`` (default: all; in their order), std
    below ``eps`` becoming 1: two passes over them a chunk at a time (``chunk_bytes`` of float64), no copy of
    ``x``. The numbers of ``x[rows].mean(axis=0, dtype=float64)`` / ``.std(...)``, bit for bit: numpy sums a
    C-ordered array over its first axis row after row in float64, and each chunk's sum here goes on from the
    previous chunks' (:func:`_sum_rows`) instead of starting anew."""
    rows = np.arange(len(x)) if rows is None else np.asarray(rows)
    step = max(1, int(chunk_bytes) // max(1, 8 * int(np.prod(x.shape[1:], dtype=np.int64))))
    total = None
    for i in range(0, len(rows), step):
        total = _sum_rows(total, x[rows[i : i + step]].astype(np.float64))
    mean = total / len(rows)
    total = None
    for i in range(0, len(rows), step):
        deviation = x[rows[i : i + step]] - mean
        total = _sum_rows(total, np.multiply(deviation, deviation, out=deviation))
    std = np.sqrt(total / len(rows))
    std = np.where(std < eps, 1.0, std)
    return mean.astype(np.float32), std.astype(np.float32)


def _sum_rows(total: np.ndarray | None, block: np.ndarray) -> np.ndarray:
    """``total`` (the float64 sum of the rows before ``block``, None for none) plus ``block``'s rows, added one
    after another as numpy's ``sum(axis=0)`` adds them: the running sum is the first row of the reduction."""
    if total is None:
        return np.add.reduce(block, axis=0)
    stack = np.empty((len(block) + 1, *block.shape[1:]), np.float64)
    stack[0], stack[1:] = total, block
    return np.add.reduce(stack, axis=0)
