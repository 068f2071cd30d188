"""The videos ``maivar predict`` is given, and how it prints what it predicts.

Paths: a file is taken as it is; a folder gives every video file under it (by suffix, :data:`VIDEO_SUFFIXES`,
sorted); anything else is read as a glob (``**`` included). A path that gives nothing is reported, not fatal.

Formats (probabilities as ``metrics/predictions.csv`` writes them, :func:`maivar.evaluation.probability_text`):

- ``table``: per video, the top-k of each branch side by side, and the branches skipped and why;
- ``json``: a list of ``{"path": ..., "branches": {"audio": [{"class": ..., "probability": ...}, ...],
  "video": [...], "fusion": [...]}}``, plus ``"skipped": {branch: why}`` when a branch was skipped and
  ``"error": why`` (and no branches) for a video that could not be used;
- ``csv``: one row per path, branch and rank: ``path, branch, rank, class, probability, note`` (a skipped branch
  or a failed video is one row with an empty class and the reason in ``note``).
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

from maivar.evaluation import DIGITS, HEADS, probability_text

from .engine import Prediction

VIDEO_SUFFIXES = frozenset({".avi", ".mp4", ".m4v", ".mkv", ".webm", ".mov", ".mpg", ".mpeg", ".flv", ".wmv",
                            ".3gp", ".ogv", ".ts", ".mts"})
FORMATS = ("table", "json", "csv")
CSV_COLUMNS = ("path", "branch", "rank", "class", "probability", "note")


def expand_paths(specs: Sequence[str]) -> tuple[list[str], list[Prediction]]:
    """``(videos, problems)``: the video files the arguments name, in order and each once, and a
    :class:`Prediction` with an error for each argument that names none."""
    videos: list[str] = []
    problems: list[Prediction] = []
    seen: set[str] = set()

    def add(path: str) -> None:
        key = os.path.normpath(os.path.abspath(path))
        if key not in seen:
            seen.add(key)
            videos.append(path)

    for spec in specs:
        p = Path(spec)
        if p.is_file():
            add(spec)
        elif p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES)
            if not found:
                problems.append(Prediction(spec, error=f"no video files in this folder (suffixes "
                                                       f"{', '.join(sorted(VIDEO_SUFFIXES))})"))
            for f in found:
                add(f)
        elif glob.has_magic(spec):
            found = sorted(f for f in glob.glob(spec, recursive=True) if Path(f).is_file())
            if not found:
                problems.append(Prediction(spec, error="the pattern matches no file"))
            for f in found:
                add(f)
        else:
            problems.append(Prediction(spec, error="missing_file: no such file or folder"))
    return videos, problems


def as_json(prediction: Prediction, k: int, classes: Sequence[str]) -> dict:
    out: dict = {"path": prediction.path, "branches": {
        branch: [{"class": c, "probability": round(p, DIGITS)} for c, p in ranked]
        for branch, ranked in prediction.top(k, classes).items()
    }}
    if prediction.skipped:
        out["skipped"] = dict(prediction.skipped)
    if prediction.error is not None:
        out["error"] = prediction.error
    return out


def format_json(predictions: Sequence[Prediction], k: int, classes: Sequence[str]) -> str:
    return json.dumps([as_json(p, k, classes) for p in predictions], indent=2) + "\n"


def csv_rows(prediction: Prediction, k: int, classes: Sequence[str]) -> list[list]:
    if prediction.error is not None:
        return [[prediction.path, "", "", "", "", f"error: {prediction.error}"]]
    top = prediction.top(k, classes)
    rows = []
    for branch in HEADS:
        if branch in top:
            rows += [[prediction.path, branch, rank, c, probability_text(p), ""]
                     for rank, (c, p) in enumerate(top[branch], start=1)]
        elif branch in prediction.skipped:
            rows.append([prediction.path, branch, "", "", "", f"skipped: {prediction.skipped[branch]}"])
    return rows


def format_csv(predictions: Sequence[Prediction], k: int, classes: Sequence[str], *, header: bool = True) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(CSV_COLUMNS)
    for p in predictions:
        writer.writerows(csv_rows(p, k, classes))
    return out.getvalue()


def format_table(prediction: Prediction, k: int, classes: Sequence[str]) -> str:
    """One video's block: its path, then rank, and each branch's class and probability side by side."""
    if prediction.error is not None:
        return f"{prediction.path}\n  error: {prediction.error}\n"
    top = prediction.top(k, classes)
    branches = [b for b in HEADS if b in top]
    cells = {}
    for b in branches:  # class names left-aligned, probabilities in a column after them
        name_width = max(len(c) for c, _ in top[b])
        cells[b] = [f"{c.ljust(name_width)}  {probability_text(p)}" for c, p in top[b]]
    widths = {b: max(len(b), *(len(x) for x in cells[b])) for b in branches}
    lines = [prediction.path, "  rank  " + "   ".join(b.ljust(widths[b]) for b in branches).rstrip()]
    for r in range(max((len(cells[b]) for b in branches), default=0)):
        row = "   ".join((cells[b][r] if r < len(cells[b]) else "").ljust(widths[b]) for b in branches)
        lines.append(f"  {r + 1:>4}  {row}".rstrip())
    skipped = [b for b in HEADS if b in prediction.skipped]
    if skipped:
        reasons = sorted(set(prediction.skipped[b] for b in skipped))
        lines.append(f"  {', '.join(skipped)}: skipped, {'; '.join(reasons)} (video branch only)")
    return "\n".join(lines) + "\n"
