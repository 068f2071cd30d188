"""Train the heads: join features with the manifest by id, standardise, fit with CE + L1, log with dvclive.

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

Determinism: :func:`set_determinism` seeds torch, turns on deterministic algorithms and fixes the number
of CPU threads; batches are drawn with a seeded ``torch.Generator``; so the same features and params give
the same weights and metrics, bit for bit, on the same machine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from . import rejections
from .errors import PipelineError
from .feature_store import Rejection, open_store
from .heads import MLP, build_mlp
from .manifest import read_manifest as read_manifest_csv

log = logging.getLogger("maivar.training")

SEGMENTS = ("mean", "flatten")


# ---------------------------------------------------------------------------------------------- data
def read_manifest(path: str | Path) -> pd.DataFrame:
    """The manifest's ``id``, ``class_name``, ``label``, ``split`` columns, indexed by ``id``."""
    df = read_manifest_csv(path, ("id", "class_name", "label", "split"))
    bad = sorted(set(df["split"]) - {"train", "test"})
    if bad:
        raise PipelineError(f"{path}: split must be train or test, found {bad[0]!r}")
    return df.set_index("id", drop=False)


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


def load_features(path: str | Path, manifest: pd.DataFrame, modality: str, *, segments: str | None = None) -> Features:
    """Read a feature store and check it against the manifest (see the module docstring)."""
    store = open_store(path, "features")
    x = store.data
    if x is None or len(x) != len(store.ids):
        raise PipelineError(f"{path}: features and ids differ in length: rerun the stage that writes it")
    if segments is not None:
        x = video_input(x, segments)
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
    finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1) if len(x) else np.ones(0, bool)
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
    return Features(modality, [store.ids[i] for i in keep], x[keep], y[keep], dict(store.attrs), rejected, excluded)


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
                      audio.excluded + video.excluded + excluded)
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


def fit_normalisation(x_train: np.ndarray, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation of the training rows (std below ``eps`` becomes 1)."""
    mean = x_train.mean(axis=0, dtype=np.float64)
    std = x_train.std(axis=0, dtype=np.float64)
    std = np.where(std < eps, 1.0, std)
    return mean.astype(np.float32), std.astype(np.float32)


# ------------------------------------------------------------------------------------------ training
def set_determinism(seed: int, threads: int) -> None:
    """Seed torch, require deterministic algorithms and fix the CPU thread count."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(max(1, int(threads)))


def l1_penalty(model: nn.Module) -> torch.Tensor:
    """Sum of absolute values of every Linear layer's weights (biases and normalisation excluded)."""
    return sum(m.weight.abs().sum() for m in model.modules() if isinstance(m, nn.Linear))


def head_loss(model: nn.Module, logits: torch.Tensor, y: torch.Tensor, l1: float) -> torch.Tensor:
    """Cross-entropy plus ``l1`` times :func:`l1_penalty` (paper Eq. 3)."""
    return nn.functional.cross_entropy(logits, y) + l1 * l1_penalty(model)


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Logits for ``x`` (N x F) in eval mode, as float32."""
    model.eval()
    out = [model(torch.tensor(x[i : i + batch_size], dtype=torch.float32)) for i in range(0, len(x), batch_size)]
    if not out:
        return np.zeros((0, model.config["num_classes"]), np.float32)
    return torch.cat(out).numpy()


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy in percent (0 for no rows)."""
    return float((logits.argmax(axis=1) == y).mean() * 100.0) if len(y) else 0.0


def train_head(
    model: MLP,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    l1: float,
    seed: int,
    live=None,
    desc: str | None = None,
) -> list[dict]:
    """Adam on cross-entropy + L1; returns (and logs to ``live``) per-epoch train loss/acc and test acc."""
    if len(x_train) == 0:
        raise PipelineError(f"{desc or 'head'}: no training clips")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xt, yt = torch.tensor(x_train, dtype=torch.float32), torch.tensor(y_train, dtype=torch.int64)
    history = []
    for epoch in tqdm(range(epochs), desc=desc, unit="epoch", disable=desc is None, mininterval=1.0):
        model.train()
        order = torch.randperm(len(xt), generator=gen)
        total, correct = 0.0, 0
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            logits = model(xt[idx])
            loss = head_loss(model, logits, yt[idx], l1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == yt[idx]).sum())
        row = {
            "epoch": epoch + 1,
            "train/loss": total / len(xt),
            "train/acc": 100.0 * correct / len(xt),
            "test/acc": accuracy(predict(model, x_test), y_test),
        }
        history.append(row)
        if live is not None:
            for key in ("train/loss", "train/acc", "test/acc"):
                live.log_metric(key, round(row[key], 6))
            live.next_step()
    return history


def open_live(directory: str | Path):
    """A dvclive logger that never writes dvc.yaml or creates experiments (plots are declared in dvc.yaml)."""
    from dvclive import Live

    return Live(str(directory), dvcyaml=False, save_dvc_exp=False, report=None)


def fit(
    features: Features,
    manifest: pd.DataFrame,
    model: MLP,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    l1: float,
    seed: int,
    live_dir: str | Path | None = None,
    normalise: slice | None = slice(None),
) -> list[dict]:
    """Fit ``model`` on the train rows of ``features`` and track the test rows (used by every training stage).

    ``normalise`` selects the input columns whose standardisation is fitted here (all by default; the
    fusion stage fits only the audio columns when the video part was copied from the video MLP).
    """
    classes = class_names(manifest)
    tr, te = split_rows(features, manifest, "train"), split_rows(features, manifest, "test")
    check_classes(features.y[tr], classes, features.modality)
    log.info("%s: %d train / %d test clips, %d features, %d classes", features.modality, len(tr), len(te),
             features.x.shape[1], len(classes))
    if normalise is not None:
        mean, std = fit_normalisation(features.x[tr])
        with torch.no_grad():
            model.mean[normalise] = torch.from_numpy(mean[normalise])
            model.std[normalise] = torch.from_numpy(std[normalise])
    live = open_live(live_dir) if live_dir is not None else None
    try:
        history = train_head(model, features.x[tr], features.y[tr], features.x[te], features.y[te], epochs=epochs,
                             lr=lr, batch_size=batch_size, l1=l1, seed=seed, live=live, desc=features.modality)
    finally:
        if live is not None:
            live.end()
    last = history[-1] if history else {}
    log.info("%s: train loss %.4f, train acc %.2f%%, test acc %.2f%%", features.modality,
             last.get("train/loss", float("nan")), last.get("train/acc", float("nan")), last.get("test/acc", float("nan")))
    return history



def train_single_modality(*, modality: str, manifest_path: str | Path, features_path: str | Path,
                          model_path: str | Path, live_dir: str | Path, head: dict, train: dict) -> None:
    """Stages train_audio / train_video: an MLP on one modality's features, saved with its history.

    ``head`` is the ``audio_mlp`` / ``video_mlp`` params section (for video, ``segments`` says how the
    segment features enter the MLP), ``train`` the shared ``train`` section.
    """
    set_determinism(train["seed"], train["threads"])
    manifest = read_manifest(manifest_path)
    classes = class_names(manifest)
    segments = head["segments"] if modality == "video" else None
    features = load_features(features_path, manifest, modality, segments=segments)
    model = MLP(features.x.shape[1], head["hidden"], len(classes), head["dropout"])
    history = fit(features, manifest, model, epochs=head["epochs"], lr=head["lr"], batch_size=head["batch_size"],
                  l1=train["l1"], seed=train["seed"], live_dir=live_dir)
    save_model(model_path, model, classes=classes, extra={
        "modality": modality, **({"segments": segments} if segments else {}),
        "excluded": rejection_records(features.excluded), "history": history,
        "features_attrs": {k: str(v) for k, v in features.attrs.items()},
    })

# ------------------------------------------------------------------------------------------- models
def save_model(path: str | Path, model: MLP, *, classes: Sequence[str], extra: dict | None = None) -> None:
    """``torch.save`` the docs/CONTRACTS.md dict atomically."""
    from .atomic import atomic_path

    payload = {
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "config": dict(model.config),
        "classes": {i: name for i, name in enumerate(classes)},
        "feature_stats": {"mean": model.mean.detach().clone(), "std": model.std.detach().clone()},
        **(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_model(path: str | Path) -> tuple[MLP, dict]:
    """The :class:`MLP` saved at ``path`` (eval mode) and the whole saved dict."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path} does not exist: run the stage that trains it first (dvc repro)")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model = build_mlp(saved["config"])
        model.load_state_dict(saved["state_dict"])
    except Exception as exc:  # noqa: BLE001 - any unreadable model file is the same user-facing problem
        raise PipelineError(f"{path} is not a readable model file ({type(exc).__name__}): rerun dvc repro") from None
    model.eval()
    return model, saved


def rejection_records(excluded: Sequence[Rejection]) -> list[dict]:
    return [{"id": r.id, "reason": r.reason, "detail": r.detail} for r in excluded]
