"""Dataset format ``ucf101``: ``UCF-101/<Class>/<file>.<ext>`` and the split lists (``ucfTrainTestlist/``).

Formats, as distributed with UCF101 (CRLF or LF line ends both accepted, blank lines skipped):

- ``classInd.txt``: ``<index> <ClassName>`` per line, indices 1..N;
- ``trainlistNN.txt``: ``<Class>/<file>.avi <index>``;
- ``testlistNN.txt``: ``<Class>/<file>.avi`` (UCF101's own), or with `` <index>`` after it (some copies).

Own collections in this layout may name any container PyAV can open (``.mp4``, ``.mkv``, ``.webm``, ...): the
extension is whatever the list says. A clip's id is its file's stem.

Class names are matched case-insensitively (UCF101 itself spells ``HandStandPushups`` in ``classInd.txt``
and ``HandstandPushups`` elsewhere); the manifest uses ``classInd.txt``'s spelling. The trailing index of
a list line is ignored: the class comes from the path. A malformed line is a one-line
:class:`~maivar.core.errors.PipelineError` naming the file and the line; a well-formed line that names a class
``classInd.txt`` lacks is returned as an ``unknown_class`` rejection (it never stops the stage).

The class presets (``paper``: the paper's 51 classes, UCF101 minus UCF50) are in :mod:`maivar.data.listing`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from maivar.core.errors import PipelineError
from maivar.core.manifest import SPLITS

from .listing import ListedClip, Listing, read_utf8

if TYPE_CHECKING:
    from maivar.settings.data import DatasetSettings

VIDEOS_DIR = "UCF-101"  # <Class>/<file>.<ext>
LISTS_DIR = "ucfTrainTestlist"  # CLASS_INDEX and a train and a test list per split
CLASS_INDEX = "classInd.txt"
SPLIT_NUMBERS = (1, 2, 3)  # UCF101's official train/test splits (dataset.split)


def list_name(kind: str, split: int) -> str:
    """The name of split ``split``'s ``kind`` (train | test) list: ``trainlist01.txt``."""
    return f"{kind}list{split:02d}.txt"


@dataclass(frozen=True)
class ListedVideo:
    """One line of a train or test list."""

    id: str  # the file stem, e.g. v_ApplyEyeMakeup_g08_c01
    class_name: str  # classInd.txt's spelling (as written in the line when the class is unknown)
    split: str  # train | test
    rel_path: str  # as written in the list: <Class>/<file>.<ext>
    source: str  # "<list file>:<line>" for messages


@dataclass(frozen=True)
class SplitLists:
    classes: list[str]  # classInd.txt order
    videos: list[ListedVideo]  # known classes, in list order (train, then test)
    unknown: list[ListedVideo]  # lines naming a class that classInd.txt lacks


def _lines(path: Path):
    try:
        text = read_utf8(path)
    except FileNotFoundError:
        raise PipelineError(f"{path} not found: is the dataset root a UCF101 copy with ucfTrainTestlist/?") from None
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line:
            yield number, line


def read_class_index(path: str | Path) -> list[str]:
    """Class names of ``classInd.txt`` in index order; a malformed line is a one-line error."""
    path = Path(path)
    by_index: dict[int, str] = {}
    seen: dict[str, int] = {}
    for number, line in _lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise PipelineError(f"{path} line {number}: expected '<index> <ClassName>', got {line!r}")
        index, name = int(parts[0]), parts[1]
        if index in by_index:
            raise PipelineError(f"{path} line {number}: index {index} appears twice")
        if name.lower() in seen:
            raise PipelineError(f"{path} line {number}: class {name!r} already on line {seen[name.lower()]}")
        by_index[index] = name
        seen[name.lower()] = number
    if not by_index:
        raise PipelineError(f"{path} lists no classes")
    if sorted(by_index) != list(range(1, len(by_index) + 1)):
        raise PipelineError(f"{path}: class indices must run 1..{len(by_index)} without gaps")
    return [by_index[i] for i in sorted(by_index)]


def parse_list_line(line: str, path: Path, number: int) -> tuple[str, str, str]:
    """``(rel_path, class as written, id)`` of a list line; a malformed line is a one-line error."""
    parts = line.split()
    if len(parts) not in (1, 2) or (len(parts) == 2 and not parts[1].isdigit()):
        raise PipelineError(f"{path} line {number}: expected '<Class>/<file>.<ext> [index]', got {line!r}")
    rel = parts[0].replace("\\", "/")
    pieces = rel.split("/")
    stem, dot, ext = pieces[-1].rpartition(".")
    if len(pieces) != 2 or not pieces[0] or not dot or not stem or not ext or pieces[0] in (".", ".."):
        raise PipelineError(f"{path} line {number}: expected '<Class>/<file>.<ext> [index]', got {line!r}")
    return rel, pieces[0], stem


def read_split(list_dir: str | Path, split: int) -> SplitLists:
    """Parse ``classInd.txt`` and split ``split``'s train and test lists (``split``: one of
    :data:`SPLIT_NUMBERS`)."""
    list_dir = Path(list_dir)
    classes = read_class_index(list_dir / CLASS_INDEX)
    canonical = {c.lower(): c for c in classes}
    videos, unknown, seen = [], [], {}
    for kind in SPLITS:
        path = list_dir / list_name(kind, split)
        for number, line in _lines(path):
            rel, cls, vid = parse_list_line(line, path, number)
            source = f"{path.name}:{number}"
            if vid in seen:
                raise PipelineError(f"{path} line {number}: {vid} is listed twice (first at {seen[vid]})")
            seen[vid] = source
            name = canonical.get(cls.lower())
            entry = ListedVideo(id=vid, class_name=name or cls, split=kind, rel_path=rel, source=source)
            (videos if name else unknown).append(entry)
    return SplitLists(classes=classes, videos=videos, unknown=unknown)


def read_listing(root: Path, settings: DatasetSettings) -> Listing:
    """The ``ucf101`` format's :class:`~maivar.data.listing.Listing`: split ``dataset.split`` of ``root``'s lists,
    each clip's path in ``root/UCF-101`` (class folders matched case-insensitively)."""
    videos_dir = root / VIDEOS_DIR
    if not videos_dir.is_dir():
        raise PipelineError(f"{videos_dir} does not exist: with dataset.format ucf101, dataset.root must hold "
                            "UCF-101/<Class>/<file> and ucfTrainTestlist/")
    lists = read_split(root / LISTS_DIR, settings.split)
    class_dirs = {p.name.lower(): p.name for p in videos_dir.iterdir() if p.is_dir()}

    def clip(v: ListedVideo) -> ListedClip:
        cls, name = v.rel_path.split("/")
        return ListedClip(v.id, v.class_name, v.split, str(videos_dir / class_dirs.get(cls.lower(), cls) / name),
                          v.source)

    return Listing(lists.classes, [clip(v) for v in lists.videos], [clip(v) for v in lists.unknown])
