"""Test-set metrics for the heads: top-1, top-5, mean per-class accuracy, per-class table, confusion rows.

All accuracies are percentages (as in the paper's tables), rounded to ``DIGITS`` decimals in what is
written, so that the same predictions give byte-identical files. Top-k uses ``k = min(k, classes)``.
Mean per-class accuracy averages over the classes that have at least one test clip.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Sequence

import numpy as np

DIGITS = 4


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
    """CSV text, one row per test clip sorted by id: ``id, actual, predicted`` (class names) for DVC's
    ``confusion`` plot template."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "actual", "predicted"])
    for i in np.argsort(np.asarray(ids, dtype=object), kind="stable"):
        writer.writerow([ids[i], classes[int(y[i])], classes[int(pred[i])]])
    return out.getvalue()
