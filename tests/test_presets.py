"""Presets (maivar.presets, `maivar preset`): params overlays checked against params.yaml and run as named
DVC experiments."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from maivar.core.errors import PipelineError
from maivar.presets import exp_run_command, load_preset, yaml_value

REPO = Path(__file__).resolve().parents[1]
MAIVAR = Path(sys.executable).parent / "maivar"


def test_the_paper_preset_names_only_existing_parameters_and_comments_every_value():
    values = load_preset(REPO / "presets/paper.yaml", REPO / "params.yaml")
    assert values["extract_video.config"] == "configs/tsn_bninception_video.py"
    assert (REPO / values["extract_video.config"]).is_file()
    assert values["extract_audio.flips"] == "authors" and values["video_mlp.segments"] == "flatten"
    # the authors' route where the text is impossible: IRv2 at 299, their figure, their subset rule
    assert values["extract_audio.input_size"] == values["render.image_size"] == 299
    assert values["render.recipe"] == "pymaivar" and values["render.figure_inches"] == [5.0, 5.0]
    assert values["prepare.silence_dbfs"] is values["prepare.min_audio_coverage"] is None
    assert values["prepare.min_class_audio_share"] is None
    assert values["audio_mlp.l1"] == values["video_mlp.l1"] == 0.0 and values["fusion_mlp.l1"] > 0
    for name in ("paper", "paper_corrected"):
        for line in (REPO / f"presets/{name}.yaml").read_text().splitlines():
            if line and not line.startswith((" ", "#")):  # a key: its comment says where the value comes from
                assert "#" in line, f"uncommented preset value: {line}"


def test_paper_corrected_is_the_paper_preset_with_the_corrected_drawing():
    from maivar.settings.render import RenderSettings

    paper = load_preset(REPO / "presets/paper.yaml", REPO / "params.yaml")
    corrected = load_preset(REPO / "presets/paper_corrected.yaml", REPO / "params.yaml")
    assert corrected == {**paper, "render.recipe": "corrected"} and paper["render.recipe"] == "pymaivar"
    params = yaml.safe_load((REPO / "params.yaml").read_text())["render"]
    for values in (paper, corrected):  # both convert with the settings' own checks
        render = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("render.")}
        RenderSettings.from_mapping({**params, **render})


def test_nested_and_dotted_keys_and_typos(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"render": {"image_size": 224, "colormaps": {"mfcc": "coolwarm"}}, "seed": 0}))
    preset = tmp_path / "p.yaml"
    preset.write_text("render:\n  image_size: 128\n  colormaps: {mfcc: viridis}\nseed: 3\n")
    assert load_preset(preset, params) == {"render.image_size": 128, "render.colormaps.mfcc": "viridis", "seed": 3}
    preset.write_text("render.image_sise: 128\n")
    with pytest.raises(PipelineError, match=r"render\.image_sise not in .*params\.yaml \(a typo"):
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
    assert "-S extract_audio.flips=authors" in proc.stdout and proc.stdout.strip().endswith("-S train.seed=1")
    bad = subprocess.run([str(MAIVAR), "preset", "nowhere.yaml"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: preset nowhere.yaml does not exist"


@pytest.mark.slow
def test_the_paper_preset_runs_end_to_end_as_a_named_experiment(tmp_path):
    """`maivar preset presets/paper.yaml` in a copy of this repository, on a small synthetic dataset and 2 epochs
    a head (the only overrides): BNInception features N x 25 x 1024, the audio features of images flipped once
    (flips: authors, N x 1536, IRv2 at 299),
    flattened segments, metrics written, the experiment listed by name."""
    import json

    import h5py

    from stage_cmd import scratch_repository

    repo, env = scratch_repository(tmp_path / "repo")
    # Small data and few epochs: the backbones, shapes and settings are the preset's own; 60 epochs of the
    # 25,600-wide video MLP (most of this test's time before) show nothing more than 2 do.
    small = ["synthesize.classes=2", "synthesize.classes_without_audio=0", "synthesize.groups=8",
             "synthesize.silent_clips=0", "synthesize.duration_s=1.0", "synthesize.width=64", "synthesize.height=48",
             "audio_mlp.epochs=2", "video_mlp.epochs=2", "fusion_mlp.epochs=2"]
    proc = subprocess.run([str(MAIVAR), "preset", "presets/paper.yaml", *[a for s in small for a in ("-S", s)]],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with h5py.File(repo / "data/features/video.h5") as h5:
        assert h5["features"].shape[1:] == (25, 1024) and h5.attrs["backbone"] == "BNInception"
    with h5py.File(repo / "data/features/audio.h5") as h5:
        assert h5["features"].shape[1:] == (1536,) and h5.attrs["extract_audio.input_size"] == 299
        assert h5.attrs["extract_audio.flips"] == "authors"
    models = {h: torch.load(repo / f"models/{h}_mlp.pt", weights_only=True) for h in ("video", "fusion")}
    assert models["video"]["segments"] == "flatten" and models["video"]["config"]["in_features"] == 25 * 1024
    assert models["fusion"]["config"]["in_features"] == 1536 + 25 * 1024
    metrics = json.loads((repo / "metrics/metrics.json").read_text())
    assert metrics["test_clips"] > 0 and metrics["representation"] == "chromagram"
    shown = subprocess.run([str(MAIVAR.parent / "dvc"), "exp", "show", "--json"], cwd=repo, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert '"name": "paper"' in shown
