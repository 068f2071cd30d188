"""Stage listing: the dataset as its annotations list it, as a file DVC hashes in place of the dataset's folder.

``prepare`` and ``extract_video`` depend on ``data/listing.jsonl``, not on ``dataset.root``: DVC never walks or
hashes the folder, so files the annotations do not list (Kinetics-400 beside the 31 Kinetics-Sounds classes, other
projects' files, a 50 GB archive) are never read, by DVC or by maivar.

The file: a header line (``format``, the dataset settings, every class in label order, the classes
``prepare.classes`` selects), then one line per listed clip of a selected class (and each unknown-class line),
sorted by id: its id, class, split, window, refusal, the file's path (relative to ``dataset.root``), its size
and the sha256 of its bytes. A file refused before it is opened (outside the root, not a regular file) is
listed with that and never opened; a missing one as missing.

Why a content hash and not the mtime: every copy, checkout and ``dvc pull`` gives files new mtimes, and a
listing of mtimes would rerun ``prepare`` after each. The mtime (with the size, ctime and inode) is only the key
of a local cache of the hashes (:func:`hash_cache_path`, outside the project: not an output), so an unchanged file
is read once, and a clone that pulled its dataset reads the listed files once again: a file that
changed in place, whatever its mtime, changes the listing and reruns ``prepare``. A root that is not on this
machine (a laptop that pulled a GPU node's run) keeps the listing it pulled, when it was made for the same
settings, and says so.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

from maivar.core.atomic import atomic_path
from maivar.core.errors import PipelineError

from .listing import ListedClip, select_classes
from .readers import read_listing

log = logging.getLogger(__name__)

FORMAT = "maivar-listing/1"
BLOCK = 1 << 20


def header(dataset, classes_spec, classes: list[str], selected: list[str]) -> dict:
    return {"format": FORMAT, "dataset": dataset.as_dict(), "prepare.classes": classes_spec, "classes": classes,
            "selected": selected}


def read_header(path: str | Path) -> dict | None:
    """The header line of a listing file, or None when there is none (absent, foreign, damaged)."""
    try:
        with open(path, encoding="utf-8") as f:
            first = json.loads(f.readline())
    except (OSError, ValueError):
        return None
    return first if isinstance(first, dict) and first.get("format") == FORMAT else None


class HashCache:
    """sha256 of files by (path, size, mtime, ctime, inode), in SQLite: a file is read again when any of them
    changed (the ctime too: an edit that puts the mtime back still moves it). Never part of a result: a lost cache
    only costs reading the listed files once more. The rows under ``prefix`` (the dataset's folder) are read in
    one query; new ones are written when the cache is closed."""

    def __init__(self, path: Path, prefix: str):
        self.db = sqlite3.connect(path, timeout=60)  # other stages or projects may be listing at the same time
        self.db.execute("CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
                        "ctime_ns INTEGER, ino INTEGER, sha256 TEXT)")
        rows = self.db.execute("SELECT path, size, mtime_ns, ctime_ns, ino, sha256 FROM hashes WHERE path >= ? AND "
                               "path < ?", (prefix, prefix + "\U0010ffff"))
        self.known = {r[0]: (tuple(r[1:5]), r[5]) for r in rows}
        self.new: list[tuple] = []
        self.read = self.hits = 0

    def sha256(self, path: str, st: os.stat_result) -> str:
        key = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        where = os.path.abspath(path)
        known = self.known.get(where)
        if known and known[0] == key:
            self.hits += 1
            return known[1]
        from maivar.extraction.sources import file_sha256

        digest = file_sha256(path)
        self.read += 1
        self.new.append((where, *key, digest))
        return digest

    def close(self) -> None:
        self.db.executemany("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?, ?)", self.new)
        self.db.commit()
        self.db.close()


def hash_cache_path() -> Path:
    """Where :class:`HashCache` lives: ``$MAIVAR_CACHE_DIR``, else ``$XDG_CACHE_HOME/maivar``, else
    ``~/.cache/maivar`` (one file for every project: its keys are absolute paths)."""
    base = os.environ.get("MAIVAR_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "maivar")
    Path(base).mkdir(parents=True, exist_ok=True)
    return Path(base) / "file-hashes.sqlite"


def _file_facts(clip: ListedClip, cache: HashCache) -> dict:
    """What the listing records of a clip's file, without opening anything that is refused or not a file."""
    if clip.refusal:
        return {"refused": clip.refusal[0]}
    try:
        st = os.stat(clip.path)
    except FileNotFoundError:
        return {"missing": True}
    except OSError as exc:
        return {"unreadable": exc.strerror or type(exc).__name__}
    if not stat.S_ISREG(st.st_mode):
        return {"not_a_regular_file": True}  # a FIFO or a device: never opened (prepare refuses it, unopened)
    return {"size": st.st_size, "sha256": cache.sha256(clip.path, st)}


def _shown(path: str, base: str) -> str:
    """``path`` relative to ``dataset.root`` (``base``: its absolute path with a trailing separator; links not
    resolved), so that the listing is the same wherever the dataset lies; a refused path outside it as it is."""
    full = os.path.abspath(path)
    return full[len(base):] if full.startswith(base) else path


def listing_lines(dataset, classes_spec, cache: HashCache) -> Iterator[str]:
    """The listing file's lines (see the module docstring)."""
    from tqdm import tqdm

    listing = read_listing(dataset)
    selected = select_classes(classes_spec, listing.classes)
    chosen = set(selected)
    base = os.path.join(os.path.abspath(dataset.root), "")
    clips = sorted([c for c in listing.clips if c.class_name in chosen] + list(listing.unknown), key=lambda c: c.id)
    yield json.dumps(header(dataset, classes_spec, listing.classes, selected), sort_keys=True)
    for clip in tqdm(clips, desc="listing", unit="file", disable=len(clips) < 1000):
        row = {"id": clip.id, "class": clip.class_name, "split": clip.split, "path": _shown(clip.path, base),
               "start_s": clip.start_s, "end_s": clip.end_s, **_file_facts(clip, cache)}
        yield json.dumps(row, sort_keys=True, ensure_ascii=False)


def write_listing(out: str | Path, dataset, classes_spec) -> bool:
    """Stage listing: write the listing file at ``out``; returns whether its bytes changed. A ``dataset.root``
    that does not exist here keeps a listing made for the same settings (pulled with a run), and says so."""
    out = Path(out)
    if not Path(dataset.root).is_dir():
        old = read_header(out)
        if old and old["dataset"] == dataset.as_dict() and old["prepare.classes"] == classes_spec:
            log.warning("dataset root %s is not on this machine: keeping %s, listed where it is", dataset.root, out)
            return False
        raise PipelineError(f"dataset root {dataset.root} does not exist: set dataset.root in params.yaml to your "
                            "dataset's folder, or run the synthesize stage")
    out.parent.mkdir(parents=True, exist_ok=True)
    cache = HashCache(hash_cache_path(), os.path.join(os.path.abspath(dataset.root), ""))
    try:
        with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
            for line in listing_lines(dataset, classes_spec, cache):
                f.write(line + "\n")
            f.flush()
            changed = not out.is_file() or not _same_file(tmp, out)
    finally:
        cache.close()
    log.info("listed %s: %d files read, %d unchanged since they were last read; listing %s", dataset.root,
             cache.read, cache.hits, "changed" if changed else "unchanged")
    return changed


def _same_file(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(BLOCK), fb.read(BLOCK)
            if x != y:
                return False
            if not x:
                return True
