"""Presets (maivar.presets, `maivar preset`): params overlays checked against params.yaml and run as named
DVC experiments."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from maivar.core.errors import PipelineError
from maivar.presets import exp_run_command, load_preset, yaml_value

REPO = Path(__file__).resolve().parents[1]
MAIVAR = Path(sys.executable).parent / "maivar"


def test_the_paper_preset_names_only_existing_parameters_and_comments_every_value():
    values = load_preset(REPO / "presets/paper.yaml", REPO / "params.yaml")
    assert values["extract_video.config"] == "configs/tsn_bninception_video.py"
    assert (REPO / values["extract_video.config"]).is_file()
    assert values["extract_audio.flips"] is True and values["video_mlp.segments"] == "flatten"
    assert values["audio_mlp.l1"] == values["video_mlp.l1"] == 0.0 and values["fusion_mlp.l1"] > 0
    for line in (REPO / "presets/paper.yaml").read_text().splitlines():
        if line and not line.startswith((" ", "#")):  # a key: its comment says where the value comes from
            assert "#" in line, f"uncommented preset value: {line}"


def test_nested_and_dotted_keys_and_typos(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"render": {"size": 224, "colormaps": {"mfcc": "coolwarm"}}, "seed": 0}))
    preset = tmp_path / "p.yaml"
    preset.write_text("render:\n  size: 128\n  colormaps: {mfcc: viridis}\nseed: 3\n")
    assert load_preset(preset, params) == {"render.size": 128, "render.colormaps.mfcc": "viridis", "seed": 3}
    preset.write_text("render.sise: 128\n")
    with pytest.raises(PipelineError, match=r"render\.sise not in .*params\.yaml \(a typo"):
        load_preset(preset, params)
    with pytest.raises(PipelineError, match="does not exist"):
        load_preset(tmp_path / "absent.yaml", params)


def test_values_reach_dvc_as_yaml():
    assert [yaml_value(v) for v in (None, True, [512], 3.0e-4, "configs/x.py", 25)] == [
        "null", "true", "[512]", "0.0003", "configs/x.py", "25"]
    cmd = exp_run_command({"a.b": [512], "c": None}, "paper", queue=True, extra=["c=1"])
    assert cmd == ["dvc", "exp", "run", "-n", "paper", "--queue", "-S", "a.b=[512]", "-S", "c=null", "-S", "c=1"]


def test_the_command_prints_what_it_runs():
    proc = subprocess.run([str(MAIVAR), "preset", "presets/paper.yaml", "--dry-run", "-S", "train.seed=1"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("dvc exp run -n paper -S dataset.split=1 ")
    assert "-S extract_audio.flips=true" in proc.stdout and proc.stdout.strip().endswith("-S train.seed=1")
    bad = subprocess.run([str(MAIVAR), "preset", "nowhere.yaml"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: preset nowhere.yaml does not exist"
