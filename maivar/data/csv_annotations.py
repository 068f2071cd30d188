"""Dataset format ``csv``: any collection of videos described by one annotation file.

``dataset.annotations`` (relative to ``dataset.root``) is a CSV with a header and the columns

- ``path``: the video, relative to ``dataset.root`` (any container PyAV can open);
- ``label``: its class name (classes are the distinct labels, in sorted order: label 0 is the first);
- ``split``: ``train`` or ``test``;
- optionally ``start_s`` and ``end_s``: take the clip out of a longer video (seconds from its start;
  both or neither, ``0 <= start_s < end_s``; an empty cell means the whole video).

Other columns are ignored. A malformed line, an empty label or split, a path outside ``dataset.root``, a
duplicate (path, window), or a class with test clips but no train clip is a one-line error naming the
file and the line. Clip ids: see :mod:`maivar.data.datasets`.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path, PurePosixPath

from maivar.core.errors import PipelineError

from .datasets import SPLITS, ListedClip, Listing, check_train_classes, check_unique_ids, inside, safe_id
from .datasets import window_suffix

REQUIRED = ("path", "label", "split")
WINDOW = ("start_s", "end_s")


def _seconds(value: str, where: str, column: str) -> float | None:
    value = (value or "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise PipelineError(f"{where}: {column} {value!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise PipelineError(f"{where}: {column} {value!r} must be a finite number of seconds >= 0")
    return seconds


def clip_id(rel_path: str, start_s: float | None, end_s: float | None) -> str:
    """The id of the clip at ``rel_path`` (relative to dataset.root), with its window if any."""
    stem = str(PurePosixPath(rel_path).with_suffix(""))
    base = safe_id(stem.replace("/", "__"))
    return base + (window_suffix(start_s, end_s) if start_s is not None else "")


def read_listing(root: str | Path, annotations: str | Path) -> Listing:
    """The clips ``annotations`` lists (see the module docstring)."""
    root, annotations = Path(root), Path(annotations)
    try:
        text = annotations.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PipelineError(f"{annotations} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    rows = csv.reader(text.splitlines())
    header = next(rows, None)
    if header is None:
        raise PipelineError(f"{annotations} is empty: expected a header with {', '.join(REQUIRED)}")
    columns = [h.strip() for h in header]
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise PipelineError(f"{annotations} line 1: the header lacks {', '.join(missing)} (it needs "
                            f"{', '.join(REQUIRED)}; optional {', '.join(WINDOW)})")
    index = {c: columns.index(c) for c in (*REQUIRED, *WINDOW) if c in columns}
    clips = []
    for number, row in enumerate(rows, 2):
        if not any(cell.strip() for cell in row):
            continue  # a blank line
        where = f"{annotations.name}:{number}"
        if len(row) != len(columns):
            raise PipelineError(f"{where}: {len(row)} fields, the header has {len(columns)} ({row!r})")
        cell = {c: row[i].strip() for c, i in index.items()}
        rel, label, split = cell["path"].replace("\\", "/"), cell["label"], cell["split"].lower()
        if not rel:
            raise PipelineError(f"{where}: the path is empty")
        if not label:
            raise PipelineError(f"{where}: the label is empty")
        if split not in SPLITS:
            raise PipelineError(f"{where}: split must be train or test, got {cell['split']!r}")
        if PurePosixPath(rel).is_absolute() or not inside(root / rel, root):
            raise PipelineError(f"{where}: {rel} is outside dataset.root {root} (paths are relative to it)")
        start = _seconds(cell.get("start_s", ""), where, "start_s")
        end = _seconds(cell.get("end_s", ""), where, "end_s")
        if (start is None) != (end is None):
            raise PipelineError(f"{where}: give both start_s and end_s, or neither (the whole video)")
        if start is not None and not start < end:
            raise PipelineError(f"{where}: start_s {start:g} must be less than end_s {end:g}")
        clips.append(ListedClip(clip_id(rel, start, end), label, split, str(root / rel), where, start, end))
    if not clips:
        raise PipelineError(f"{annotations} lists no clips")
    check_unique_ids(clips)
    check_train_classes(clips)
    return Listing(sorted({c.class_name for c in clips}), clips)
