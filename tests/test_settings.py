"""Typed settings (maivar.settings): every bad value and every misspelt key stops the stage that reads it with one
line naming the dotted key, the value and what is allowed, before any file is read or any model is built; and
``maivar check-params`` gives the same verdict for the whole file."""

from __future__ import annotations

import math
import runpy
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from maivar.cli import main as maivar_main
from maivar.settings.base import (
    Bool,
    Choice,
    Float,
    Int,
    ListOf,
    MappingOf,
    SettingsError,
    read_params,
)
from maivar.settings.check import SECTIONS, check_params
from maivar.settings.runtime import AudioRuntime, RuntimeSettings, VideoRuntime

from stage_cmd import REPO, run_stage_in_process, stage_argv

PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())

# Which stage reads each section (the first stage that would stop on a bad value of it).
READER = {"dataset": "prepare", "synthesize": "synthesize", "prepare": "prepare", "render": "render",
          "representation": "render", "extract_audio": "extract_audio", "extract_video": "extract_video",
          "train": "evaluate", "audio_mlp": "train_audio", "video_mlp": "train_video", "fusion_mlp": "train_fusion",
          "runtime": "extract_audio", "runtime.extract_audio": "extract_audio",
          "runtime.extract_video": "extract_video", "runtime.heads": "train_video"}

# The nonsense values of issue 17, each once: (dotted key, value, the stage that must stop).
BAD_VALUES = [
    ("render.image_size", -5, "render"),
    ("render.image_size", 0, "render"),
    ("render.image_size", 100000, "render"),  # would allocate 27.9 GiB
    ("extract_audio.input_size", 100000, "extract_audio"),  # 240 GB
    ("render.n_fft", 0, "render"),
    ("render.hop_length", -512, "render"),
    ("runtime.extract_audio.batch_size", 0, "extract_audio"),
    ("runtime.extract_audio.batch_size", -1, "extract_audio"),
    ("runtime.extract_video.batch_videos", 0, "extract_video"),
    ("runtime.extract_video.batch_videos", -1, "extract_video"),
    ("runtime.heads.memory_mb", -1, "train_video"),
    ("runtime.heads.memory_mb", 2**40, "evaluate"),  # a size to allocate: bounded
    ("audio_mlp.lr", math.nan, "train_audio"),
    ("audio_mlp.dropout", 2, "train_audio"),
    ("video_mlp.hidden", [-5], "train_video"),
    ("audio_mlp.epochs", -1, "train_audio"),  # saved an untrained head with exit 0
    ("fusion_mlp.lr", math.inf, "train_fusion"),  # saved a NaN head with exit 0
    ("prepare.channels", 0, "prepare"),
    ("prepare.max_rejected_share", math.nan, "prepare"),
    ("representation", "spectrogram", "render"),
    ("extract_audio.precision", "fp16", "extract_audio"),
    ("runtime.device", "gpu", "extract_video"),
    ("dataset.format", "hdf5", "prepare"),
    ("render.colors", {"waveform": "blue", "curve": "#ff0000", "background": "#ffffff"}, "render"),
    ("synthesize.width", 321, "synthesize"),
]


def _set(params: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    node = params
    for p in parents:
        node = node[p]
    node[last] = value


def _misspell(word: str) -> str:
    """A typo: two neighbouring letters swapped (or the last one dropped)."""
    for i in range(len(word) - 1):
        if word[i] != word[i + 1]:
            return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    return word[:-1]


def _misspelt_cases() -> list[tuple[str, str]]:
    """(section, key) of every key of params.yaml's sections, nested runtime sections included."""
    cases = []
    for section, value in PARAMS.items():
        if not isinstance(value, dict):
            continue
        for key, inner in value.items():
            if isinstance(inner, dict) and section == "runtime":
                cases += [(f"runtime.{key}", k) for k in inner]
            else:
                cases.append((section, key))
    return cases


MISSPELT = _misspelt_cases()


@pytest.fixture(scope="module", autouse=True)
def _stages_imported():
    """Import every stage's modules once (what a stage's process pays before it runs): the timings below are then
    the stages' own work, as in a process that has just started."""
    for stage in {s for _, _, s in BAD_VALUES} | set(READER.values()):
        runpy.run_path(stage_argv(stage)[1], run_name="imported")


def _workspace(tmp_path: Path, params: dict) -> Path:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return tmp_path


def _stops(stage: str, workspace: Path, capsys) -> tuple[str, float]:
    """Run the stage in ``workspace`` (no data: a stage that got past its settings would fail on its inputs);
    return its one error line and how long it took."""
    capsys.readouterr()
    start = time.perf_counter()
    code = run_stage_in_process(stage, workspace, upstream=False)  # the stage's own check, nothing before it
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert sorted(p.name for p in workspace.iterdir()) == ["params.yaml"], "the stage wrote something"
    return lines[0], elapsed


def _verdict(workspace: Path, monkeypatch, capsys) -> str:
    monkeypatch.chdir(workspace)
    capsys.readouterr()
    assert maivar_main(["check-params"]) == 1
    return capsys.readouterr().err.strip()


@pytest.mark.parametrize(("key", "value", "stage"), BAD_VALUES, ids=[f"{k}={v}" for k, v, _ in BAD_VALUES])
def test_a_bad_value_stops_its_stage_in_one_line_before_any_work(key, value, stage, tmp_path, capsys, monkeypatch):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    _set(params, key, value)
    workspace = _workspace(tmp_path, params)
    line, elapsed = _stops(stage, workspace, capsys)
    assert line.startswith(f"error: params.yaml {key}"), line
    assert "is not allowed (" in line, line
    shown = {math.nan: "nan", math.inf: "inf"}.get(value) if isinstance(value, float) else None
    assert (shown or str(value if not isinstance(value, (list, dict)) else "")) in line, line
    assert elapsed < 5, f"{stage} took {elapsed:.1f} s to refuse {key}"
    assert _verdict(workspace, monkeypatch, capsys) == line  # check-params: the same line


@pytest.mark.parametrize(("section", "key"), MISSPELT, ids=[f"{s}.{k}" for s, k in MISSPELT])
def test_a_misspelt_key_stops_its_stage_naming_the_nearest_valid_one(section, key, tmp_path, capsys, monkeypatch):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    node = params
    for part in section.split("."):
        node = node[part]
    typo = _misspell(key)
    node[typo] = node.pop(key)
    workspace = _workspace(tmp_path, params)
    line, elapsed = _stops(READER[section], workspace, capsys)
    assert line == f"error: params.yaml {section}.{typo}: unknown key (did you mean {section}.{key}?)", line
    assert elapsed < 5
    assert _verdict(workspace, monkeypatch, capsys) == line


def test_a_key_added_beside_the_others_is_refused_too(tmp_path, capsys, monkeypatch):
    """`dvc exp run -S +extract_audio.pretraind=true` adds a key DVC does not know either: refused, not ignored."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["extract_audio"]["pretraind"] = True
    line, _ = _stops("extract_audio", _workspace(tmp_path, params), capsys)
    assert line == "error: params.yaml extract_audio.pretraind: unknown key (did you mean extract_audio.pretrained?)"


def test_a_misspelt_section_stops_every_stage(tmp_path, capsys, monkeypatch):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["extract_audoi"] = params["extract_audio"]
    workspace = _workspace(tmp_path, params)
    for stage in ("synthesize", "train_fusion"):
        line, _ = _stops(stage, workspace, capsys)
        assert line == "error: params.yaml extract_audoi: unknown key (did you mean extract_audio?)"


def test_a_missing_key_is_named(tmp_path, capsys):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    del params["render"]["n_fft"]
    line, _ = _stops("render", _workspace(tmp_path, params), capsys)
    assert line == "error: params.yaml render.n_fft is missing (an integer from 16 to 65536)"


def test_a_bad_value_in_a_real_process_is_one_line_on_stderr(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["extract_audio"]["input_size"] = 100000
    workspace = _workspace(tmp_path, params)
    done = subprocess.run(stage_argv("extract_audio"), cwd=workspace, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: params.yaml extract_audio.input_size: 100000 is not allowed (an integer from 32 to 1024)"]


def test_the_repositorys_params_and_presets_pass(capsys):
    assert maivar_main(["check-params", "--params", str(REPO / "params.yaml")]) == 0
    assert "ok" in capsys.readouterr().out
    for preset in sorted((REPO / "presets").glob("*.yaml")):
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        for dotted, value in _flatten(yaml.safe_load(preset.read_text())).items():
            _set(params, dotted, value)
        for name, section in SECTIONS.items():
            section.from_params(params, name)


def _flatten(mapping: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and not (prefix + key).startswith(("render.colormaps", "render.colors")):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def test_every_section_writes_and_reads_back_its_store_attributes():
    params = check_params(str(REPO / "params.yaml"))
    for name, section in SECTIONS.items():
        settings = section.from_params(params, name)
        if section is RuntimeSettings:
            assert isinstance(settings.extract_audio, AudioRuntime)
            assert isinstance(settings.extract_video, VideoRuntime)
            continue
        attrs = settings.to_attrs()
        assert all(k.startswith(f"{name}.") for k in attrs)
        # as HDF5 gives them back: lists and mappings as JSON text, None as "null"
        import json
        stored = {k: json.dumps(v) if isinstance(v, (list, dict)) or v is None else v for k, v in attrs.items()}
        assert section.from_attrs(stored) == settings
    # a store of an older maivar lacks a key: the caller says what it meant then
    render = SECTIONS["render"].from_params(params)
    attrs = render.to_attrs()
    del attrs["render.recipe"]
    with pytest.raises(SettingsError, match=r"^the store render.recipe is missing"):
        SECTIONS["render"].from_attrs(attrs)
    assert SECTIONS["render"].from_attrs(attrs, defaults={"recipe": "corrected"}) == render


def test_checks_take_what_yaml_gives_and_nothing_else():
    assert Int(1, 4)(2.0, "k", "w") == 2 and isinstance(Int(1, 4)(2.0, "k", "w"), int)
    for bad in (True, "2", 2.5, None, math.nan):
        with pytest.raises(SettingsError):
            Int(1, 4)(bad, "k", "w")
    assert Float(0, 1)(1, "k", "w") == 1.0
    for bad in (math.nan, math.inf, -math.inf, "0.5", False):
        with pytest.raises(SettingsError):
            Float()(bad, "k", "w")
    with pytest.raises(SettingsError, match="did you mean corrected"):
        Choice(("corrected", "pymaivar"))("corected", "render.recipe", "params.yaml")
    with pytest.raises(SettingsError):
        Bool()(1, "k", "w")
    assert ListOf(Int(1))([3, 4], "k", "w") == (3, 4)
    with pytest.raises(SettingsError, match=r"w k.mfc: unknown key \(did you mean k.mfcc\?\)"):
        MappingOf(("mfcc", "chromagram"), Int())({"mfc": 1}, "k", "w")
    # a long or multi-line value is shown bounded, on one line
    with pytest.raises(SettingsError) as info:
        Choice(("a",))("x" * 10_000 + "\nsecond", "k", "w")
    assert "\n" not in str(info.value) and len(str(info.value)) < 200


def test_check_params_names_the_file_it_was_given(tmp_path, capsys):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"]["threads"] = 0
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(params))
    assert maivar_main(["check-params", "--params", str(path)]) == 1
    assert capsys.readouterr().err.strip() == (f"error: {path} train.threads: 0 is not allowed (an integer from 1 "
                                               "to 256)")
    with pytest.raises(SettingsError):
        check_params(str(path))
    assert read_params(str(REPO / "params.yaml")).where.endswith("params.yaml")


def test_settings_import_without_the_heavy_libraries():
    """A stage checks its settings before it pays for torch, timm or MMAction2 (seconds)."""
    code = ("import sys, maivar.settings.check; "
            "print(sorted(m for m in ('torch', 'timm', 'mmaction', 'librosa') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_a_preset_with_a_bad_value_is_refused_before_dvc_runs(capsys):
    """`maivar preset FILE -S key=value`: the experiment's params (params.yaml, the preset, the -S values) go
    through every stage's settings checks first; nothing is started."""
    code = maivar_main(["preset", str(REPO / "presets/paper.yaml"), "--params", str(REPO / "params.yaml"),
                        "--dry-run", "-S", "audio_mlp.lr=-1"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("audio_mlp.lr: -1 is not allowed (a finite number > 0 and <= 10)"), err
    assert maivar_main(["preset", str(REPO / "presets/paper.yaml"), "--params", str(REPO / "params.yaml"),
                        "--dry-run", "-S", "audio_mlp.epochs=2"]) == 0
