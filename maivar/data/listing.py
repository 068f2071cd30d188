"""What every dataset reader shares: the listing types, clip ids, class lists and annotation-file helpers.

A reader (:mod:`maivar.data.readers`) turns a dataset into a :class:`Listing`: the clips it lists, with their
classes. This module imports no reader, so every reader imports it and nothing circles back.

**Clip ids** (the manifest's ``id``, the WAV's name, the key that joins audio and video downstream) are
unique within a dataset and stable: the same file gives the same id on every run and in any folder layout.

- ucf101: the file's stem, as UCF101 names its videos (``v_ApplyEyeMakeup_g08_c01``);
- kinetics: ``<youtube_id>_<time_start:06d>_<time_end:06d>``, the downloaders' file stem;
- csv: the path relative to ``dataset.root`` without its extension, ``/`` written as ``__`` and every
  character outside ``A-Z a-z 0-9 . _ -`` as ``_``; a clip with ``start_s,end_s`` gets
  ``_<start ms>_<end ms>`` appended (``walks/clip 1.mp4`` from 1.5 s to 4 s: ``walks__clip_1_1500_4000``).

Two rows that would get the same id are a one-line error naming both lines. So is any malformed
annotation; a listed file that is absent is not: it becomes a ``missing_file`` rejection in stage prepare.
Every format then goes through one containment rule (:func:`contain`): a file outside ``dataset.root``, links
resolved, is refused as ``outside_root``; a path FFmpeg would read as a URL is made local; an id is bounded
below the file system's name limit (:func:`maivar.core.names.short_id`).

**Class presets** for ``prepare.classes``: ``all``, ``paper`` (UCF101: the paper's 51 classes with audio),
``kinetics_sounds`` (Kinetics-Sounds, see :mod:`maivar.data.kinetics`), or a list of class names; names
match case-insensitively.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from maivar.core import rejections as R
from maivar.core.errors import PipelineError
from maivar.core.names import local_path, short_id

CLASS_LIST_DIR = Path(__file__).parent / "class_lists"
PRESETS = {
    "paper": CLASS_LIST_DIR / "paper51.txt",  # UCF101's 51 classes with audio (UCF101 minus UCF50)
    "kinetics_sounds": CLASS_LIST_DIR / "kinetics_sounds.txt",  # see maivar/data/kinetics.py
}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class ListedClip:
    """One clip a dataset lists."""

    id: str  # unique and stable (see the module docstring)
    class_name: str
    split: str  # train | test
    path: str  # the video file, as the stages open it (dataset.root joined with the listed path)
    source: str  # "<annotation file>:<line>", for messages
    start_s: float | None = None  # a clip out of a longer video: its window, in seconds from the video's start
    end_s: float | None = None
    refusal: tuple[str, str] | None = None  # (reason, detail): refused before it is opened (outside_root, ...)


@dataclass(frozen=True)
class Listing:
    classes: list[str]  # every class of the dataset, in label order
    clips: list[ListedClip]  # clips of known classes, in annotation order
    unknown: list[ListedClip] = field(default_factory=list)  # ucf101: lines naming a class classInd.txt lacks


def annotation_files(root: Path, annotations: str | Sequence[str] | None, format: str) -> list[Path]:
    """``dataset.annotations`` (a path or a list of paths, relative to ``dataset.root``) as existing files
    inside ``dataset.root``: DVC tracks that folder, so an annotation file outside it could change unseen."""
    if not annotations:
        raise PipelineError(f"dataset.format {format} needs dataset.annotations: the annotation file(s), relative "
                            "to dataset.root")
    names = [annotations] if isinstance(annotations, str) else list(annotations)
    files = []
    for name in names:
        path = root / str(name)
        if not inside(path, root):
            raise PipelineError(f"dataset.annotations {name} is outside dataset.root {root}: keep it inside (DVC "
                                "tracks that folder)")
        if not path.is_file():
            raise PipelineError(f"annotation file {path} does not exist: fix dataset.annotations (relative to "
                                "dataset.root)")
        files.append(path)
    return files


def inside(path: Path, root: Path, *, real_root: str | None = None) -> bool:
    """Whether ``path`` (``..`` and symbolic links resolved) lies inside ``root`` (``real_root``: ``root``
    already resolved, for a caller that asks about many paths)."""
    real = os.path.realpath(path)
    base = real_root if real_root is not None else os.path.realpath(root)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def safe_id(text: str) -> str:
    """``text`` with every character outside ``A-Z a-z 0-9 . _ -`` written as ``_`` (ids name files)."""
    return _UNSAFE.sub("_", text)


def window_suffix(start_s: float, end_s: float) -> str:
    """``_<start ms>_<end ms>``: what a clip id gets for a window of its video (a window too large for whole
    milliseconds, e.g. ``1e308``, is written as the number it is: such a window is refused anyway)."""
    def ms(seconds: float) -> str:
        scaled = seconds * 1000
        return str(round(scaled)) if math.isfinite(scaled) and abs(scaled) < 1e15 else safe_id(repr(seconds))

    return f"_{ms(start_s)}_{ms(end_s)}"


def window_refusal(start_s: float | None, end_s: float | None) -> tuple[str, str] | None:
    """``(bad_window, why)`` unless the window is absent or finite with ``0 <= start_s < end_s`` (whether it
    ends inside the video is checked when the video is probed: :func:`maivar.data.media.probe_video`)."""
    if start_s is None and end_s is None:
        return None
    if not (math.isfinite(start_s) and math.isfinite(end_s) and 0 <= start_s < end_s):
        return R.BAD_WINDOW, f"the window [{start_s!r}, {end_s!r}) s is not finite with 0 <= start_s < end_s"
    return None


def contain(listing: Listing, root: Path) -> Listing:
    """The one containment rule, for every format: each listed file, links resolved, must lie inside ``root``
    (else the clip is refused as ``outside_root``; a path no file can have, e.g. with a NUL byte, as
    ``missing_file``); paths are made local (:func:`~maivar.core.names.local_path`: ``file:x`` is a file, never a
    URL); ids are bounded (:func:`~maivar.core.names.short_id`) and checked unique again."""
    real_root = os.path.realpath(root)

    def one(clip: ListedClip) -> ListedClip:
        refusal = clip.refusal
        try:
            outside = not inside(Path(clip.path), root, real_root=real_root)
        except (ValueError, OSError) as exc:  # an embedded NUL byte, a name too long, a loop of links
            outside, refusal = False, refusal or (R.MISSING_FILE, f"no file can have this name ({exc})")
        if outside and refusal is None:
            refusal = R.OUTSIDE_ROOT, f"{clip.source}: the file, links resolved, is outside dataset.root {root}"
        return replace(clip, id=short_id(clip.id), path=local_path(clip.path), refusal=refusal)

    clips = [one(c) for c in listing.clips]
    check_unique_ids(clips)
    return Listing(listing.classes, clips, [one(c) for c in listing.unknown])


def read_class_list(path: str | Path) -> list[str]:
    """A class list file: one name a line; blank lines and lines starting with ``#`` are skipped."""
    lines = (line.strip() for line in Path(path).read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def select_classes(spec: str | Sequence[str], classes: list[str]) -> list[str]:
    """The classes chosen by ``prepare.classes`` (``all`` | a name of :data:`PRESETS` | a list of class names,
    as :class:`~maivar.settings.data.PrepareSettings` allows), in ``classes`` order.

    A preset keeps those of its classes the dataset has (one dataset may lack some, e.g. Kinetics-400 has 31
    of Kinetics-Sounds' 34); a list must name only classes the dataset has."""
    if spec == "all":
        return list(classes)
    if isinstance(spec, str):
        wanted, what = read_class_list(PRESETS[spec]), f"the '{spec}' preset"
    else:
        wanted, what = list(spec), "prepare.classes"
        known = {c.lower() for c in classes}
        missing = [c for c in wanted if c.lower() not in known]
        if missing:
            raise PipelineError(f"prepare.classes names classes that the dataset lacks: {', '.join(missing)}")
    chosen = {c.lower() for c in wanted}
    selected = [c for c in classes if c.lower() in chosen]
    if not selected:
        raise PipelineError(f"{what} matches none of the dataset's classes: set prepare.classes to 'all' "
                            "(e.g. for the synthetic dataset) or to names of the dataset's classes")
    return selected


def read_utf8(path: Path) -> str:
    """The text of ``path`` (UTF-8, a leading byte order mark dropped); other bytes are a one-line error."""
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PipelineError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def annotation_rows(annotations: Path, required: tuple[str, ...], optional: tuple[str, ...] = (), *, needs: str,
                    empty: str | None = None) -> Iterator[tuple[str, dict[str, str]]]:
    """``(where, cells)`` for each non-blank row after the header of the CSV file ``annotations``: ``where`` is
    ``<file name>:<line>``, ``cells`` the stripped cells of the ``required`` columns and of those ``optional``
    columns the header has.

    A header without a ``required`` column is an error ending in ``(<needs>)``; an empty file is the error
    ``empty`` (``None``: the header-lacks error); a row with more or fewer fields than the header, an error."""
    rows = csv.reader(io.StringIO(read_utf8(annotations), newline=""))  # a quoted newline stays in its cell
    header = next(rows, None)
    if header is None and empty is not None:
        raise PipelineError(empty)
    columns = [h.strip() for h in header or []]
    missing = [c for c in required if c not in columns]
    if missing:
        raise PipelineError(f"{annotations} line 1: the header lacks {', '.join(missing)} ({needs})")
    index = {c: columns.index(c) for c in (*required, *optional) if c in columns}
    end = rows.line_num  # the header's last line
    for row in rows:
        number, end = end + 1, rows.line_num  # a row's first line (a quoted newline makes a row span lines)
        if not any(cell.strip() for cell in row):
            continue  # a blank line
        where = f"{annotations.name}:{number}"
        if len(row) != len(columns):
            raise PipelineError(f"{where}: {len(row)} fields, the header has {len(columns)} ({row!r})")
        yield where, {c: row[i].strip() for c, i in index.items()}


def finish_listing(clips: list[ListedClip], empty: str) -> Listing:
    """The :class:`Listing` of an annotation reader's ``clips``: none is the error ``empty``; then ids must be
    unique and every class with test clips must have train clips. Classes are the distinct labels, sorted."""
    if not clips:
        raise PipelineError(empty)
    check_unique_ids(clips)
    check_train_classes(clips)
    return Listing(sorted({c.class_name for c in clips}), clips)


def check_train_classes(clips: list[ListedClip]) -> None:
    """Every class with test clips must have train clips (a head cannot learn a class it never sees): else a
    one-line error naming the first test line of such a class."""
    trained = {c.class_name.lower() for c in clips if c.split == "train"}
    for clip in clips:
        if clip.split == "test" and clip.class_name.lower() not in trained:
            raise PipelineError(f"{clip.source}: class {clip.class_name!r} has test clips but no train clip: an "
                                "unknown class (a typo?), or add its train clips")


def check_unique_ids(clips: list[ListedClip]) -> None:
    """Two clips with one id (the same file listed twice, or two files whose ids coincide) is an error."""
    seen: dict[str, ListedClip] = {}
    for clip in clips:
        first = seen.setdefault(clip.id, clip)
        if first is not clip:
            same = first.path == clip.path and (first.start_s, first.end_s) == (clip.start_s, clip.end_s)
            what = "lists the same clip again" if same else f"gives clip id {clip.id!r} again"
            raise PipelineError(f"{clip.source}: {what} (first at {first.source})")
