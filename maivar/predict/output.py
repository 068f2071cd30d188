"""The videos ``maivar predict`` is given, and how it prints what it predicts.

Paths: a file is taken as it is; a folder gives every video file under it (by suffix, :data:`VIDEO_SUFFIXES`,
sorted); anything else is read as a glob (``**`` included). A path that gives nothing is reported, not fatal.
Each file is predicted once, however many links or spellings name it (de-duplicated after resolving links); a
FIFO, device or socket is reported as ``not_a_regular_file`` and never opened (opening a FIFO blocks); a name
FFmpeg would read as a URL (``file:x``, ``concat:x``) gets ``./`` in front, so it is always a local file. A file
name that is not UTF-8 is opened as it is and shown with its undecodable bytes as ``\\xNN`` (:func:`shown`).

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
import stat
from collections.abc import Sequence
from pathlib import Path

from maivar.core.names import local_path
from maivar.evaluation import DIGITS, HEADS, probability_text

from .engine import Prediction

VIDEO_SUFFIXES = frozenset({".avi", ".mp4", ".m4v", ".mkv", ".webm", ".mov", ".mpg", ".mpeg", ".flv", ".wmv",
                            ".3gp", ".ogv", ".ts", ".mts"})
FORMATS = ("table", "json", "csv")
CSV_COLUMNS = ("path", "branch", "rank", "class", "probability", "note")


def _kind(path: str) -> str | None:
    """``file`` (a regular file, links followed), ``dir``, ``other`` (FIFO, device, socket) or None (absent)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):  # ValueError: a NUL byte
        return None
    return "file" if stat.S_ISREG(mode) else "dir" if stat.S_ISDIR(mode) else "other"


def expand_paths(specs: Sequence[str]) -> tuple[list[str], list[Prediction]]:
    """``(videos, problems)``: the video files the arguments name, in order and each once (links resolved), and a
    :class:`Prediction` with an error for each argument that names none or names something that is not a file."""
    videos: list[str] = []
    problems: list[Prediction] = []
    seen: set[str] = set()

    def add(path: str) -> None:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            videos.append(local_path(path))

    def not_regular(path: str) -> None:
        problems.append(Prediction(path, error="not_a_regular_file: a FIFO, device or socket, not a video file "
                                               "(never opened)"))

    for spec in specs:
        kind = _kind(spec)
        if kind == "file":
            add(spec)
        elif kind == "other":
            not_regular(spec)
        elif kind == "dir":
            found = sorted(str(f) for f in Path(spec).rglob("*") if f.suffix.lower() in VIDEO_SUFFIXES)
            videos_found = [f for f in found if _kind(f) == "file"]
            if not videos_found:
                problems.append(Prediction(spec, error=f"no video files in this folder (suffixes "
                                                       f"{', '.join(sorted(VIDEO_SUFFIXES))})"))
            for f in found:
                if _kind(f) == "other":
                    not_regular(f)
                elif f in videos_found:
                    add(f)
        elif glob.has_magic(spec):
            found = sorted(f for f in glob.glob(spec, recursive=True) if _kind(f) in ("file", "other"))
            if not found:
                problems.append(Prediction(spec, error="the pattern matches no file"))
            for f in found:
                if _kind(f) == "file":
                    add(f)
                else:
                    not_regular(f)
        else:
            problems.append(Prediction(spec, error="missing_file: no such file or folder"))
    return videos, problems


def shown(text: str) -> str:
    """``text`` (a path, or a message naming one) as printable UTF-8: bytes of a file name that are not UTF-8
    (which Python holds as lone surrogates) written as ``\\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def as_json(prediction: Prediction, k: int, classes: Sequence[str]) -> dict:
    out: dict = {"path": shown(prediction.path), "branches": {
        branch: [{"class": c, "probability": round(p, DIGITS)} for c, p in ranked]
        for branch, ranked in prediction.top(k, classes).items()
    }}
    if prediction.skipped:
        out["skipped"] = dict(prediction.skipped)
    if prediction.error is not None:
        out["error"] = shown(prediction.error)
    return out


def format_json(predictions: Sequence[Prediction], k: int, classes: Sequence[str]) -> str:
    return json.dumps([as_json(p, k, classes) for p in predictions], indent=2) + "\n"


def csv_rows(prediction: Prediction, k: int, classes: Sequence[str]) -> list[list]:
    if prediction.error is not None:
        return [[shown(prediction.path), "", "", "", "", f"error: {shown(prediction.error)}"]]
    top = prediction.top(k, classes)
    rows = []
    for branch in HEADS:
        if branch in top:
            rows += [[shown(prediction.path), branch, rank, c, probability_text(p), ""]
                     for rank, (c, p) in enumerate(top[branch], start=1)]
        elif branch in prediction.skipped:
            rows.append([shown(prediction.path), branch, "", "", "", f"skipped: {prediction.skipped[branch]}"])
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
        return f"{shown(prediction.path)}\n  error: {shown(prediction.error)}\n"
    top = prediction.top(k, classes)
    branches = [b for b in HEADS if b in top]
    cells = {}
    for b in branches:  # class names left-aligned, probabilities in a column after them
        name_width = max(len(c) for c, _ in top[b])
        cells[b] = [f"{c.ljust(name_width)}  {probability_text(p)}" for c, p in top[b]]
    widths = {b: max(len(b), *(len(x) for x in cells[b])) for b in branches}
    lines = [shown(prediction.path), "  rank  " + "   ".join(b.ljust(widths[b]) for b in branches).rstrip()]
    for r in range(max((len(cells[b]) for b in branches), default=0)):
        row = "   ".join((cells[b][r] if r < len(cells[b]) else "").ljust(widths[b]) for b in branches)
        lines.append(f"  {r + 1:>4}  {row}".rstrip())
    skipped = [b for b in HEADS if b in prediction.skipped]
    if skipped:
        reasons = sorted(set(prediction.skipped[b] for b in skipped))
        lines.append(f"  {', '.join(skipped)}: skipped, {'; '.join(reasons)} (video branch only)")
    return "\n".join(lines) + "\n"
