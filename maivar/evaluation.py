"""Test-set metrics for the heads: top-1, top-5, mean per-class accuracy, per-class table, confusion rows, and
each test clip's prediction.

:func:`evaluate_heads` is stage evaluate. All three heads are scored on the same test clips: those with
finite audio and video features (the fusion model's test set), so that the three accuracies are comparable.

All accuracies are percentages (as in the paper's tables), rounded to ``DIGITS`` decimals in what is
written, so that the same predictions give byte-identical files. Top-k uses ``k = min(k, classes)``.
Mean per-class accuracy averages over the classes that have at least one test clip.

A head's prediction is its classes ranked by logit (ties: the lower label first, as in the accuracies) with
their softmax probabilities (:func:`ranked`, :func:`probability_text`): ``metrics/predictions.csv`` and
``maivar predict`` (:mod:`maivar.predict`) both write them through these two functions, so that predicting a
test clip's video gives its row of the file.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from maivar.core.atomic import atomic_outputs, json_text
from maivar.core.errors import PipelineError
from maivar.core.manifest import read_manifest
from maivar.core.names import safe_name
from maivar.heads.join import HEAD_COLUMNS, class_names, join_modalities, load_features, split_rows
from maivar.heads.model_files import load_model
from maivar.heads.rows import spill_beside
from maivar.heads.training import TEST_BATCH, predict, set_determinism

log = logging.getLogger(__name__)

DIGITS = 4
HEADS = ("audio", "video", "fusion")
PREDICTION_COLUMNS = ("id", "label", *(f"{h}_pred" for h in HEADS), *(f"{h}_prob" for h in HEADS))


def topk_accuracy(logits: np.ndarray, y: np.ndarray, k: int) -> float:
    """Percent of rows whose true label is among the ``k`` highest logits (ties broken by lower label)."""
    if len(y) == 0:
        return float("nan")
    k = min(k, logits.shape[1])
    # stable argsort of -logits: among equal logits the lower label ranks first (deterministic)
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return float((top == y[:, None]).any(axis=1).mean() * 100.0)


def predictions(logits: np.ndarray) -> np.ndarray:
    """Top-1 predicted labels (ties broken by the lower label, as :func:`topk_accuracy`)."""
    return np.argsort(-logits, axis=1, kind="stable")[:, 0] if len(logits) else np.zeros(0, np.int64)


def probabilities(logits: np.ndarray) -> np.ndarray:
    """Softmax over the classes of each row, in float64 (N x C)."""
    z = np.asarray(logits, dtype=np.float64)
    if z.size == 0:
        return z.copy()
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def ranked(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, probs)``, both N x min(k, C): each row's ``k`` best classes by logit (ties: the lower label
    first, as :func:`predictions`) and their softmax probabilities."""
    k = max(1, min(int(k), logits.shape[1]))
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return top, np.take_along_axis(probabilities(logits), top, axis=1)


def probability_text(p: float) -> str:
    """A probability as written in predictions.csv and printed by ``maivar predict``: ``DIGITS`` decimals."""
    return f"{float(p):.{DIGITS}f}"


def per_class_accuracy(pred: np.ndarray, y: np.ndarray, num_classes: int) -> np.ndarray:
    """Percent correct per true class; NaN for a class without test clips."""
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    hits = np.bincount(y[pred == y], minlength=num_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, 100.0 * hits / counts, np.nan)


def mean_class_accuracy(pred: np.ndarray, y: np.ndarray, num_classes: int) -> float:
    acc = per_class_accuracy(pred, y, num_classes)
    return float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan")


def _round(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), DIGITS)


def head_metrics(logits: np.ndarray, y: np.ndarray, num_classes: int) -> dict:
    """``{top1, top5, mean_class_acc}`` in percent, rounded."""
    pred = predictions(logits)
    return {
        "top1": _round(topk_accuracy(logits, y, 1)),
        "top5": _round(topk_accuracy(logits, y, 5)),
        "mean_class_acc": _round(mean_class_accuracy(pred, y, num_classes)),
    }


def per_class_csv(y: np.ndarray, logits_by_head: dict[str, np.ndarray], classes: Sequence[str]) -> str:
    """CSV text: ``label, class_name, test_clips, <head>_acc...`` (percent; empty without test clips)."""
    counts = np.bincount(y, minlength=len(classes))
    accs = {h: per_class_accuracy(predictions(lg), y, len(classes)) for h, lg in logits_by_head.items()}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["label", "class_name", "test_clips", *(f"{h}_acc" for h in logits_by_head)])
    for c, name in enumerate(classes):
        cells = []
        for h in logits_by_head:
            v = _round(accs[h][c])
            cells.append("" if v is None else f"{v:.{DIGITS}f}".rstrip("0").rstrip("."))
        writer.writerow([c, name, int(counts[c]), *cells])
    return out.getvalue()


def confusion_csv(ids: Sequence[str], y: np.ndarray, pred: np.ndarray, classes: Sequence[str]) -> str:
    """CSV text, one row per test clip sorted by id: ``id, actual, predicted`` for DVC's ``confusion`` plot
    template. DVC writes these values into its HTML page unescaped, so each is a
    :func:`~maivar.core.names.safe_name` (an id, or a class name; UCF101's names stay as they are), never a
    label's raw text: ``metrics/predictions.csv`` and ``per_class.csv`` hold the labels as data."""
    classes = [safe_name(c) for c in classes]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "actual", "predicted"])
    for i in np.argsort(np.asarray(ids, dtype=object), kind="stable"):
        writer.writerow([safe_name(ids[i]), classes[int(y[i])], classes[int(pred[i])]])
    return out.getvalue()


def predictions_csv(ids: Sequence[str], y: np.ndarray, logits_by_head: dict[str, np.ndarray],
                    classes: Sequence[str]) -> str:
    """CSV text, one row per test clip sorted by id: ``id, label`` (the true class), each head's top-1 class
    ``<head>_pred`` and its probability ``<head>_prob`` (:data:`PREDICTION_COLUMNS`)."""
    top = {h: ranked(logits_by_head[h], 1) for h in HEADS}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(PREDICTION_COLUMNS)
    for i in np.argsort(np.asarray(ids, dtype=object), kind="stable"):
        writer.writerow([ids[i], classes[int(y[i])], *(classes[int(top[h][0][i, 0])] for h in HEADS),
                         *(probability_text(top[h][1][i, 0]) for h in HEADS)])
    return out.getvalue()


def _flag(value) -> bool | None:
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value.lower())
    return None if value is None else bool(value)


def evaluate_heads(*, manifest_path: str | Path, audio_path: str | Path, video_path: str | Path,
                   model_paths: dict[str, str | Path], metrics_path: str | Path, per_class_path: str | Path,
                   confusion_path: str | Path, predictions_path: str | Path, seed: int, threads: int,
                   memory_mb: int) -> dict:
    """Stage evaluate: score the ``audio``, ``video`` and ``fusion`` models of ``model_paths`` on the test clips.

    Writes ``metrics_path`` (``audio.top1``, ``video.top1``, ``fusion.top1``, ``*.top5``, ``*.mean_class_acc``
    in percent, ``test_clips``, ``excluded_test_clips``, ``pretrained.audio``, ``pretrained.video``,
    ``representation``), ``per_class_path``, ``confusion_path`` (fusion model; columns ``actual``,
    ``predicted``) and ``predictions_path`` (:func:`predictions_csv`: every test clip's top-1 class and probability
    per head). ``seed`` and ``threads`` are ``train.seed`` and ``train.threads``, ``memory_mb``
    ``runtime.heads.memory_mb`` (past it the features are read from a file, :mod:`maivar.heads.rows`). The test rows
    are scored :data:`~maivar.heads.training.TEST_BATCH` at a time. Returns the metrics.
    """
    set_determinism(seed, threads)
    manifest = read_manifest(manifest_path, HEAD_COLUMNS, only=True)
    classes = class_names(manifest)
    models = {h: load_model(p) for h, p in model_paths.items()}
    segments = models["video"][1].get("segments", "mean")
    with spill_beside(metrics_path, memory_mb) as spill:
        audio = load_features(audio_path, manifest, "audio", spill=spill)
        video = load_features(video_path, manifest, "video", segments=segments, spill=spill)
        fused, _ = join_modalities(audio, video, spill=spill)
        test = split_rows(fused, manifest, "test")
        if len(test) == 0:
            raise PipelineError("no test clip has both audio and video features: check the manifest's split column")
        n_audio, width = audio.x.shape[1], fused.x.shape[1]
        columns = {"audio": slice(0, n_audio), "video": slice(n_audio, width), "fusion": slice(0, width)}
        for head, (model, _) in models.items():
            if (model.config["in_features"] != columns[head].stop - columns[head].start
                    or model.config["num_classes"] != len(classes)):
                raise PipelineError(f"{model_paths[head]} does not fit the current features or classes: rerun dvc "
                                    "repro")
        parts = {head: [] for head in models}
        for i in range(0, len(test), TEST_BATCH):  # the test rows a chunk at a time, each head's columns of them
            rows = fused.x[test[i : i + TEST_BATCH]]
            for head, (model, _) in models.items():
                parts[head].append(predict(model, rows[:, columns[head]], batch_size=TEST_BATCH))
        logits = {head: np.concatenate(p) for head, p in parts.items()}
    y = fused.y[test]
    test_ids = [fused.ids[i] for i in test]
    excluded_test = sorted(i for i, s in manifest["split"].items() if s == "test" and i not in set(test_ids))
    if excluded_test:
        log.warning("%d test clip(s) without both modalities are not scored: %s", len(excluded_test),
                    ", ".join(excluded_test[:5]) + (" ..." if len(excluded_test) > 5 else ""))
    metrics = {h: head_metrics(lg, y, len(classes)) for h, lg in logits.items()}
    metrics.update({
        "test_clips": len(test_ids),
        "excluded_test_clips": len(excluded_test),
        "pretrained": {"audio": _flag(audio.attrs.get("pretrained")), "video": _flag(video.attrs.get("pretrained"))},
        "representation": audio.attrs.get("representation"),
    })
    texts = (json_text(metrics), per_class_csv(y, logits, classes),
             confusion_csv(test_ids, y, predictions(logits["fusion"]), classes), predictions_csv(test_ids, y, logits,
                                                                                                  classes))
    with atomic_outputs(metrics_path, per_class_path, confusion_path, predictions_path) as tmps:  # no mix of runs
        for tmp, text in zip(tmps, texts, strict=True):
            tmp.write_text(text)
    log.info("top-1 on %d test clips: audio %s%%, video %s%%, fusion %s%%", len(test_ids),
             metrics["audio"]["top1"], metrics["video"]["top1"], metrics["fusion"]["top1"])
    return metrics
