"""Any dataset, any container (issue 12): the csv, kinetics and ucf101 readers, their one-line errors, and the
whole pipeline on an example of each format (tests/dataset_examples.py), through the same stage code."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import yaml

from maivar.core import rejections as R
from maivar.core.errors import PipelineError
from maivar.data import readers
from maivar.data.listing import PRESETS, read_class_list, select_classes
from maivar.settings.base import SettingsError
from maivar.settings.data import DatasetSettings

from conftest import REPO
from stage_cmd import run_stage_in_process, stage_path


def read_listing(root: Path, **dataset):
    """The listing of ``root`` through the READERS table, ``dataset`` (``format``, ``annotations``, ``split``)
    checked as params.yaml's ``dataset`` section is."""
    values = {"format": "ucf101", "root": str(root), "split": 1, "annotations": None, **dataset}
    return readers.read_listing(DatasetSettings.from_mapping(values))


# ------------------------------------------------------------------------------------------------ csv format


def write_csv(root: Path, text: str, files=()) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    (root / "ann.csv").write_text(text)
    return root


GOOD = """path,label,split,start_s,end_s,notes
walks/a.mp4,walk,train,,,first
walks/b c.mkv,walk,test,,,
long/day.mp4,run,train,1.5,4,a window
long/day.mp4,run,train,4,9.25,another window of the same video
long/day.mp4,run,test,,,the whole video
"""


def test_csv_listing_ids_windows_classes_and_paths(tmp_path):
    root = write_csv(tmp_path / "data", GOOD)
    listing = read_listing(root, format="csv", annotations="ann.csv")
    assert listing.classes == ["run", "walk"]  # sorted: label 0 is "run"
    assert [(c.id, c.class_name, c.split, c.start_s, c.end_s) for c in listing.clips] == [
        ("walks__a", "walk", "train", None, None),
        ("walks__b_c", "walk", "test", None, None),
        ("long__day_1500_4000", "run", "train", 1.5, 4.0),
        ("long__day_4000_9250", "run", "train", 4.0, 9.25),
        ("long__day", "run", "test", None, None),
    ]
    assert listing.clips[1].path == str(root / "walks/b c.mkv") and listing.clips[0].source == "ann.csv:2"


@pytest.mark.parametrize("text,message", [
    ("path,label\na.mp4,walk\n", "ann.csv line 1: the header lacks split"),
    ("path,label,split\na.mp4,walk\n", "ann.csv:2: 2 fields, the header has 3"),
    ("path,label,split\na.mp4,,train\n", "ann.csv:2: the label is empty"),
    ("path,label,split\na.mp4,walk,\n", "ann.csv:2: split must be train or test, got ''"),
    ("path,label,split\na.mp4,walk,validation\n", "ann.csv:2: split must be train or test, got 'validation'"),
    ("path,label,split\na.mp4,walk,train\nb.mp4,walk,train\na.mp4,walk,test\n",
     "ann.csv:4: lists the same clip again (first at ann.csv:2)"),
    ("path,label,split\na.mp4,walk,train\na.mkv,walk,train\n",
     "ann.csv:3: gives clip id 'a' again (first at ann.csv:2)"),
    ("path,label,split,start_s,end_s\na.mp4,walk,train,2,\n", "ann.csv:2: give both start_s and end_s, or neither"),
    ("path,label,split,start_s,end_s\na.mp4,walk,train,two,3\n", "ann.csv:2: start_s 'two' is not a number"),
    ("path,label,split\na.mp4,walk,train\nb.mp4,wlak,test\n",
     "ann.csv:3: class 'wlak' has test clips but no train clip: an unknown class"),
    ("path,label,split\n", "lists no clips"),
])
def test_csv_bad_annotations_are_one_line_errors_naming_file_and_line(tmp_path, text, message):
    root = write_csv(tmp_path / "data", text)
    with pytest.raises(PipelineError) as exc:
        read_listing(root, format="csv", annotations="ann.csv")
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_dataset_settings_errors(tmp_path):
    root = write_csv(tmp_path / "data", GOOD)
    (tmp_path / "elsewhere.csv").write_text(GOOD)
    with pytest.raises(SettingsError, match='dataset.format: "imagenet" is not allowed \\(one of "ucf101", "csv", '
                       '"kinetics"\\)'):
        read_listing(root, format="imagenet")
    cases = [
        (dict(format="csv"), "dataset.format csv needs dataset.annotations"),
        (dict(format="csv", annotations="../elsewhere.csv"), "is outside dataset.root"),
        (dict(format="csv", annotations="nope.csv"), "does not exist: fix dataset.annotations"),
        (dict(format="csv", annotations=["ann.csv", "ann.csv"]), "must name one CSV file"),
        (dict(format="ucf101"), "UCF-101 does not exist"),
    ]
    for kwargs, message in cases:
        with pytest.raises(PipelineError, match=message.replace("(", r"\(").replace(")", r"\)")):
            read_listing(root, **kwargs)
    with pytest.raises(PipelineError, match="dataset root .* does not exist"):
        read_listing(tmp_path / "absent", format="csv", annotations="ann.csv")


# -------------------------------------------------------------------------------------- the READERS table

DATA_MODULES = ("maivar.data.listing", "maivar.data.ucf101", "maivar.data.csv_annotations", "maivar.data.kinetics",
                "maivar.data.readers", "maivar.data.subset", "maivar.settings.data")


def test_one_reader_per_format_with_one_signature():
    import inspect

    from maivar.settings.base import Choice

    assert list(readers.READERS) == ["ucf101", "csv", "kinetics"]
    check = next(f for f in dataclasses.fields(DatasetSettings) if f.name == "format").metadata["check"]
    assert isinstance(check, Choice) and check.choices == tuple(readers.READERS)  # the formats are the table's keys
    for reader in readers.READERS.values():
        assert list(inspect.signature(reader).parameters) == ["root", "settings"], reader.__module__


def test_readers_import_only_the_listing_and_nothing_circles():
    """listing imports no reader, each reader imports only listing of maivar.data, and the import graph of
    maivar.data, maivar.settings and maivar.synthetic (lazy imports in functions included) has no cycle."""
    from test_architecture import find_circle, import_graph

    graph = {m: deps for m, deps in import_graph().items()
             if m.startswith(("maivar.data.", "maivar.settings.")) or m == "maivar.synthetic"}
    data = {m for m in graph if m.startswith("maivar.data.")}
    assert not graph["maivar.data.listing"] & data
    for reader in readers.READERS.values():
        assert graph[reader.__module__] & data == {"maivar.data.listing"}, reader.__module__
    assert find_circle(graph) is None


@pytest.mark.parametrize("module", DATA_MODULES)
def test_each_data_module_imports_alone(module):
    """Each module imported first, alone, in a fresh interpreter (a circle would fail one of them)."""
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]


# ------------------------------------------------------------------------------------------- kinetics format

K_HEADER = "label,youtube_id,time_start,time_end,split,is_cc\n"


def test_kinetics_listing_finds_downloaded_clips_in_either_layout(tmp_path):
    files = ["train/playing_drums/abc_000010_000020.mp4", "val/x-Y_000000_000010.webm",
             "train/tap dancing/q_000005_000015.mkv"]
    root = write_csv(tmp_path / "k", "", files)
    (root / "train.csv").write_text(K_HEADER + "playing drums,abc,10,20,train,0\ntap dancing,q,5,15,train,1\n")
    (root / "val.csv").write_text(K_HEADER + "playing drums,x-Y,0,10,val,0\ntap dancing,gone,0,10,validate,0\n")
    listing = read_listing(root, format="kinetics", annotations=["train.csv", "val.csv"])
    assert listing.classes == ["playing drums", "tap dancing"]
    assert [(c.id, c.split, Path(c.path).name) for c in listing.clips] == [
        ("abc_000010_000020", "train", "abc_000010_000020.mp4"), ("q_000005_000015", "train", "q_000005_000015.mkv"),
        ("x-Y_000000_000010", "test", "x-Y_000000_000010.webm"), ("gone_000000_000010", "test", "gone_000000_000010.*"),
    ]  # the last one was never downloaded: prepare records it as missing_file


@pytest.mark.parametrize("rows,message", [
    ("playing drums,abc,10,20,train,0\n,def,0,10,val,0\n", "val.csv:3: the label is empty"),
    ("playing drums,abc,10,20,train,0\nplaying drums,def,0,10,holdout,0\n", "val.csv:3: split must be one of"),
    ("playing drums,abc,10,20,train,0\nplaying drums,abc,10,20,val,0\n", "val.csv:3: lists the same clip again"),
    ("playing drums,abc,10.5,20,train,0\n", "val.csv:2: time_start '10.5' must be a whole number"),
    ("playing drums,abc,20,10,train,0\n", "val.csv:2: time_start 20 must be less than time_end 10"),
    ("playing drums,dup,0,10,train,0\n", "val.csv:2: 2 files for clip dup_000000_000010"),
    ("\n", "val.csv list no clips"),
])
def test_kinetics_bad_rows_are_one_line_errors(tmp_path, rows, message):
    root = write_csv(tmp_path / "k", "", ["a/dup_000000_000010.mp4", "b/dup_000000_000010.mkv"])
    (root / "val.csv").write_text(K_HEADER + rows)
    with pytest.raises(PipelineError) as exc:
        read_listing(root, format="kinetics", annotations="val.csv")
    assert message in str(exc.value)


def test_kinetics_sounds_preset_against_kinetics_400_labels():
    """The preset's 34 classes (Arandjelovic & Zisserman 2017) written with Kinetics-400's labels: 31 are
    Kinetics-400 labels, and 3 (typing, fingerpicking, patting) are not, so on Kinetics-400 it selects 31."""
    from torchvision.models._meta import _KINETICS400_CATEGORIES as K400

    preset = read_class_list(PRESETS["kinetics_sounds"])
    assert len(preset) == len(set(preset)) == 34
    assert sorted(c for c in preset if c not in K400) == ["fingerpicking", "patting", "typing"]
    assert len(select_classes("kinetics_sounds", list(K400))) == 31
    assert {"blowing out candles", "dribbling basketball", "mowing lawn", "stomping grapes"} <= set(preset)


# ---------------------------------------------------------------------------------- the pipeline, each format

STAGES = ("prepare", "render", "extract_audio", "extract_video", "train_audio", "train_video", "train_fusion",
          "evaluate")
FAST = {"hidden": [16], "dropout": 0.1, "epochs": 3, "lr": 1.0e-3, "batch_size": 8}


def run_pipeline(work: Path, dataset: dict, tmp_path: Path, stages=STAGES, **prepare) -> None:
    """Every stage after synthesize, in this process, on tiny models, with ``dataset`` as params.yaml's section."""
    from test_backbones import write_tiny_tsn

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["dataset"] = {**params["dataset"], **dataset}
    params["prepare"].update(timeout_s=60, **prepare)
    params["render"].update(image_size=32, sample_rate=16000, previews_per_class=1)
    params["extract_audio"].update(backbone="resnet18", input_size=32)
    params["extract_video"].update(config=str(write_tiny_tsn(tmp_path / "tsn.py")), num_segments=3, timeout_s=60)
    params["runtime"].update(workers=2, device="cpu")
    params["runtime"]["extract_audio"]["batch_size"] = 8
    params["runtime"]["extract_video"]["batch_videos"] = 4
    for head in ("audio_mlp", "video_mlp"):
        params[head].update(FAST)
    params["fusion_mlp"].update(epochs=3, batch_size=8)
    work.mkdir(parents=True, exist_ok=True)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    for stage in stages:
        assert run_stage_in_process(stage, work) == 0, stage


def manifest_rows(work: Path) -> dict[str, dict]:
    with open(work / stage_path("prepare", "manifest")) as fh:
        return {row["id"]: row for row in csv.DictReader(fh)}


def rejections(work: Path) -> dict[str, str]:
    with open(work / stage_path("prepare", "rejections")) as fh:
        return {row["id"]: row["reason"] for row in csv.DictReader(fh)}


def store_ids(work: Path, stage: str, option: str) -> list[str]:
    with h5py.File(work / stage_path(stage, option), "r") as h5:
        return [s.decode() for s in h5["ids"][()]]


def assert_every_kept_clip_reaches_all_three_stores(work: Path) -> None:
    kept = sorted(manifest_rows(work))
    for stage, option in (("render", "images"), ("extract_audio", "features"), ("extract_video", "features")):
        assert store_ids(work, stage, option) == kept, stage
    metrics = json.loads((work / stage_path("evaluate", "metrics")).read_text())
    assert metrics["test_clips"] > 0 and 0 <= metrics["fusion"]["top1"] <= 100


def test_csv_dataset_of_mp4_files_runs_the_whole_pipeline(csv_example, tmp_path):
    root, facts = csv_example
    work = tmp_path / "work"
    run_pipeline(work, {"format": "csv", "root": str(root), "annotations": "annotations.csv"}, tmp_path)
    rows, rejected = manifest_rows(work), rejections(work)
    assert len(rows) + len(rejected) == facts["rows"]
    first, second = (rows[i] for i in facts["windows"])  # two windows of one 2-s video
    assert (first["start_s"], first["end_s"], second["start_s"], second["end_s"]) == ("0.0", "1.0", "1.0", "2.0")
    assert first["frames"] == second["frames"] == "10" and first["video_path"] == second["video_path"]
    assert float(first["audio_coverage"]) == pytest.approx(1.0, abs=0.05)
    assert rejected[facts["short_sound"]] == R.AUDIO_TOO_SHORT  # sound that stops early: never "truncated"
    assert rejected[facts["missing"]] == R.MISSING_FILE
    assert {rows[i]["class_name"] for i in rows} == {"ringing bell", "sliding door", "tap dancing"}
    assert_every_kept_clip_reaches_all_three_stores(work)
    with h5py.File(work / stage_path("extract_video", "features"), "r") as h5:
        feats = {i.decode(): k for k, i in enumerate(h5["ids"][()])}
        a, b = (h5["features"][feats[i]] for i in facts["windows"])
    assert not (a == b).all()  # each window sampled its own frames


def test_ucf101_layout_with_mp4_mkv_webm_runs_the_whole_pipeline(ucf101_mixed_example, tmp_path):
    root, facts = ucf101_mixed_example
    work = tmp_path / "work"
    run_pipeline(work, {"format": "ucf101", "root": str(root)}, tmp_path)
    rows, rejected = manifest_rows(work), rejections(work)
    assert {Path(r["video_path"]).suffix for r in rows.values()} == {".mp4", ".mkv", ".webm"}
    for clip_id, reason in facts["broken"].items():
        assert rejected[clip_id] == reason
    # every clip of the classes with audio reached the manifest but the silent one and the broken ones
    usable = {i for i, ext in facts["containers"].items() if "Mute" not in i and i != "v_Synth03HorizontalDs_g04_c01"}
    assert set(rows) == usable
    assert_every_kept_clip_reaches_all_three_stores(work)


def test_kinetics_layout_runs_prepare_with_the_kinetics_sounds_preset(kinetics_example, tmp_path):
    root, facts = kinetics_example
    work = tmp_path / "work"
    run_pipeline(work, {"format": "kinetics", "root": str(root),
                        "annotations": ["kinetics_train.csv", "kinetics_val.csv"]}, tmp_path, stages=("prepare",),
                 classes="kinetics_sounds")
    rows, rejected = manifest_rows(work), rejections(work)
    labels = {r["class_name"]: int(r["label"]) for r in rows.values()}
    assert labels == {"playing bagpipes": 0, "playing drums": 1, "tap dancing": 2}  # abseiling is not a KS class
    assert {i for i, r in rejected.items() if r == R.NOT_IN_CLASS_LIST} and rejected[facts["missing"]] == R.MISSING_FILE
    assert {r["split"] for r in rows.values()} == {"train", "test"}  # val became test
    metrics = json.loads((work / stage_path("prepare", "metrics")).read_text())
    assert metrics["classes"] == 3 and metrics["selected_classes"] == 3


@pytest.mark.slow
def test_dvc_exp_run_on_a_csv_dataset(csv_example, tmp_path):
    """The documented command: `dvc exp run -S dataset.format=csv -S dataset.root=... -S dataset.annotations=...`
    in a copy of this repository (its files as they are now, committed), on tiny models. The root also holds files
    no annotation lists, a FIFO among them: neither DVC (which would wait on it forever hashing a folder dep) nor
    maivar opens them (stage listing); a listed file changed in place reruns prepare."""
    import subprocess

    from stage_cmd import scratch_repository
    from test_backbones import write_tiny_tsn

    root, facts = csv_example
    tiny_tsn = write_tiny_tsn(tmp_path / "tiny_tsn.py").read_text()
    repo, env = scratch_repository(tmp_path / "repo", {"configs/tiny_tsn.py": tiny_tsn})
    bin_dir = str(Path(env["PATH"].split(":")[0]))
    sets = {"dataset.format": "csv", "dataset.root": str(root), "dataset.annotations": "annotations.csv",
            "synthesize.classes": 2, "synthesize.classes_without_audio": 0, "synthesize.groups": 8,
            "synthesize.duration_s": 1.0, "synthesize.width": 64, "synthesize.height": 48,
            "render.image_size": 32, "extract_audio.backbone": "resnet18", "extract_audio.input_size": 32,
            "extract_video.config": "configs/tiny_tsn.py", "extract_video.num_segments": 3,
            "audio_mlp.epochs": 3, "video_mlp.epochs": 3, "fusion_mlp.epochs": 3}
    args = [a for k, v in sets.items() for a in ("-S", f"{k}={v}")]
    unlisted = [root / "unlisted.fifo", root / "clips" / "archive.bin"]
    os.mkfifo(unlisted[0])
    with open(unlisted[1], "wb") as f:
        f.truncate(1 << 33)  # 8 GiB, sparse
    try:
        proc = subprocess.run([f"{bin_dir}/dvc", "exp", "run", "-n", "own-mp4s", *args], cwd=repo, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "unlisted" not in (repo / "data/listing.jsonl").read_text()
        shown = subprocess.run([f"{bin_dir}/dvc", "exp", "show", "--json"], cwd=repo, env=env, capture_output=True,
                               text=True, check=True).stdout
        assert "own-mp4s" in shown
        subset = json.loads((repo / "metrics/subset.json").read_text())
        assert subset["videos"] == len(manifest_rows(repo)) and subset["rejected"][R.AUDIO_TOO_SHORT] == 1
        assert_every_kept_clip_reaches_all_three_stores(repo)

        def repro_prepare() -> str:
            done = subprocess.run([f"{bin_dir}/dvc", "repro", "prepare"], cwd=repo, env=env, capture_output=True,
                                  text=True, timeout=300)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            return done.stdout

        # (unchanged, `dvc repro` runs the listing and nothing after it: tests/test_remote.py)
        listed = Path(manifest_rows(repo)[sorted(manifest_rows(repo))[0]]["video_path"])
        video = listed if listed.is_absolute() else repo / listed
        original = video.read_bytes()
        try:
            video.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))  # in place, same size
            assert "Running stage 'prepare'" in repro_prepare()
        finally:
            video.write_bytes(original)
    finally:
        for path in unlisted:
            path.unlink(missing_ok=True)
