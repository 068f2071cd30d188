"""DVC-level checks on the tiny run. A checkpoint replaced in place reruns exactly the extraction and what follows it
(stage weights_audio). A DVC remote round trip (README, "Share results"): the tiny run (conftest.py's ``tiny_run``,
the one tests/test_predict.py uses) is pushed to a local-path remote; a fresh ``git clone`` pulls it; there nothing
is stale (``dvc repro`` runs only the always-changed stages, listing and weights_*, which keep what was pulled), and
``maivar predict`` gives the test clips' rows of predictions.csv.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from test_predict import _dvc, _expected, _git, _rows, _test_videos

from maivar.cli import main

from stage_cmd import run_stage_in_process

SKIPPED = re.compile(r"Stage '([^']+)' didn't change, skipping")
RAN = re.compile(r"Running stage '([^']+)'")
ALWAYS = {"listing", "weights_audio", "weights_video"}  # always_changed: they run on every dvc repro


def _cached_outputs(repo: Path, env: dict) -> list[str]:
    """Every output the run's dvc.lock records that git does not hold (DVC's cache does): what `dvc push`
    sends. (metrics/ and dvclive/ are `cache: false` outputs: committed to git.)"""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    in_git = set(_git(repo, env, "ls-files").split("\n"))
    outs = {out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])}
    return sorted(o for o in outs if o not in in_git and not any(f.startswith(o + "/") for f in in_git))


@pytest.mark.slow  # the fixture runs the whole pipeline (tiny) and DVC
def test_push_to_a_remote_and_pull_into_a_fresh_clone_runs_nothing_and_predicts(tiny_run, tmp_path, monkeypatch,
                                                                                capsys):
    repo, env = tiny_run
    storage = tmp_path / "dvc-storage"
    _dvc(repo, env, "remote", "add", "-d", "shared", str(storage))
    _git(repo, env, "commit", "-qm", "a DVC remote", "--", ".dvc/config")
    pushed = _dvc(repo, env, "push")
    assert pushed.returncode == 0 and storage.is_dir(), pushed.stdout
    outputs = _cached_outputs(repo, env)
    assert {o.split("/")[0] for o in outputs} == {"data", "models"}, outputs

    clone = tmp_path / "laptop"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], env=env, check=True, capture_output=True)
    assert not any((clone / o).exists() for o in outputs)  # git carries code, params, dvc.lock, metrics only
    _dvc(clone, env, "pull")
    assert all((clone / o).exists() for o in outputs)
    for o in ("data/features/audio.h5", "data/features/video.h5", "models/fusion_mlp.pt"):
        assert (clone / o).read_bytes() == (repo / o).read_bytes(), o

    # `dvc repro` checks what `dvc status` does (every stage's deps and outs), then would run the changed stages;
    # the always-changed stages run (listing: the pulled dataset's files hash to the same listing; the weights
    # stages find the pulled weights files current and keep them), so nothing after them runs
    weights = {n: (clone / n).read_bytes() for n in ("data/weights/audio.safetensors",
                                                     "data/weights/video.safetensors")}
    repro = _dvc(clone, env, "repro")
    assert sorted(RAN.findall(repro.stdout)) == sorted(ALWAYS), repro.stdout
    assert (repro.stdout + repro.stderr).count("is current (random") == 2, repro.stdout + repro.stderr
    assert {n: (clone / n).read_bytes() for n in weights} == weights
    stages = {s for s in (repro.stdout + repro.stderr).split("\n") for s in SKIPPED.findall(s)}
    everything = set(yaml.safe_load((clone / "dvc.yaml").read_text())["stages"])
    assert stages == everything - ALWAYS, repro.stdout
    assert not _git(clone, env, "status", "--porcelain", "--", "dvc.lock")  # nothing recorded anew

    # the laptop predicts the test clips' videos (its own pulled copies) exactly as the GPU node's run recorded
    monkeypatch.chdir(clone)
    clips = _test_videos(clone, 2)
    assert all(not Path(p).is_absolute() and (clone / p).is_file() for p in clips["video_path"])
    assert main(["predict", *clips["video_path"], "--format", "csv", "-k", "1", "--device", "cpu"]) == 0
    got = _rows(capsys.readouterr().out)
    expected = _expected((clone / "metrics/predictions.csv").read_text(), clips["id"])
    assert {p: got[p] for p in clips["video_path"]} == {v: expected[i] for i, v in zip(clips["id"],
                                                                                       clips["video_path"],
                                                                                       strict=True)}


def _ran(proc: subprocess.CompletedProcess) -> set[str]:
    return set(RAN.findall(proc.stdout))


@pytest.mark.slow  # the fixture runs the whole pipeline (tiny) and DVC
def test_a_checkpoint_replaced_in_place_reruns_exactly_the_extraction_and_what_follows(tiny_run, tmp_path,
                                                                                      monkeypatch, capsys):
    """extract_audio.checkpoint keeps its path while its file gets other weights: DVC cannot see that from
    params.yaml, but stage weights_audio (always run) hashes the file, rewrites data/weights/audio.safetensors,
    and so extract_audio and everything after it rerun; nothing else does. `maivar predict` then needs no
    checkpoint: it loads the run's weights file."""
    from safetensors.torch import load_file, save_file

    repo, env = tiny_run
    clone = tmp_path / "swap"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], env=env, check=True, capture_output=True)
    _dvc(clone, env, "config", "--local", "cache.dir", str(repo / ".dvc/cache"))
    _dvc(clone, env, "checkout", "-q")
    state = load_file(clone / "data/weights/audio.safetensors")  # the run's (random) weights, as a checkpoint
    ckpt = clone / "ckpt/audio.safetensors"
    ckpt.parent.mkdir()
    save_file(state, str(ckpt))
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["extract_audio"]["checkpoint"] = "ckpt/audio.safetensors"
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # the run with that checkpoint: its two stages in this process (seconds cheaper than dvc repro), then recorded
    assert run_stage_in_process("extract_audio", clone) == 0  # weights_audio first, as dvc repro runs it
    _dvc(clone, env, "commit", "-f", "-q")
    before = (clone / "data/features/audio.h5").read_bytes()

    save_file({k: v * 1.5 if v.is_floating_point() else v for k, v in state.items()}, str(ckpt))  # in place
    swapped = _dvc(clone, env, "repro")
    assert _ran(swapped) == ALWAYS | {"extract_audio", "train_audio", "train_fusion", "evaluate"}, swapped.stdout
    assert set(SKIPPED.findall(swapped.stdout)) == {"synthesize", "prepare", "render", "extract_video",
                                                    "train_video"}, swapped.stdout
    assert "ckpt/audio.safetensors changed (sha256" in swapped.stderr
    assert (clone / "data/features/audio.h5").read_bytes() != before
    # (with nothing changed, `dvc repro` runs the two weights stages and nothing else: the remote test shows it)
    ckpt.unlink()  # a laptop without the checkpoint: predict uses data/weights/audio.safetensors
    monkeypatch.chdir(clone)
    clips = _test_videos(clone, 1)
    capsys.readouterr()
    assert main(["predict", *clips["video_path"], "--format", "csv", "-k", "1", "--device", "cpu"]) == 0
    got = _rows(capsys.readouterr().out)
    expected = _expected((clone / "metrics/predictions.csv").read_text(), clips["id"])
    assert got[clips["video_path"].iloc[0]] == expected[clips["id"].iloc[0]]
