"""Machine settings (params.yaml `runtime`): they change how fast the stages run, never what they compute, so
no stage tracks them and changing them never reruns a stage."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from maivar.core.errors import PipelineError
from maivar.settings.runtime import RuntimeSettings
from maivar.stage_deps import read_stages

from stage_cmd import REPO, scratch_repository


def test_no_stage_lists_the_runtime_section():
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, body in spec.items():
        declared = [p if isinstance(p, str) else next(iter(p)) for p in body.get("params", [])]
        assert not [p for p in declared if str(p).split(".")[0] == "runtime"], name
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    machine = {"workers", "device", "batch_size", "batch_videos", "compile"}
    for section in ("synthesize", "prepare", "render", "extract_audio", "extract_video"):
        assert not machine & set(params[section]), f"{section} holds a machine setting: move it to runtime"
    assert set(read_stages(REPO)) == set(spec)


def test_runtime_settings_hold_the_shared_and_each_stages_values():
    params = {"runtime": {"device": "cpu", "workers": 2, "processes": 1, "threads": 0,
                          "extract_audio": {"batch_size": 8, "compile": False},
                          "extract_video": {"batch_videos": 1, "compile": True}, "heads": {"memory_mb": 64}}}
    runtime = RuntimeSettings.from_params(params)
    assert (runtime.device, runtime.workers, runtime.worker_count) == ("cpu", 2, 2)
    assert runtime.extract_audio.batch_size == 8 and runtime.extract_video.compile is True
    assert runtime.heads.memory_mb == 64
    assert RuntimeSettings.from_params({"runtime": {**params["runtime"], "workers": 0}}).worker_count is None
    with pytest.raises(PipelineError, match="has no runtime section"):
        RuntimeSettings.from_params({})
    with pytest.raises(PipelineError, match=r"runtime.extract_video.batch_video: unknown key \(did you mean "):
        RuntimeSettings.from_params({"runtime": {**params["runtime"], "extract_video": {"batch_video": 1,
                                                                                        "compile": False}}})


def test_changing_any_runtime_value_leaves_dvc_status_unchanged(tmp_path):
    repo, env = scratch_repository(tmp_path / "repo")
    dvc = str(Path(env["PATH"].split(":")[0]) / "dvc")

    def status() -> dict:
        out = subprocess.run([dvc, "status", "--json"], cwd=repo, env=env, capture_output=True, text=True, check=True)
        return json.loads(out.stdout)

    before = status()
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["runtime"].update(device="cpu", workers=16)
    params["runtime"]["extract_audio"].update(batch_size=256, compile=True)
    params["runtime"]["extract_video"].update(batch_videos=16, compile=True)
    params["runtime"]["heads"]["memory_mb"] = 0  # the heads read their features from a file: the same results
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    assert status() == before
    params["extract_audio"]["input_size"] = 224  # a setting that changes results: DVC sees it
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    assert status() != before
