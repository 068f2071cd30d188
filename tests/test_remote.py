"""A DVC remote round trip (README, "Share results"): the tiny run (conftest.py's ``tiny_run``, the one
tests/test_predict.py uses) is pushed to a local-path remote; a fresh ``git clone`` pulls it; there nothing is
stale (``dvc repro`` runs no stage), and ``maivar predict`` gives the test clips' rows of predictions.csv.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from test_predict import _dvc, _expected, _git, _rows, _test_videos

from maivar.cli import main

SKIPPED = re.compile(r"Stage '([^']+)' didn't change, skipping")
RAN = re.compile(r"Running stage '([^']+)'")


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

    # `dvc repro` checks what `dvc status` does (every stage's deps and outs), then would run the changed stages
    repro = _dvc(clone, env, "repro")
    assert not RAN.findall(repro.stdout), repro.stdout
    stages = {s for s in (repro.stdout + repro.stderr).split("\n") for s in SKIPPED.findall(s)}
    assert stages == set(yaml.safe_load((clone / "dvc.yaml").read_text())["stages"]), repro.stdout
    assert "Data and pipelines are up to date." in repro.stdout, repro.stdout

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
