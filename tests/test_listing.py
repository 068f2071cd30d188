"""Stage listing (maivar/data/listed_files.py): the dataset as its annotations list it, the file prepare and
extract_video depend on in place of dataset.root. (DVC-level: tests/test_datasets.py's exp run on a csv dataset.)"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from maivar.core.errors import PipelineError
from maivar.data.listed_files import write_listing
from maivar.settings.data import DatasetSettings

LISTING = "data/listing.jsonl"


def settings(root: Path) -> DatasetSettings:
    return DatasetSettings.from_mapping({"format": "ucf101", "root": str(root), "split": 1, "annotations": None})


def rows(path: Path) -> tuple[dict, dict[str, dict]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return lines[0], {r["id"]: r for r in lines[1:]}


def test_only_listed_files_of_selected_classes_are_read_and_a_changed_one_changes_the_listing(tiny_copy, tmp_path,
                                                                                               caplog):
    root, _ = tiny_copy
    videos = root / "UCF-101"
    # never listed: a FIFO (opening it would wait forever), a big sparse file, a folder of other files
    os.mkfifo(videos / "unlisted.fifo")
    with open(videos / "archive.bin", "wb") as f:
        f.truncate(1 << 34)  # 16 GiB, sparse
    out = tmp_path / LISTING
    caplog.set_level(logging.INFO)
    assert write_listing(out, settings(root), "all") is True
    head, listed = rows(out)
    classes = head["classes"]
    assert head["format"] == "maivar-listing/1" and head["selected"] == classes
    files = {r["path"] for r in listed.values()}
    assert all(p.startswith("UCF-101/") and "unlisted" not in p and "archive" not in p for p in files)
    first = listed[sorted(listed)[0]]
    video = root / first["path"]
    assert first["size"] == video.stat().st_size and len(first["sha256"]) == 64
    assert "0 unchanged" in caplog.text

    # nothing changed: no file read again, the same bytes
    before = out.read_bytes()
    caplog.clear()
    assert write_listing(out, settings(root), "all") is False
    assert out.read_bytes() == before and f"0 files read, {len(listed)} unchanged" in caplog.text

    # a listed file edited in place, its mtime put back: read again (its ctime moved), the listing changes
    st = video.stat()
    data = bytearray(video.read_bytes())
    data[-1] ^= 0xFF
    video.write_bytes(bytes(data))
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns))
    caplog.clear()
    assert write_listing(out, settings(root), "all") is True
    assert rows(out)[1][first["id"]]["sha256"] != first["sha256"] and "1 files read" in caplog.text

    # a copy of the dataset (new mtimes, inodes) lists the same, byte for byte
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("unlisted.fifo", "archive.bin"))
    again = tmp_path / "again" / LISTING
    write_listing(again, settings(copy), "all")
    assert rows(again)[1] == rows(out)[1]

    # two classes selected: only their files are listed
    some = classes[:2]
    write_listing(out, settings(root), list(some))
    head, listed = rows(out)
    assert head["selected"] == some and {r["class"] for r in listed.values()} == set(some)


def test_refused_and_special_files_are_listed_unopened_and_an_absent_root_keeps_a_matching_listing(tiny_copy,
                                                                                                tmp_path, caplog):
    root, _ = tiny_copy
    videos = sorted((root / "UCF-101").rglob("*.avi"))
    videos[0].unlink()
    videos[1].unlink()
    os.mkfifo(videos[1])  # listed, but a FIFO: never opened (prepare refuses it, unopened)
    out = tmp_path / LISTING
    write_listing(out, settings(root), "all")
    _, listed = rows(out)
    by_path = {r["path"]: r for r in listed.values()}
    rel = [str(v.relative_to(root)) for v in videos[:2]]
    assert by_path[rel[0]]["missing"] is True and "sha256" not in by_path[rel[0]]
    assert by_path[rel[1]]["not_a_regular_file"] is True and "sha256" not in by_path[rel[1]]

    # a laptop that pulled the run: dataset.root is not there; the listing made for the same settings is kept
    moved = tmp_path / "elsewhere"
    root.rename(moved)
    before = out.read_bytes()
    caplog.set_level(logging.WARNING)
    assert write_listing(out, settings(root), "all") is False
    assert out.read_bytes() == before and "is not on this machine: keeping" in caplog.text
    with pytest.raises(PipelineError, match="dataset root .* does not exist"):
        write_listing(out, settings(root), ["Synth01RingC"])  # other settings: nothing to keep
