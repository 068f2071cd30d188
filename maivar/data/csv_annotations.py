"""Dataset format ``csv``: any collection of videos described by one annotation file.

``dataset.annotations`` (relative to ``dataset.root``) is a CSV with a header and the columns

- ``path``: the video, relative to ``dataset.root`` (any container PyAV can open);
- ``label``: its class name (classes are the distinct labels, in sorted order: label 0 is the first);
- ``split``: ``train`` or ``test``;
- optionally ``start_s`` and ``end_s``: take the clip out of a longer video (seconds from its start;
  both or neither; an empty cell means the whole video).

Other columns are ignored. A malformed line, an empty label or split, a duplicate (path, window), or a class
with test clips but no train clip is a one-line error naming the file and the line. A path outside
``dataset.root`` (links resolved) is the rejection ``outside_root`` and a window that is not finite with
``0 <= start_s < end_s`` (or that ends past the video) is ``bad_window``: the rules every format shares
(:func:`maivar.data.listing.contain`). A quoted cell may hold commas and newlines. Clip ids: see
:mod:`maivar.data.listing`.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from maivar.core.errors import PipelineError
from maivar.core.manifest import SPLITS

from .listing import (
    ListedClip,
    Listing,
    annotation_files,
    annotation_rows,
    finish_listing,
    safe_id,
    window_refusal,
    window_suffix,
)

if TYPE_CHECKING:
    from maivar.settings.data import DatasetSettings

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
    return seconds  # finite and >= 0 is checked with the window (window_refusal): else the clip is bad_window


def clip_id(rel_path: str, start_s: float | None, end_s: float | None) -> str:
    """The id of the clip at ``rel_path`` (relative to dataset.root), with its window if any."""
    try:
        stem = str(PurePosixPath(rel_path).with_suffix(""))
    except ValueError:  # a path without a file name ("..", "a/.."): outside_root or missing, refused anyway
        stem = rel_path
    base = safe_id(stem.replace("/", "__"))
    return base + (window_suffix(start_s, end_s) if start_s is not None else "")


def read_listing(root: Path, settings: DatasetSettings) -> Listing:
    """The clips the one CSV ``dataset.annotations`` lists (see the module docstring)."""
    files = annotation_files(root, settings.annotations, settings.format)
    if len(files) != 1:
        raise PipelineError("dataset.annotations must name one CSV file for dataset.format csv")
    annotations = files[0]
    clips = []
    for where, cell in annotation_rows(annotations, REQUIRED, WINDOW, needs=f"it needs {', '.join(REQUIRED)}; "
                                       f"optional {', '.join(WINDOW)}",
                                       empty=f"{annotations} is empty: expected a header with {', '.join(REQUIRED)}"):
        rel, label, split = cell["path"].replace("\\", "/"), cell["label"], cell["split"].lower()
        if not rel:
            raise PipelineError(f"{where}: the path is empty")
        if not label:
            raise PipelineError(f"{where}: the label is empty")
        if split not in SPLITS:
            raise PipelineError(f"{where}: split must be train or test, got {cell['split']!r}")
        start = _seconds(cell.get("start_s", ""), where, "start_s")
        end = _seconds(cell.get("end_s", ""), where, "end_s")
        if (start is None) != (end is None):
            raise PipelineError(f"{where}: give both start_s and end_s, or neither (the whole video)")
        clips.append(ListedClip(clip_id(rel, start, end), label, split, str(root / rel), where, start, end,
                                refusal=window_refusal(start, end)))
    return finish_listing(clips, f"{annotations} lists no clips")
