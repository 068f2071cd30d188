"""Split-list parsing and class presets (maivar.data.ucf101) on the official lists and on crafted ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from maivar.core import rejections as R
from maivar.core.errors import PipelineError
from maivar.core.params import load_params
from maivar.core.rejections import ClipFailure
from maivar.data.listing import PRESETS, ListedClip, read_class_list, select_classes
from maivar.data.subset import build_subset
from maivar.data.ucf101 import read_class_index, read_split
from maivar.settings.base import SettingsError
from maivar.settings.data import DatasetSettings, PrepareSettings

from conftest import REPO, UCF_LISTS


def clips(videos) -> list[ListedClip]:
    """The split lists' entries as the clips a Listing holds (paths as written in the lists)."""
    return [ListedClip(v.id, v.class_name, v.split, v.rel_path, v.source) for v in videos]


def write_lists(d: Path, classind: str, train: str, test: str, split: int = 1) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "classInd.txt").write_text(classind)
    (d / f"trainlist{split:02d}.txt").write_text(train)
    (d / f"testlist{split:02d}.txt").write_text(test)
    return d


CLASSIND = "1 Alpha\n2 HandStandPushups\n3 Gamma\n"


def test_paper_preset_on_official_lists_gives_51_classes_4901_train_1944_test():
    lists = read_split(UCF_LISTS, 1)
    assert len(lists.classes) == 101 and not lists.unknown
    selected = select_classes("paper", lists.classes)
    chosen = set(selected)
    train = [v for v in lists.videos if v.class_name in chosen and v.split == "train"]
    test = [v for v in lists.videos if v.class_name in chosen and v.split == "test"]
    assert (len(selected), len(train), len(test)) == (51, 4901, 1944)


# UCF50's 50 classes (Reddy & Shah, 2012), all part of UCF101; their videos carry no audio stream.
UCF50 = """BaseballPitch Basketball BenchPress Biking Billiards BreastStroke CleanAndJerk Diving Drumming Fencing
GolfSwing HighJump HorseRace HorseRiding HulaHoop JavelinThrow JugglingBalls JumpingJack JumpRope Kayaking Lunges
MilitaryParade Mixing Nunchucks PizzaTossing PlayingGuitar PlayingPiano PlayingTabla PlayingViolin PoleVault
PommelHorse PullUps Punch PushUps RockClimbingIndoor RopeClimbing Rowing SalsaSpin SkateBoarding Skiing Skijet
SoccerJuggling Swing TaiChi TennisSwing ThrowDiscus TrampolineJumping VolleyballSpiking WalkingWithDog YoYo""".split()


def test_audio_subset_rule_on_official_lists_keeps_the_51_classes_without_ucf50():
    """The rule itself, not the preset: every listed video of split 1 is examined (UCF50's videos fail with
    no_audio_stream, the others pass), and step 2 drops exactly UCF50's classes, keeping the paper's 51
    classes with 4,901 train / 1,944 test videos and labels 0..50 in classInd.txt order."""
    lists = read_split(UCF_LISTS, 1)
    assert len(UCF50) == 50 and {c.lower() for c in UCF50} <= {c.lower() for c in lists.classes}
    silent = {c.lower() for c in UCF50}
    examined = {v.id: ClipFailure(R.NO_AUDIO_STREAM, "the container has no audio stream")
                if v.class_name.lower() in silent else {"duration_s": 7.0} for v in lists.videos}
    subset = build_subset(lists.classes, clips(lists.videos), clips(lists.unknown), lists.classes, examined,
                          audio_dir="a", min_class_audio_share=0.5)
    m = subset.metrics
    assert (m["classes"], m["train"], m["test"], m["videos"]) == (51, 4901, 1944, 6845)
    assert subset.classes == select_classes("paper", lists.classes)  # the rule and the preset agree
    assert sorted({r["label"] for r in subset.manifest}) == list(range(51))
    assert m["rejected"] == {R.NO_AUDIO_STREAM: len(lists.videos) - 6845} and m["dropped_classes"] == [
        c for c in lists.classes if c.lower() in silent]


@pytest.mark.parametrize("split,expected", [(2, (4930, 1915)), (3, (4945, 1900))])
def test_paper_preset_on_splits_2_and_3(split, expected):
    lists = read_split(UCF_LISTS, split)
    chosen = set(select_classes("paper", lists.classes))
    counts = tuple(sum(v.class_name in chosen and v.split == s for v in lists.videos) for s in ("train", "test"))
    assert counts == expected


def test_paper_preset_is_ucf101_minus_ucf50_and_spelled_as_in_classind():
    classes = read_class_index(UCF_LISTS / "classInd.txt")
    names = read_class_list(PRESETS["paper"])
    assert len(names) == len(set(names)) == 51
    assert set(names) <= set(classes)
    # UCF50 classes (no audio stream in UCF101) must not be in the preset
    assert not {"Basketball", "Biking", "Diving", "PushUps", "YoYo", "TaiChi"} & set(names)
    assert {"ApplyEyeMakeup", "BoxingPunchingBag", "PlayingCello", "WallPushups"} <= set(names)


def test_official_lists_ids_split_and_class_spelling():
    lists = read_split(UCF_LISTS, 1)
    by_id = {v.id: v for v in lists.videos}
    v = by_id["v_ApplyEyeMakeup_g08_c01"]
    assert (v.class_name, v.split) == ("ApplyEyeMakeup", "train")
    assert v.rel_path == "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi"
    assert by_id["v_ApplyEyeMakeup_g01_c01"].split == "test"
    assert all(int(v.id.rsplit("_g", 1)[1][:2]) <= 7 for v in lists.videos if v.split == "test")
    assert len(lists.videos) == 13320


def test_both_test_list_formats_give_the_same_videos(tmp_path):
    train = "Alpha/v_Alpha_g08_c01.avi 1\nGamma/v_Gamma_g08_c01.avi 3\n"
    bare = write_lists(tmp_path / "bare", CLASSIND, train,
                       "Alpha/v_Alpha_g01_c01.avi\r\nGamma/v_Gamma_g01_c01.avi\r\n")
    labeled = write_lists(tmp_path / "lab", CLASSIND, train,
                           "Alpha/v_Alpha_g01_c01.avi 1\nGamma/v_Gamma_g01_c01.avi 3\n")
    a, b = read_split(bare, 1), read_split(labeled, 1)
    assert [(v.id, v.class_name, v.split) for v in a.videos] == [(v.id, v.class_name, v.split) for v in b.videos]
    assert [v.split for v in a.videos] == ["train", "train", "test", "test"]


def test_class_names_match_case_insensitively_and_keep_classind_spelling(tmp_path):
    d = write_lists(tmp_path, CLASSIND, "HandstandPushups/v_HandStandPushups_g08_c01.avi 2\n",
                    "handstandpushups/v_HandStandPushups_g01_c01.avi\n")
    lists = read_split(d, 1)
    assert [v.class_name for v in lists.videos] == ["HandStandPushups", "HandStandPushups"]
    assert select_classes(["handstandpushups", "ALPHA"], lists.classes) == ["Alpha", "HandStandPushups"]


@pytest.mark.parametrize("bad", ["3Gamma", "x Gamma", "3 Gamma extra", "Gamma 3"])
def test_malformed_classind_line_is_one_line_error_naming_file_and_line(tmp_path, bad):
    d = write_lists(tmp_path, f"1 Alpha\n2 Beta\n{bad}\n", "", "")
    with pytest.raises(PipelineError) as exc:
        read_split(d, 1)
    msg = str(exc.value)
    assert "classInd.txt line 3" in msg and bad in msg and "\n" not in msg


@pytest.mark.parametrize("bad", ["Alpha/v_Alpha_g08_c01 1", "v_Alpha_g08_c01.avi 1", "Alpha/v.avi 1 2",
                                 "Alpha/v_Alpha_g08_c01.avi one"])
def test_malformed_split_line_is_one_line_error_naming_file_and_line(tmp_path, bad):
    d = write_lists(tmp_path, CLASSIND, f"Alpha/v_Alpha_g09_c01.avi 1\n{bad}\n", "")
    with pytest.raises(PipelineError) as exc:
        read_split(d, 1)
    assert "trainlist01.txt line 2" in str(exc.value) and "\n" not in str(exc.value)


def test_duplicate_classind_entries_and_duplicate_videos_are_errors(tmp_path):
    with pytest.raises(PipelineError, match="line 2"):
        read_split(write_lists(tmp_path / "a", "1 Alpha\n1 Beta\n", "", ""), 1)
    with pytest.raises(PipelineError, match="line 2"):
        read_split(write_lists(tmp_path / "b", "1 Alpha\n2 alpha\n", "", ""), 1)
    with pytest.raises(PipelineError, match="testlist01.txt line 1.*twice"):
        read_split(write_lists(tmp_path / "c", CLASSIND, "Alpha/v_Alpha_g08_c01.avi 1\n",
                               "Alpha/v_Alpha_g08_c01.avi\n"), 1)


def test_missing_list_file_and_bad_split_are_errors(tmp_path):
    with pytest.raises(PipelineError, match="testlist02.txt not found"):
        d = write_lists(tmp_path, CLASSIND, "", "")
        (d / "trainlist02.txt").write_text("")
        read_split(d, 2)
    dataset = {"format": "ucf101", "root": str(tmp_path), "split": 4, "annotations": None}
    with pytest.raises(SettingsError, match=r"dataset.split: 4 is not allowed \(an integer from 1 to 3\)"):
        DatasetSettings.from_mapping(dataset)  # checked before a list is read


def test_unknown_class_line_becomes_an_unknown_class_rejection(tmp_path):
    d = write_lists(tmp_path, CLASSIND, "Alpha/v_Alpha_g08_c01.avi 1\nDelta/v_Delta_g08_c01.avi 4\n", "")
    lists = read_split(d, 1)
    assert [v.id for v in lists.videos] == ["v_Alpha_g08_c01"]
    unknown = [(v.id, v.class_name, v.source) for v in lists.unknown]
    assert unknown == [("v_Delta_g08_c01", "Delta", "trainlist01.txt:2")]
    subset = build_subset(lists.classes, clips(lists.videos), clips(lists.unknown), ["Alpha"],
                          {"v_Alpha_g08_c01": {"duration_s": 1.0}},
                          audio_dir="a", min_class_audio_share=0.5)
    rows = {r["id"]: r for r in subset.rejections}
    assert rows["v_Delta_g08_c01"]["reason"] == "unknown_class"
    assert "trainlist01.txt:2" in rows["v_Delta_g08_c01"]["detail"]
    assert subset.metrics["rejected"] == {"unknown_class": 1} and subset.metrics["videos"] == 1


def test_select_classes_presets_and_errors():
    classes = ["Alpha", "Beta", "Gamma"]
    assert select_classes("all", classes) == classes
    assert select_classes(["gamma", "alpha"], classes) == ["Alpha", "Gamma"]  # classInd order
    with pytest.raises(PipelineError, match="Delta"):
        select_classes(["Alpha", "Delta"], classes)
    with pytest.raises(PipelineError, match="matches none"):
        select_classes("paper", classes)
    prepare = load_params(REPO / "params.yaml")["prepare"]
    for bad in ("some", [], 3, None):  # the settings refuse them before any file is read
        with pytest.raises(SettingsError, match="prepare.classes"):
            PrepareSettings.from_mapping({**prepare, "classes": bad})
