"""Train the heads: standardise, fit with cross-entropy + L1 (Adam), log each epoch with dvclive.

:func:`train_single_modality` (stages train_audio, train_video) and :func:`train_fusion` (stage
train_fusion, the paper's Algorithm 1) read the features through :mod:`maivar.heads.join`, fit with
:func:`fit` and save with :mod:`maivar.heads.model_files`.

Determinism: :func:`set_determinism` seeds torch, turns on deterministic algorithms and fixes the number
of CPU threads; batches are drawn with a seeded ``torch.Generator``; so the same features and params give
the same weights and metrics, bit for bit, on the same machine.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from maivar.core.errors import PipelineError
from maivar.core.manifest import read_manifest
from maivar.core.params import number

from .join import (
    MANIFEST_COLUMNS,
    Features,
    check_classes,
    class_names,
    fit_normalisation,
    join_modalities,
    load_features,
    split_rows,
)
from .mlp import MLP, check_video_fits, fusion_from_video
from .model_files import load_model, rejection_records, save_model

log = logging.getLogger(__name__)


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
    variants_train: np.ndarray | None = None,
) -> list[dict]:
    """Adam on cross-entropy + L1; returns (and logs to ``live``) per-epoch train loss/acc and test acc.

    ``variants_train`` (n_train x V x D, flip variants of the first D columns of ``x_train``): each epoch, every
    training clip gets one variant drawn at random (a generator of its own, seeded from ``seed``, so that the
    batch order is the same with and without variants). The test rows are always the unflipped ``x_test``.
    """
    if len(x_train) == 0:
        raise PipelineError(f"{desc or 'head'}: no training clips")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xt, yt = torch.tensor(x_train, dtype=torch.float32), torch.tensor(y_train, dtype=torch.int64)
    if variants_train is not None:
        vt = torch.tensor(variants_train, dtype=torch.float32)
        flip_gen = torch.Generator().manual_seed(seed + 1)
        rows, dim = torch.arange(len(vt)), vt.shape[2]
    history = []
    x_epoch = xt
    for epoch in tqdm(range(epochs), desc=desc, unit="epoch", disable=desc is None, mininterval=1.0):
        model.train()
        if variants_train is not None:  # one flip variant per clip for this epoch
            x_epoch = xt.clone()
            x_epoch[:, :dim] = vt[rows, torch.randint(vt.shape[1], (len(vt),), generator=flip_gen)]
        order = torch.randperm(len(xt), generator=gen)
        total, correct = 0.0, 0
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            logits = model(x_epoch[idx])
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
                             lr=lr, batch_size=batch_size, l1=l1, seed=seed, live=live, desc=features.modality,
                             variants_train=None if features.variants is None else features.variants[tr])
    finally:
        if live is not None:
            live.end()
    last = history[-1] if history else {}
    log.info("%s: train loss %.4f, train acc %.2f%%, test acc %.2f%%", features.modality,
             last.get("train/loss", float("nan")), last.get("train/acc", float("nan")),
             last.get("test/acc", float("nan")))
    return history



def _fit_settings(head: dict, section: str) -> dict:
    """A head's ``epochs``, ``lr``, ``batch_size`` and ``l1`` from its params section, checked."""
    return {"epochs": number(head, "epochs", section, int), "lr": number(head, "lr", section),
            "batch_size": number(head, "batch_size", section, int), "l1": number(head, "l1", section)}


def train_single_modality(*, modality: str, manifest_path: str | Path, features_path: str | Path,
                          model_path: str | Path, live_dir: str | Path, head: dict, train: dict) -> None:
    """Stages train_audio / train_video: an MLP on one modality's features, saved with its history.

    ``head`` is the ``audio_mlp`` / ``video_mlp`` params section (for video, ``segments`` says how the
    segment features enter the MLP), ``train`` the shared ``train`` section.
    """
    set_determinism(train["seed"], train["threads"])
    manifest = read_manifest(manifest_path, MANIFEST_COLUMNS)
    classes = class_names(manifest)
    segments = head["segments"] if modality == "video" else None
    features = load_features(features_path, manifest, modality, segments=segments)
    model = MLP(features.x.shape[1], head["hidden"], len(classes), head["dropout"])
    history = fit(features, manifest, model, **_fit_settings(head, f"{modality}_mlp"), seed=train["seed"],
                  live_dir=live_dir)
    save_model(model_path, model, classes=classes, extra={
        "modality": modality, **({"segments": segments} if segments else {}),
        "excluded": rejection_records(features.excluded), "history": history,
        "features_attrs": {k: str(v) for k, v in features.attrs.items()},
    })


def train_fusion(*, manifest_path: str | Path, audio_path: str | Path, video_path: str | Path,
                 video_model_path: str | Path, model_path: str | Path, live_dir: str | Path, head: dict,
                 video_head: dict, train: dict) -> None:
    """Stage train_fusion: the fusion MLP on ``[audio, video]``, initialised from the trained video MLP
    (paper Algorithm 1, :func:`~maivar.heads.mlp.fusion_from_video`) or from scratch (``head["init"]``).

    ``head`` is the ``fusion_mlp`` params section, ``video_head`` the ``video_mlp`` one (its ``segments``
    says how the video features enter), ``train`` the shared ``train`` section.
    """
    set_determinism(train["seed"], train["threads"])
    manifest = read_manifest(manifest_path, MANIFEST_COLUMNS)
    classes = class_names(manifest)
    audio = load_features(audio_path, manifest, "audio")
    video = load_features(video_path, manifest, "video", segments=video_head["segments"])
    fused, _ = join_modalities(audio, video)
    video_mlp, _ = load_model(video_model_path)
    check_video_fits(video_mlp.config, video.x.shape[1], len(classes))
    model = fusion_from_video(video_mlp, audio.x.shape[1], init=head["init"])
    # Algorithm 1 keeps the video MLP's normalisation for the video columns; fit only the audio columns.
    normalise = slice(0, audio.x.shape[1]) if head["init"] == "video" else slice(None)
    history = fit(fused, manifest, model, **_fit_settings(head, "fusion_mlp"), seed=train["seed"],
                  live_dir=live_dir, normalise=normalise)
    save_model(model_path, model, classes=classes, extra={
        "modality": "fusion", "init": head["init"], "audio_features": int(audio.x.shape[1]),
        "segments": video_head["segments"], "excluded": rejection_records(fused.excluded), "history": history,
    })
