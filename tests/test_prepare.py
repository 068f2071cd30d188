"""Stage prepare: the audio-subset rule, every bad-input case of issue 2, and synthesize + prepare end to end."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from maivar.core import rejections as R
from maivar.core.errors import PipelineError
from maivar.core.rejections import ClipFailure
from maivar.data.listing import ListedClip
from maivar.data.media import demux_audio, ffmpeg_exe, measure_wav, probe_video
from maivar.data.subset import (
    FAULTS,
    ExamineTask,
    apply_class_rule,
    build_subset,
    check_subset,
    examine_video,
    prepare_subset,
)
from maivar.settings.data import DatasetSettings, PrepareSettings

from conftest import REPO, TINY
from stage_cmd import run_stage

RULE = dict(sample_rate=44100, channels=2, classes="all", silence_dbfs=-60.0, min_class_audio_share=0.5,
            min_decoded_share=0.9, min_audio_coverage=0.0, frame_check="packets", timeout_s=30,
            max_rejected_share=0.7, max_duration_s=3600, max_pixels=8192 * 8192)


def run_prepare(root, tmp_path, workers=2, **change):
    wav_dir = tmp_path / "wav"
    wav_dir.mkdir(exist_ok=True)
    dataset = DatasetSettings.from_mapping({"format": "ucf101", "root": str(root), "split": 1, "annotations": None})
    prepare = PrepareSettings.from_mapping({**RULE, **change})
    subset = prepare_subset(dataset=dataset, prepare=prepare, wav_dir=wav_dir, audio_dir="data/prepared/audio",
                            workers=workers)
    return subset, wav_dir


def ffmpeg(*args):
    subprocess.run([ffmpeg_exe(), "-nostdin", "-y", "-loglevel", "error", *map(str, args)], check=True,
                   stdin=subprocess.DEVNULL, timeout=60)


def clips_of(root: Path, cls: str) -> list[Path]:
    return sorted((root / "UCF-101" / cls).glob("*.avi"))


def test_clean_dataset_keeps_voiced_classes_and_rejects_mute_and_silent(tiny_dataset, tmp_path):
    root, summary = tiny_dataset
    subset, wav_dir = run_prepare(root, tmp_path)
    mute = summary["classes_without_audio"]
    voiced = [c for c in summary["classes"] if c not in mute]
    assert subset.classes == voiced
    reasons = {r["id"]: r["reason"] for r in subset.rejections}
    assert {i for i, r in reasons.items() if r == R.SILENT_AUDIO} == set(summary["silent_clips"])
    mute_ids = {p.stem for c in mute for p in clips_of(root, c)}
    assert {i for i, r in reasons.items() if r == R.NO_AUDIO_STREAM} == mute_ids
    m = subset.metrics
    assert m["videos"] == len(subset.manifest) == summary["clips"] - len(reasons)
    assert m["train"] + m["test"] == m["videos"] and m["faults"] == 0
    assert m["rejected"] == {R.NO_AUDIO_STREAM: len(mute) * TINY["groups"], R.SILENT_AUDIO: TINY["silent_clips"]}
    assert [r["id"] for r in subset.manifest] == sorted(r["id"] for r in subset.manifest)
    assert sorted(p.name for p in wav_dir.iterdir()) == sorted(f"{r['id']}.wav" for r in subset.manifest)
    for row in subset.manifest:
        assert row["label"] == voiced.index(row["class_name"])
        assert row["split"] == ("test" if int(row["id"][-6:-4]) <= 7 else "train")
        assert (row["frames"], row["fps"], row["width"], row["height"]) == (10, 10.0, TINY["width"], TINY["height"])
        assert row["duration_s"] == pytest.approx(TINY["duration_s"])
        assert (row["audio_sample_rate"], row["audio_channels"]) == (44100, 2)
        assert -60 < row["audio_rms_dbfs"] < row["audio_peak_dbfs"] <= 0
        level = measure_wav(wav_dir / f"{row['id']}.wav")
        assert level.duration_s == pytest.approx(TINY["duration_s"], abs=0.01)
        assert row["audio_path"] == f"data/prepared/audio/{row['id']}.wav"
        assert Path(row["video_path"]) == root / "UCF-101" / row["class_name"] / f"{row['id']}.avi"


def test_each_bad_input_gets_its_rejection_and_never_stops_the_stage(tiny_copy, tmp_path):
    root, summary = tiny_copy
    voiced = [c for c in summary["classes"] if c not in summary["classes_without_audio"]]
    clips = [p for p in clips_of(root, voiced[0]) if p.stem not in summary["silent_clips"]]
    empty, truncated, garbled, noaudio, silent, missing, fifo = clips[:7]
    empty.write_bytes(b"")
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    rng = np.random.default_rng(0)
    garbled.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes() + garbled.read_bytes()[4096:])
    for target, args in ((noaudio, ["-an", "-c:v", "copy"]),
                         (silent, ["-af", "volume=0", "-c:v", "copy", "-c:a", "pcm_s16le"])):
        tmp = target.with_name("tmp.avi")
        ffmpeg("-i", target, *args, tmp)
        os.replace(tmp, target)
    missing.unlink()
    fifo.unlink()
    os.mkfifo(fifo)  # opening it would block forever: it is refused unopened (issue 18)
    lists = root / "ucfTrainTestlist" / "trainlist01.txt"
    lists.write_text(lists.read_text() + "NoSuchClass/v_NoSuchClass_g08_c01.avi 9\n")

    subset, wav_dir = run_prepare(root, tmp_path, timeout_s=4)
    reasons = {r["id"]: (r["reason"], r["detail"]) for r in subset.rejections}
    expected = {empty: R.EMPTY_FILE, truncated: R.TRUNCATED, garbled: R.UNREADABLE_VIDEO, noaudio: R.NO_AUDIO_STREAM,
                silent: R.SILENT_AUDIO, missing: R.MISSING_FILE, fifo: R.NOT_A_REGULAR_FILE}
    for path, reason in expected.items():
        assert reasons[path.stem][0] == reason, (path.name, reasons[path.stem])
        assert reasons[path.stem][1] and "\n" not in reasons[path.stem][1]
    assert reasons["v_NoSuchClass_g08_c01"][0] == R.UNKNOWN_CLASS
    assert "trainlist01.txt" in reasons["v_NoSuchClass_g08_c01"][1]
    assert "holds" in reasons[truncated.stem][1]
    kept = {r["id"] for r in subset.manifest}
    assert not kept & {p.stem for p in expected}
    assert sorted(p.name for p in wav_dir.iterdir()) == sorted(f"{i}.wav" for i in kept)  # no partial WAVs left
    assert len(kept) == subset.metrics["videos"] > 0
    assert subset.metrics["faults"] == 5  # empty, truncated, garbled, missing, the FIFO
    assert sum(subset.metrics["rejected"].values()) == len(subset.rejections) == subset.metrics["listed"] - len(kept)


def test_the_paper_presets_rule_is_a_decodable_audio_stream(tiny_copy, tmp_path):
    """presets/paper.yaml's prepare values (silence, coverage and class-share filters null: off) keep every clip
    with a decodable audio stream, the digitally silent ones included; a truncated file and a clip without an
    audio stream are still rejected with their reasons."""
    from maivar.presets import load_preset

    preset = {k.split(".", 1)[1]: v for k, v in load_preset(REPO / "presets/paper.yaml", REPO / "params.yaml").items()
              if k.startswith("prepare.")}
    assert preset["silence_dbfs"] is preset["min_audio_coverage"] is preset["min_class_audio_share"] is None
    root, summary = tiny_copy
    voiced = [c for c in summary["classes"] if c not in summary["classes_without_audio"]]
    truncated = next(p for p in clips_of(root, voiced[0]) if p.stem not in summary["silent_clips"])
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    subset, _ = run_prepare(root, tmp_path, **preset)
    reasons = {r["id"]: r["reason"] for r in subset.rejections}
    kept = {r["id"] for r in subset.manifest}
    assert set(summary["silent_clips"]) <= kept and reasons[truncated.stem] == R.TRUNCATED
    mute_ids = {p.stem for c in summary["classes_without_audio"] for p in clips_of(root, c)}
    assert reasons == {truncated.stem: R.TRUNCATED, **dict.fromkeys(mute_ids, R.NO_AUDIO_STREAM)}
    assert subset.classes == voiced and len(kept) == summary["clips"] - len(mute_ids) - 1


@pytest.mark.parametrize("frame_check", ["packets", "decode"])
def test_truncated_video_is_caught_by_either_frame_check(tiny_dataset, tmp_path, frame_check):
    """A truncated AVI decodes about half its frames without an error: compare with the header's count."""
    root, summary = tiny_dataset
    src = clips_of(root, summary["classes"][0])[0]
    data = src.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    full = probe_video(src, frame_check)
    half = probe_video(cut, frame_check)
    assert full.decoded_frames == full.frames == TINY["fps"] * TINY["duration_s"]
    assert half.frames == full.frames and 0 < half.decoded_frames < 0.9 * half.frames
    with pytest.raises(ClipFailure) as result:
        examine_video(ExamineTask(id="cut", video_path=str(cut), wav_path=str(tmp_path / "cut.wav"),
                                  sample_rate=44100, channels=2, min_decoded_share=0.9, silence_dbfs=-60,
                                  timeout_s=30, frame_check=frame_check))
    assert result.value.reason == R.TRUNCATED and not (tmp_path / "cut.wav").exists()


@pytest.mark.parametrize("min_coverage", [0.5, 0.3])
def test_audio_that_ends_early_is_kept_or_rejected_for_its_coverage_never_truncated(tiny_dataset, tmp_path,
                                                                                 min_coverage):
    """A whole picture whose sound stops after 0.4 s of 1 s: an ordinary recording, not a damaged file. Its
    audio_coverage (0.4) decides against prepare.min_audio_coverage."""
    root, summary = tiny_dataset
    voiced = [c for c in summary["classes"] if c not in summary["classes_without_audio"]]
    src = next(p for p in clips_of(root, voiced[0]) if p.stem not in summary["silent_clips"])
    short = tmp_path / "short.avi"
    ffmpeg("-i", src, "-c:v", "copy", "-c:a", "pcm_s16le", "-af", "atrim=0:0.4", short)
    task = ExamineTask(id="short", video_path=str(short), wav_path=str(tmp_path / "short.wav"), sample_rate=44100,
                       channels=2, min_decoded_share=0.9, silence_dbfs=-60, timeout_s=30,
                       min_audio_coverage=min_coverage)
    if min_coverage > 0.4:
        with pytest.raises(ClipFailure) as result:
            examine_video(task)
        assert result.value.reason == R.AUDIO_TOO_SHORT and "0.40 s of the picture's 1.00 s" in result.value.detail
        assert not (tmp_path / "short.wav").exists()
        assert R.AUDIO_TOO_SHORT not in FAULTS  # a property of the recording, not a broken file
    else:
        info = examine_video(task)
        assert info["audio_coverage"] == pytest.approx(0.4, abs=0.01) and info["decoded_share"] == 1.0
        assert measure_wav(tmp_path / "short.wav").duration_s == pytest.approx(0.4, abs=0.01)


def test_demux_failure_and_deterministic_wav(tiny_dataset, tmp_path):
    root, summary = tiny_dataset
    bogus = tmp_path / "bogus.avi"
    bogus.write_text("not a video")
    with pytest.raises(ClipFailure) as exc:
        demux_audio(bogus, tmp_path / "b.wav", sample_rate=44100, channels=2, timeout_s=30)
    assert exc.value.reason == R.DEMUX_FAILED and "exit code" in exc.value.detail
    assert list(tmp_path.glob("*.wav*")) == []
    voiced = [c for c in summary["classes"] if c not in summary["classes_without_audio"]]
    src = clips_of(root, voiced[0])[-1]
    a = demux_audio(src, tmp_path / "a1.wav", sample_rate=22050, channels=1, timeout_s=30)
    demux_audio(src, tmp_path / "a2.wav", sample_rate=22050, channels=1, timeout_s=30)
    assert (a.sample_rate, a.channels) == (22050, 1)
    assert (tmp_path / "a1.wav").read_bytes() == (tmp_path / "a2.wav").read_bytes()
    assert b"LIST" not in (tmp_path / "a1.wav").read_bytes()[:200]  # no encoder metadata


def _listed(cls: str, n: int, split="train"):
    return [ListedClip(f"v_{cls}_g{i + 8:02d}_c01", cls, split, f"{cls}/v_{cls}_g{i + 8:02d}_c01.avi", "t:1")
            for i in range(n)]


def test_class_rule_share_threshold_labels_and_class_without_audio():
    classes = ["A", "B", "C", "D"]
    listed = _listed("A", 4) + _listed("B", 4) + _listed("C", 4) + _listed("D", 2)
    ok = {"duration_s": 1.0}
    passing = {"A": 4, "B": 1, "C": 2, "D": 2}  # B: 25% < 50% -> dropped; C: exactly 50% -> kept
    examined = {}
    for v in listed:
        k = int(v.id[-6:-4]) - 8
        examined[v.id] = dict(ok) if k < passing[v.class_name] else ClipFailure(R.SILENT_AUDIO, "x")
    kept, share = apply_class_rule(listed, examined, classes, 0.5)
    assert kept == ["A", "C", "D"] and share["B"] == 0.25
    sel = ["A", "B", "C"]  # D outside the class list: not examined, not_in_class_list
    ex = {k: v for k, v in examined.items() if "_D_" not in k}
    subset = build_subset(classes, listed, [], sel, ex,
                          audio_dir="au", min_class_audio_share=0.5)
    assert subset.classes == ["A", "C"]
    assert {r["class_name"]: r["label"] for r in subset.manifest} == {"A": 0, "C": 1}
    by_reason = {}
    for r in subset.rejections:
        by_reason.setdefault(r["reason"], set()).add(r["class_name"])
    assert by_reason == {R.CLASS_WITHOUT_AUDIO: {"B"}, R.SILENT_AUDIO: {"B", "C"}, R.NOT_IN_CLASS_LIST: {"D"}}
    assert subset.metrics["rejected"][R.CLASS_WITHOUT_AUDIO] == 1 and subset.metrics["probed"] == 12
    assert subset.metrics["dropped_classes"] == ["B"]
    kept_share_1, _ = apply_class_rule(listed, examined, classes, 1.0)
    assert kept_share_1 == ["A", "D"]


def test_check_subset_fails_on_zero_videos_and_on_too_many_faults():
    listed = _listed("A", 10)
    ok = {"duration_s": 1.0}

    def subset_with(n_faults):
        ex = {v.id: ClipFailure(R.MISSING_FILE, "gone") if i < n_faults else dict(ok) for i, v in enumerate(listed)}
        return build_subset(["A"], listed, [], ["A"], ex,
                            audio_dir="a", min_class_audio_share=0.0)

    check_subset(subset_with(7), 0.7)  # 7 of 10: not more than 0.7
    with pytest.raises(PipelineError, match="8 of 10 probed videos.*missing_file: 8.*max_rejected_share"):
        check_subset(subset_with(8), 0.7)
    with pytest.raises(PipelineError, match="no video passed"):
        check_subset(subset_with(10), 1.0)
    assert R.NO_AUDIO_STREAM not in FAULTS and R.SILENT_AUDIO not in FAULTS


def test_missing_root_and_bad_classind_are_one_line_errors(tiny_copy, tmp_path):
    root, _ = tiny_copy
    with pytest.raises(PipelineError, match="does not exist.*dataset.root"):
        run_prepare(tmp_path / "nowhere", tmp_path)
    ind = root / "ucfTrainTestlist" / "classInd.txt"
    ind.write_text(ind.read_text() + "5\n")
    with pytest.raises(PipelineError, match=r"classInd.txt line 5"):
        run_prepare(root, tmp_path)


# --- the stage scripts, end to end ---------------------------------------------------------------------------

def write_params(cwd: Path, **prepare_change) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["synthesize"] = {**params["synthesize"], **TINY}
    params["prepare"] = {**params["prepare"], **prepare_change}
    params["runtime"]["workers"] = 2
    (cwd / "params.yaml").write_text(yaml.safe_dump(params))


def test_stages_synthesize_then_prepare_end_to_end(tmp_path):
    write_params(tmp_path)
    for stage in ("synthesize", "prepare"):
        proc = run_stage(stage, tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
    prepared = tmp_path / "data" / "prepared"
    manifest = list(csv.DictReader((prepared / "manifest.csv").open()))
    rejected = list(csv.DictReader((prepared / "rejections.csv").open()))
    metrics = json.loads((tmp_path / "metrics" / "subset.json").read_text())
    assert metrics["videos"] == len(manifest) > 0
    assert metrics["classes"] == TINY["classes"] - TINY["classes_without_audio"]
    assert metrics["train"] + metrics["test"] == len(manifest)
    assert sum(metrics["rejected"].values()) == len(rejected)
    assert len(manifest) + len(rejected) == TINY["classes"] * TINY["groups"]
    for row in manifest:
        assert (tmp_path / row["video_path"]).is_file() and (tmp_path / row["audio_path"]).is_file()
    assert sorted(os.listdir(prepared / "audio")) == sorted(f"{r['id']}.wav" for r in manifest)
    assert not [p for p in tmp_path.rglob(".*tmp-*")]
    first = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file() and "data/prepared" in str(p)}
    assert run_stage("prepare", tmp_path).returncode == 0
    again = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file() and "data/prepared" in str(p)}
    assert again == first  # same inputs, same bytes


@pytest.mark.parametrize("change,message", [
    ({"classes": ["NoSuchClass"]}, "prepare.classes names classes that the dataset lacks"),
    ({"silence_dbfs": 0.0}, "no video passed the audio-subset rule"),
    ({"silence_dbfs": 10.0},
     "params.yaml prepare.silence_dbfs: 10.0 is not allowed (null or a finite number from -200 to 0)"),
])
def test_stage_failures_are_one_line_errors(tmp_path, tiny_dataset, change, message):
    root, _ = tiny_dataset
    write_params(tmp_path, **change)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["dataset"]["root"] = str(root)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run_stage("prepare", tmp_path)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last and "Traceback" not in proc.stderr
    assert not (tmp_path / "data" / "prepared" / "manifest.csv").exists()
    assert not (tmp_path / "data" / "prepared" / "audio").exists()


def test_stage_with_missing_dataset_root_says_what_to_fix(tmp_path):
    write_params(tmp_path)
    proc = run_stage("prepare", tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: dataset root data/synthetic does not exist")


# --- the real dataset ----------------------------------------------------------------------------------------

UCF101_ROOT = os.environ.get("MAIVAR_UCF101_ROOT")


@pytest.mark.ucf101
@pytest.mark.skipif(not UCF101_ROOT, reason="set MAIVAR_UCF101_ROOT to a UCF101 copy (UCF-101/, ucfTrainTestlist/)")
def test_real_ucf101_paper_subset(tmp_path):
    subset, _ = run_prepare(UCF101_ROOT, tmp_path, classes="paper", workers=None, timeout_s=120)
    m = subset.metrics
    assert (m["videos"], m["classes"], m["train"], m["test"]) == (6837, 51, 4893, 1944)
