"""The embedded dataset (maivar/synthetic.py): layout, formats, determinism, and per-modality class cues."""

from __future__ import annotations

import hashlib
from pathlib import Path

import av
import numpy as np
import pytest

from maivar.core.errors import PipelineError
from maivar.data.ucf101 import read_split
from maivar.settings.base import SettingsError
from maivar.settings.synthesize import SynthesizeSettings
from maivar.synthetic import class_specs, synthesize


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def decode(path: Path):
    """(video stream info, mean U/V of all frames, audio samples or None)."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        info = (v.codec_context.name, v.codec_context.width, v.codec_context.height, float(v.average_rate), v.frames)
        uv = []
        for frame in c.decode(video=0):
            planes = frame.to_ndarray(format="yuv420p")
            h = frame.height
            uv.append([planes[h:h + h // 4].mean(), planes[h + h // 4:].mean()])
    audio = None
    with av.open(str(path)) as c:
        if c.streams.audio:
            audio = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
            info = info + (c.streams.audio[0].codec_context.name,)
    return info, np.mean(uv, axis=0), audio


def test_layout_and_split_lists_follow_ucf101(tiny_dataset, tiny_params):
    root, summary = tiny_dataset
    lists_dir = root / "ucfTrainTestlist"
    assert sorted(p.name for p in lists_dir.iterdir()) == ["classInd.txt", "testlist01.txt", "testlist02.txt",
                                                           "trainlist01.txt", "trainlist02.txt"]
    assert (lists_dir / "classInd.txt").read_bytes().startswith(f"1 {summary['classes'][0]}\r\n".encode())
    assert all(len(line.split()) == 1 for line in (lists_dir / "testlist01.txt").read_text().splitlines())
    for split, held in ((1, range(1, 8)), (2, range(8, 15))):
        lists = read_split(lists_dir, split)
        assert lists.classes == summary["classes"] and not lists.unknown
        n = tiny_params["classes"] * tiny_params["groups"] * tiny_params["clips_per_group"]
        assert len(lists.videos) == n == summary["clips"]
        for v in lists.videos:
            group = int(v.id.rsplit("_g", 1)[1][:2])
            assert v.split == ("test" if group in held else "train")
            assert v.id == f"v_{v.class_name}_g{group:02d}_c01"
            assert (root / "UCF-101" / v.rel_path).is_file()


def test_streams_audio_classes_and_silent_clips(tiny_dataset, tiny_params):
    root, summary = tiny_dataset
    p = tiny_params
    mute = set(summary["classes_without_audio"])
    assert len(mute) == p["classes_without_audio"] and mute == set(summary["classes"][-len(mute):])
    assert len(summary["silent_clips"]) == p["silent_clips"]
    for path in sorted((root / "UCF-101").rglob("*.avi")):
        info, _, audio = decode(path)
        assert info[:5] == ("mpeg4", p["width"], p["height"], p["fps"], round(p["duration_s"] * p["fps"]))
        cls = path.parent.name
        if cls in mute:
            assert audio is None
        else:
            assert info[5] == "pcm_s16le"
            assert len(audio) == 2 * round(p["duration_s"] * p["sample_rate"])
            if path.stem in summary["silent_clips"]:
                assert not audio.any()
            else:
                assert np.abs(audio).max() > 1000


def test_same_params_give_identical_bytes_and_another_seed_differs(tiny_dataset, tiny_params, tmp_path):
    root, _ = tiny_dataset
    again = tmp_path / "again"
    synthesize(again, settings=SynthesizeSettings.from_mapping(tiny_params), workers=1)
    assert tree_digest(again) == tree_digest(root)
    other = tmp_path / "other"
    changed = {**tiny_params, "seed": tiny_params["seed"] + 1, "classes": 2, "classes_without_audio": 0,
               "silent_clips": 0}
    synthesize(other, settings=SynthesizeSettings.from_mapping(changed), workers=2)
    a, b = tree_digest(root), tree_digest(other)
    shared = set(a) & set(b)
    assert shared and all(a[k] != b[k] for k in shared if k.endswith(".avi"))


def test_confusable_pairs_look_alike_or_sound_alike():
    specs = class_specs(10, 2)
    # 0/1 look alike (only the disc's path differs) but sound different
    assert specs[0].look.hue == specs[1].look.hue and specs[0].look.stripe_period == specs[1].look.stripe_period
    assert specs[0].look.path != specs[1].look.path and specs[0].sound != specs[1].sound
    # 2/3 sound alike (only the rhythm differs) but look different
    assert specs[2].sound.pitch_class == specs[3].sound.pitch_class
    assert specs[2].sound.pulse_hz != specs[3].sound.pulse_hz
    assert specs[2].look.hue != specs[3].look.hue
    assert [s.sound is None for s in specs] == [False] * 8 + [True] * 2
    assert len({s.name for s in specs}) == 10
    assert len({(s.look, s.sound) for s in specs}) == 10


@pytest.mark.parametrize("change", [{"classes": 1}, {"classes_without_audio": 4}, {"width": 95}, {"noise": 1.5},
                                    {"groups": 0}])
def test_invalid_sizes_are_one_line_settings_errors(tiny_params, change):
    with pytest.raises(SettingsError) as exc:
        SynthesizeSettings.from_mapping({**tiny_params, **change})
    assert "synthesize." in str(exc.value) and "\n" not in str(exc.value)


def test_more_silent_clips_than_clips_with_audio_is_a_one_line_error(tiny_params, tmp_path):
    settings = SynthesizeSettings.from_mapping({**tiny_params, "silent_clips": 99})  # depends on the other sizes
    with pytest.raises(PipelineError) as exc:
        synthesize(tmp_path / "x", settings=settings)
    assert "synthesize.silent_clips is 99 but only 27 clips have audio" == str(exc.value)
    assert not (tmp_path / "x").exists()


def test_each_modality_carries_a_class_cue(tiny_dataset):
    """Nearest-centroid on crude features (frame color; tone spectrum) beats chance by far."""
    root, summary = tiny_dataset
    lists = read_split(root / "ucfTrainTestlist", 1)
    voiced = [c for c in summary["classes"] if c not in summary["classes_without_audio"]]
    feats = {}
    for v in lists.videos:
        _, uv, audio = decode(root / "UCF-101" / v.rel_path)
        spec = None
        if audio is not None and v.id not in summary["silent_clips"]:
            mono = audio.reshape(-1, 2).mean(axis=1)
            mag = np.abs(np.fft.rfft(mono))[: len(mono) // 4]
            spec = np.log1p(np.add.reduceat(mag, np.arange(0, len(mag), 8)))
        feats[v.id] = (uv, spec)

    def accuracy(which: int, classes: list[str]) -> float:
        def rows(split):
            return [(feats[v.id][which], v.class_name) for v in lists.videos
                    if v.split == split and v.class_name in classes and feats[v.id][which] is not None]
        centroids = {c: np.mean([x for x, y in rows("train") if y == c], axis=0) for c in classes}
        test = rows("test")
        hits = [min(classes, key=lambda c: np.linalg.norm(x - centroids[c])) == y for x, y in test]
        return float(np.mean(hits))

    chance = 1 / len(voiced)
    assert accuracy(0, summary["classes"]) > 2 / len(summary["classes"])
    assert accuracy(1, voiced) > 2 * chance
