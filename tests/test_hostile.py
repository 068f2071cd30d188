"""Hostile and careless input (issue 18): labels are data, one containment rule, predict's paths, no mix of runs.

docs/FAULTS.md, "Hostile and careless input", names the test of each case. The stage runs are in-process on a
csv dataset of 1-s MP4s whose labels hold every character a label should not be trusted with; conftest's
sentinel check runs after each of them (every escape below aims at conftest.SENTINEL).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_datasets import manifest_rows, read_listing, rejections, run_pipeline

from maivar.audio.render import preview_name
from maivar.core import rejections as R
from maivar.core.dvc_cmd import dvc_argv
from maivar.core.names import ID_MAX_BYTES, local_path, safe_name, short_id
from maivar.data.csv_annotations import clip_id
from maivar.data.media import demux_audio, probe_video
from maivar.evaluation import confusion_csv
from maivar.predict.engine import Prediction
from maivar.predict.output import expand_paths, format_csv, format_json, format_table

from conftest import SENTINEL
from stage_cmd import run_stage_in_process, stage_path

PWN = "document.documentElement.setAttribute('data-pwned','1')"
HOSTILE = [  # one class each; every one must stay data
    f"../../../../../../../../..{SENTINEL}/escaped",
    "a/b", "..", '"><img src=x onerror="' + PWN + '">', f"<script>{PWN}</script>", "it's & <b>bold</b>",
    "<!--<script>", "nul\x00byte", "two\nlines", "L" * 300, "\u05e9\u05dc\u05d5\u05dd \u202eevil", "\U0001f3b8 rock",
    "line\u2028sep", "plain-Label_1",
]
# the report's six classes get these (every hostile kind, some combined)
BROWSER = [HOSTILE[3], HOSTILE[4], HOSTILE[6], HOSTILE[5] + HOSTILE[12], HOSTILE[7] + HOSTILE[8],
           HOSTILE[10] + HOSTILE[11] + HOSTILE[0]]


def test_safe_names_are_plain_distinct_and_keep_plain_labels():
    names = [safe_name(label, forbid=("__",)) for label in HOSTILE]
    assert len(set(names)) == len(HOSTILE)
    for label, name in zip(HOSTILE, names, strict=True):
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) and "__" not in name and len(name) <= 120, name
        assert name == safe_name(label, forbid=("__",))  # deterministic
    assert safe_name("ApplyEyeMakeup") == "ApplyEyeMakeup" and names[-1] == "plain-Label_1"
    assert safe_name("x--0123456789ab") != "x--0123456789ab"  # only hashed names hold "--": no plain name collides
    assert preview_name("ApplyEyeMakeup", "v_ApplyEyeMakeup_g08_c01") == "ApplyEyeMakeup__v_ApplyEyeMakeup_g08_c01.png"
    long = ["é" * 200 + str(k) for k in range(3)]
    ids = [short_id(i) for i in long]
    assert len(set(ids)) == 3 and all(len(i.encode()) <= ID_MAX_BYTES for i in ids) and ids == list(map(short_id, long))
    assert short_id("../x") == safe_name("../x") and short_id("ok_id") == "ok_id"
    assert local_path("file:x.mp4") == "./file:x.mp4" and local_path("data/a:b.mp4") == "data/a:b.mp4"
    assert confusion_csv(["a"], [0], [0], [HOSTILE[3]]).splitlines()[1] == f"a,{safe_name(HOSTILE[3])}," \
                                                                           f"{safe_name(HOSTILE[3])}"


# ------------------------------------------------------------------------------------------ stages, hostile csv
@pytest.fixture(scope="module")
def hostile_csv(csv_example, tiny_dataset, tmp_path_factory) -> tuple[Path, dict]:
    """A csv dataset: one train clip per hostile label, and the rows each containment rule refuses."""
    from dataset_examples import LABELS, tiny_clips

    src_root, _ = csv_example
    tiny_root, summary = tiny_dataset
    by_class: dict[str, list] = {}
    for v in tiny_clips(tiny_root):
        by_class.setdefault(v.class_name, []).append(v)
    mp4s = [src_root / "clips" / LABELS[c].split()[0] / f"{n:02d}.mp4" for c, videos in sorted(by_class.items())
            if c not in summary["classes_without_audio"] for n, v in enumerate(videos)
            if v.id not in summary["silent_clips"]][:len(HOSTILE)]  # make_csv's names of clips with sound
    base = tmp_path_factory.mktemp("hostile")
    root = base / "root"
    rows = []
    for k, (label, mp4) in enumerate(zip(HOSTILE, mp4s, strict=True)):
        name = "new\nline.mp4" if k == 0 else "L" * 240 + ".mp4" if k == 1 else f"c{k}.mp4"
        (root / "v").mkdir(parents=True, exist_ok=True)
        shutil.copy(mp4, root / "v" / name)
        rows.append({"path": f"v/{name}", "label": label, "split": "train"})
    outside = base / "outside.mp4"
    shutil.copy(mp4s[0], outside)
    (root / "v" / "link.mp4").symlink_to(outside)
    keep = HOSTILE[-1]
    rows += [{"path": "v/link.mp4", "label": keep, "split": "train"},  # a link out of the root
             {"path": "../outside.mp4", "label": keep, "split": "train"},
             {"path": str(outside), "label": keep, "split": "train"},
             {"path": "v/c5.mp4", "label": keep, "split": "train", "start_s": "0", "end_s": "1e308"},
             {"path": "v/c5.mp4", "label": keep, "split": "train", "start_s": "nan", "end_s": "1"},
             {"path": "v/c5.mp4", "label": keep, "split": "train", "start_s": "0.8", "end_s": "0.2"}]
    with open(root / "ann.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, ["path", "label", "split", "start_s", "end_s"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return root, {"outside": [clip_id(r["path"], None, None) for r in rows[-6:-3]],
                  "windows": [clip_id(r["path"], float(r["start_s"]), float(r["end_s"])) for r in rows[-3:]]}


@pytest.fixture(scope="module")
def hostile_work(hostile_csv, tmp_path_factory) -> Path:
    """prepare and render on :func:`hostile_csv` (asserting both exit 0)."""
    root, _ = hostile_csv
    tmp = tmp_path_factory.mktemp("hostile-run")
    run_pipeline(tmp / "work", {"format": "csv", "root": str(root), "annotations": "ann.csv"}, tmp,
                 stages=("prepare", "render"), classes="all", max_rejected_share=0.9, min_class_audio_share=0.1)
    return tmp / "work"


def test_hostile_labels_stay_data_through_prepare_and_render(hostile_work):
    rows = manifest_rows(hostile_work)
    assert sorted(r["class_name"] for r in rows.values()) == sorted(HOSTILE)  # every label kept as written
    wavs = {p.name for p in (hostile_work / stage_path("prepare", "audio")).iterdir()}
    assert wavs == {f"{i}.wav" for i in rows} and all(len(w.encode()) < 255 for w in wavs)
    previews = sorted(p.name for p in (hostile_work / stage_path("render", "previews")).iterdir())
    assert previews == sorted(preview_name(r["class_name"], i) for i, r in rows.items())
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*\.png", p) for p in previews)
    assert {p.name for p in hostile_work.iterdir()} == {"params.yaml", "data", "metrics"}
    assert not any(SENTINEL.iterdir())  # (conftest checks it after every test that ran a stage, too)


def test_containment_windows_long_ids_and_quoted_newlines(hostile_work, hostile_csv):
    _, facts = hostile_csv
    reasons = rejections(hostile_work)
    for clip in facts["outside"]:
        assert reasons[clip] == R.OUTSIDE_ROOT, (clip, reasons)
    for clip in facts["windows"]:
        assert reasons[clip] == R.BAD_WINDOW, (clip, reasons)
    rows = manifest_rows(hostile_work)
    newline = next(r for r in rows.values() if r["class_name"] == HOSTILE[0])
    assert newline["video_path"].endswith("v/new\nline.mp4")  # the quoted newline is kept: a kept clip
    long = next(i for i, r in rows.items() if r["class_name"] == HOSTILE[1])
    assert len(long.encode()) <= ID_MAX_BYTES and long.startswith("v__LLL")


def test_ucf101_class_folder_or_video_linked_outside_the_root_is_outside_root(tiny_copy, tmp_path):
    root, summary = tiny_copy
    cls = summary["classes"][0]
    away = tmp_path / "away"
    shutil.move(root / "UCF-101" / cls, away)
    (root / "UCF-101" / cls).symlink_to(away, target_is_directory=True)
    other = next((root / "UCF-101" / summary["classes"][1]).iterdir())
    moved = tmp_path / other.name
    shutil.move(other, moved)
    other.symlink_to(moved)
    listing = read_listing(root)
    refused = {c.id: c.refusal[0] for c in listing.clips if c.refusal}
    assert refused == {c.id: R.OUTSIDE_ROOT for c in listing.clips if c.class_name == cls or c.id == other.stem}


def test_a_file_named_like_a_url_is_opened_as_a_file(csv_example, tmp_path, monkeypatch):
    """``file:a.mp4`` is the file of that name, never the protocol ``file`` reading ``a.mp4`` (here: garbage)."""
    src = next((csv_example[0] / "clips").rglob("*.mp4"))
    monkeypatch.chdir(tmp_path)
    shutil.copy(src, "file:a.mp4")
    Path("a.mp4").write_bytes(b"\x00" * 4096)
    probe = probe_video("file:a.mp4")
    assert probe.has_audio and probe.decoded_frames == probe.frames > 0
    level = demux_audio("file:a.mp4", "concat:out.wav", sample_rate=16000, channels=1, timeout_s=60)
    assert level.samples > 0 and Path("concat:out.wav").is_file()


def test_render_crash_between_its_outputs_leaves_the_previous_run(hostile_work, monkeypatch):
    """images.h5 and the previews are renamed only after both are complete: a crash while writing the previews
    leaves the previous run's two outputs (not a new images.h5 beside old previews)."""
    import maivar.audio.render as render

    images, previews = hostile_work / stage_path("render", "images"), hostile_work / stage_path("render", "previews")
    before = images.read_bytes(), sorted(p.name for p in previews.iterdir())
    params = yaml.safe_load((hostile_work / "params.yaml").read_text())
    params["render"]["image_size"] = 24  # a different run: a new images.h5 would differ
    (hostile_work / "params.yaml").write_text(yaml.safe_dump(params))
    written = []

    def crash(kept, folder, per_class):
        written.append(folder)
        raise OSError("disk full while writing the previews")

    monkeypatch.setattr(render, "write_previews", crash)
    try:
        with pytest.raises(OSError, match="disk full"):  # an unexpected error: run_stage lets its traceback through
            run_stage_in_process("render", hostile_work)
        assert written
    finally:
        params["render"]["image_size"] = 32
        (hostile_work / "params.yaml").write_text(yaml.safe_dump(params))
    assert (images.read_bytes(), sorted(p.name for p in previews.iterdir())) == before
    assert not [p for p in images.parent.iterdir() if ".tmp-" in p.name]


# ---------------------------------------------------------------------------------------------------- predict
def test_predict_paths_deduplicated_fifo_refused_non_utf8_shown(tmp_path, monkeypatch):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    for k in range(3):
        (tmp_path / f"link{k}.mp4").symlink_to(video)
    os.mkfifo(tmp_path / "pipe.mp4")
    weird = os.fsdecode(bytes(tmp_path) + b"/caf\xe9.mp4")
    with open(os.fsencode(weird), "wb") as fh:
        fh.write(b"x")
    url = tmp_path / "file:u.mp4"
    url.write_bytes(b"y")
    videos, problems = expand_paths([str(video), *(str(tmp_path / f"link{k}.mp4") for k in range(3)),
                                     str(tmp_path / "pipe.mp4"), "/dev/zero", weird, str(tmp_path)])
    assert videos == [str(video), weird, str(url)]  # each file once, links resolved; the folder adds file:u.mp4
    assert [p.path for p in problems] == [str(tmp_path / "pipe.mp4"), "/dev/zero", str(tmp_path / "pipe.mp4")]
    assert all(p.error.startswith(R.NOT_A_REGULAR_FILE) for p in problems)
    monkeypatch.chdir(tmp_path)
    assert expand_paths(["file:u.mp4"]) == (["./file:u.mp4"], [])  # a file, never the protocol "file"
    failed = Prediction(weird, error=f"missing_file: {weird} is gone")
    shown = json.loads(format_json([failed], 1, ["a"]))[0]
    assert shown["path"].endswith("caf\\xe9.mp4") and shown["error"].endswith("caf\\xe9.mp4 is gone")
    for text in (format_csv([failed], 1, ["a"]), format_table(failed, 1, ["a"])):
        assert "caf\\xe9.mp4" in text and text.encode("utf-8")  # printable, the raw byte visible


def test_dvc_is_reached_through_the_running_interpreter(monkeypatch):
    assert dvc_argv("exp", "show")[:3] == [sys.executable, "-m", "dvc"]
    import importlib.util

    from maivar.core.errors import PipelineError

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PipelineError, match="DVC is not installed for"):
        dvc_argv("exp", "show")


def test_table2_runs_with_a_venv_that_is_not_activated(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env.update(PATH="/usr/bin:/bin", PYTHONPATH=str(Path(__file__).resolve().parents[1]), DVC_NO_ANALYTICS="1")
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "scripts/table2.py")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert "FileNotFoundError" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode != 0 and proc.stderr.strip().count("\n") == 0  # one line: not a DVC repository here


# ------------------------------------------------------------------------------------- in a real browser
def _hostile_predictions(text: str) -> tuple[str, dict[str, str]]:
    """metrics/predictions.csv with each class renamed to a hostile label; the renaming."""
    rows = list(csv.DictReader(io.StringIO(text)))
    classes = sorted({r["label"] for r in rows})
    rename = dict(zip(classes, BROWSER, strict=True))
    out = io.StringIO()
    writer = csv.DictWriter(out, list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: rename.get(v, v) if k == "label" or k.endswith("_pred") else v for k, v in r.items()})
    return out.getvalue(), rename


def _pwned(dom: str) -> bool:
    return bool(re.search(r"<html[^>]*data-pwned", dom))


def test_hostile_labels_in_the_report_and_dvc_plots_show_run_no_script_and_draw_every_plot(tmp_path):
    from PIL import Image
    from test_report import _chromium, _drawn, _errors, _render, _report_root

    _chromium()
    from maivar.report import write_report

    # maivar report: labels in the summary, the confusion matrices' Vega data, the tables and preview titles
    root = _report_root(tmp_path)
    text, rename = _hostile_predictions((root / "metrics/predictions.csv").read_text())
    (root / "metrics/predictions.csv").write_text(text)
    previews = root / "data/audio_images/previews"
    shutil.rmtree(previews)
    previews.mkdir()
    for k, label in enumerate(rename.values()):
        Image.new("RGB", (32, 32), (40 * k % 256, 90, 30)).save(previews / preview_name(label, f"<b>clip{k}"))
    write_report(root, out=root / "report/index.html")
    dom = _render(root / "report/index.html", tmp_path)
    ids = re.findall(r'<div class="plot[^"]*" id="(plot\d+)"', dom)
    assert _errors(dom) == [] and not _pwned(dom) and re.search(r'<body[^>]*data-plots="drawn"', dom)
    assert len(ids) == 6 and all(_drawn(dom, ids).values())
    assert "&lt;!--&lt;script&gt;" in dom and dom.count('<img src="data:image/png;base64,') == len(rename)

    # dvc plots show: the previews (render's plots output) and the confusion rows, as the stages name them
    from stage_cmd import scratch_repository

    y = [0, 1, 2, 3]
    confusion = confusion_csv([f"c{k}" for k in y], y, [1, 1, 2, 0], list(rename.values())[:4])
    repo, env = scratch_repository(tmp_path / "dvc-repo", {"metrics/confusion.csv": confusion})
    (repo / "dvc.lock").unlink()  # the workspace's previews, not those the lock records (absent from this cache)
    shutil.rmtree(repo / "data/audio_images/previews", ignore_errors=True)
    shutil.copytree(previews, repo / "data/audio_images/previews")
    proc = subprocess.run(dvc_argv("plots", "show", "-o", "out"), cwd=repo, env=env, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = (repo / "out/index.html").read_text(encoding="utf8")
    assert all(preview_name(label, f"<b>clip{k}") in page for k, label in enumerate(rename.values()))
    dom = _render(repo / "out/index.html", tmp_path)
    plots = re.findall(r"vegaEmbed\('#([^']+)'", page)
    assert [e for e in _errors(dom) if not e.startswith("warn: ")] == [] and not _pwned(dom)
    assert all(_drawn(dom, plots).values()) and dom.count("<img") >= len(rename)
