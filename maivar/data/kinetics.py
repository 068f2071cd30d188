"""Dataset format ``kinetics``: Kinetics' annotation CSVs and the videos the common downloaders write.

``dataset.annotations`` names one or more of Kinetics' CSV files (relative to ``dataset.root``), each with
the header ``label,youtube_id,time_start,time_end,split`` (more columns, e.g. ``is_cc``, are ignored). A
row's clip is the file ``<youtube_id>_<time_start:06d>_<time_end:06d>.<ext>`` (any extension), found
anywhere under ``dataset.root``: in ``<split>/<label>/`` (with spaces in the label, or underscores) or
in one flat folder, the layouts of the common downloaders. Downloaded clips are already cut to
``[time_start, time_end]``, so each file is used whole; its stem is the clip's id.

Splits: ``train`` is train; ``val``/``validate`` (and ``test``, where its labels are public) are test,
as Kinetics-Sounds results are reported on Kinetics' validation set. Classes are the distinct labels, in
sorted order. A malformed row, a row without a label or split, the same clip twice, or two files for
one clip is a one-line error naming the file and line; a clip whose file is absent becomes a
``missing_file`` rejection in stage prepare.

**Kinetics-Sounds** (``prepare.classes: kinetics_sounds``): the 34 classes of Arandjelović & Zisserman,
"Look, Listen and Learn", ICCV 2017 (their appendix), "potentially manifested both visually and aurally".
``class_lists/kinetics_sounds.txt`` writes them with Kinetics-400's labels. Four are written shorter in the
paper than Kinetics-400 labels them ("blowing out" is ``blowing out candles``, "dribbling ball"
``dribbling basketball``, "mowing the lawn by pushing lawnmower" ``mowing lawn``, "stomping" ``stomping
grapes``), and three have no Kinetics-400 label (``typing``, ``fingerpicking``, ``patting``: kept as the
paper writes them, they match where a Kinetics release has them). So on Kinetics-400 the preset selects
31 classes, and works that build Kinetics-Sounds from a later release may select more: state the class count
with a result (``metrics/subset.json`` records it), since accuracies over 31 and 34 classes are not
comparable. A test checks the list against Kinetics-400's labels as torchvision ships them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from maivar.core.errors import PipelineError

from .listing import ListedClip, Listing, annotation_files, annotation_rows, finish_listing

if TYPE_CHECKING:
    from maivar.settings.data import DatasetSettings

REQUIRED = ("label", "youtube_id", "time_start", "time_end", "split")
SPLIT_MAP = {"train": "train", "val": "test", "validate": "test", "valid": "test", "test": "test"}


def clip_id(youtube_id: str, time_start: int, time_end: int) -> str:
    """The downloaders' file stem for a Kinetics row: ``<youtube_id>_<time_start:06d>_<time_end:06d>``."""
    return f"{youtube_id}_{time_start:06d}_{time_end:06d}"


def video_index(root: Path) -> dict[str, list[Path]]:
    """Every file under ``root`` by stem (annotation CSVs and hidden files left out)."""
    index: dict[str, list[Path]] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(folder) / name
            if name.startswith(".") or path.suffix.lower() == ".csv":
                continue
            index.setdefault(path.stem, []).append(path)
    return index


def _int(value: str, where: str, column: str) -> int:
    try:
        number = float(value)
    except ValueError:
        raise PipelineError(f"{where}: {column} {value!r} is not a number of seconds") from None
    if number < 0 or number != int(number):
        raise PipelineError(f"{where}: {column} {value!r} must be a whole number of seconds >= 0")
    return int(number)


def read_listing(root: Path, settings: DatasetSettings) -> Listing:
    """The clips the Kinetics CSVs ``dataset.annotations`` list, found under ``root`` (see the module docstring)."""
    annotations = annotation_files(root, settings.annotations, settings.format)
    index = video_index(root)
    clips = []
    for file in annotations:
        for where, cell in annotation_rows(file, REQUIRED, needs=f"Kinetics' CSVs have {','.join(REQUIRED)}"):
            if not cell["label"]:
                raise PipelineError(f"{where}: the label is empty (Kinetics' test CSVs held their labels back: "
                                    "use the validation CSV as the test split)")
            if not cell["youtube_id"]:
                raise PipelineError(f"{where}: the youtube_id is empty")
            split = SPLIT_MAP.get(cell["split"].lower())
            if split is None:
                raise PipelineError(f"{where}: split must be one of {', '.join(SPLIT_MAP)}, got {cell['split']!r}")
            start, end = _int(cell["time_start"], where, "time_start"), _int(cell["time_end"], where, "time_end")
            if not start < end:
                raise PipelineError(f"{where}: time_start {start} must be less than time_end {end}")
            clip = clip_id(cell["youtube_id"], start, end)
            files = index.get(clip, [])
            if len(files) > 1:
                raise PipelineError(f"{where}: {len(files)} files for clip {clip} ({', '.join(map(str, files))}): "
                                    "keep one")
            path = str(files[0]) if files else str(root / f"{clip}.*")
            clips.append(ListedClip(clip, cell["label"], split, path, where))
    return finish_listing(clips, f"{', '.join(map(str, annotations))} list no clips")
