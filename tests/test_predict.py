"""``maivar predict`` (maivar/predict/): a trained run on new videos, per-clip predictions, --rev, DVC artifacts.

The module's fixture runs the whole pipeline on a tiny synthetic dataset (resnet18 audio backbone at 32 px, a
ResNet-18 TSN at 32 px, small heads) in a scratch DVC repository, records it with ``dvc commit`` and commits it
to git: the tests then predict the test clips' videos and compare with ``metrics/predictions.csv``.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from maivar.cli import main
from maivar.core.errors import PipelineError
from maivar.core.feature_store import open_store
from maivar.evaluation import HEADS, probability_text
from maivar.heads.join import video_input
from maivar.heads.training import predict as head_logits
from maivar.predict.engine import Prediction, Predictor
from maivar.predict.output import expand_paths, format_csv, format_json, format_table
from maivar.predict.run import _check_trained_on, load_run

from conftest import TINY
from stage_cmd import run_stage_in_process, scratch_repository
from test_backbones import TINY_TSN

STAGES = ("synthesize", "prepare", "render", "extract_audio", "extract_video", "train_audio", "train_video",
          "train_fusion", "evaluate")
HEAD_PARAMS = {"hidden": [32], "epochs": 15, "lr": 3.0e-3, "batch_size": 8}


def _dvc(repo: Path, env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    assert not check or proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _git(repo: Path, env: dict, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True).stdout


def _run_stages(repo: Path, *stages: str) -> None:
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        for stage in stages:
            assert run_stage_in_process(stage, repo) == 0, stage
    finally:  # the training stages fix the thread count and determinism for their process: not for the tests'
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _set_params(repo: Path, update) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    update(params)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def record_tiny_run(dest: Path) -> tuple[Path, dict]:
    """(repo, env): the tiny pipeline run in a scratch repository at ``dest``, recorded in dvc.lock and committed
    (data and models in DVC's cache). conftest.py's session fixture ``tiny_run`` makes it once for this module and
    tests/test_remote.py."""
    repo, env = scratch_repository(dest, {"configs/tsn_tiny.py": TINY_TSN.format(pretrained="None", classes=3)})

    def tiny(params):
        params["synthesize"].update(TINY)
        params["render"]["image_size"] = 64
        params["extract_audio"].update(backbone="resnet18", input_size=32)
        params["extract_video"].update(config="configs/tsn_tiny.py", num_segments=5)
        for head in ("audio_mlp", "video_mlp"):
            params[head].update(HEAD_PARAMS)
        params["fusion_mlp"].update(epochs=10, lr=1.0e-3, batch_size=8)
        params["runtime"].update(device="cpu", workers=2)
        params["runtime"]["extract_audio"]["batch_size"] = 3  # batches that mix clips differently from predict's

    _set_params(repo, tiny)
    _run_stages(repo, *STAGES)
    _dvc(repo, env, "commit", "-f", "-q")
    _git(repo, env, "add", "-A")
    _git(repo, env, "commit", "-qm", "tiny run")
    return repo, env


def _manifest(repo: Path) -> pd.DataFrame:
    return pd.read_csv(repo / "data/prepared/manifest.csv")


def _test_videos(repo: Path, n: int = 4) -> pd.DataFrame:
    """The first ``n`` test clips, each class in turn (so that every class is among them)."""
    test = _manifest(repo).query("split == 'test'").copy()
    test["k"] = test.groupby("label").cumcount()
    return test.sort_values(["k", "label"]).head(n)


def _rows(text: str) -> dict[str, dict[str, tuple[str, str]]]:
    """``maivar predict --format csv`` output -> {path: {branch: (class, probability)}} (rank 1 only)."""
    out: dict = {}
    for r in csv.DictReader(io.StringIO(text)):
        if r["rank"] == "1":
            out.setdefault(r["path"], {})[r["branch"]] = (r["class"], r["probability"])
    return out


def _expected(predictions_csv: str, ids) -> dict[str, dict[str, tuple[str, str]]]:
    rows = {r["id"]: r for r in csv.DictReader(io.StringIO(predictions_csv))}
    return {i: {h: (rows[i][f"{h}_pred"], rows[i][f"{h}_prob"]) for h in HEADS} for i in ids}


# -------------------------------------------------------------------------------- the test clips' rows
@pytest.mark.slow  # the fixture runs the whole pipeline (tiny) and DVC
def test_predict_gives_the_test_clips_rows_of_predictions_csv_bit_for_bit(tiny_run, monkeypatch, capsys):
    repo, _ = tiny_run
    monkeypatch.chdir(repo)
    clips = _test_videos(repo)
    assert main(["predict", *clips["video_path"], "--format", "csv", "-k", "1"]) == 0
    got = _rows(capsys.readouterr().out)
    expected = _expected((repo / "metrics/predictions.csv").read_text(), clips["id"])
    assert {p: got[p] for p in clips["video_path"]} == {v: expected[i] for i, v in zip(clips["id"],
                                                                                       clips["video_path"],
                                                                                       strict=True)}

    # bit for bit: the logits are the heads' on the stored features of those clips
    run = load_run(repo)
    try:
        predicted = list(Predictor(run, device="cpu", workers=2, batch_images=8).predict(list(clips["video_path"])))
        audio, video = (open_store(repo / f"data/features/{m}.h5", "features") for m in ("audio", "video"))
        a = audio.data[[audio.index[i] for i in clips["id"]]]
        v = video_input(video.data[[video.index[i] for i in clips["id"]]], run.segments)
        stored = {"audio": head_logits(run.heads["audio"], a), "video": head_logits(run.heads["video"], v),
                  "fusion": head_logits(run.heads["fusion"], np.concatenate([a, v], axis=1))}
    finally:
        run.close()
    for k, p in enumerate(predicted):
        for head in HEADS:
            assert np.array_equal(p.logits[head], stored[head][k]), (p.path, head)


@pytest.mark.slow  # the fixture runs the whole pipeline (tiny) and DVC
def test_video_without_sound_gets_the_video_branch_and_damaged_files_their_reason(tiny_run, monkeypatch, capsys,
                                                                                  tmp_path):
    repo, _ = tiny_run
    monkeypatch.chdir(repo)
    good = _test_videos(repo, 1)["video_path"].iloc[0]
    rejected = pd.read_csv(repo / "data/prepared/rejections.csv")
    mute = rejected.query("reason == 'no_audio_stream'")["video_path"].iloc[0]
    data = Path(good).read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) * 2 // 5])
    (tmp_path / "noise.avi").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    paths = [str(tmp_path / "cut.avi"), mute, str(tmp_path / "noise.avi"), str(tmp_path / "absent.avi"), good]

    assert main(["predict", *paths, "--format", "json", "-k", "2"]) == 1
    out, err = capsys.readouterr()
    results = {r["path"]: r for r in json.loads(out)}
    assert set(results[good]["branches"]) == set(HEADS) and all(len(b) == 2 for b in results[good]["branches"].values())
    assert set(results[mute]["branches"]) == {"video"}
    assert results[mute]["skipped"]["audio"].startswith("no_audio_stream")
    for path, reason in ((paths[0], "truncated"), (paths[2], "unreadable_video"), (paths[3], "missing_file")):
        assert results[path]["branches"] == {} and results[path]["error"].startswith(reason), results[path]
        assert "\n" not in results[path]["error"]
    assert f"{mute}: video branch only: no_audio_stream" in err
    assert "3 of 5 path(s) could not be predicted" in err

    assert main(["predict", mute, "-k", "1"]) == 0
    table = capsys.readouterr().out
    assert "rank  video" in table and "video branch only" in table
    assert "audio, fusion: skipped, no_audio_stream" in table


# ------------------------------------------------------------------------------------ revisions and artifacts
@pytest.mark.slow  # the fixture runs the whole pipeline (tiny) and DVC
def test_rev_and_experiment_name_use_that_runs_models(tiny_run, monkeypatch, capsys):
    repo, env = tiny_run
    monkeypatch.chdir(repo)
    clips = _test_videos(repo, 3)
    head = (repo / "metrics/predictions.csv").read_text()

    _set_params(repo, lambda p: p["fusion_mlp"].update(epochs=2))  # an experiment with another fusion model
    _run_stages(repo, "train_fusion", "evaluate")
    exp = (repo / "metrics/predictions.csv").read_text()
    assert exp != head
    _dvc(repo, env, "commit", "-f", "-q")
    _dvc(repo, env, "exp", "save", "-n", "short-fusion", "-q")
    _git(repo, env, "checkout", "--", ".")
    _dvc(repo, env, "checkout", "-f", "-q")  # the workspace is HEAD's run again
    assert (repo / "metrics/predictions.csv").read_text() == head

    for rev, text in (("short-fusion", exp), ("HEAD", head)):
        assert main(["predict", *clips["video_path"], "--format", "csv", "-k", "1", "--rev", rev]) == 0
        out, err = capsys.readouterr()
        assert f"run: {rev} " in err
        got = _rows(out)
        expected = _expected(text, clips["id"])
        assert [got[v] for v in clips["video_path"]] == [expected[i] for i in clips["id"]], rev

    # the README's ways to load a model of an earlier experiment
    import dvc.api

    with dvc.api.open("models/fusion_mlp.pt", repo=str(repo), rev="short-fusion", mode="rb") as f:
        saved = torch.load(f, weights_only=True)
    assert saved["history"][-1]["epoch"] == 2
    _dvc(repo, env, "get", ".", "models/fusion_mlp.pt", "--rev", "short-fusion", "-o", "fusion_short.pt")
    assert torch.load(repo / "fusion_short.pt", weights_only=True)["history"][-1]["epoch"] == 2
    (repo / "fusion_short.pt").unlink()

    assert main(["predict", clips["video_path"].iloc[0], "--rev", "no-such-rev"]) == 2
    assert "cannot read revision 'no-such-rev'" in capsys.readouterr().err


@pytest.mark.slow  # the fixture runs the whole pipeline (tiny) and DVC
def test_dvc_artifacts_get_fetches_a_registered_model(tiny_run, tmp_path):
    repo, env = tiny_run
    gto = Path(sys.executable).with_name("gto")  # GTO's registry convention: a tag fusion-mlp@v1.0.0
    subprocess.run([str(gto), "register", "fusion-mlp", "--version", "v1.0.0"], cwd=repo, env=env, check=True,
                   capture_output=True, timeout=120)
    assert "fusion-mlp@v1.0.0" in _git(repo, env, "tag")
    _dvc(repo, env, "artifacts", "get", ".", "fusion-mlp", "-o", str(tmp_path / "fusion.pt"))
    assert (tmp_path / "fusion.pt").read_bytes() == (repo / "models/fusion_mlp.pt").read_bytes()
    _dvc(repo, env, "artifacts", "get", ".", "fusion-mlp", "--rev", "v1.0.0", "-o", str(tmp_path / "v1.pt"))
    assert (tmp_path / "v1.pt").read_bytes() == (repo / "models/fusion_mlp.pt").read_bytes()
    show = "import dvc.api, json; print(json.dumps(dvc.api.artifacts_show('fusion-mlp', repo='.')))"
    shown = subprocess.run([sys.executable, "-c", show], cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert json.loads(shown.stdout)["path"] == "models/fusion_mlp.pt", shown.stderr[-2000:]


# ----------------------------------------------------------------------------------------- without a run
def test_expand_paths_takes_files_folders_and_globs_and_reports_what_names_nothing(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("a/x.avi", "a/y.MP4", "a/notes.txt", "z.mkv"):
        (tmp_path / name).write_bytes(b"0")
    (tmp_path / "empty").mkdir()
    specs = [str(tmp_path / "z.mkv"), str(tmp_path / "a"), str(tmp_path / "*.mkv"), str(tmp_path / "empty"),
             str(tmp_path / "*.webm"), str(tmp_path / "nope.avi")]
    videos, problems = expand_paths(specs)
    assert videos == [str(tmp_path / n) for n in ("z.mkv", "a/x.avi", "a/y.MP4")]  # each once, in order
    assert [(p.path, p.error.split(":")[0].split(" (")[0]) for p in problems] == [
        (specs[3], "no video files in this folder"), (specs[4], "the pattern matches no file"),
        (specs[5], "missing_file")]


def test_output_formats():
    classes = ["Run", "Jump", "Swim"]
    full = Prediction("a.avi", logits={h: np.array([2.0, 1.0, 0.0], np.float32) for h in HEADS})
    mute = Prediction("b.avi", logits={"video": np.array([0.0, 0.0, 3.0], np.float32)},
                      skipped={"audio": "no_audio_stream: none", "fusion": "no_audio_stream: none"})
    bad = Prediction("c.avi", error="truncated: holds 3 of 10 declared frames")
    doc = json.loads(format_json([full, mute, bad], 2, classes))
    assert doc[0] == {"path": "a.avi", "branches": {h: [{"class": "Run", "probability": 0.6652},
                                                        {"class": "Jump", "probability": 0.2447}] for h in HEADS}}
    assert doc[1]["branches"] == {"video": [{"class": "Swim", "probability": 0.9094},
                                            {"class": "Run", "probability": 0.0453}]}
    assert doc[1]["skipped"] == {"audio": "no_audio_stream: none", "fusion": "no_audio_stream: none"}
    assert doc[2] == {"path": "c.avi", "branches": {}, "error": "truncated: holds 3 of 10 declared frames"}
    rows = list(csv.reader(io.StringIO(format_csv([full, mute, bad], 1, classes))))
    assert rows[0] == ["path", "branch", "rank", "class", "probability", "note"]
    assert rows[1:] == [["a.avi", h, "1", "Run", probability_text(0.66524096), ""] for h in HEADS] + [
        ["b.avi", "audio", "", "", "", "skipped: no_audio_stream: none"], ["b.avi", "video", "1", "Swim", "0.9094", ""],
        ["b.avi", "fusion", "", "", "", "skipped: no_audio_stream: none"],
        ["c.avi", "", "", "", "", "error: truncated: holds 3 of 10 declared frames"]]
    table = format_table(full, 3, classes).splitlines()
    assert table[1].split() == ["rank", "audio", "video", "fusion"]
    assert table[2].split() == ["1"] + ["Run", "0.6652"] * 3 and table[4].split()[0] == "3"


def test_a_run_without_dvc_lock_or_with_stale_heads_is_a_one_line_error(tmp_path):
    with pytest.raises(PipelineError, match="has no dvc.lock: run the pipeline"):
        load_run(tmp_path)
    with pytest.raises(PipelineError, match="trained on features of other backbone weights"):
        _check_trained_on({"features_attrs": {"weights_sha256": "a" * 64}}, {"weights_sha256": "b" * 64},
                          "models/audio_mlp.pt", "data/features/audio.h5")
    _check_trained_on({"features_attrs": {"weights_sha256": "a" * 64}}, {"weights_sha256": "a" * 64}, "m", "s")
