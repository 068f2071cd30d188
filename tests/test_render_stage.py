"""Stage render: manifest in, images.h5 + previews out; bad clips become rejections, ids stay aligned."""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml
from PIL import Image

from maivar.audio.render import RENDER_COLUMNS, render_manifest
from maivar.audio.representations import NAMES
from maivar.core.errors import PipelineError
from maivar.core.feature_store import open_store
from maivar.core.manifest import read_manifest
from maivar.core.params import load_params
from maivar.settings.render import RenderSettings

from stage_cmd import run_stage, run_stage_in_process

REPO = Path(__file__).resolve().parents[1]
SR = 22050


def _tone(freq, d, sr=SR, amp=0.4):
    t = np.arange(int(d * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def make_dataset(root: Path) -> pd.DataFrame:
    """A tiny manifest over 2 classes with every kind of audio the stage must survive (written unsorted)."""
    audio = root / "data" / "prepared" / "audio"
    audio.mkdir(parents=True)
    rows = []

    def add(clip_id, class_name, label, write=None):
        path = audio / f"{clip_id}.wav"
        if write is not None:
            write(path)
        rows.append({"id": clip_id, "class_name": class_name, "label": label, "split": "train",
                     "video_path": f"x/{clip_id}.avi", "audio_path": str(path.relative_to(root))})

    add("v_Drum_g02_c01", "Drum", 1, lambda p: sf.write(p, np.stack([_tone(220, 0.6), _tone(330, 0.6)], 1), 44100,
                                                          subtype="PCM_16"))  # stereo 44.1 kHz
    add("v_Bell_g01_c01", "Bell", 0, lambda p: sf.write(p, _tone(440, 0.5), SR, subtype="PCM_16"))  # mono, 22.05 kHz
    add("v_Bell_g01_c02", "Bell", 0, lambda p: sf.write(p, np.zeros(SR // 2, np.float32), 16000))  # silent
    add("v_Bell_g01_c03", "Bell", 0, lambda p: sf.write(p, _tone(880, 0.005), SR))  # shorter than one FFT frame
    nan_audio = _tone(660, 0.4)
    nan_audio[::50] = np.nan
    add("v_Drum_g01_c01", "Drum", 1, lambda p: sf.write(p, nan_audio, SR, subtype="FLOAT"))  # NaN samples
    add("v_Drum_g03_c01", "Drum", 1)  # missing WAV
    add("v_Drum_g04_c01", "Drum", 1, lambda p: p.write_bytes(b"RIFF----WAVEfmt garbage" * 4))  # unreadable
    add("v_Drum_g05_c01", "Drum", 1, lambda p: p.write_bytes(b""))  # empty
    manifest = pd.DataFrame(rows)
    path = root / "data" / "prepared" / "manifest.csv"
    manifest.to_csv(path, index=False)
    return manifest


EXPECTED_REJECTED = {"v_Drum_g03_c01": "missing_file", "v_Drum_g04_c01": "unreadable_audio",
                     "v_Drum_g05_c01": "empty_file"}


def small_params(size=32, previews=1, drop=(), **render):
    p = dict(load_params(REPO / "params.yaml")["render"])
    p.update(image_size=size, sample_rate=SR, previews_per_class=previews, **render)
    for key in drop:
        del p[key]
    return p


def run(tmp_path, representation="chromagram", workers=2, **kw):
    manifest = read_manifest(tmp_path / "data" / "prepared" / "manifest.csv", RENDER_COLUMNS)
    out = tmp_path / "out" / "images.h5"
    previews = tmp_path / "out" / "previews"
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)  # audio paths in the manifest are relative to the repository root
    try:
        settings = RenderSettings.from_mapping(small_params(**kw))
        summary = render_manifest(manifest, representation=representation, settings=settings,
                                  workers=workers, out_path=out, previews_dir=previews, librosa_version="x")
    finally:
        os.chdir(cwd)
    return summary, out, previews


def test_store_holds_every_renderable_clip_in_id_order_and_rejects_the_rest(tmp_path):
    manifest = make_dataset(tmp_path)
    summary, out, previews = run(tmp_path)
    store = open_store(out, "images")
    expected_ids = sorted(set(manifest["id"]) - set(EXPECTED_REJECTED))
    assert store.ids == expected_ids
    labels = dict(zip(manifest["id"], manifest["label"], strict=True))
    assert list(store.labels) == [labels[i] for i in expected_ids]
    assert {r.id: r.reason for r in store.rejected} == EXPECTED_REJECTED
    assert set(store.ids) | {r.id for r in store.rejected} == set(manifest["id"])
    assert store.data.shape == (len(expected_ids), 32, 32, 3) and store.data.dtype == np.uint8
    assert store.attrs["representation"] == "chromagram"
    assert store.attrs["render.n_fft"] == 2048 and store.attrs["librosa_version"] == "x"
    assert summary["rendered"] == len(expected_ids) and summary["non_finite_clips"] == 1
    assert sum(summary["rejected"].values()) == len(EXPECTED_REJECTED)
    with h5py.File(out) as h5:  # deterministic compression (never LZF: maivar/core/feature_store.py)
        assert (h5["images"].compression, h5["images"].compression_opts) == ("gzip", 1)


def test_previews_are_the_first_clips_of_each_class_and_match_the_store(tmp_path):
    make_dataset(tmp_path)
    _, out, previews = run(tmp_path, previews=2)
    names = sorted(p.name for p in previews.iterdir())
    assert names == ["Bell__v_Bell_g01_c01.png", "Bell__v_Bell_g01_c02.png",
                     "Drum__v_Drum_g01_c01.png", "Drum__v_Drum_g02_c01.png"]
    store = open_store(out, "images")
    for name in names:
        clip_id = name.split("__")[1][:-4]
        np.testing.assert_array_equal(np.asarray(Image.open(previews / name)), store.data[store.index[clip_id]])
    assert not [p for p in previews.parent.iterdir() if ".tmp-" in p.name]


def test_same_inputs_give_byte_identical_outputs_with_any_worker_count(tmp_path):
    make_dataset(tmp_path)
    _, out, previews = run(tmp_path, workers=2)
    first = hashlib.sha256(out.read_bytes()).hexdigest()
    first_png = {p.name: p.read_bytes() for p in previews.iterdir()}
    _, out, previews = run(tmp_path, workers=1)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == first
    assert {p.name: p.read_bytes() for p in previews.iterdir()} == first_png


@pytest.mark.parametrize("representation", NAMES)
def test_every_representation_renders_the_manifest(tmp_path, representation):
    make_dataset(tmp_path)
    _, out, _ = run(tmp_path, representation=representation, workers=1, size=24)
    store = open_store(out, "images")
    assert store.attrs["representation"] == representation
    assert len(store.ids) == 5 and store.data.shape[1:] == (24, 24, 3)
    # a tone and a silent clip must not render the same image
    assert not np.array_equal(store.data[store.index["v_Bell_g01_c01"]], store.data[store.index["v_Bell_g01_c02"]])


def test_nothing_renderable_is_a_one_line_error(tmp_path):
    (tmp_path / "data" / "prepared").mkdir(parents=True)
    pd.DataFrame([{"id": "v_A_g01_c01", "class_name": "A", "label": 0, "audio_path": "nope.wav"}]).to_csv(
        tmp_path / "data" / "prepared" / "manifest.csv", index=False)
    with pytest.raises(PipelineError, match="no clip could be rendered"):
        run(tmp_path)


def test_manifest_errors_are_one_line(tmp_path):
    with pytest.raises(PipelineError, match="prepare"):
        read_manifest(tmp_path / "missing.csv", RENDER_COLUMNS)
    bad = tmp_path / "bad.csv"
    bad.write_text("id,label\nv_a,0\n")
    with pytest.raises(PipelineError, match="audio_path"):
        read_manifest(bad, RENDER_COLUMNS)


def _params(tmp_path, representation, **render):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["representation"] = representation
    params["render"].update(image_size=32, sample_rate=SR, previews_per_class=1, **render)
    params["runtime"].update(workers=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))


def test_stage_entry_point_writes_the_declared_outputs(tmp_path):
    """The stage as DVC runs it: its dvc.yaml command, in a process of its own."""
    make_dataset(tmp_path)
    _params(tmp_path, "mfcc_scaled")
    proc = run_stage("render", tmp_path)
    assert proc.returncode == 0, proc.stderr
    store = open_store(tmp_path / "data" / "audio_images" / "images.h5", "images")
    assert store.attrs["representation"] == "mfcc_scaled" and len(store.ids) == 5
    assert len(list((tmp_path / "data" / "audio_images" / "previews").glob("*.png"))) == 2
    assert "rejected v_Drum_g03_c01: missing_file" in proc.stderr


def test_stage_entry_point_renders_the_mel_spectrogram(tmp_path):
    """melspectrogram, the table's seventh entry (ours), through the stage as DVC runs it."""
    make_dataset(tmp_path)
    _params(tmp_path, "melspectrogram")
    assert run_stage_in_process("render", tmp_path) == 0
    store = open_store(tmp_path / "data" / "audio_images" / "images.h5", "images")
    assert store.attrs["representation"] == "melspectrogram" and len(store.ids) == 5
    assert store.data.shape[1:] == (32, 32, 3) and store.data.dtype == np.uint8


def _one_line_error(tmp_path, capsys) -> str:
    capsys.readouterr()
    assert run_stage_in_process("render", tmp_path) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err  # one line, no traceback
    assert not (tmp_path / "data" / "audio_images").exists()
    return err


def test_stage_with_an_unknown_representation_fails_with_one_line_listing_the_table(tmp_path, capsys):
    make_dataset(tmp_path)
    _params(tmp_path, "spectrogram")
    line = _one_line_error(tmp_path, capsys)
    assert line.startswith('error: params.yaml representation: "spectrogram" is not allowed (one of ')
    assert all(f'"{name}"' in line for name in NAMES)


def test_stage_with_an_unknown_pixel_mapping_fails_with_one_line(tmp_path, capsys):
    make_dataset(tmp_path)
    _params(tmp_path, "chromagram", pixel_mapping="bicubic")
    assert _one_line_error(tmp_path, capsys) == ('error: params.yaml render.pixel_mapping: "bicubic" is not allowed '
                                                 '(one of "nearest", "area")')


def test_pixel_mapping_is_recorded_and_changes_the_images(tmp_path):
    make_dataset(tmp_path)
    images = {}
    for mapping in ("nearest", "area"):
        _, out, _ = run(tmp_path, representation="mfcc", workers=1, size=24, pixel_mapping=mapping)
        store = open_store(out, "images")
        assert store.attrs["render.pixel_mapping"] == mapping
        images[mapping] = np.stack([store.data[i] for i in range(len(store.ids))])
    assert images["nearest"].shape == images["area"].shape
    assert not np.array_equal(images["nearest"], images["area"])


def test_the_store_records_every_render_setting_and_they_read_back_equal(tmp_path):
    """What predict rebuilds a run's images from: the store's render.* attributes, through the same settings type."""
    make_dataset(tmp_path)
    _, out, _ = run(tmp_path, representation="spectral_centroid", workers=1, recipe="pymaivar", line_width=3)
    attrs = open_store(out, "images").attrs
    assert attrs["representation"] == "spectral_centroid"
    assert RenderSettings.from_attrs(attrs) == RenderSettings.from_mapping(
        small_params(recipe="pymaivar", line_width=3))
    assert not any("audio_images" in str(v) for v in attrs.values())  # no pointer to a module that is gone


def test_stage_with_an_unknown_recipe_fails_with_one_line(tmp_path, capsys):
    make_dataset(tmp_path)
    _params(tmp_path, "chromagram", recipe="matplotlib")
    assert _one_line_error(tmp_path, capsys) == ('error: params.yaml render.recipe: "matplotlib" is not allowed (one '
                                                 'of "corrected", "pymaivar")')


def test_a_render_setting_that_does_not_exist_fails_with_one_line(tmp_path, capsys):
    """A key the render stage does not read would be recorded in images.h5 and change nothing (an old
    params.yaml's render.size once made predict draw its images at the wrong size): it is an error."""
    make_dataset(tmp_path)
    _params(tmp_path, "chromagram", size=64)
    line = _one_line_error(tmp_path, capsys)
    assert line == "error: params.yaml render.size: unknown key (did you mean render.image_size?)"
    _params(tmp_path, "chromagram", color="red")
    assert _one_line_error(tmp_path, capsys) == ("error: params.yaml render.color: unknown key (did you mean "
                                                 "render.colors?)")


def test_a_colormap_for_no_matrix_representation_fails_with_one_line(tmp_path, capsys):
    make_dataset(tmp_path)
    params = load_params(REPO / "params.yaml")["render"]
    _params(tmp_path, "chromagram", colormaps={**params["colormaps"], "chroma": "magma"})
    line = _one_line_error(tmp_path, capsys)
    assert line == ("error: params.yaml render.colormaps.chroma: unknown key (did you mean "
                    "render.colormaps.chromagram?)")


def test_recipe_pymaivar_is_recorded_and_reads_each_wav_at_its_own_rate(tmp_path):
    from maivar.audio.drawing import render, style_from_settings
    from maivar.audio.wav import read_audio

    make_dataset(tmp_path)
    _, out, _ = run(tmp_path, representation="spectral_centroid", workers=1, size=24, recipe="pymaivar")
    store = open_store(out, "images")
    assert store.attrs["render.recipe"] == "pymaivar" and store.attrs["render.pixel_mapping"] == "nearest"
    assert len(store.ids) == 5 and {r.id: r.reason for r in store.rejected} == EXPECTED_REJECTED
    # the 44.1 kHz stereo clip and the 22.05 kHz mono one, each drawn at its own rate (librosa.load(sr=None)),
    # not at render.sample_rate
    style = style_from_settings(RenderSettings.from_mapping(small_params()))
    for clip_id in ("v_Drum_g02_c01", "v_Bell_g01_c01"):
        y, rate, _ = read_audio(str(tmp_path / "data" / "prepared" / "audio" / f"{clip_id}.wav"))
        expected = render(y, rate, "spectral_centroid", size=24, n_fft=2048, hop_length=512, n_mfcc=20,
                          chroma_tuning=None, style=style, pixel_mapping="nearest", recipe="pymaivar")
        np.testing.assert_array_equal(store.data[store.index[clip_id]], expected)
    _, corrected, _ = run(tmp_path, representation="spectral_centroid", workers=1, size=24)
    assert not np.array_equal(open_store(corrected, "images").data[0], store.data[0])
